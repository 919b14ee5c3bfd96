// Speculative decoding's speed (model/speculative.h): greedy completions of the teacher alone and
// with a draft at each k, in-process on the CPU decoder, the texts checked equal; and, with
// --llama-server [PATH], llama.cpp's server on the same GGUFs alone and with `--model-draft` at
// the same k (one client, the same prompts, temperature 0, every completion --tokens long). Each
// configuration is timed --rounds times, interleaved, and its fastest round kept (a shared
// machine's noise only ever slows a round down). One JSON line per configuration, then the
// speed-ups side by side.
//   bench_speculative [TEACHER.gguf] --draft DRAFT.gguf [--tokens N] [--k-list 2,4,8] [--threads T]
//                     [--rounds R] [--temperature T] [--llama-server [PATH]] [--out FILE]
// --out FILE also writes the JSON lines there: put it in the draft's run directory as
// speculative.jsonl and `lineage report RUN_DIR` shows them.
// --temperature T > 0 samples (seed 1) instead of greedy decoding; the acceptance rate is then the
// one a sampling client sees.
#include <httplib.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <sstream>

#include "bench_common.h"
#include "lineage/core/allocator.h"
#include "lineage/core/file.h"
#include "lineage/core/threads.h"
#include "lineage/io/model_file.h"
#include "lineage/model/cpu_decoder.h"
#include "lineage/model/generate.h"
#include "lineage/model/speculative.h"
#include "lineage/text/tokenizer.h"
#include "llama_server.h"

namespace {

using json = nlohmann::json;

const std::vector<std::string> kPrompts = {"In the beginning", "And the LORD said unto Moses,", "Blessed are the",
                                           "And it came to pass, when", "The heavens declare the glory of God;"};

// Seconds and completion tokens of one pass over the prompts through llama-server, with its own
// draft counts when it reports them.
json llama_pass(int port, int tokens, float temperature) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(300, 0);
  double secs = 0;
  int64_t n = 0, drafted = 0, accepted = 0;
  for (const auto& p : kPrompts) {
    json body = {{"prompt", p}, {"n_predict", tokens}, {"temperature", temperature}, {"seed", 1}, {"ignore_eos", true},
                 {"cache_prompt", false}};
    const double t0 = lineage::bench::now_s();
    auto r = c.Post("/completion", body.dump(), "application/json");
    secs += lineage::bench::now_s() - t0;
    if (!r || r->status != 200) throw std::runtime_error("llama-server /completion failed");
    auto j = json::parse(r->body);
    n += j.value("tokens_predicted", 0);
    if (j.contains("timings")) {
      drafted += j["timings"].value("draft_n", 0);
      accepted += j["timings"].value("draft_n_accepted", 0);
    }
  }
  return {{"seconds", secs}, {"tokens", n}, {"drafted", drafted}, {"accepted", accepted}};
}

}  // namespace

