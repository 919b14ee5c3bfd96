// lineage eval (see eval_run.h): loads the model (and teacher), scores the text and the tasks,
// measures cost, prints the side-by-side table and writes the JSON.
#include "lineage/core/device.h"
#include "lineage/core/units.h"
#include "lineage/eval/eval_run.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>

#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/core/hash.h"
#include "lineage/eval/cost.h"
#include "lineage/eval/score.h"
#include "lineage/io/model_file.h"
#include "lineage/text/vocab_digest.h"

namespace lineage::eval {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct Loaded {
  io::ModelFile file;
  model::Llama net{nullptr};
  int64_t peak_rss = -1;
};

Loaded load(const std::string& path, const std::string& tokenizer, torch::Device device, torch::Dtype dtype,
            const char* role) {
  if (!fs::exists(path)) fail("{} '{}' does not exist", role, path);
  PeakMemory mem;
  mem.reset();
  Loaded m;
  m.file = io::read_model(path, tokenizer);
  if (!m.file.tokenizer)
    fail("no tokenizer for {} '{}': pass --tokenizer (a llama2.c checkpoint keeps it in a separate tokenizer.bin)", role,
         path);
  m.net = io::make_model(m.file, device, dtype);
  m.file.weights.clear();  // the model holds its own copy
  m.peak_rss = mem.peak_since_reset();
  return m;
}

std::vector<int32_t> text_tokens(const text::Tokenizer& tok, const std::string& text, int64_t limit) {
  auto ids = tok.encode(text, tok.vocab().add_bos);  // BOS by the tokenizer's rule, as llama-perplexity
  if (limit > 0 && static_cast<int64_t>(ids.size()) > limit) ids.resize(static_cast<size_t>(limit));
  return ids;
}

json model_json(const Loaded& m, const std::string& path) {
  return {{"path", path},
          {"name", m.file.name.empty() ? fs::path(path).filename().string() : m.file.name},
          {"format", io::format_name(m.file.format)},
          {"config", {{"dim", m.file.config.dim}, {"layers", m.file.config.n_layers}, {"heads", m.file.config.n_heads},
                      {"kv_heads", m.file.config.n_kv_heads}, {"hidden", m.file.config.hidden_dim},
                      {"vocab", m.file.config.vocab_size}, {"context", m.file.config.max_seq_len}}}};
}

// The task's headline figure: acc_norm where there is one (ARC, HellaSwag, PIQA report it), else acc.
double headline(const json& t) { return t.contains("acc_norm") ? t["acc_norm"].get<double>() : t["acc"].get<double>(); }


// Perplexity of `text` under the model and, with a teacher of the same tokenizer, their agreement
// token by token (a teacher of another tokenizer gets its own perplexity only).
TextScore score_with(const EvalOptions& o, Loaded& m, const std::vector<int32_t>& ids, model::Llama* teacher) {
  if (o.ppl_method == "chunks") {
    const text::Vocab& v = m.file.tokenizer->vocab();
    return score_chunks(m.net, ids, o.window, v.add_bos ? v.bos_id : -1, teacher, 4, o.quiet);
  }
  return score_text(m.net, ids, o.window, o.stride, teacher, 4, o.quiet);
}

void eval_text(const EvalOptions& o, const std::string& text, std::map<std::string, Loaded>& models, json& result) {
  if (o.ppl_method != "sliding" && o.ppl_method != "chunks")
    fail("--ppl-method '{}' is not one Lineage knows: expected sliding or chunks", o.ppl_method);
  result["text"] = {{"path", o.text}, {"bytes", text.size()}, {"sha256", hex(sha256(text))}, {"ppl_method", o.ppl_method}};
  Loaded& m = models["model"];
  // chunks tokenizes as llama-perplexity does: BOS first only when the vocabulary adds one.
  auto tokens = [&](const text::Tokenizer& tok) {
    if (o.ppl_method != "chunks") return text_tokens(tok, text, o.text_limit);
    auto ids = tok.encode(text, tok.vocab().add_bos);
    if (o.text_limit > 0 && static_cast<int64_t>(ids.size()) > o.text_limit) ids.resize(static_cast<size_t>(o.text_limit));
    return ids;
  };
  auto ids = tokens(*m.file.tokenizer);
  model::Llama* teacher = nullptr;
  if (models.count("teacher")) {
    Loaded& t = models["teacher"];
    if (text::vocab_digest(t.file.tokenizer->vocab()) == text::vocab_digest(m.file.tokenizer->vocab())) {
      teacher = &t.net;
    } else {
      // Different tokenizers: each model's own perplexity, no per-token agreement.
      result["models"]["teacher"]["text"] = score_with(o, t, tokens(*t.file.tokenizer), nullptr).to_json();
      result["agreement_note"] = "the teacher and the model tokenize differently: no per-token agreement";
    }
  }
  TextScore s = score_with(o, m, ids, teacher);
  result["models"]["model"]["text"] = s.to_json();
  if (teacher) {
    result["models"]["teacher"]["text"] = {{"tokens", s.tokens}, {"positions", s.positions},
                                           {"perplexity", s.reference_perplexity}, {"nll", std::log(s.reference_perplexity)}};
    result["agreement"] = {{"kl", s.kl}, {"top1_agreement", s.top1_agreement}, {"mean_delta_p", s.mean_delta_p},
                           {"rms_delta_p", s.rms_delta_p}, {"positions", s.positions}};
  }
}

// What running the model costs: size, FLOPs per token, prefill and decode speed, peak memory.
json eval_cost(Loaded& m, const std::string& path, const std::string& text) {
  CostFigures c;
  c.parameters = m.file.config.num_parameters();
  c.file_bytes = path_bytes(path);
  c.flops_per_token = m.file.config.flops_per_token(m.file.config.max_seq_len / 2);
  const auto& tok = *m.file.tokenizer;
  std::vector<int32_t> prompt = text.empty() ? tok.encode("Once upon a time, there was a little", tok.vocab().add_bos)
                                             : text_tokens(tok, text, 0);
  prompt.resize(std::min<size_t>(prompt.size(), static_cast<size_t>(std::min<int64_t>(128, m.file.config.max_seq_len))));
  PeakMemory mem;
  mem.reset();
  measure_speed(m.net, prompt, std::min<int>(64, static_cast<int>(m.file.config.max_seq_len) - 8), 3, c);
  int64_t run_peak = mem.peak_since_reset();
  c.peak_rss_bytes = m.peak_rss < 0 || run_peak < 0 ? -1 : m.peak_rss + run_peak;
  return c.to_json();
}

// The student's share of the teacher, for the table's last column and the summary line.
json share_of_teacher(const json& result) {
  const json& t = result["models"]["teacher"];
  const json& s = result["models"]["model"];
  json share = json::object();
  if (t.contains("tasks") && !t["tasks"].empty()) {
    double ts = 0, ss = 0;
    for (const auto& [name, tr] : t["tasks"].items()) {
      ts += headline(tr);
      ss += headline(s["tasks"][name]);
    }
    if (ts > 0) share["accuracy_kept"] = ss / ts;
  }
  if (t.contains("cost")) {
    share["parameters"] = double(s["cost"]["parameters"].get<int64_t>()) / double(t["cost"]["parameters"].get<int64_t>());
    share["file_bytes"] = double(s["cost"]["file_bytes"].get<int64_t>()) / double(t["cost"]["file_bytes"].get<int64_t>());
    share["flops_per_token"] = s["cost"]["flops_per_token"].get<double>() / t["cost"]["flops_per_token"].get<double>();
    if (t["cost"]["decode_tokens_per_s"].get<double>() > 0)
      share["decode_speedup"] = s["cost"]["decode_tokens_per_s"].get<double>() / t["cost"]["decode_tokens_per_s"].get<double>();
  }
  return share;
}

}  // namespace

