// The run report (see report.h): reads what the run wrote and lays it out; every figure on the
// page comes from those files.
#include "lineage/core/json.h"
#include "lineage/core/units.h"
#include "lineage/eval/report.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/eval/svg_chart.h"

namespace lineage::eval {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct RunMetrics {
  std::vector<std::pair<double, double>> train_loss, valid_loss, valid_ppl;
  std::string objective;  // what the training loss is: "kd", "ce" or "loss"
};

RunMetrics read_metrics(const fs::path& dir) {
  fs::path p = dir / "metrics.jsonl";
  if (!fs::exists(p)) fail("'{}' is not a run directory: metrics.jsonl is missing", dir.string());
  RunMetrics m;
  std::ifstream in(p);
  int64_t line_no = 0;
  bool kd = false;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (line.empty()) continue;
    json j = parse_json_or_discarded(line);
    if (j.is_discarded() || !j.is_object() || !j.contains("step"))
      fail("{}:{}: not a metrics record (a JSON object with \"step\")", p.string(), line_no);
    double step = j["step"].get<double>();
    if (j.contains("split")) {
      if (j.contains("loss")) m.valid_loss.push_back({step, j["loss"].get<double>()});
      if (j.contains("ppl")) m.valid_ppl.push_back({step, j["ppl"].get<double>()});
    } else if (j.contains("loss")) {
      m.train_loss.push_back({step, j["loss"].get<double>()});
      kd = kd || j.contains("kd");
    }
  }
  m.objective = kd ? "KD objective" : "cross-entropy";
  return m;
}

json read_json(const fs::path& p) {
  json j = parse_json_or_discarded(read_file(p));
  if (j.is_discarded()) fail("'{}' is not valid JSON", p.string());
  return j;
}

// Exponential moving average, so a noisy per-step loss reads as a curve.
std::vector<std::pair<double, double>> smooth(const std::vector<std::pair<double, double>>& v, double keep = 0.9) {
  std::vector<std::pair<double, double>> out;
  double acc = 0, w = 0;
  for (auto [x, y] : v) {
    acc = keep * acc + (1 - keep) * y;
    w = keep * w + (1 - keep);
    out.push_back({x, acc / w});
  }
  return out;
}

std::string num(const json& v, const char* f = "{:.4g}") {
  if (!v.is_number()) return "-";
  return fmt::format(fmt::runtime(f), v.get<double>());
}

std::string row(const std::vector<std::string>& cells, bool head = false) {
  std::string s = "<tr>";
  for (size_t i = 0; i < cells.size(); ++i)
    s += fmt::format("<{0}{1}>{2}</{0}>", head ? "th" : "td", i ? " class=\"n\"" : "", cells[i]);
  return s + "</tr>\n";
}

