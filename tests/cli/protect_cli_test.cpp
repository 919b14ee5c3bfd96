// The owner's verbs as a user runs them, on a tiny teacher written by the test: keygen, generate
// --watermark-key then detect (watermarked text flagged, plain text not, a public key file refused),
// distill --sign-key then verify (one changed byte in the weights or in lineage.json fails, naming
// the file), monitor --simulate, --labels and --calibrate (the per-kind table), JSONL logs and allowlists and trace (a clean model is not flagged).
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "lineage/io/model_file.h"
#include "test_util.h"
#include "tiny_teacher.h"

namespace lineage {
namespace {

using testing::quote;
using testing::run_lineage;
using testing::TempDir;
namespace fs = std::filesystem;

TEST(ProtectCli, GeneratedWatermarkedTextIsDetectedAndPlainTextIsNot) {
  // The embedded teacher (in the repository): a real tokenizer, so text goes out and comes back.
  if (!fs::exists(testing::embedded_teacher())) GTEST_SKIP() << "models/lineage-kjv-5m.gguf is missing";
  TempDir tmp;
  const std::string teacher = quote(testing::embedded_teacher().string()), key = quote((tmp / "wm.key").string());
  ASSERT_EQ(run_lineage("keygen --watermark " + key).exit_code, 0);
  auto gen = [&](const std::string& extra) {
    // 300 tokens, past end-of-text: the key is a fresh random one (keygen is under test), so the
    // margin must not hang on one short draw (z ≈ 10 expected, 4 needed).
    auto r = run_lineage("generate -q -m " + teacher +
                         " --prompt 'And it came to pass' -n 300 --ignore-eos --temperature 1 --top-k 0 --top-p 1 --seed 3 " + extra);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out;
  };
  testing::spit(tmp / "marked.txt", gen("--watermark-key " + key));
  testing::spit(tmp / "plain.txt", gen(""));
  auto marked = run_lineage("detect --key " + key + " -m " + teacher + " " + quote((tmp / "marked.txt").string()) +
                            " --json " + quote((tmp / "v.json").string()));
  ASSERT_EQ(marked.exit_code, 0) << marked.err;
  EXPECT_EQ(marked.out.rfind("WATERMARKED", 0), 0u) << marked.out;
  auto v = nlohmann::json::parse(testing::slurp(tmp / "v.json"));
  EXPECT_GT(v["z"].get<double>(), 4);
  EXPECT_LT(v["p_value"].get<double>(), 3.2e-5);
  auto plain = run_lineage("detect --key " + key + " -m " + teacher + " " + quote((tmp / "plain.txt").string()));
  EXPECT_EQ(plain.out.rfind("not watermarked", 0), 0u) << plain.out;

  ::chmod((tmp / "wm.key").c_str(), 0644);
  auto exposed = run_lineage("detect --key " + key + " -m " + teacher + " " + quote((tmp / "plain.txt").string()));
  EXPECT_EQ(exposed.exit_code, 1);
  EXPECT_NE(exposed.err.find("can be read by others"), std::string::npos) << exposed.err;

  testing::spit(tmp / "bad.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": 3}\n");
  ::chmod((tmp / "wm.key").c_str(), 0600);
  auto bad = run_lineage("detect --key " + key + " -m " + teacher + " " + quote((tmp / "bad.jsonl").string()));
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("line 2"), std::string::npos) << bad.err;
}

TEST(ProtectCli, GenerateWithAntidistillationAndAFingerprint) {
  if (!fs::exists(testing::embedded_teacher())) GTEST_SKIP() << "models/lineage-kjv-5m.gguf is missing";
  TempDir tmp;
  const std::string teacher = quote(testing::embedded_teacher().string());
  // A random proxy with the teacher's tokenizer and context.
  testing::write_random_like(tmp / "proxy.gguf", io::read_model(testing::embedded_teacher().string()), 3);
  const std::string p = quote((tmp / "proxy.gguf").string()), key = quote((tmp / "fp.key").string());
  ASSERT_EQ(run_lineage("keygen --watermark " + key).exit_code, 0);
  auto gen = [&](const std::string& extra) {
    auto r = run_lineage("generate -q -m " + teacher + " --prompt 'And it came to pass' -n 24 --temperature 0 " + extra);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out;
  };
  const std::string plain = gen("");
  // λ = 0: the proxies run and change nothing; λ = 3: the greedy text moves.
  EXPECT_EQ(gen("--antidistill " + p + " --antidistill-lambda 0 --antidistill-rows 4"), plain);
  EXPECT_NE(gen("--antidistill " + p + " --antidistill-lambda 3 --antidistill-rows 4"), plain);
  EXPECT_NE(gen("--fingerprint-key " + key + " --fingerprint-proxy " + p + " --fingerprint-lambda 3 --antidistill-rows 4"),
            plain);
  // What is wrong is named: a proxy with another vocabulary, a fingerprint without a proxy.
  testing::write_tiny_teacher(tmp / "other.gguf");
  auto bad = run_lineage("generate -q -m " + teacher + " --prompt a -n 2 --antidistill " + quote((tmp / "other.gguf").string()));
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("other.gguf"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("vocabulary"), std::string::npos) << bad.err;
  bad = run_lineage("generate -q -m " + teacher + " --prompt a -n 2 --fingerprint-key " + key);
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("--fingerprint-proxy"), std::string::npos) << bad.err;
}

