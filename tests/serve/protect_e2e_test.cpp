// The owner's side end to end on the embedded teacher, served by `lineage serve` on loopback:
//  - `--watermark-key`: 200-token completions are flagged by the detector (z > 4) and plain ones
//    are not; the watermark's quality cost is the perplexity the unwatermarked teacher gives each;
//  - radioactivity (Sander et al. 2024): a student trained with `lineage train` on KJV text in which
//    5% of the tokens are the watermarked server's completions is traced by `lineage trace` with
//    p < 1e-6; the same student trained with the unwatermarked server's completions is not
//    (p > 0.01); over 100 random wrong keys the p-values of the watermarked student are calibrated
//    (at most a few below 0.01); and both verdicts hold again with the students behind `lineage
//    serve`, read through their top-20 log-probabilities only.
// Figures are printed for the closing note.
//
// CI runs a reduced size: the completions 20% of the students' training text, 400 steps (about four
// passes over a 0.2M-token mix), and the first 60,000 held-out tokens read by the traces (with h = 1
// a trace scores each distinct context once: ~1,500 of them there, ~1,650 in the whole text).
// (Half as many completions and steps gave z = 4.4: too close to the 4.75 that p < 1e-6 needs.)
// LINEAGE_FULL_E2E=1 runs the full size (200 completions, 5%, 1,600 steps over 0.8M tokens, the
// whole held-out text; ~25 min on 2 cores), whose figures the README gives.
#include <sys/stat.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <fstream>

#include "lineage/io/model_file.h"
#include "lineage/protect/detect.h"
#include "lineage/protect/trace.h"
#include "lineage/teacher/http_teacher.h"
#include "lineage/teacher/teacher.h"
#include "serve/serving.h"
#include "test_util.h"

