// The deterrence study's page (scripts/study_deterrence.sh, issue 31): what each defence costs
// the teacher against what it does to a student distilled from its samples, as Pareto plots —
// antidistillation sampling (Savani et al. 2025) and fingerprints (Xu et al. 2026) beside plain
// temperature sampling and the red/green watermark (Kirchenbauer et al. 2023).
#include <fmt/format.h>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/core/json.h"
#include "lineage/eval/report.h"
#include "lineage/eval/svg_chart.h"

namespace lineage::eval {

namespace {

using json = nlohmann::json;

const char* kPageStyle = R"(body{font-family:sans-serif;max-width:980px;margin:24px auto;padding:0 16px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#777;font-size:12px}svg{margin:6px 0;max-width:100%;height:auto})";

// One curve per defence and proxy, in order of strength.
std::string series_key(const json& r) {
  const std::string kind = r.value("kind", "?"), proxy = r.value("proxy", "");
  return proxy.empty() ? kind : kind + " (proxy " + proxy + ")";
}

const char* color_of(const std::string& key) {
  if (key.rfind("plain", 0) == 0) return "#7f7f7f";
  if (key.rfind("watermark", 0) == 0) return "#1f77b4";
  if (key == "antidistill (proxy a)") return "#d62728";
  if (key.rfind("antidistill", 0) == 0) return "#ff9896";
  if (key == "fingerprint (proxy a)") return "#2ca02c";
  return "#98df8a";
}

double minus_log10(double p) { return -std::log10(std::max(p, 1e-300)); }

}  // namespace

std::string render_deterrence_report(const std::string& results) {
  std::ifstream in(results);
  if (!in) fail("cannot read '{}': expected the study's results.jsonl (scripts/study_deterrence.sh)", results);
  std::vector<json> rows;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto r = parse_json(line, fmt::format("{} line {}", results, n));
    for (const char* k : {"name", "kind", "strength", "teacher_agreement", "sample_ppl", "student_ppl_full",
                          "student_agreement_full", "trace_fp_p_full", "trace_wm_p_full", "trace_fp_p_small",
                          "trace_wm_p_small"})
      if (!r.contains(k)) fail("{} line {}: no field '{}' (expected a summary.json of study_deterrence.sh)", results, n, k);
    rows.push_back(std::move(r));
  }
  if (rows.empty()) fail("'{}' holds no results", results);
  const json* base = nullptr;
  for (const auto& r : rows)
    if (r["name"] == "plain_t1.0") base = &r;
  if (!base) fail("'{}' has no plain_t1.0 row: the costs are measured against plain sampling at temperature 1", results);
  auto rise = [&](const json& r, const char* k) { return 100.0 * (r[k].get<double>() / (*base)[k].get<double>() - 1); };

  std::map<std::string, std::vector<const json*>> by;
  for (const auto& r : rows) by[series_key(r)].push_back(&r);
  auto chart = [&](const std::string& title, const std::string& xl, const std::string& yl, auto x, auto y, auto keep) {
    std::vector<Series> series;
    for (auto& [key, rs] : by) {
      if (!keep(key)) continue;
      Series s;
      s.label = key;
      s.color = color_of(key);
      s.markers = true;
      s.dashed = key.rfind("plain", 0) == 0 || key.rfind("watermark", 0) == 0;
      auto sorted = rs;
      std::sort(sorted.begin(), sorted.end(),
                [](const json* a, const json* b) { return (*a)["strength"].get<double>() < (*b)["strength"].get<double>(); });
      for (const json* r : sorted) s.points.emplace_back(x(*r), y(*r));
      series.push_back(std::move(s));
    }
    return line_chart(series, {title, xl, yl});
  };
  auto all = [](const std::string&) { return true; };
  auto not_fp = [](const std::string& k) { return k.rfind("fingerprint", 0) != 0; };
  auto not_ad = [](const std::string& k) { return k.rfind("antidistill", 0) != 0; };