TEST(ProtectCli, ASignedStudentVerifiesAndATamperedOneDoesNot) {
  TempDir tmp;
  testing::write_tiny_teacher(tmp / "teacher.gguf");
  testing::spit(tmp / "corpus.txt", testing::tiny_corpus(200));
  const std::string sk = quote((tmp / "owner.key").string()), run = quote((tmp / "run").string());
  ASSERT_EQ(run_lineage("keygen --sign " + sk).exit_code, 0);
  auto d = run_lineage("distill --teacher " + quote((tmp / "teacher.gguf").string()) + " --data " +
                       quote((tmp / "corpus.txt").string()) + " --out " + run +
                       " --seq-len 32 --dim 16 --layers 1 --heads 2 --batch-size 4 --eval-rows 4 --steps 3 --sign-key " + sk);
  ASSERT_EQ(d.exit_code, 0) << d.err;
  EXPECT_NE(d.out.find("signed:"), std::string::npos);
  const std::string pub = " --pubkey " + quote((tmp / "owner.key.pub").string());
  auto ok = run_lineage("verify " + run + pub);
  EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;
  EXPECT_NE(ok.out.find("verified:"), std::string::npos);

  for (const char* target : {"student.gguf", "lineage.json"}) {
    auto path = tmp / "run" / target;
    auto bytes = testing::slurp(path);
    auto original = bytes;
    bytes[bytes.size() / 2] ^= 0x01;
    testing::spit(path, bytes);
    auto bad = run_lineage("verify " + run + pub);
    EXPECT_EQ(bad.exit_code, 1) << target;
    EXPECT_NE(bad.out.find(std::string("MISMATCH  ") + target + ": SHA-256"), std::string::npos) << bad.out;
    testing::spit(path, original);
  }
  EXPECT_EQ(run_lineage("verify " + run + pub).exit_code, 0);
  auto missing = run_lineage("distill --teacher x --data y --out z --sign-key " + quote((tmp / "nokey").string()));
  EXPECT_NE(missing.err.find("--sign-key"), std::string::npos) << missing.err;
}

TEST(ProtectCli, MonitorSimulatesScoresAndCalibrates) {
  TempDir tmp;
  const std::string db = quote((tmp / "sim.db").string());
  auto r = run_lineage("monitor --simulate " + db + " --keys 200 --campaign-keys 60 --days 3 --seed 9 --json " + quote((tmp / "m.json").string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("threshold 4.00 (set on simulated ordinary traffic of tuning seeds"), std::string::npos) << r.out;
  for (const char* kind : {"hydra", "careful", "reseller", "ide_agent", "calibration", "precision"}) EXPECT_NE(r.out.find(kind), std::string::npos) << kind;
  auto j = nlohmann::json::parse(testing::slurp(tmp / "m.json"));
  EXPECT_EQ(j["keys"].size(), 260u);
  EXPECT_TRUE(j["evaluation"]["kinds"].is_array());
  EXPECT_TRUE(j["keys"][0].contains("evidence"));
  // The same log read again with its labels, and with the threshold set from them.
  auto again = run_lineage("monitor --log " + db + " --labels " + quote((tmp / "sim.db.labels.json").string()) + " --calibrate");
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("calibrated on the ordinary keys of"), std::string::npos) << again.out;
  // JSONL from another gateway, with allowlisted keys.
  ASSERT_EQ(run_lineage("monitor --simulate " + quote((tmp / "sim.jsonl").string()) + " --keys 100 --campaign-keys 20 --days 2").exit_code, 0);
  testing::spit(tmp / "allow.txt", "casual-00000\ncasual-00001\n");
  auto jl = run_lineage("monitor --log " + quote((tmp / "sim.jsonl").string()) + " --allow-keys " + quote((tmp / "allow.txt").string()) +
                        " --json " + quote((tmp / "j.json").string()));
  ASSERT_EQ(jl.exit_code, 0) << jl.err;
  EXPECT_EQ(nlohmann::json::parse(testing::slurp(tmp / "j.json"))["keys"].size(), 118u);
  auto none = run_lineage("monitor");
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.err.find("--log FILE, or --simulate"), std::string::npos) << none.err;
  auto bad = run_lineage("monitor --log " + quote((tmp / "allow.txt").string()));
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("is not a request log"), std::string::npos) << bad.err;
}

