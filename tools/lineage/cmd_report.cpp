// lineage report: one self-contained HTML page for a run directory.
#include <filesystem>
#include <iostream>
#include <memory>

#include "commands.h"
#include "lineage/eval/report.h"

namespace lineage::cli {

Run add_report(CLI::App& app) {
  auto* sub = app.add_subcommand("report", "an HTML report of a run: loss curves, teacher vs student, cost, provenance");
  auto o = std::make_shared<eval::ReportOptions>();
  auto deterrence = std::make_shared<std::string>();
  sub->add_option("run_dir", o->run_dir, "run directory (lineage distill or lineage train --out)");
  sub->add_option("--deterrence", *deterrence,
                  "instead of a run: the deterrence study's results.jsonl (scripts/study_deterrence.sh), as Pareto plots");
  sub->add_option("--out", o->out, "HTML file to write (default RUN_DIR/report.html)");
  sub->add_option("--baseline", o->baseline, "a CE-only run of the same student, drawn dashed beside this one");
  sub->add_option("--eval", o->eval_json, "lineage eval --json output to include (default RUN_DIR/eval.json if present)");
  sub->add_option("--speculative", o->speculative,
                  "bench_speculative --out lines to include: the student as the teacher's draft (default "
                  "RUN_DIR/speculative.jsonl if present)");
  return [o, deterrence] {
    if (!deterrence->empty()) {
      std::string out = o->out.empty() ? (std::filesystem::path(*deterrence).parent_path() / "report.html").string() : o->out;
      std::cout << "report: " << eval::write_deterrence_report(*deterrence, out) << "\n";
      return;
    }
    if (o->run_dir.empty()) throw CLI::RequiredError("run_dir (or --deterrence RESULTS.jsonl)");
    std::cout << "report: " << eval::write_report(*o) << "\n";
  };
}

}  // namespace lineage::cli