json run_eval(const EvalOptions& o) {
  if (o.model.empty()) fail("no model given (--model PATH)");
  if (o.tasks.empty() && o.text.empty() && !o.cost) fail("nothing to do: give --task FILE, --text FILE, or drop --no-cost");
  if (o.limit < 0) fail("--limit must be >= 0, got {}", o.limit);
  if (o.max_batch_tokens < 1) fail("--batch-tokens must be >= 1, got {}", o.max_batch_tokens);
  // Every input is read before any model runs: a bad task file fails in a second.
  std::vector<Task> tasks;
  for (const auto& f : o.tasks) tasks.push_back(load_task(f, o.limit));
  std::string text;
  if (!o.text.empty()) {
    if (!fs::exists(o.text)) fail("--text '{}' does not exist", o.text);
    text = read_file(o.text);
    if (text.empty()) fail("--text '{}' is empty", o.text);
  }
  const torch::Device device = parse_device(o.device);
  const torch::Dtype dtype = parse_dtype(o.dtype);
  const auto t0 = std::chrono::steady_clock::now();

  std::vector<std::pair<std::string, std::string>> roles;  // (role, path)
  if (!o.teacher.empty()) roles.push_back({"teacher", o.teacher});
  roles.push_back({"model", o.model});
  std::map<std::string, Loaded> models;
  for (const auto& [role, path] : roles) models[role] = load(path, o.tokenizer, device, dtype, role == "model" ? "model" : "teacher");

  json result = {{"kind", "eval"}, {"tool", {{"name", "lineage"}, {"version", LINEAGE_VERSION}}}, {"models", json::object()}};
  for (const auto& [role, path] : roles) result["models"][role] = model_json(models[role], path);

  if (!text.empty()) eval_text(o, text, models, result);
  for (const auto& task : tasks) {
    for (const auto& [role, path] : roles) {
      Loaded& m = models[role];
      TaskResult r = score_task(m.net, *m.file.tokenizer, task, o.max_batch_tokens, o.quiet);
      result["models"][role]["tasks"][task.name] = r.to_json();
    }
  }

  if (o.cost)
    for (const auto& [role, path] : roles) result["models"][role]["cost"] = eval_cost(models[role], path, text);

  if (models.count("teacher")) result["share"] = share_of_teacher(result);
  result["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!o.json_out.empty()) write_file_atomic(o.json_out, result.dump(2) + "\n");
  return result;
}

namespace {

std::string fmt_value(const json& v, const std::string& kind) {
  if (v.is_null()) return "-";
  double x = v.get<double>();
  if (kind == "pct") return fmt::format("{:.1f}%", 100 * x);
  if (kind == "int") return group_digits(static_cast<int64_t>(x));
  if (kind == "bytes") {
    if (x < 0) return "-";
    if (x >= 1e9) return fmt::format("{:.2f} GB", x / 1e9);
    if (x >= 1e6) return fmt::format("{:.2f} MB", x / 1e6);
    return fmt::format("{:.1f} kB", x / 1e3);
  }
  if (kind == "flops") {
    if (x >= 1e9) return fmt::format("{:.2f} G", x / 1e9);
    if (x >= 1e6) return fmt::format("{:.2f} M", x / 1e6);
    return fmt::format("{:.1f} k", x / 1e3);
  }
  if (kind == "rate") return fmt::format("{:.0f}", x);
  return fmt::format("{:.4g}", x);
}

const json* find(const json& j, const std::vector<std::string>& path) {
  const json* p = &j;
  for (const auto& k : path) {
    if (!p->is_object() || !p->contains(k)) return nullptr;
    p = &(*p)[k];
  }
  return p;
}

}  // namespace

std::string format_eval(const json& r) {
  const bool pair = r["models"].contains("teacher");
  struct Row {
    std::string label;
    std::vector<std::string> path;
    std::string kind;
    bool higher_better;
  };
  std::vector<Row> rows;
  if (r.contains("text")) rows.push_back({"perplexity (" + fs::path(r["text"]["path"].get<std::string>()).filename().string() + ")",
                                          {"text", "perplexity"}, "num", false});
  const json& mt = r["models"]["model"];
  if (mt.contains("tasks"))
    for (const auto& [name, t] : mt["tasks"].items()) {
      if (t["kind"] == "cloze") {
        rows.push_back({name + " acc", {"tasks", name, "acc"}, "pct", true});
        rows.push_back({name + " perplexity", {"tasks", name, "perplexity"}, "num", false});
      } else {
        rows.push_back({name + " acc", {"tasks", name, "acc"}, "pct", true});
        rows.push_back({name + " acc_norm", {"tasks", name, "acc_norm"}, "pct", true});
      }
    }
  if (mt.contains("cost")) {
    rows.push_back({"parameters", {"cost", "parameters"}, "int", false});
    rows.push_back({"file size", {"cost", "file_bytes"}, "bytes", false});
    rows.push_back({"FLOPs/token", {"cost", "flops_per_token"}, "flops", false});
    rows.push_back({"prefill tokens/s", {"cost", "prefill_tokens_per_s"}, "rate", true});
    rows.push_back({"decode tokens/s", {"cost", "decode_tokens_per_s"}, "rate", true});
    rows.push_back({"peak memory", {"cost", "peak_rss_bytes"}, "bytes", false});
  }
  std::string out;
  const std::string mname = mt["name"].get<std::string>();
  if (pair) {
    const json& tt = r["models"]["teacher"];
    out += fmt::format("{:<34}{:>14}{:>14}{:>16}\n", "", "teacher", "model", "model/teacher");
    for (const auto& row : rows) {
      const json* a = find(tt, row.path);
      const json* b = find(mt, row.path);
      std::string ratio;
      if (a && b && a->is_number() && b->is_number() && a->get<double>() > 0 && b->get<double>() >= 0) {
        double q = b->get<double>() / a->get<double>();
        ratio = (row.kind == "rate" || row.kind == "num") ? fmt::format("{:.2f}x", q) : fmt::format("{:.1f}%", 100 * q);
      }
      out += fmt::format("{:<34}{:>14}{:>14}{:>16}\n", row.label, a ? fmt_value(*a, row.kind) : "-",
                         b ? fmt_value(*b, row.kind) : "-", ratio);
    }
    if (r.contains("agreement")) {
      const json& g = r["agreement"];
      out += fmt::format("{:<34}{:>14}{:>14}\n", "KL(teacher||model)", "-", fmt::format("{:.4f}", g["kl"].get<double>()));
      out += fmt::format("{:<34}{:>14}{:>14}\n", "same top token", "-", fmt_value(g["top1_agreement"], "pct"));
      out += fmt::format("{:<34}{:>14}{:>14}\n", "mean / RMS delta p(true token)", "-",
                         fmt::format("{:+.2f}/{:.2f}%", 100 * g["mean_delta_p"].get<double>(), 100 * g["rms_delta_p"].get<double>()));
    }
    const json& sh = r["share"];
    std::vector<std::string> parts;
    if (sh.contains("accuracy_kept")) parts.push_back(fmt::format("keeps {:.1f}% of the teacher's benchmark accuracy", 100 * sh["accuracy_kept"].get<double>()));
    if (sh.contains("parameters")) parts.push_back(fmt::format("at {:.1f}% of its parameters", 100 * sh["parameters"].get<double>()));
    if (sh.contains("decode_speedup")) parts.push_back(fmt::format("{:.1f}x its decode speed", sh["decode_speedup"].get<double>()));
    if (!parts.empty()) out += "\n" + mname + ": " + fmt::format("{}", fmt::join(parts, ", ")) + "\n";
  } else {
    out += fmt::format("{:<34}{:>14}\n", "", mname.substr(0, 14));
    for (const auto& row : rows) {
      const json* b = find(mt, row.path);
      out += fmt::format("{:<34}{:>14}\n", row.label, b ? fmt_value(*b, row.kind) : "-");
    }
  }
  if (mt.contains("tasks")) {
    out += "\n";
    for (const auto& [name, t] : mt["tasks"].items()) {
      out += fmt::format("{}: {} ({} items", name, t["kind"].get<std::string>(), t["items"].get<int64_t>());
      if (t["kind"] != "cloze") out += fmt::format(", chance {:.1f}%", 100 * t["chance"].get<double>());
      out += fmt::format(", ±{:.1f}% stderr)\n", 100 * t["acc_stderr"].get<double>());
    }
  }
  out += fmt::format("wall time {:.1f} s\n", r["seconds"].get<double>());
  return out;
}

}  // namespace lineage::eval