  std::string h = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>Lineage deterrence study</title>\n<style>";
  h += kPageStyle;
  h += "</style></head><body>\n<h1>Deterrence: what each defence costs the teacher and does to a distiller</h1>\n";
  h += fmt::format("<p class=\"muted\">{} configurations from {}; costs relative to plain sampling at temperature 1 "
                   "(sample perplexity {:.2f} under the independent reference, student perplexity {:.2f}). Each curve "
                   "runs from the weakest setting to the strongest. Fingerprint evidence: lineage trace with the "
                   "fingerprint key (the watermark's key for the watermark rows; plain sampling shows the level "
                   "of no evidence); p &lt; 1e-6 is −log10 p &gt; 6.</p>\n",
                   rows.size(), html_escape(results), (*base)["sample_ppl"].get<double>(),
                   (*base)["student_ppl_full"].get<double>());
  h += "<h2>Antidistillation: the student's loss against the teacher's</h2>\n";
  h += chart("student harm vs teacher sample quality", "rise of the teacher's sample perplexity (%)",
             "rise of the student's validation perplexity (%)", [&](const json& r) { return rise(r, "sample_ppl"); },
             [&](const json& r) { return rise(r, "student_ppl_full"); }, not_fp);
  h += chart("student harm vs teacher agreement", "teacher's top-1 disagreement with its own greedy answers",
             "rise of the student's validation perplexity (%)",
             [&](const json& r) { return 1 - r["teacher_agreement"].get<double>(); },
             [&](const json& r) { return rise(r, "student_ppl_full"); }, not_fp);
  // Pre-trained students fine-tuned on the samples (the papers' setting), when the study ran them.
  for (const auto& [field, who] : std::vector<std::pair<std::string, std::string>>{
           {"warm_ppl_reference", "a pre-trained student of another architecture (the reference)"},
           {"warm_ppl_proxy_a", "the proxy itself, fine-tuned (the matched case)"}}) {
    bool all_have = true;
    for (const auto& r : rows) all_have = all_have && r.contains(field);
    if (!all_have) continue;
    h += chart("fine-tuning " + who, "rise of the teacher's sample perplexity (%)",
               "rise of the student's validation perplexity (%)", [&](const json& r) { return rise(r, "sample_ppl"); },
               [&, f = field](const json& r) { return rise(r, f.c_str()); }, not_fp);
  }
  h += "<h2>Fingerprint: evidence in the student against the teacher's cost</h2>\n";
  auto evidence = [](const char* set) {
    return [set](const json& r) {
      const bool wm = r["kind"] == "watermark";
      return minus_log10(r[fmt::format("trace_{}_p_{}", wm ? "wm" : "fp", set)].get<double>());
    };
  };
  h += chart("all samples", "rise of the teacher's sample perplexity (%)", "−log10 p of lineage trace on the student",
             [&](const json& r) { return rise(r, "sample_ppl"); }, evidence("full"), not_ad);
  h += chart("the first samples only", "rise of the teacher's sample perplexity (%)",
             "−log10 p of lineage trace on the student", [&](const json& r) { return rise(r, "sample_ppl"); },
             evidence("small"), not_ad);
  h += "<h2>Every configuration</h2>\n<table><tr><th>configuration</th><th>teacher agreement</th><th>sample ppl</th>"
       "<th>student ppl</th><th>student top-1</th><th>trace p (fingerprint key)</th><th>trace p (watermark key)</th>"
       "<th>same, fewer samples</th></tr>\n";
  for (const auto& r : rows)
    h += fmt::format(
        "<tr><td>{}</td><td class=\"n\">{:.3f}</td><td class=\"n\">{:.2f} ({:+.1f}%)</td><td class=\"n\">{:.2f} "
        "({:+.1f}%)</td><td class=\"n\">{:.3f}</td><td class=\"n\">{:.2g}</td><td class=\"n\">{:.2g}</td><td "
        "class=\"n\">{:.2g} / {:.2g}</td></tr>\n",
        html_escape(r["name"].get<std::string>()), r["teacher_agreement"].get<double>(), r["sample_ppl"].get<double>(),
        rise(r, "sample_ppl"), r["student_ppl_full"].get<double>(), rise(r, "student_ppl_full"),
        r["student_agreement_full"].get<double>(), r["trace_fp_p_full"].get<double>(), r["trace_wm_p_full"].get<double>(),
        r["trace_fp_p_small"].get<double>(), r["trace_wm_p_small"].get<double>());
  h += "</table>\n</body></html>\n";
  return h;
}

std::string write_deterrence_report(const std::string& results, const std::string& out) {
  write_file_atomic(out, render_deterrence_report(results));
  return out;
}

}  // namespace lineage::eval