const char* kStyle = R"(body{font-family:sans-serif;max-width:980px;margin:24px auto;padding:0 16px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}td,th{padding:4px 10px;border-bottom:1px solid #eee;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}.lead{font-size:15px;background:#f4f8fb;padding:10px 14px;border-left:4px solid #1f77b4}
pre{background:#f6f6f6;padding:10px;overflow-x:auto;font-size:12px}.muted{color:#777;font-size:12px}svg{margin:6px 0;max-width:100%;height:auto})";


// The lead sentence and the side-by-side table of the run's summary.json.
std::string summary_section(const json& summary, const json& ev) {
  if (!(summary.is_object() && summary.contains("teacher") && summary.contains("student"))) return "";
  std::string h;
  const json &t = summary["teacher"], &s = summary["student"];
  // A teacher known only through its answers has no parameter count, speed or (text only) perplexity here.
  auto known = [](const json& x) { return x.is_number() && x.get<double>() > 0; };
  std::string lead = known(t["parameters"])
                         ? fmt::format("The student has {:.1f}% of the teacher's parameters",
                                       100 * s["parameters"].get<double>() / t["parameters"].get<double>())
                         : fmt::format("The student has {} parameters", group_digits(s["parameters"].get<int64_t>()));
  if (known(t["decode_tokens_per_s"]))
    lead += fmt::format(" and decodes {:.1f}× as fast",
                        s["decode_tokens_per_s"].get<double>() / t["decode_tokens_per_s"].get<double>());
  lead += fmt::format("; its validation perplexity is {:.2f}", s["perplexity"].get<double>());
  if (known(t["perplexity"])) lead += fmt::format(" against the teacher's {:.2f}", t["perplexity"].get<double>());
  if (s.contains("top1_agreement") && s["top1_agreement"].is_number() && s["top1_agreement"].get<double>() >= 0)
    lead += fmt::format(", and it picks the teacher's top token {:.1f}% of the time", 100 * s["top1_agreement"].get<double>());
  if (ev.is_object() && ev.contains("share") && ev["share"].contains("accuracy_kept"))
    lead += fmt::format("; it keeps {:.1f}% of the teacher's benchmark accuracy", 100 * ev["share"]["accuracy_kept"].get<double>());
  h += "<p class=\"lead\">" + html_escape(lead) + ".</p>\n";

  h += "<h2>Teacher and student</h2>\n<table>\n" + row({"", "teacher", "student", "student / teacher"}, true);
  auto ratio = [](const json& a, const json& b, bool pct) -> std::string {
    if (!a.is_number() || !b.is_number() || a.get<double>() <= 0) return "";
    double q = b.get<double>() / a.get<double>();
    return pct ? fmt::format("{:.1f}%", 100 * q) : fmt::format("{:.2f}×", q);
  };
  h += row({"parameters", group_digits(t["parameters"].get<int64_t>()), group_digits(s["parameters"].get<int64_t>()),
            ratio(t["parameters"], s["parameters"], true)});
  h += row({"file size", num(json(t["file_bytes"].get<double>() / 1e6), "{:.2f} MB"),
            num(json(s["file_bytes"].get<double>() / 1e6), "{:.2f} MB"), ratio(t["file_bytes"], s["file_bytes"], true)});
  h += row({"validation perplexity", known(t["perplexity"]) ? num(t["perplexity"], "{:.3f}") : "-", num(s["perplexity"], "{:.3f}"),
            ratio(t["perplexity"], s["perplexity"], false)});
  const double agree = s.value("top1_agreement", -1.0), kl = s.value("kl", -1.0);
  h += row({"top-1 agreement with the teacher", "-", agree >= 0 ? num(json(100 * agree), "{:.1f}%") : "-", ""});
  h += row({"KL(teacher ‖ student)", "-", kl >= 0 ? num(json(kl), "{:.4f}") : "-", ""});
  const double alpha = s.value("acceptance", -1.0);
  if (alpha >= 0)  // Leviathan et al.'s α: the share of the student's tokens the teacher keeps as a draft
    h += row({"acceptance as a speculative draft (α)", "-", num(json(100 * alpha), "{:.1f}%"), ""});
  h += row({"decode tokens/s", num(t["decode_tokens_per_s"], "{:.0f}"), num(s["decode_tokens_per_s"], "{:.0f}"),
            ratio(t["decode_tokens_per_s"], s["decode_tokens_per_s"], false)});
  h += "</table>\n";
  return h;
}

// The benchmark table of an eval.json (lineage eval), teacher beside student when both were run.
std::string benchmark_section(const json& ev) {
  if (!(ev.is_object() && ev.contains("models"))) return "";
  std::string h;
  const json& em = ev["models"];
  const bool pair = em.contains("teacher");
  h += "<h2>Benchmarks (lineage eval)</h2>\n<table>\n" +
       row(pair ? std::vector<std::string>{"", "teacher", "student", "student / teacher"}
                : std::vector<std::string>{"", "model"}, true);
  if (em["model"].contains("tasks"))
    for (const auto& [task, r] : em["model"]["tasks"].items()) {
      for (const char* metric : {"acc", "acc_norm"}) {
        if (!r.contains(metric)) continue;
        std::string label = task + " " + metric;
        std::string sv = fmt::format("{:.1f}%", 100 * r[metric].get<double>());
        if (pair && em["teacher"].contains("tasks") && em["teacher"]["tasks"].contains(task)) {
          double tv = em["teacher"]["tasks"][task][metric].get<double>();
          h += row({label, fmt::format("{:.1f}%", 100 * tv), sv, tv > 0 ? fmt::format("{:.1f}%", 100 * r[metric].get<double>() / tv) : ""});
        } else {
          h += row({label, sv});
        }
      }
    }
  h += "</table>\n";
  return h;
}

// Loss and validation perplexity curves, with the CE-only baseline and the teacher's level.
std::string curves_section(const RunMetrics& m, const RunMetrics& base, const json& summary) {
  std::string h;
  h += "<h2>Training</h2>\n";
  std::vector<Series> loss;
  loss.push_back({"training " + m.objective + " (smoothed)", smooth(m.train_loss), "#1f77b4"});
  loss.push_back({"validation cross-entropy", m.valid_loss, "#d62728", false, true});
  if (!base.train_loss.empty()) {
    loss.push_back({"CE-only baseline: training", smooth(base.train_loss), "#1f77b4", true});
    loss.push_back({"CE-only baseline: validation", base.valid_loss, "#d62728", true, true});
  }
  h += line_chart(loss, {"Loss", "step", "loss", 900, 340});
  if (!m.valid_ppl.empty()) {
    std::vector<Series> ppl = {{"student", m.valid_ppl, "#d62728", false, true}};
    if (!base.valid_ppl.empty()) ppl.push_back({"CE-only baseline", base.valid_ppl, "#7f7f7f", true, true});
    if (summary.is_object() && summary.contains("teacher")) {
      double tp = summary["teacher"]["perplexity"].get<double>();
      double x0 = m.valid_ppl.front().first, x1 = m.valid_ppl.back().first;
      if (!base.valid_ppl.empty()) x0 = std::min(x0, base.valid_ppl.front().first), x1 = std::max(x1, base.valid_ppl.back().first);
      if (!m.train_loss.empty()) x0 = std::min(x0, m.train_loss.front().first);
      ppl.push_back({"teacher", {{x0, tp}, {x1, tp}}, "#2ca02c", true});
    }
    h += line_chart(ppl, {"Validation perplexity", "step", "perplexity (log scale)", 900, 300, true});
  }

  return h;
}

// Quality kept versus cost saved: the student at each measure of cost, as a share of the teacher's.
std::string quality_section(const json& summary, const json& ev) {
  if (!(summary.is_object() && summary.contains("teacher") && summary.contains("student"))) return "";
  std::string h;
  const json &t = summary["teacher"], &s = summary["student"];
  double kept = 100 * t["perplexity"].get<double>() / s["perplexity"].get<double>();
  std::string what = "perplexity kept (teacher ppl / student ppl)";
  if (ev.is_object() && ev.contains("share") && ev["share"].contains("accuracy_kept")) {
    kept = 100 * ev["share"]["accuracy_kept"].get<double>();
    what = "benchmark accuracy kept";
  }
  std::vector<LabeledPoint> pts = {
      {"parameters", 100 * s["parameters"].get<double>() / t["parameters"].get<double>(), kept},
      {"file size", 100 * s["file_bytes"].get<double>() / t["file_bytes"].get<double>(), kept, "#9467bd"}};
  if (s["decode_tokens_per_s"].get<double>() > 0)
    pts.push_back({"decode time", 100 * t["decode_tokens_per_s"].get<double>() / s["decode_tokens_per_s"].get<double>(), kept,
                   "#ff7f0e"});
  h += "<h2>Quality kept versus cost</h2>\n<p class=\"muted\">Each point is the student at one measure of cost, as a "
       "share of the teacher's (the teacher sits at 100, 100). Up and to the left is better. Quality: " +
       html_escape(what) + ".</p>\n";
  h += scatter_chart(pts, {"Quality kept vs cost", "cost, % of the teacher", "quality kept, %", 640, 360}, 100, 100);
  return h;
}

// The provenance table and lineage.json itself.
std::string provenance_section(const json& prov) {
  if (!(prov.is_object() && !prov.empty())) return "";
  std::string h;
  h += "<h2>Provenance</h2>\n<table>\n";
  auto add = [&](const std::string& k, const std::string& v) {
    h += "<tr><td>" + html_escape(k) + "</td><td><code>" + html_escape(v) + "</code></td></tr>\n";
  };
  if (prov.contains("command")) add("command", prov["command"].get<std::string>());
  if (prov.contains("teacher") && prov["teacher"].is_object()) {
    add("teacher", prov["teacher"].value("source", "?"));
    add("teacher sha256", prov["teacher"].value("sha256", "?"));
    add("teacher license", prov["teacher"]["license"].is_string() ? prov["teacher"]["license"].get<std::string>() : "unknown");
  }
  if (prov.contains("data") && prov["data"].contains("files"))
    for (const auto& f : prov["data"]["files"]) add("data " + f.value("path", "?"), f.value("sha256", "?"));
  if (prov.contains("tool")) add("tool", prov["tool"].value("name", "") + " " + prov["tool"].value("version", ""));
  if (prov.contains("started_at")) add("started", prov["started_at"].get<std::string>());
  if (prov.contains("finished_at")) add("finished", prov["finished_at"].get<std::string>());
  h += "</table>\n<details><summary>lineage.json</summary><pre>" + html_escape(prov.dump(2)) + "</pre></details>\n";
  return h;
}

// The student as its teacher's speculative draft (bench_speculative --out FILE): per k, the
// acceptance rate, the tokens each check of the teacher yields, tokens/s and the speed-up over the
// teacher alone, for Lineage's decoder and for llama-server when the bench ran it too.
std::string speculative_section(const fs::path& path) {
  if (path.empty()) return "";
  std::ifstream in(path);
  if (!in) fail("cannot read the speculative bench's results '{}'", path.string());
  std::vector<json> rows;
  int64_t line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (line.empty()) continue;
    json j = parse_json_or_discarded(line);
    if (j.is_discarded() || !j.is_object() || j.value("bench", "") != "speculative")
      fail("{}:{}: not a line of bench_speculative (a JSON object with \"bench\": \"speculative\")", path.string(), line_no);
    if (j.contains("k") && j.contains("tokens_per_s") && j.contains("server")) rows.push_back(j);
  }
  if (rows.empty()) fail("'{}' holds no configuration of bench_speculative (lines with k and tokens_per_s)", path.string());
  auto cell = [](const json& j, const char* key, const char* f, double scale = 1) -> std::string {
    return j.contains(key) && j[key].is_number() ? fmt::format(fmt::runtime(f), scale * j[key].get<double>()) : "-";
  };
  std::string h = "<h2>As a speculative draft (bench_speculative)</h2>\n<p class=\"muted\">The student proposes k tokens, "
                  "the teacher checks them in one pass; greedy output is the teacher's own. k = 0 is the teacher "
                  "alone.</p>\n<table>\n" +
                  row({"decoder", "k", "acceptance", "tokens per check", "tokens/s", "speed-up"}, true);
  for (const auto& j : rows)
    h += row({html_escape(j["server"].get<std::string>()), std::to_string(j["k"].get<int>()), cell(j, "acceptance_rate", "{:.1f}%", 100),
              cell(j, "tokens_per_check", "{:.2f}"), cell(j, "tokens_per_s", "{:.0f}"), cell(j, "speedup", "{:.2f}×")});
  return h + "</table>\n";
}

}  // namespace