namespace lineage::protect {
namespace {
namespace fs = std::filesystem;

namespace lt = lineage::testing;
using json = nlohmann::json;

struct Harvest {
  std::vector<std::vector<int32_t>> prompts, completions;
};

Harvest harvest(const std::string& url, std::shared_ptr<text::Tokenizer> tok, const std::vector<int32_t>& kjv, int n,
                int tokens, uint64_t seed) {
  teacher::HttpTeacherOptions o;
  o.tokenizer = tok;
  o.concurrency = 16;
  o.quiet = true;
  o.extra_body = R"({"ignore_eos": true})";  // every completion is `tokens` long
  teacher::HttpTeacher t(url, o);
  Harvest h;
  std::vector<model::GenerateOptions> g(n);
  for (int i = 0; i < n; ++i) {
    // Prompts: 16 tokens from evenly spaced places of the training text, after BOS.
    size_t at = (kjv.size() - 16) * i / n;
    std::vector<int32_t> p{tok->bos_id()};
    p.insert(p.end(), kjv.begin() + at, kjv.begin() + at + 16);
    h.prompts.push_back(std::move(p));
    g[i].max_tokens = tokens;
    g[i].sampling = {1.0f, 0, 1.0f, seed + i};
  }
  h.completions = t.generate_many(h.prompts, g);
  return h;
}

// Mean negative log-likelihood per completion token under `model` (the unwatermarked teacher).
double perplexity(teacher::LocalTeacher& model, const Harvest& h) {
  double nll = 0;
  int64_t n = 0;
  for (size_t i = 0; i < h.prompts.size(); ++i) {
    std::vector<int64_t> ids(h.prompts[i].begin(), h.prompts[i].end());
    ids.insert(ids.end(), h.completions[i].begin(), h.completions[i].end());
    auto tok = torch::tensor(ids, torch::kLong).view({1, -1});
    auto logp = torch::log_softmax(model.logits(tok.slice(1, 0, -1)).to(torch::kFloat32), -1)[0];  // (T, V)
    for (size_t p = h.prompts[i].size(); p < ids.size(); ++p, ++n) nll -= logp[p - 1][ids[p]].item<double>();
  }
  return std::exp(nll / std::max<int64_t>(1, n));
}

TEST(Protection, WatermarkedServingIsDetectedAndAStudentOfItIsTraced) {
  LINEAGE_REQUIRE_EMBEDDED_TEACHER_AND_KJV();
  const bool full = std::getenv("LINEAGE_FULL_E2E") != nullptr;
  const int share_pct = full ? 5 : 20;  // the watermarked completions' share of the training text
  const int steps = full ? 1600 : 400;
  lt::TempDir scratch;
  // LINEAGE_PROTECT_TEST_DIR keeps what the test makes (students, logs) for a look afterwards.
  const char* keep = std::getenv("LINEAGE_PROTECT_TEST_DIR");
  const fs::path tmp = keep ? fs::path(keep) : scratch.path;
  fs::create_directories(tmp);
  ASSERT_TRUE(lt::write_kjv(tmp / "kjv.txt"));
  auto tok = io::load_tokenizer(lt::kServedModel);
  // The last 15% of the KJV is held out: the text the suspects read in the test.
  std::string kjv_text = lt::slurp(tmp / "kjv.txt");
  size_t cut = kjv_text.rfind("\n\n", kjv_text.size() * 85 / 100);
  std::string train_text = kjv_text.substr(0, cut), held_text = kjv_text.substr(cut + 2);
  auto train_ids = tok->encode(train_text, false);

  const auto key_path = tmp / "owner.key";
  fs::remove(key_path);
  // A fixed key: the innocent student's p-value for it is one draw of a uniform, and a fixed draw
  // keeps the test from failing 1% of runs by design.
  lt::spit(key_path, "6c696e656167652d746573742d6b65792d313233343536373839306162636465\n");
  ::chmod(key_path.c_str(), 0600);
  Watermark wm(WatermarkKey::read(key_path), {});

  const int kGenerations = 200, kTokens = 200;
  Harvest marked, plain;
  {
    serve::ServeOptions so;
    so.watermark_key = key_path.string();
    so.max_batch = 32;
    lt::Serving s(so);
    marked = harvest(s.url(), tok, train_ids, kGenerations, kTokens, 1000);
  }
  {
    serve::ServeOptions so;
    so.max_batch = 32;
    lt::Serving s(so);
    plain = harvest(s.url(), tok, train_ids, kGenerations, kTokens, 1000);
  }
  // Served, each completion is 200 tokens; through text, an end-of-text the model sampled (and went
  // on past) decodes to nothing, so a few come back a token or two shorter.
  for (const auto* h : {&marked, &plain})
    for (const auto& c : h->completions) ASSERT_GE(static_cast<int>(c.size()), kTokens - 10) << "ignore_eos was not honoured";

  // Detection, through text as a user runs it: JSONL prompt/completion pairs, one verdict each.
  auto detect_all = [&](const Harvest& h, std::vector<double>& zs) {
    int flagged = 0;
    for (size_t i = 0; i < h.prompts.size(); ++i) {
      std::vector<int32_t> prompt_no_bos(h.prompts[i].begin() + 1, h.prompts[i].end());
      json pair = {{"prompt", tok->decode(prompt_no_bos)}, {"completion", tok->decode(h.completions[i])}};
      auto v = detect_text(wm, *tok, pair.dump() + "\n", "pair");
      zs.push_back(v.z);
      flagged += v.flagged;
    }
    return flagged;
  };
  std::vector<double> zm, zp;
  int hit = detect_all(marked, zm), false_alarm = detect_all(plain, zp);
  // And plain human text: 200-token passages of the held-out KJV.
  auto held_ids = tok->encode(held_text, false);
  int passages = 0, passage_alarms = 0;
  for (size_t at = 0; at + 200 <= held_ids.size() && passages < 200; at += held_ids.size() / 200, ++passages) {
    GreenCounter c(wm);
    c.add(std::vector<int32_t>(held_ids.begin() + at, held_ids.begin() + at + 200));
    passage_alarms += c.z() > 4;
  }
  std::sort(zm.begin(), zm.end());
  std::sort(zp.begin(), zp.end());
  teacher::LocalTeacher clean_teacher(lt::kServedModel, torch::kCPU);
  double ppl_marked = perplexity(clean_teacher, marked), ppl_plain = perplexity(clean_teacher, plain);
  std::printf("detect: watermarked %d/%d flagged (z > 4; median z %.2f, lowest %.2f), plain generations %d/%d (highest z %.2f), "
              "KJV passages %d/%d; perplexity under the plain teacher: watermarked %.3f, plain %.3f\n",
              hit, kGenerations, zm[zm.size() / 2], zm.front(), false_alarm, kGenerations, zp.back(), passage_alarms, passages,
              ppl_marked, ppl_plain);
  EXPECT_GE(hit, 0.98 * kGenerations);
  EXPECT_LE(false_alarm + passage_alarms, 0.01 * (kGenerations + passages));

  // Radioactivity: training text = held-in KJV + the prompts and completions, the completions
  // share_pct% of the tokens.
  int64_t gen_tokens = 0, prompt_tokens = 0;
  for (auto& c : marked.completions) gen_tokens += static_cast<int64_t>(c.size());
  for (auto& p : marked.prompts) prompt_tokens += static_cast<int64_t>(p.size()) - 1;
  const int64_t block_tokens = (100 - share_pct) * gen_tokens / share_pct - prompt_tokens;
  ASSERT_LT(block_tokens, static_cast<int64_t>(train_ids.size()));
  auto write_mix = [&](const Harvest& h, const fs::path& path) {
    std::ofstream out(path);
    // Plain text in blocks, each completion (after its prompt) its own document between them.
    size_t per = static_cast<size_t>(block_tokens) / h.completions.size();
    for (size_t i = 0; i < h.completions.size(); ++i) {
      auto from = train_ids.begin() + i * (train_ids.size() / h.completions.size());
      out << tok->decode(std::vector<int32_t>(from, from + per)) << "\n\n";
      std::vector<int32_t> doc(h.prompts[i].begin() + 1, h.prompts[i].end());
      doc.insert(doc.end(), h.completions[i].begin(), h.completions[i].end());
      out << tok->decode(doc) << "\n\n";
    }
  };
  write_mix(marked, tmp / "mix_marked.txt");
  write_mix(plain, tmp / "mix_plain.txt");
  const int64_t mix_tokens = static_cast<int64_t>(tok->encode(lt::slurp(tmp / "mix_marked.txt"), false).size());
  std::printf("mix: %lld watermarked tokens of %lld (%.2f%%)\n", static_cast<long long>(gen_tokens),
              static_cast<long long>(mix_tokens), 100.0 * gen_tokens / mix_tokens);
  EXPECT_LE(gen_tokens, (share_pct + 0.05) / 100.0 * mix_tokens);
  if (!full) {  // the first 60,000 held-out tokens, cut at a paragraph
    if (held_ids.size() > 60000) {  // the held-out text's tokens, encoded above for the KJV passages
      std::string head = tok->decode(std::vector<int32_t>(held_ids.begin(), held_ids.begin() + 60000));
      held_text = held_text.substr(0, std::min(held_text.size(), head.rfind("\n\n") == std::string::npos ? head.size()
                                                                                                      : head.rfind("\n\n")));
    }
  }
  lt::spit(tmp / "held.txt", held_text);
  // Steps of 8 × 256 tokens: about four passes over the mix (at three, with 5%, z was 5.3 and 7.1
  // in two harvests: too close to the 4.75 that p < 1e-6 needs).
  const std::string student =
      " --tokenizer " + lt::quote(lt::kServedModel) +
      " --dim 96 --layers 4 --heads 4 --kv-heads 2 --hidden 288 --seq-len 256 --batch-size 8 --steps " +
      std::to_string(steps) + " --lr 3e-3 --min-lr 3e-4 --warmup 20 --eval-every 0 --eval-rows 8 --checkpoint-every 0 --seed 1 ";
  std::printf("size: %s (%d completions, %d%% of the training text, %d steps, %zu bytes of held-out text)\n",
              full ? "full" : "reduced (CI)", kGenerations, share_pct, steps, held_text.size());
  for (const char* name : {"marked", "plain"}) {
    auto r = lt::run_lineage("train --data " + lt::quote((tmp / (std::string("mix_") + name + ".txt")).string()) + student +
                             "--out " + lt::quote((tmp / name).string()));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  // The CLI as a user runs it: our unwatermarked teacher as the reference.
  auto trace = [&](const char* name, const std::string& extra) {
    auto r = lt::run_lineage("trace --suspect " + lt::quote((tmp / name / "model.gguf").string()) + " --reference " +
                             lt::quote(lt::kServedModel) + " --key " + lt::quote(key_path.string()) + " --text " +
                             lt::quote((tmp / "held.txt").string()) + " --json " +
                             lt::quote((tmp / (std::string(name) + ".json")).string()) + extra);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::printf("trace %s: %s", name, r.out.c_str());
    return json::parse(lt::slurp(tmp / (std::string(name) + ".json")));
  };
  auto guilty = trace("marked", " --wrong-keys 100"), innocent = trace("plain", "");
  EXPECT_LT(guilty["p_value"].get<double>(), 1e-6);
  EXPECT_GT(innocent["p_value"].get<double>(), 0.01);
  // The same students behind an API (`lineage serve`): only their top-20 log-probabilities.
  for (const char* name : {"marked", "plain"}) {
    serve::ServeOptions so;
    so.model = (tmp / name / "model.gguf").string();
    lt::Serving s(so);
    const std::string out = (tmp / (std::string(name) + "_api.json")).string();
    auto r = lt::run_lineage("trace --suspect " + s.url() + " --tokenizer " + lt::quote(lt::kServedModel) + " --reference " +
                             lt::quote(lt::kServedModel) + " --key " + lt::quote(key_path.string()) + " --text " +
                             lt::quote((tmp / "held.txt").string()) + " --json " + lt::quote(out));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::printf("trace %s through its API: %s", name, r.out.c_str());
    auto v = json::parse(lt::slurp(out));
    EXPECT_NE(v["method"].get<std::string>().find("logprobs"), std::string::npos);
    if (std::string(name) == "marked") EXPECT_LT(v["p_value"].get<double>(), 1e-6);
    else EXPECT_GT(v["p_value"].get<double>(), 0.01);
  }
  // Calibration: the watermarked student against 100 keys that are not ours.
  EXPECT_EQ(guilty["wrong_keys"]["keys"].get<int>(), 100);
  EXPECT_LE(guilty["wrong_keys"]["below_0.01"].get<int>(), 4);  // Binomial(100, 0.01): P(X > 4) < 0.4%
}

}  // namespace
}  // namespace lineage::protect