// --follow on a log that grows while it runs: every key a one-shot analysis of the whole log flags
// is announced as a JSON line, and the progress lines count every request.
TEST(ProtectCli, MonitorFollowsAGrowingLogAndAnnouncesNewFlags) {
  TempDir tmp;
  const auto sim = tmp / "sim.jsonl", live = tmp / "live.jsonl";
  ASSERT_EQ(run_lineage("monitor --simulate " + quote(sim.string()) + " --keys 120 --campaign-keys 40 --days 2 --seed 31").exit_code, 0);
  const std::string all = testing::slurp(sim);
  const size_t lines = static_cast<size_t>(std::count(all.begin(), all.end(), '\n'));
  size_t cut = 0;
  for (size_t n = 0; n < lines / 3; ++n) cut = all.find('\n', cut) + 1;
  testing::spit(live, all.substr(0, cut));
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    std::ofstream out(live, std::ios::app | std::ios::binary);
    out << all.substr(cut) << std::flush;
  });
  auto r = run_lineage("monitor --log " + quote(live.string()) + " --follow --interval 0.3 --follow-seconds 6 --html " +
                       quote((tmp / "live.html").string()));
  writer.join();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::set<std::string> announced;
  for (size_t at = 0; at < r.out.size();) {
    const size_t end = r.out.find('\n', at);
    auto j = nlohmann::json::parse(r.out.substr(at, end - at));
    EXPECT_EQ(j["event"], "flagged");
    EXPECT_FALSE(j["evidence"].empty());
    announced.insert(j["key_id"].get<std::string>());
    at = end + 1;
  }
  int64_t last_count = 0;
  for (size_t at = 0; at < r.err.size();) {
    const size_t end = r.err.find('\n', at);
    auto j = nlohmann::json::parse(r.err.substr(at, end - at));
    if (j["event"] == "read") last_count = j["requests"].get<int64_t>();
    at = end + 1;
  }
  EXPECT_EQ(last_count, static_cast<int64_t>(lines));
  auto once = run_lineage("monitor --log " + quote(sim.string()) + " --json " + quote((tmp / "once.json").string()));
  ASSERT_EQ(once.exit_code, 0) << once.err;
  int64_t flagged = 0;
  const auto report = nlohmann::json::parse(testing::slurp(tmp / "once.json"));
  for (const auto& k : report["keys"])
    if (k["flagged"].get<bool>()) {
      ++flagged;
      EXPECT_TRUE(announced.count(k["key_id"].get<std::string>())) << k["key_id"];
    }
  EXPECT_GT(flagged, 0);
  EXPECT_NE(testing::slurp(tmp / "live.html").find("Flagged keys"), std::string::npos);
  auto bad = run_lineage("monitor --simulate " + quote((tmp / "x.jsonl").string()) + " --follow");
  EXPECT_NE(bad.err.find("--follow reads a live log"), std::string::npos) << bad.err;
}

