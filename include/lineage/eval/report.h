// lineage report: one self-contained HTML page for a run directory — loss curves (and a CE-only
// baseline run beside them), the teacher/student table, quality kept versus cost saved, and the
// provenance. Inline SVG and CSS only: it opens offline, with no JavaScript, anywhere.
//
// Reads RUN_DIR/metrics.jsonl, lineage.json, and when present summary.json (lineage distill),
// eval.json (lineage eval --json RUN_DIR/eval.json) and speculative.jsonl (bench_speculative --out).
#pragma once

#include <string>

namespace lineage::eval {

struct ReportOptions {
  std::string run_dir;
  std::string out;        // default RUN_DIR/report.html
  std::string baseline;   // another run directory (CE only, same student) drawn dashed
  std::string eval_json;  // default RUN_DIR/eval.json when it exists
  // bench_speculative --out's lines (the student as the teacher's draft); default
  // RUN_DIR/speculative.jsonl when it exists
  std::string speculative;
};

std::string render_report(const ReportOptions& options);

// Renders and writes atomically; returns the path written.
std::string write_report(const ReportOptions& options);

// The deterrence study's page (scripts/study_deterrence.sh): Pareto plots of each defence's cost to
// the teacher against its effect on a distilled student, from the study's results.jsonl.
std::string render_deterrence_report(const std::string& results_jsonl);
std::string write_deterrence_report(const std::string& results_jsonl, const std::string& out);

}  // namespace lineage::eval