int main(int argc, char** argv) {
  lineage::settle_openmp_wait_policy(argv);
  lineage::tune_allocator();
  std::string teacher = std::string(LINEAGE_SOURCE_DIR) + "/models/lineage-kjv-5m.gguf", draft, llama_server;
  std::vector<int> ks = {2, 4, 8};
  int tokens = 128, threads = 2, rounds = 3;
  float temperature = 0;
  std::string out_path, lines;  // --out FILE: the JSON lines, written there too (lineage report reads them)
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--draft" && i + 1 < argc) draft = argv[++i];
    else if (a == "--out" && i + 1 < argc) out_path = argv[++i];
    else if (a == "--tokens" && i + 1 < argc) tokens = std::stoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::stoi(argv[++i]);
    else if (a == "--temperature" && i + 1 < argc) temperature = std::stof(argv[++i]);
    else if (a == "--rounds" && i + 1 < argc) rounds = std::max(1, std::stoi(argv[++i]));
    else if (a == "--k-list" && i + 1 < argc) {
      ks.clear();
      std::stringstream ss(argv[++i]);
      for (std::string k; std::getline(ss, k, ',');) ks.push_back(std::stoi(k));
    } else if (a == "--llama-server") {
      llama_server = (i + 1 < argc && argv[i + 1][0] != '-')
                         ? argv[++i]
                         : std::string(LINEAGE_SOURCE_DIR) + "/../shared/tools/llama.cpp/bin/llama-server";
    } else if (a.rfind("--", 0) != 0) {
      teacher = a;
    }
  }
  if (draft.empty() || !std::filesystem::exists(draft) || !std::filesystem::exists(teacher)) {
    lineage::bench::emit({{"bench", "speculative"}, {"skipped", "needs --draft DRAFT.gguf and " + teacher}});
    return 0;
  }
  try {
    lineage::model::set_cpu_threads(threads);
    auto tf = lineage::io::read_model(teacher);
    auto df = lineage::io::read_model(draft);
    auto t = lineage::io::make_model(tf, torch::kCPU, torch::kFloat32);
    auto d = lineage::io::make_model(df, torch::kCPU, torch::kFloat32);
    const auto& tok = *tf.tokenizer;
    lineage::model::GenerateOptions g;
    g.max_tokens = tokens;
    g.sampling.temperature = temperature;  // > 0: sampled (seed 1); the texts then differ by design
    g.sampling.seed = 1;
    std::vector<std::vector<int32_t>> prompts;
    for (const auto& p : kPrompts) prompts.push_back(tok.encode(p, tok.vocab().add_bos));

    // k = 0: the teacher alone. Rounds interleave the configurations; the fastest round is kept.
    std::vector<int> configs = {0};
    configs.insert(configs.end(), ks.begin(), ks.end());
    std::map<int, double> best;
    std::map<int, lineage::model::SpeculativeStats> stats;
    std::vector<std::vector<int32_t>> reference;
    bool same = true;
    for (const auto& p : prompts) reference.push_back(lineage::model::generate(t, p, g));  // also warms up
    for (int r = 0; r < rounds; ++r)
      for (int k : configs) {
        lineage::model::SpeculativeStats s;
        const double t0 = lineage::bench::now_s();
        for (size_t i = 0; i < prompts.size(); ++i) {
          auto out = k == 0 ? lineage::model::generate(t, prompts[i], g)
                            : lineage::model::generate_speculative(t, d, prompts[i], g, k, &s);
          same = same && (temperature > 0 || out == reference[i]);
        }
        const double secs = lineage::bench::now_s() - t0;
        if (!best.count(k) || secs < best[k]) best[k] = secs;
        stats[k] = s;
      }
    const double n = static_cast<double>(prompts.size()) * tokens;
    auto emit = [&](const json& j) {
      lineage::bench::emit(j);
      lines += j.dump() + "\n";
    };
    json ours = json::object();
    for (int k : configs) {
      json r = {{"bench", "speculative"}, {"server", "lineage (in-process)"}, {"k", k}, {"tokens_per_s", n / best[k]},
                {"speedup", best[0] / best[k]}, {"threads", threads}};
      if (k > 0) {
        r["acceptance_rate"] = stats[k].acceptance_rate();
        r["tokens_per_check"] = stats[k].tokens_per_verification();
        if (temperature == 0) r["same_text_as_alone"] = same;
        r["temperature"] = temperature;
      }
      emit(r);
      ours[std::to_string(k)] = best[0] / best[k];
    }
    json theirs = json::object();
    if (!llama_server.empty()) {
      if (!std::filesystem::exists(llama_server)) {
        emit({{"bench", "speculative"}, {"skipped", "needs llama-server at " + llama_server}});
      } else {
        const std::string log = (std::filesystem::temp_directory_path() / "bench_speculative_llama_server.log").string();
        std::map<int, double> secs;
        std::map<int, json> last;
        for (int r = 0; r < rounds; ++r)
          for (int k : configs) {
            std::vector<std::string> extra;
            if (k > 0)
              extra = {"--model-draft", draft, "--spec-draft-n-max", std::to_string(k), "--spec-draft-n-min", "0",
                       "--spec-draft-p-min", "0", "--threads-draft", std::to_string(threads)};
            lineage::bench::LlamaServer ls(llama_server, teacher, 1, tf.config.max_seq_len, threads, log, extra);
            llama_pass(ls.port, tokens, temperature);  // warm-up
            auto j = llama_pass(ls.port, tokens, temperature);
            if (!secs.count(k) || j["seconds"].get<double>() < secs[k]) secs[k] = j["seconds"].get<double>();
            last[k] = j;
          }
        for (int k : configs) {
          json r = {{"bench", "speculative"}, {"server", "llama-server"}, {"k", k},
                    {"tokens_per_s", last[k]["tokens"].get<double>() / secs[k]}, {"speedup", secs[0] / secs[k]},
                    {"threads", threads}};
          if (k > 0 && last[k]["drafted"].get<int64_t>() > 0)
            r["acceptance_rate"] = last[k]["accepted"].get<double>() / last[k]["drafted"].get<double>();
          emit(r);
          theirs[std::to_string(k)] = secs[0] / secs[k];
        }
      }
    }
    emit({{"bench", "speculative"}, {"compare", "speed-up over the teacher alone, by k"},
                          {"draft", std::filesystem::path(draft).filename().string()}, {"tokens", tokens},
                          {"lineage", ours}, {"llama-server", theirs}});
    if (!out_path.empty()) lineage::write_file_atomic(out_path, lines);
    return same ? 0 : 1;
  } catch (const std::exception& e) {
    lineage::bench::emit({{"bench", "speculative"}, {"error", e.what()}});
    return 1;
  }
}