std::string render_report(const ReportOptions& o) {
  fs::path dir(o.run_dir);
  if (!fs::is_directory(dir)) fail("run directory '{}' does not exist", o.run_dir);
  RunMetrics m = read_metrics(dir);
  json prov = fs::exists(dir / "lineage.json") ? read_json(dir / "lineage.json") : json::object();
  json summary = fs::exists(dir / "summary.json") ? read_json(dir / "summary.json") : json();
  fs::path eval_path = o.eval_json.empty() ? dir / "eval.json" : fs::path(o.eval_json);
  if (!o.eval_json.empty() && !fs::exists(eval_path)) fail("--eval '{}' does not exist", o.eval_json);
  json ev = fs::exists(eval_path) ? read_json(eval_path) : json();
  RunMetrics base;
  if (!o.baseline.empty()) base = read_metrics(o.baseline);
  if (!o.speculative.empty() && !fs::exists(o.speculative)) fail("--speculative '{}' does not exist", o.speculative);
  const fs::path speculative = !o.speculative.empty()                  ? fs::path(o.speculative)
                               : fs::exists(dir / "speculative.jsonl") ? dir / "speculative.jsonl"
                                                                        : fs::path();

  const std::string kind = prov.value("kind", std::string("run"));
  const std::string name = fs::absolute(dir).lexically_normal().filename().string();
  std::string h = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>Lineage report: " +
                  html_escape(name) + "</title>\n<style>" + kStyle + "</style></head><body>\n";
  h += fmt::format("<h1>Lineage {} report: {}</h1>\n", html_escape(kind), html_escape(name));
  if (prov.contains("teacher") && prov["teacher"].is_object())
    h += fmt::format("<p class=\"muted\">teacher {} · mode {} · {} steps · {} tokens · finished {}</p>\n",
                     html_escape(prov["teacher"].value("source", "?")),
                     html_escape(prov.contains("recipe") ? prov["recipe"].value("mode", "?") : "?"),
                     prov.contains("steps_done") ? group_digits(prov["steps_done"].get<int64_t>()) : "?",
                     prov.contains("tokens_seen") ? group_digits(prov["tokens_seen"].get<int64_t>()) : "?",
                     html_escape(prov.value("finished_at", std::string("(not finished)"))));

  h += summary_section(summary, ev) + speculative_section(speculative) + benchmark_section(ev) + curves_section(m, base, summary) +
       quality_section(summary, ev) + provenance_section(prov);
  h += "<p class=\"muted\">Written by lineage report from " + html_escape(fs::absolute(dir).lexically_normal().string()) +
       ".</p>\n</body></html>\n";
  return h;
}

std::string write_report(const ReportOptions& o) {
  std::string html = render_report(o);
  fs::path out = o.out.empty() ? fs::path(o.run_dir) / "report.html" : fs::path(o.out);
  write_file_atomic(out, html);
  return out.string();
}

}  // namespace lineage::eval