// The learned score end to end: features written from a labelled log, a model fit on them, the
// log scored with it (each key's evidence names the features), and the shipped model.
TEST(ProtectCli, MonitorFitsAndUsesALearnedScore) {
  TempDir tmp;
  const std::string log = quote((tmp / "sim.jsonl").string()), labels = quote((tmp / "sim.jsonl.labels.json").string());
  ASSERT_EQ(run_lineage("monitor --simulate " + log + " --keys 150 --campaign-keys 50 --days 2 --seed 12").exit_code, 0);
  auto f = run_lineage("monitor --log " + log + " --labels " + labels + " --features " + quote((tmp / "f.jsonl").string()));
  ASSERT_EQ(f.exit_code, 0) << f.err;
  auto first = nlohmann::json::parse(testing::slurp(tmp / "f.jsonl").substr(0, testing::slurp(tmp / "f.jsonl").find('\n')));
  EXPECT_TRUE(first.contains("label"));
  for (const char* kind : {"boosted_trees", "logistic_regression"}) {
    auto fit = run_lineage("monitor --fit " + quote((tmp / "m.json").string()) + " --fit-kind " + kind + " --train " +
                           quote((tmp / "f.jsonl").string()));
    ASSERT_EQ(fit.exit_code, 0) << fit.err;
    EXPECT_NE(fit.out.find("fit on 200 keys of f.jsonl"), std::string::npos) << fit.out;
    auto used = run_lineage("monitor --log " + log + " --labels " + labels + " --model " + quote((tmp / "m.json").string()) +
                            " --json " + quote((tmp / "r.json").string()));
    ASSERT_EQ(used.exit_code, 0) << used.err;
    EXPECT_NE(used.out.find("the learned score's, set at fitting on f.jsonl"), std::string::npos) << used.out;
    auto r = nlohmann::json::parse(testing::slurp(tmp / "r.json"));
    // Fit and measured on the same keys: nearly all of them right (not a figure to report).
    EXPECT_GE(r["evaluation"]["recall"].get<double>(), 0.9) << kind;
    EXPECT_LE(r["evaluation"]["false_positive_rate"].get<double>(), 0.02) << kind;
    const auto& ev = r["keys"][0]["evidence"];
    ASSERT_FALSE(ev.empty());
    EXPECT_NE(ev[0]["why"].get<std::string>().find(ev[0]["signal"].get<std::string>() + " = "), std::string::npos);
  }
  auto shipped = run_lineage("monitor --log " + log + " --scorer learned --top 1");
  ASSERT_EQ(shipped.exit_code, 0) << shipped.err;
  EXPECT_NE(shipped.out.find("set at fitting on dev-a.features.jsonl, dev-b.features.jsonl"), std::string::npos) << shipped.out;
  auto no_train = run_lineage("monitor --fit " + quote((tmp / "m.json").string()));
  EXPECT_EQ(no_train.exit_code, 1);
  EXPECT_NE(no_train.err.find("--fit needs --train"), std::string::npos) << no_train.err;
}

TEST(ProtectCli, TraceDoesNotFlagAModelThatNeverSawOurText) {
  TempDir tmp;
  testing::write_tiny_teacher(tmp / "teacher.gguf");
  testing::spit(tmp / "corpus.txt", testing::tiny_corpus(300));
  const std::string key = quote((tmp / "wm.key").string());
  ASSERT_EQ(run_lineage("keygen --watermark " + key).exit_code, 0);
  // weights: one green-mass term per distinct context (the tiny byte vocabulary has ~20 after h=1);
  // predictions and text: one per distinct (context, token) window.
  for (auto [method, least] : {std::pair{"weights", 10}, {"predictions", 50}, {"text", 50}}) {
    auto r = run_lineage("trace --suspect " + quote((tmp / "teacher.gguf").string()) + " --key " + key + " --text " +
                         quote((tmp / "corpus.txt").string()) + " --method " + method + " --samples 20 --gen-tokens 32 --json " +
                         quote((tmp / "t.json").string()));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto v = nlohmann::json::parse(testing::slurp(tmp / "t.json"));
    EXPECT_FALSE(v["flagged"].get<bool>()) << r.out;
    EXPECT_GT(v["scored"].get<int64_t>(), least) << method;
    EXPECT_NE(r.out.find(std::string("method: ") + method), std::string::npos) << r.out;
  }
  // Against a reference (here the suspect itself: nothing differs, nothing to weigh) and with the
  // wrong-key calibration; options that do not fit the method are refused by name.
  const std::string base = "trace --suspect " + quote((tmp / "teacher.gguf").string()) + " --key " + key + " --text " +
                           quote((tmp / "corpus.txt").string());
  auto same = run_lineage(base + " --reference " + quote((tmp / "teacher.gguf").string()) + " --wrong-keys 5");
  ASSERT_EQ(same.exit_code, 0) << same.err;
  EXPECT_EQ(same.out.rfind("not watermarked", 0), 0u) << same.out;
  EXPECT_NE(same.out.find("calibration: 5 random wrong keys"), std::string::npos) << same.out;
  for (auto [extra, says] : {std::pair{" --method predictions --reference x.gguf", "--reference works with"},
                             {" --method text --wrong-keys 3", "--wrong-keys works with"},
                             {" --method logprobs", "is not a URL"}}) {
    auto bad = run_lineage(base + extra);
    EXPECT_EQ(bad.exit_code, 1) << extra;
    EXPECT_NE(bad.err.find(says), std::string::npos) << extra << ": " << bad.err;
  }
}

}  // namespace
}  // namespace lineage
