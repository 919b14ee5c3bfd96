// lineage serve with antidistillation sampling and a fingerprint (protect/antidistill.h) on
// loopback: greedy answers are the teacher's logits plus λ·Δ of a proxy computed apart from the
// server, one request at a time and batched alike; echoed and generated log-probabilities are
// those of the adjusted distribution; /v1/models says nothing of the defence.
#include <httplib.h>
#include <torch/torch.h>

#include <future>
#include <nlohmann/json.hpp>

#include "lineage/io/model_file.h"
#include "lineage/model/generate.h"
#include "lineage/protect/antidistill.h"
#include "lineage/protect/watermark.h"
#include "lineage/teacher/teacher.h"
#include "lineage/text/tokenizer.h"
#include "serve/serving.h"
#include "test_util.h"
#include "tiny_teacher.h"

namespace lt = lineage::testing;
using json = nlohmann::json;

namespace lineage {
namespace {

const char* kHeldOut =
    "In the beginning God created the heaven and the earth. And the earth was without form, and void; and darkness "
    "was upon the face of the deep. And the Spirit of God moved upon the face of the waters. And God said, Let there "
    "be light: and there was light. And God saw the light, that it was good: and God divided the light from the "
    "darkness. And God called the light Day, and the darkness he called Night. And the evening and the morning were "
    "the first day. And God said, Let there be a firmament in the midst of the waters, and let it divide the waters "
    "from the waters. And God made the firmament, and divided the waters which were under the firmament from the "
    "waters which were above the firmament: and it was so.\n";

json post(httplib::Client& c, const std::string& path, const json& body) {
  auto r = c.Post(path, body.dump(), "application/json");
  EXPECT_TRUE(r);
  if (!r) return {};
  EXPECT_EQ(r->status, 200) << r->body;
  return json::parse(r->body);
}

struct Deterrence : ::testing::Test {
  void SetUp() override {
    teacher_file = io::read_model(lt::kServedModel);
    proxy = lt::write_random_like(tmp / "proxy.gguf", teacher_file, 17);
    lt::spit(tmp / "held.txt", kHeldOut);
    protect::WatermarkKey::random().write(tmp / "fp.key");
    options.antidistill_proxy = proxy;
    options.antidistill_data = (tmp / "held.txt").string();
    options.antidistill_lambda = 3.0;
    options.rows = 4;
    options.seq_len = 24;
  }
  // The teacher run directly with the adjusters `options` makes: greedy ids after `prompt`.
  std::vector<int32_t> direct(const std::vector<int32_t>& prompt, int n, bool adjusted,
                              std::shared_ptr<const protect::Watermark> wm = nullptr) {
    teacher::LocalTeacher ref(lt::kServedModel, torch::kCPU);
    model::GenerateOptions g;
    g.max_tokens = n;
    g.sampling.temperature = 0;
    if (adjusted) {
      auto adjusters = protect::make_adjusters(options, *ref.model(), ref.tokenizer(), torch::kCPU, torch::kFloat32, true);
      auto streams = std::make_shared<std::vector<protect::ProxyAdjuster::Stream>>(adjusters.size());
      g.logits_processor = [adjusters, streams, wm](std::span<const int32_t> context, std::span<float> logits) {
        protect::adjust_logits(adjusters, *streams, wm.get(), context, logits, 0.0, 256);
      };
    }
    return model::generate(*ref.model(), prompt, g);
  }
  lt::TempDir tmp;
  io::ModelFile teacher_file;
  std::string proxy;
  protect::DeterrenceOptions options;
};

std::vector<int32_t> ids_of(const json& choice) {
  std::vector<int32_t> out;
  for (const auto& t : choice["logprobs"]["tokens"]) out.push_back(std::stoi(t.get<std::string>().substr(9)));
  return out;
}

TEST_F(Deterrence, ServedAnswersAreTheTeachersLogitsPlusLambdaDeltaAloneAndBatched) {
  serve::ServeOptions so;
  so.deterrence = options;
  lt::Serving server(so);
  auto c = server.client();
  const auto& tok = *teacher_file.tokenizer;
  const std::vector<std::string> prompts = {"And God said", "And Moses went up", "The LORD is my shepherd",
                                            "And it came to pass"};
  auto body = [&](const std::string& p) {
    return json{{"model", lt::kServedId}, {"prompt", tok.encode(p, true)}, {"max_tokens", 10}, {"temperature", 0},
                {"logprobs", 1}, {"return_tokens_as_token_ids", true}};
  };
  int changed = 0;
  std::vector<std::vector<int32_t>> one_at_a_time;
  for (const auto& p : prompts) {
    auto j = post(c, "/v1/completions", body(p));
    auto got = ids_of(j["choices"][0]);
    auto prompt = tok.encode(p, true);
    EXPECT_EQ(got, direct(prompt, 10, true)) << p;
    changed += got != direct(prompt, 10, false);
    one_at_a_time.push_back(got);
  }
  EXPECT_GE(changed, 2) << "λ = 3 should move greedy answers away from the plain teacher's";

  // Batched: the four at once give the same answers (the proxies step in one decode_slots each).
  std::vector<std::future<json>> futures;
  for (const auto& p : prompts)
    futures.push_back(std::async(std::launch::async, [&, p] {
      auto cc = server.client();
      return post(cc, "/v1/completions", body(p));
    }));
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(ids_of(futures[i].get()["choices"][0]), one_at_a_time[i]);

  // The defence is not advertised.
  auto models = c.Get("/v1/models");
  ASSERT_TRUE(models);
  for (const char* word : {"antidist", "fingerprint", "proxy", "lambda"})
    EXPECT_EQ(models->body.find(word), std::string::npos) << word << " in " << models->body;
}

// Speculative decoding with a random draft (most tokens rejected) on a server that nudges and
// watermarks: every verified position gets the nudges and the bias before acceptance, so greedy
// answers are the adjusted teacher's, token for token.
TEST_F(Deterrence, SpeculationVerifiesAgainstTheAdjustedDistribution) {
  serve::ServeOptions so;
  so.deterrence = options;
  so.watermark_key = (tmp / "fp.key").string();  // any key file: the watermark's δ on top of the nudge
  so.draft = lt::write_random_like(tmp / "draft.gguf", teacher_file, 23, 32, 1, 0.3);
  so.draft_tokens = 3;
  so.draft_max_batch = 64;
  lt::Serving server(so);
  auto wm = std::make_shared<const protect::Watermark>(protect::WatermarkKey::read(so.watermark_key),
                                                       protect::WatermarkParams{});
  auto c = server.client();
  const auto& tok = *teacher_file.tokenizer;
  for (const std::string p : {"And God said", "The LORD is my shepherd"}) {
    auto prompt = tok.encode(p, true);
    auto j = post(c, "/v1/completions", {{"model", lt::kServedId}, {"prompt", prompt}, {"max_tokens", 12},
                                         {"temperature", 0}, {"logprobs", 1}, {"return_tokens_as_token_ids", true}});
    EXPECT_EQ(ids_of(j["choices"][0]), direct(prompt, 12, true, wm)) << p;
  }
  auto m = server.client().Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_NE(m->body.find("lineage_draft_tokens_total{outcome=\"proposed\"}"), std::string::npos);
}

TEST_F(Deterrence, LogprobsAreThoseOfTheAdjustedDistribution) {
  options.fingerprint_key = (tmp / "fp.key").string();  // both defences: their nudges add up
  options.fingerprint_lambda = 2.0;
  serve::ServeOptions so;
  so.deterrence = options;
  lt::Serving server(so);
  auto c = server.client();
  const auto& tok = *teacher_file.tokenizer;
  auto ids = tok.encode("For God so loved the world, that he gave", true);

  teacher::LocalTeacher ref(lt::kServedModel, torch::kCPU);
  auto adjusters = protect::make_adjusters(options, *ref.model(), ref.tokenizer(), torch::kCPU, torch::kFloat32, true);
  ASSERT_EQ(adjusters.size(), 2u);
  auto x = torch::tensor(std::vector<int64_t>(ids.begin(), ids.end())).view({1, -1});
  auto z = ref.logits(x)[0].to(torch::kFloat32);  // (T, V)
  for (auto& a : adjusters) z = z + a->params().lambda * a->prompt_deltas(ids);
  auto logp = torch::log_softmax(z, -1);

  // Echo: every prompt position.
  auto echo = post(c, "/v1/completions", {{"model", lt::kServedId}, {"prompt", ids}, {"max_tokens", 0}, {"echo", true},
                                          {"logprobs", 3}, {"return_tokens_as_token_ids", true}});
  const auto& lp = echo["choices"][0]["logprobs"];
  ASSERT_EQ(lp["token_logprobs"].size(), ids.size());
  for (size_t t = 1; t < ids.size(); ++t)
    EXPECT_NEAR(lp["token_logprobs"][t].get<double>(), logp[t - 1][ids[t]].item<double>(), 2e-4) << t;

  // The first generated token, sampled at temperature 1: its reported log-probability and top 3.
  auto gen = post(c, "/v1/completions", {{"model", lt::kServedId}, {"prompt", ids}, {"max_tokens", 1}, {"temperature", 1},
                                         {"seed", 5}, {"logprobs", 3}, {"return_tokens_as_token_ids", true}});
  const auto& g = gen["choices"][0]["logprobs"];
  const int32_t first = std::stoi(g["tokens"][0].get<std::string>().substr(9));
  EXPECT_NEAR(g["token_logprobs"][0].get<double>(), logp[ids.size() - 1][first].item<double>(), 2e-4);
  auto [v, i] = logp[ids.size() - 1].topk(3);
  for (int k = 0; k < 3; ++k)
    EXPECT_NEAR(g["top_logprobs"][0]["token_id:" + std::to_string(i[k].item<int64_t>())].get<double>(),
                v[k].item<double>(), 2e-4);
}

TEST_F(Deterrence, BadProxiesAndFlagsAreRefusedNamingThem) {
  teacher::LocalTeacher ref(lt::kServedModel, torch::kCPU);
  // A proxy with another vocabulary.
  lt::write_tiny_teacher(tmp / "other.gguf");
  options.antidistill_proxy = (tmp / "other.gguf").string();
  auto err = lt::error_of(
      [&] { protect::make_adjusters(options, *ref.model(), ref.tokenizer(), torch::kCPU, torch::kFloat32, true); });
  EXPECT_NE(err.find("other.gguf"), std::string::npos) << err;
  EXPECT_NE(err.find("vocabulary"), std::string::npos) << err;
  // A fingerprint without a proxy, and held-out text too short for one window.
  protect::DeterrenceOptions fp;
  fp.fingerprint_key = (tmp / "fp.key").string();
  err = lt::error_of([&] { protect::make_adjusters(fp, *ref.model(), ref.tokenizer(), torch::kCPU, torch::kFloat32, true); });
  EXPECT_NE(err.find("--fingerprint-proxy"), std::string::npos) << err;
  lt::spit(tmp / "short.txt", "In the beginning");
  options.antidistill_proxy = proxy;
  options.antidistill_data = (tmp / "short.txt").string();
  err = lt::error_of([&] { protect::make_adjusters(options, *ref.model(), ref.tokenizer(), torch::kCPU, torch::kFloat32, true); });
  EXPECT_NE(err.find("short.txt"), std::string::npos) << err;
}

}  // namespace
}  // namespace lineage
