// lineage serve on loopback: the OpenAI request shapes the official SDKs send (plain and streamed),
// answers checked against the model run directly, continuous batching against one-at-a-time
// decoding, a table of malformed requests, keys, quotas, overload and the SQLite request log.
#include <httplib.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <unistd.h>
#include <torch/torch.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "lineage/core/hash.h"
#include "lineage/io/model_file.h"
#include "lineage/model/generate.h"
#include "lineage/text/tokenizer.h"
#include "lineage/serve/keys.h"
#include "lineage/protect/monitor.h"
#include "lineage/serve/server.h"
#include "lineage/teacher/teacher.h"
#include "serve/serving.h"
#include "process.h"
#include "test_util.h"
#include "tiny_teacher.h"

namespace lt = lineage::testing;
using json = nlohmann::json;
using lineage::serve::KeyStore;
using lineage::serve::Server;
using lineage::serve::ServeOptions;

namespace {

const std::string kModel = lt::kServedModel;
const std::string kId = lt::kServedId;
using RunningServer = lt::Serving;

// Headers the official Python SDK sends beside the body.
httplib::Headers sdk_headers() {
  return {{"User-Agent", "OpenAI/Python 1.54.3"}, {"X-Stainless-Lang", "python"}, {"X-Stainless-Package-Version", "1.54.3"},
          {"Accept", "application/json"}};
}

json post(httplib::Client& c, const std::string& path, const json& body, int* status = nullptr) {
  auto r = c.Post(path, sdk_headers(), body.dump(), "application/json");
  EXPECT_TRUE(r) << "no answer from " << path;
  if (!r) return {};
  if (status) *status = r->status;
  return json::parse(r->body);
}

// The data lines of a server-sent event stream.
std::vector<std::string> sse_data(const std::string& body) {
  std::vector<std::string> out;
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("data: ", 0) == 0) out.push_back(line.substr(6));
  return out;
}

struct Fixture : ::testing::Test {
  static void SetUpTestSuite() {
    tmp = new lt::TempDir();
    keys_path = (*tmp / "keys.json").string();
    key = KeyStore::add_key(keys_path, "alice", 0);
    ServeOptions o;
    o.api_keys = keys_path;
    o.log = (*tmp / "requests.db").string();
    // LINEAGE_TEST_SERVE_DRAFT=random|self: the same tests with speculative decoding on for every
    // sequence — a random draft (most tokens rejected: the residual path) or the model itself
    // (every token kept). ctest runs both (test_serve_speculative_*).
    if (const char* draft = std::getenv("LINEAGE_TEST_SERVE_DRAFT")) {
      const std::string kind = draft;
      if (kind == "self") {
        o.draft = kModel;
      } else {
        o.draft = lt::write_random_like(*tmp / "draft.gguf", lineage::io::read_model(kModel), 9, 32, 1, 0.3);
      }
      o.draft_tokens = 3;
      o.draft_max_batch = 1024;
      std::printf("speculative decoding on: draft %s (%s)\n", o.draft.c_str(), kind.c_str());
    }
    server = new RunningServer(o);
    ref = new lineage::teacher::LocalTeacher(kModel, torch::kCPU);
  }
  static void TearDownTestSuite() {
    delete server;
    delete ref;
    delete tmp;
  }
  // Greedy completion of `text` by the model run directly, as text.
  static std::string direct_greedy(const std::string& text, int n) {
    lineage::model::GenerateOptions g;
    g.max_tokens = n;
    g.sampling.temperature = 0;
    g.stop_ids = {ref->tokenizer().eos_id()};
    auto prompt = ref->tokenizer().encode(text, true);
    auto ids = ref->generate(prompt, g);
    std::string s;
    int32_t prev = prompt.back();
    for (int32_t id : ids) {
      s += ref->tokenizer().decode_piece(prev, id);
      prev = id;
    }
    return s;
  }
  static lt::TempDir* tmp;
  static std::string keys_path, key;
  static RunningServer* server;
  static lineage::teacher::LocalTeacher* ref;
};
lt::TempDir* Fixture::tmp = nullptr;
std::string Fixture::keys_path, Fixture::key;
RunningServer* Fixture::server = nullptr;
lineage::teacher::LocalTeacher* Fixture::ref = nullptr;

}  // namespace

TEST(ApiKeys, StoredHashedAndFoundOnlyByTheSecret) {
  lt::TempDir tmp;
  auto path = (tmp / "k.json").string();
  std::string a = KeyStore::add_key(path, "a", 100), b = KeyStore::add_key(path, "b", 0);
  EXPECT_EQ(a.rfind("lin-", 0), 0u);
  EXPECT_NE(a, b);
  std::string file = lt::slurp(path);
  EXPECT_EQ(file.find(a.substr(4)), std::string::npos) << "the secret must not be stored";
  auto ks = KeyStore::load(path);
  ASSERT_TRUE(ks.find(a));
  EXPECT_EQ(ks.find(a)->id, "a");
  EXPECT_EQ(ks.find(a)->quota_tokens, 100);
  EXPECT_EQ(ks.find(b)->id, "b");
  EXPECT_FALSE(ks.find(a + "x"));
  EXPECT_FALSE(ks.find(""));
  EXPECT_NE(lt::error_of([&] { KeyStore::add_key(path, "a", 0); }).find("already has a key 'a'"), std::string::npos);
  lt::spit(tmp / "bad.json", R"({"keys": [{"id": "x", "hash": "zz"}]})");
  EXPECT_NE(lt::error_of([&] { KeyStore::load((tmp / "bad.json").string()); }).find("malformed hash"), std::string::npos);
}

TEST_F(Fixture, ModelsAndHealth) {
  auto c = server->client(key);
  auto r = c.Get("/v1/models");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto j = json::parse(r->body);
  EXPECT_EQ(j["object"], "list");
  EXPECT_EQ(j["data"][0]["id"], kId);
  EXPECT_EQ(j["data"][0]["lineage"]["tokenizer_sha256"], ref->info().tokenizer_sha256);
  auto h = server->client().Get("/health");  // no key needed
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
}

TEST_F(Fixture, CompletionAsTheSdkSendsItMatchesTheModelRunDirectly) {
  auto c = server->client(key);
  int status = 0;
  auto j = post(c, "/v1/completions", {{"model", kId}, {"prompt", "And God said"}, {"max_tokens", 12}, {"temperature", 0}}, &status);
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], kId);
  EXPECT_EQ(j["choices"][0]["text"], direct_greedy("And God said", 12));
  EXPECT_EQ(j["usage"]["prompt_tokens"].get<int>(), static_cast<int>(ref->tokenizer().encode("And God said", true).size()));
  EXPECT_EQ(j["usage"]["total_tokens"].get<int>(), j["usage"]["prompt_tokens"].get<int>() + j["usage"]["completion_tokens"].get<int>());
  EXPECT_TRUE(j["choices"][0]["finish_reason"] == "length" || j["choices"][0]["finish_reason"] == "stop");
}

TEST_F(Fixture, ChatWithLogprobsAsTheSdkSendsIt) {
  auto c = server->client(key);
  json body = {{"model", kId},
               {"messages", {{{"role", "system"}, {"content", "You are the King James Bible."}}, {{"role", "user"}, {"content", "Who made the light?"}}}},
               {"max_tokens", 10}, {"temperature", 0}, {"logprobs", true}, {"top_logprobs", 3}, {"seed", 7}};
  int status = 0;
  auto j = post(c, "/v1/chat/completions", body, &status);
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  const auto& content = j["choices"][0]["logprobs"]["content"];
  ASSERT_GT(content.size(), 0u);
  EXPECT_LE(content.size(), 10u);
  std::string joined;
  for (const auto& t : content) {
    ASSERT_EQ(t["top_logprobs"].size(), 3u);
    EXPECT_LE(t["logprob"].get<double>(), 0.0);
    // Greedy: the chosen token is the most likely one.
    EXPECT_NEAR(t["logprob"].get<double>(), t["top_logprobs"][0]["logprob"].get<double>(), 1e-5);
    joined += t["token"].get<std::string>();
  }
  EXPECT_EQ(joined, j["choices"][0]["message"]["content"].get<std::string>());
}

TEST_F(Fixture, StreamedChatEqualsTheWholeAnswer) {
  auto c = server->client(key);
  json body = {{"model", kId}, {"messages", {{{"role", "user"}, {"content", "In the beginning"}}}}, {"max_tokens", 16}, {"temperature", 0}};
  auto whole = post(c, "/v1/chat/completions", body);
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  auto r = c.Post("/v1/chat/completions", sdk_headers(), body.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_NE(r->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
  auto events = sse_data(r->body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  bool saw_role = false, saw_finish = false, saw_usage = false;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    auto e = json::parse(events[i]);
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    if (e.contains("usage") && !e["usage"].is_null()) {
      saw_usage = true;
      EXPECT_EQ(e["usage"]["completion_tokens"], whole["usage"]["completion_tokens"]);
      continue;
    }
    const auto& ch = e["choices"][0];
    if (ch["delta"].contains("role")) saw_role = true;
    if (ch["delta"].contains("content")) text += ch["delta"]["content"].get<std::string>();
    if (!ch["finish_reason"].is_null()) saw_finish = true;
  }
  EXPECT_TRUE(saw_role && saw_finish && saw_usage);
  EXPECT_EQ(text, whole["choices"][0]["message"]["content"].get<std::string>());
}

TEST_F(Fixture, StreamedCompletionEqualsTheWholeAnswer) {
  auto c = server->client(key);
  json body = {{"model", kId}, {"prompt", "The LORD is my shepherd"}, {"max_tokens", 20}, {"temperature", 0}, {"stream", true}};
  auto r = c.Post("/v1/completions", sdk_headers(), body.dump(), "application/json");
  ASSERT_TRUE(r);
  auto events = sse_data(r->body);
  ASSERT_EQ(events.back(), "[DONE]");
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); ++i) text += json::parse(events[i])["choices"][0]["text"].get<std::string>();
  EXPECT_EQ(text, direct_greedy("The LORD is my shepherd", 20));
}

TEST_F(Fixture, EchoScoresThePromptAsTheModelDoes) {
  auto c = server->client(key);
  auto ids = ref->tokenizer().encode("For God so loved the world, that he gave", true);
  json body = {{"model", kId}, {"prompt", ids}, {"max_tokens", 0}, {"echo", true}, {"logprobs", 5}, {"return_tokens_as_token_ids", true}};
  int status = 0;
  auto j = post(c, "/v1/completions", body, &status);
  ASSERT_EQ(status, 200) << j.dump();
  const auto& lp = j["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), ids.size());
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  auto x = torch::tensor(std::vector<int64_t>(ids.begin(), ids.end())).view({1, -1});
  auto logp = torch::log_softmax(ref->logits(x), -1)[0];
  for (size_t t = 1; t < ids.size(); ++t) {
    EXPECT_EQ(lp["tokens"][t], "token_id:" + std::to_string(ids[t]));
    EXPECT_NEAR(lp["token_logprobs"][t].get<double>(), logp[t - 1][ids[t]].item<double>(), 1e-4);
    auto [v, i] = logp[t - 1].topk(5);
    ASSERT_EQ(lp["top_logprobs"][t].size(), 5u);
    for (int k = 0; k < 5; ++k)
      EXPECT_NEAR(lp["top_logprobs"][t]["token_id:" + std::to_string(i[k].item<int64_t>())].get<double>(), v[k].item<double>(), 1e-4);
  }
}

// A text prompt's echo holds the prompt's tokens as the text has them (OpenAI's legacy completions,
// vLLM): no "<s>" the text does not contain, tokens that join up to the text at their offsets, and
// the first token's log-probability after the BOS the server added.
TEST_F(Fixture, EchoOfATextPromptIsTheTextsOwnTokens) {
  auto c = server->client(key);
  const std::string text = "Once upon a time";
  int status = 0;
  auto j = post(c, "/v1/completions", {{"model", kId}, {"prompt", text}, {"max_tokens", 0}, {"echo", true}, {"logprobs", 1}},
                &status);
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["choices"][0]["text"], text);
  const auto& lp = j["choices"][0]["logprobs"];
  auto ids = ref->tokenizer().encode(text, true);  // BOS + the text's tokens
  ASSERT_EQ(ids[0], ref->tokenizer().bos_id());
  ASSERT_EQ(lp["tokens"].size(), ids.size() - 1) << lp.dump();
  std::string joined;
  auto x = torch::tensor(std::vector<int64_t>(ids.begin(), ids.end())).view({1, -1});
  auto logp = torch::log_softmax(ref->logits(x), -1)[0];
  for (size_t t = 0; t < lp["tokens"].size(); ++t) {
    EXPECT_EQ(lp["text_offset"][t].get<size_t>(), joined.size()) << "token " << t;
    joined += lp["tokens"][t].get<std::string>();
    ASSERT_TRUE(lp["token_logprobs"][t].is_number()) << "token " << t;
    EXPECT_NEAR(lp["token_logprobs"][t].get<double>(), logp[t][ids[t + 1]].item<double>(), 1e-4);
  }
  EXPECT_EQ(joined, text);
  EXPECT_EQ(j["usage"]["prompt_tokens"], ids.size());  // the BOS still counts as a prompt token
}

// The openai SDKs' models.retrieve(id): GET /v1/models/{id} answers the list's object; another id
// is 404 model_not_found.
TEST_F(Fixture, ModelRetrieveAnswersTheListsObject) {
  auto c = server->client(key);
  auto list = c.Get("/v1/models");
  ASSERT_TRUE(list);
  auto one = c.Get("/v1/models/" + kId);
  ASSERT_TRUE(one);
  ASSERT_EQ(one->status, 200) << one->body;
  EXPECT_EQ(json::parse(one->body), json::parse(list->body)["data"][0]);
  auto other = c.Get("/v1/models/no-such-model");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 404);
  auto e = json::parse(other->body);
  EXPECT_EQ(e["error"]["code"], "model_not_found");
  EXPECT_NE(e["error"]["message"].get<std::string>().find("no-such-model"), std::string::npos);
  auto anonymous = server->client().Get("/v1/models/" + kId);  // keys are checked here too
  ASSERT_TRUE(anonymous);
  EXPECT_EQ(anonymous->status, 401);
}

// BOS by the tokenizer's rule: a model whose tokenizer adds none (Qwen's tokenizer.json, GGUF
// add_bos_token false) gets nothing in front of a text prompt, as HF and vLLM give it.
TEST(Serve, TextPromptsGetBosOnlyByTheTokenizersRule) {
  lt::TempDir tmp;
  auto m = lineage::io::read_model(kModel);
  lineage::text::Vocab v = m.tokenizer->vocab();
  v.add_bos = false;
  m.tokenizer = lineage::text::make_tokenizer(v);
  const std::string path = (tmp / "no-bos.gguf").string();
  lineage::io::write_model(m, path);
  ASSERT_FALSE(lineage::io::read_model(path).tokenizer->vocab().add_bos);
  ServeOptions o;
  o.model = path;
  RunningServer no_bos(o);
  auto c = no_bos.client();
  const std::string text = "In the beginning";
  auto want = m.tokenizer->encode(text, false);
  ASSERT_NE(want[0], m.tokenizer->bos_id());
  int status = 0;
  auto j = post(c, "/v1/completions", {{"model", "no-bos"}, {"prompt", text}, {"max_tokens", 1}, {"echo", true}, {"logprobs", 1},
                                       {"return_tokens_as_token_ids", true}, {"temperature", 0}}, &status);
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["usage"]["prompt_tokens"], want.size());
  const auto& toks = j["choices"][0]["logprobs"]["tokens"];
  ASSERT_EQ(toks.size(), want.size() + 1);
  for (size_t t = 0; t < want.size(); ++t) EXPECT_EQ(toks[t], "token_id:" + std::to_string(want[t]));
  EXPECT_TRUE(j["choices"][0]["logprobs"]["token_logprobs"][0].is_null());  // nothing before the first token
  // The embedded teacher's own GGUF still adds its BOS.
  RunningServer with_bos(ServeOptions{});
  auto c2 = with_bos.client();
  auto k = post(c2, "/v1/completions", {{"model", kId}, {"prompt", text}, {"max_tokens", 1}}, &status);
  ASSERT_EQ(status, 200) << k.dump();
  EXPECT_EQ(k["usage"]["prompt_tokens"], want.size() + 1);
}

TEST_F(Fixture, StopSequenceCutsTheText) {
  auto c = server->client(key);
  std::string full = direct_greedy("And the earth was", 40);
  ASSERT_GT(full.size(), 20u);
  std::string stop = full.substr(10, 4);
  size_t at = full.find(stop);
  auto j = post(c, "/v1/completions", {{"model", kId}, {"prompt", "And the earth was"}, {"max_tokens", 40}, {"temperature", 0}, {"stop", {stop}}});
  EXPECT_EQ(j["choices"][0]["text"], full.substr(0, at));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
}

TEST_F(Fixture, SeededSamplingRepeatsAndNGivesNChoices) {
  auto c = server->client(key);
  json body = {{"model", kId}, {"prompt", "Blessed are"}, {"max_tokens", 12}, {"temperature", 1.0}, {"n", 3}, {"seed", 42}};
  auto a = post(c, "/v1/completions", body), b = post(c, "/v1/completions", body);
  ASSERT_EQ(a["choices"].size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(a["choices"][i]["index"], i);
    EXPECT_EQ(a["choices"][i]["text"], b["choices"][i]["text"]);
  }
  EXPECT_FALSE(a["choices"][0]["text"] == a["choices"][1]["text"] && a["choices"][1]["text"] == a["choices"][2]["text"]);
}

TEST_F(Fixture, ConcurrentRequestsBatchedGiveTheSameAnswersAsOneAtATime) {
  const std::vector<std::string> prompts = {"In the beginning", "And Moses said", "The LORD", "Blessed is the man",
                                            "And it came to pass", "Jesus wept", "Thou shalt not", "Hear, O Israel"};
  std::vector<std::string> expected;
  for (const auto& p : prompts) expected.push_back(direct_greedy(p, 24));
  std::vector<std::future<std::string>> got;
  for (int rep = 0; rep < 2; ++rep)
    for (const auto& p : prompts)
      got.push_back(std::async(std::launch::async, [&, p] {
        auto c = server->client(key);
        return post(c, "/v1/completions", {{"model", kId}, {"prompt", p}, {"max_tokens", 24}, {"temperature", 0}})["choices"][0]["text"].get<std::string>();
      }));
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].get(), expected[i % prompts.size()]) << prompts[i % prompts.size()];
}

TEST_F(Fixture, MalformedRequestsGetOpenAIErrorsAndTheServerKeepsServing) {
  struct Case {
    std::string name, path, body;
    int status;
    std::string param;  // "" : not checked
    std::string auth = "key";  // "key", "none", or a literal header value
  };
  const std::string ok_prompt = R"("prompt": "Amen", "max_tokens": 2)";
  const std::vector<Case> cases = {
      {"not JSON", "/v1/completions", "{model: x", 400, ""},
      {"JSON but not an object", "/v1/completions", "[1, 2]", 400, ""},
      {"empty body", "/v1/completions", "", 400, ""},
      {"no model", "/v1/completions", R"({"prompt": "a"})", 400, "model"},
      {"model not a string", "/v1/completions", R"({"model": 5, "prompt": "a"})", 400, "model"},
      {"unknown model", "/v1/completions", R"({"model": "gpt-5", "prompt": "a"})", 404, "model"},
      {"no prompt", "/v1/completions", R"({"model": "lineage-kjv-5m"})", 400, "prompt"},
      {"prompt of wrong type", "/v1/completions", R"({"model": "lineage-kjv-5m", "prompt": {"a": 1}})", 400, "prompt"},
      {"token id outside the vocabulary", "/v1/completions", R"({"model": "lineage-kjv-5m", "prompt": [1, 999999]})", 400, "prompt"},
      {"negative max_tokens", "/v1/completions", R"({"model": "lineage-kjv-5m", "prompt": "a", "max_tokens": -1})", 400, "max_tokens"},
      {"max_tokens a string", "/v1/completions", R"({"model": "lineage-kjv-5m", "prompt": "a", "max_tokens": "8"})", 400, "max_tokens"},
      {"max_tokens past the context", "/v1/completions", R"({"model": "lineage-kjv-5m", "prompt": "a", "max_tokens": 100000})", 400, "max_tokens"},
      {"temperature 3", "/v1/completions", R"({"model": "lineage-kjv-5m", "prompt": "a", "temperature": 3})", 400, "temperature"},
      {"top_p 0", "/v1/completions", R"({"model": "lineage-kjv-5m", "prompt": "a", "top_p": 0})", 400, "top_p"},
      {"n 0", "/v1/completions", R"({"model": "lineage-kjv-5m", "prompt": "a", "n": 0})", 400, "n"},
      {"logprobs 21", "/v1/completions", R"({"model": "lineage-kjv-5m", "prompt": "a", "logprobs": 21})", 400, "logprobs"},
      {"top_logprobs 21", "/v1/chat/completions", R"({"model": "lineage-kjv-5m", "messages": [{"role": "user", "content": "a"}], "logprobs": true, "top_logprobs": 21})", 400, "top_logprobs"},
      {"top_logprobs without logprobs", "/v1/chat/completions", R"({"model": "lineage-kjv-5m", "messages": [{"role": "user", "content": "a"}], "top_logprobs": 2})", 400, "top_logprobs"},
      {"five stop sequences", "/v1/completions", R"({"model": "lineage-kjv-5m", "prompt": "a", "stop": ["a","b","c","d","e"]})", 400, "stop"},
      {"stream not a boolean", "/v1/completions", R"({"model": "lineage-kjv-5m", "prompt": "a", "stream": "yes"})", 400, "stream"},
      {"seed a string", "/v1/completions", R"({"model": "lineage-kjv-5m", "prompt": "a", "seed": "x"})", 400, "seed"},
      {"no messages", "/v1/chat/completions", R"({"model": "lineage-kjv-5m"})", 400, "messages"},
      {"messages not an array", "/v1/chat/completions", R"({"model": "lineage-kjv-5m", "messages": "hi"})", 400, "messages"},
      {"unknown role", "/v1/chat/completions", R"({"model": "lineage-kjv-5m", "messages": [{"role": "wizard", "content": "a"}]})", 400, "messages[0].role"},
      {"content of wrong type", "/v1/chat/completions", R"({"model": "lineage-kjv-5m", "messages": [{"role": "user", "content": 5}]})", 400, "messages[0].content"},
      {"chat max_tokens 0", "/v1/chat/completions", R"({"model": "lineage-kjv-5m", "messages": [{"role": "user", "content": "a"}], "max_tokens": 0})", 400, "max_tokens"},
      {"unsupported frequency_penalty", "/v1/completions", R"({"model": "lineage-kjv-5m", "prompt": "a", "frequency_penalty": 1})", 400, "frequency_penalty"},
      {"missing key", "/v1/completions", R"({"model": "lineage-kjv-5m", "prompt": "a"})", 401, "", "none"},
      {"wrong key", "/v1/completions", R"({"model": "lineage-kjv-5m", "prompt": "a"})", 401, "", "Bearer lin-wrong"},
      {"not a bearer token", "/v1/completions", R"({"model": "lineage-kjv-5m", "prompt": "a"})", 401, "", "Basic YWxhZGRpbjpvcGVu"},
      {"unknown route", "/v1/embeddings", R"({"model": "lineage-kjv-5m", "input": "a"})", 404, ""},
      {"huge body", "/v1/completions", R"({"model": "lineage-kjv-5m", "prompt": ")" + std::string(9 << 20, 'a') + "\"}", 413, ""},
      // Hostile ones (issue 19): each a 4xx, none a crash, a hang or unbounded work.
      {"JSON nested 100,000 deep", "/v1/completions",
       R"({"model": "lineage-kjv-5m", "prompt": )" + std::string(100000, '[') + std::string(100000, ']') + "}", 400, ""},
      {"invalid UTF-8 in the prompt", "/v1/completions", "{\"model\": \"lineage-kjv-5m\", \"prompt\": \"a\xff\xfe\"}", 400, ""},
      {"token id -1", "/v1/completions", R"({"model": "lineage-kjv-5m", "prompt": [1, -1]})", 400, "prompt"},
      {"token id 2^40", "/v1/completions", R"({"model": "lineage-kjv-5m", "prompt": [1, 1099511627776]})", 400, "prompt"},
      {"n one million", "/v1/completions", R"({"model": "lineage-kjv-5m", "prompt": "a", "n": 1000000})", 400, "n"},
      {"max_tokens 2^62", "/v1/completions", R"({"model": "lineage-kjv-5m", "prompt": "a", "max_tokens": 4611686018427387904})", 400, "max_tokens"},
      {"300 prompts", "/v1/completions", "{\"model\": \"lineage-kjv-5m\", \"prompt\": [" + [] {
         std::string p;
         for (int i = 0; i < 300; ++i) p += (i ? ", " : "") + std::string("\"a\"");
         return p;
       }() + "]}", 400, "prompt"},
      {"10 prompts x n 128", "/v1/completions",
       R"({"model": "lineage-kjv-5m", "prompt": ["a","b","c","d","e","f","g","h","i","j"], "n": 128})", 400, "n"},
      {"a stop sequence of 64 KB", "/v1/completions",
       R"({"model": "lineage-kjv-5m", "prompt": "a", "stop": [")" + std::string(65536, 's') + "\"]}", 400, "stop"},
      {"a prompt past the context", "/v1/completions",
       R"({"model": "lineage-kjv-5m", "prompt": ")" + [] {
         std::string p;
         for (int i = 0; i < 3000; ++i) p += "Amen ";
         return p;
       }() + "\"}", 400, "prompt"},
  };
  ASSERT_GE(cases.size(), 20u);
  for (const auto& c : cases) {
    httplib::Client cl("127.0.0.1", server->port);
    cl.set_read_timeout(60, 0);
    httplib::Headers h = sdk_headers();
    if (c.auth == "key") h.emplace("Authorization", "Bearer " + key);
    else if (c.auth != "none") h.emplace("Authorization", c.auth);
    auto r = cl.Post(c.path, h, c.body, "application/json");
    ASSERT_TRUE(r) << c.name << ": no answer";
    EXPECT_EQ(r->status, c.status) << c.name << ": " << r->body.substr(0, 300);
    auto j = json::parse(r->body, nullptr, false);
    ASSERT_TRUE(j.is_object() && j.contains("error")) << c.name << ": not OpenAI's error JSON: " << r->body.substr(0, 300);
    EXPECT_TRUE(j["error"]["message"].is_string() && !j["error"]["message"].get<std::string>().empty()) << c.name;
    EXPECT_TRUE(j["error"].contains("type") && j["error"].contains("param") && j["error"].contains("code")) << c.name;
    if (!c.param.empty()) EXPECT_EQ(j["error"]["param"], c.param) << c.name << ": " << j.dump();
    // ... and the next good request is answered.
    auto cl2 = server->client(key);
    int status = 0;
    post(cl2, "/v1/completions", json::parse("{\"model\": \"lineage-kjv-5m\", " + ok_prompt + "}"), &status);
    EXPECT_EQ(status, 200) << "after " << c.name;
  }
}

TEST_F(Fixture, EveryRequestIsLoggedInSqlite) {
  auto c = server->client(key);
  post(c, "/v1/completions", {{"model", kId}, {"prompt", "Let there be light"}, {"max_tokens", 3}, {"temperature", 0.5}, {"seed", 1}});
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2((*tmp / "requests.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT key_id, client, user_agent, status, prompt_tokens, completion_tokens, prompt_sha256, params, prompt, body "
                                   "FROM requests WHERE prompt = 'Let there be light' ORDER BY id DESC LIMIT 1", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  auto col = [&](int i) { return std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, i))); };
  EXPECT_EQ(col(0), "alice");
  EXPECT_EQ(col(1), "127.0.0.1");
  EXPECT_EQ(col(2), "OpenAI/Python 1.54.3");
  EXPECT_EQ(sqlite3_column_int(st, 3), 200);
  EXPECT_EQ(sqlite3_column_int(st, 4), static_cast<int>(ref->tokenizer().encode("Let there be light", true).size()));
  EXPECT_EQ(sqlite3_column_int(st, 5), 3);
  EXPECT_EQ(col(6).size(), 64u);
  auto params = json::parse(col(7));
  EXPECT_EQ(params["seed"], 1);
  EXPECT_NEAR(params["temperature"].get<double>(), 0.5, 1e-6);
  // The body as sent, which lineage monitor reads (system prompt, turns, logprobs, echo).
  auto body = json::parse(col(9));
  EXPECT_EQ(body["prompt"], "Let there be light");
  EXPECT_EQ(body["max_tokens"], 3);
  sqlite3_finalize(st);
  char* mode = nullptr;
  sqlite3_stmt* jm = nullptr;
  sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &jm, nullptr);
  ASSERT_EQ(sqlite3_step(jm), SQLITE_ROW);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(sqlite3_column_text(jm, 0))), "wal");
  sqlite3_finalize(jm);
  (void)mode;
  sqlite3_close(db);
}

// What the server sent is logged as digests (response_sha256: one per choice, in order), so that
// lineage monitor can tell a re-sent answer of ours from a transcript made elsewhere.
TEST_F(Fixture, TheLogHoldsADigestOfEveryAnswerSent) {
  auto c = server->client(key);
  auto whole = post(c, "/v1/chat/completions",
                    {{"model", kId}, {"messages", {{{"role", "user"}, {"content", "Digest me: in the beginning"}}}}, {"max_tokens", 8},
                     {"n", 2}, {"temperature", 1.0}, {"seed", 3}});
  json streamed = {{"model", kId}, {"messages", {{{"role", "user"}, {"content", "Digest me too: the LORD"}}}}, {"max_tokens", 8},
                   {"temperature", 0}, {"stream", true}};
  auto r = c.Post("/v1/chat/completions", sdk_headers(), streamed.dump(), "application/json");
  ASSERT_TRUE(r);
  std::string text;
  auto events = sse_data(r->body);
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    auto e = json::parse(events[i]);
    if (!e["choices"].empty() && e["choices"][0]["delta"].contains("content")) text += e["choices"][0]["delta"]["content"].get<std::string>();
  }
  auto logged = [&](const std::string& marker) {
    // A stream's row is written once it has ended: wait for it.
    for (int tries = 0; tries < 100; ++tries) {
      sqlite3* db = nullptr;
      sqlite3_open_v2((*tmp / "requests.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
      sqlite3_stmt* st = nullptr;
      sqlite3_prepare_v2(db, "SELECT response_sha256 FROM requests WHERE body LIKE ?", -1, &st, nullptr);
      const std::string like = "%" + marker + "%";
      sqlite3_bind_text(st, 1, like.c_str(), -1, SQLITE_TRANSIENT);
      std::string out;
      if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0)) out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
      sqlite3_finalize(st);
      sqlite3_close(db);
      if (!out.empty()) return out;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return std::string();
  };
  EXPECT_EQ(logged("Digest me: in"), lineage::hex(lineage::sha256(whole["choices"][0]["message"]["content"].get<std::string>())) + "," +
                                         lineage::hex(lineage::sha256(whole["choices"][1]["message"]["content"].get<std::string>())));
  EXPECT_EQ(logged("Digest me too"), lineage::hex(lineage::sha256(text)));
}

// Under LINEAGE_TEST_SERVE_DRAFT (test_serve_speculative_*): the tests above ran speculatively —
// the draft proposed tokens, and the model as its own draft had every one kept.
TEST_F(Fixture, SpeculativeDecodingRanWhenADraftIsSet) {
  const char* kind = std::getenv("LINEAGE_TEST_SERVE_DRAFT");
  if (!kind) GTEST_SKIP() << "runs under LINEAGE_TEST_SERVE_DRAFT=random|self (ctest's test_serve_speculative_*)";
  auto c = server->client(key);
  int status = 0;
  auto j = post(c, "/v1/completions", {{"model", kId}, {"prompt", "And God said"}, {"max_tokens", 24}, {"temperature", 0}}, &status);
  ASSERT_EQ(status, 200);
  EXPECT_EQ(j["choices"][0]["text"], direct_greedy("And God said", 24));
  auto m = server->client().Get("/metrics");
  ASSERT_TRUE(m);
  auto value = [&](const std::string& outcome) {
    const std::string name = "lineage_draft_tokens_total{outcome=\"" + outcome + "\"} ";
    auto at = m->body.find(name);
    EXPECT_NE(at, std::string::npos) << m->body;
    return at == std::string::npos ? -1.0 : std::stod(m->body.substr(at + name.size()));
  };
  const double proposed = value("proposed"), accepted = value("accepted");
  EXPECT_GT(proposed, 20);
  if (std::string(kind) == "self") EXPECT_EQ(accepted, proposed);
  else EXPECT_LT(accepted, proposed);
}

TEST(Serve, QuotaIsEnforcedAndTextCanBeKeptOutOfTheLog) {
  lt::TempDir tmp;
  auto keys = (tmp / "keys.json").string();
  // The first request (its prompt + 25 tokens) fits; what is left does not hold a second of 25.
  std::string k = KeyStore::add_key(keys, "bob", 40);
  ServeOptions o;
  o.api_keys = keys;
  o.log = (tmp / "r.db").string();
  o.log_text = false;
  RunningServer s(o);
  auto c = s.client(k);
  int status = 0;
  post(c, "/v1/completions", {{"model", kId}, {"prompt", "And God saw the light"}, {"max_tokens", 25}, {"ignore_eos", true}},
       &status);
  EXPECT_EQ(status, 200);
  auto j = post(c, "/v1/completions", {{"model", kId}, {"prompt", "And"}, {"max_tokens", 25}}, &status);
  EXPECT_EQ(status, 429);
  EXPECT_EQ(j["error"]["code"], "insufficient_quota");
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(o.log.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "SELECT COUNT(*), SUM(prompt IS NULL), SUM(prompt_sha256 IS NOT NULL), SUM(body IS NULL) FROM requests WHERE status = 200", -1, &st, nullptr);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(st, 0), 1);
  EXPECT_EQ(sqlite3_column_int(st, 1), 1);
  EXPECT_EQ(sqlite3_column_int(st, 2), 1);
  EXPECT_EQ(sqlite3_column_int(st, 3), 1);
  sqlite3_finalize(st);
  sqlite3_close(db);
}

TEST(Serve, OverloadAnswers503WithRetryAfter) {
  ServeOptions o;
  o.max_batch = 1;
  o.max_queue = 1;
  RunningServer s(o);
  std::vector<std::future<std::pair<int, std::string>>> got;
  for (int i = 0; i < 8; ++i)
    got.push_back(std::async(std::launch::async, [&] {
      auto c = s.client();
      auto r = c.Post("/v1/completions", json({{"model", kId}, {"prompt", "And"}, {"max_tokens", 60}}).dump(), "application/json");
      return r ? std::make_pair(r->status, r->get_header_value("Retry-After") + "|" + r->body) : std::make_pair(0, std::string());
    }));
  int ok = 0, overloaded = 0;
  for (auto& f : got) {
    auto [st, body] = f.get();
    if (st == 200) ++ok;
    if (st == 503) {
      ++overloaded;
      EXPECT_EQ(body.substr(0, 2), "1|");
      EXPECT_NE(body.find("\"overloaded\""), std::string::npos);
    }
  }
  EXPECT_GE(ok, 1);
  EXPECT_GE(overloaded, 1);
  EXPECT_EQ(ok + overloaded, 8);
}

// lineage monitor reads what lineage serve logged: the request bodies tell conversations that go
// on from single prompts, and scoring (echo + logprobs, nothing generated) from generation.
TEST(Serve, TheMonitorReadsTheBodiesTheServerLogged) {
  lt::TempDir tmp;
  auto keys = (tmp / "keys.json").string();
  std::string k = KeyStore::add_key(keys, "bob", 0);
  ServeOptions o;
  o.api_keys = keys;
  o.log = (tmp / "r.db").string();
  {
    RunningServer s(o);
    auto c = s.client(k);
    int status = 0;
    for (const char* q : {"Who begat Enos?", "What is the firmament?", "Where was Eden?"}) {
      post(c, "/v1/chat/completions",
           {{"model", kId}, {"messages", {{{"role", "system"}, {"content", "Answer step by step."}}, {{"role", "user"}, {"content", q}}}}, {"max_tokens", 4}},
           &status);
      EXPECT_EQ(status, 200);
    }
    for (const char* q : {"And then?", "Why so?"}) {
      post(c, "/v1/chat/completions",
           {{"model", kId}, {"messages", {{{"role", "user"}, {"content", "Who begat Enos?"}}, {{"role", "assistant"}, {"content", "Seth."}}, {{"role", "user"}, {"content", q}}}},
            {"max_tokens", 4}},
           &status);
      EXPECT_EQ(status, 200);
    }
    for (const char* text : {"In the beginning God created the heaven", "And the earth was without form"}) {
      post(c, "/v1/completions", {{"model", kId}, {"prompt", text}, {"max_tokens", 0}, {"echo", true}, {"logprobs", 3}}, &status);
      EXPECT_EQ(status, 200);
    }
  }
  auto report = lineage::protect::analyze_log(o.log);
  EXPECT_EQ(report.requests, 7);
  ASSERT_EQ(report.keys.size(), 1u);
  const auto& bob = report.keys[0];
  EXPECT_EQ(bob.key_id, "bob");
  EXPECT_NEAR(bob.follow_up_share, 2.0 / 7, 1e-9);
  EXPECT_NEAR(bob.reasoning_share, 0.0, 1e-9);  // "step by step" was the system prompt's
  EXPECT_GT(bob.scored_per_day, 0);
  EXPECT_FALSE(bob.flagged);
}

namespace {

// A raw TCP connection to the server, for what no HTTP client library sends.
struct RawConnection {
  int fd = -1;
  explicit RawConnection(int port) {
    fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) fd = -1;
  }
  ~RawConnection() {
    if (fd >= 0) close(fd);
  }
  void send_text(const std::string& s) const { (void)::send(fd, s.data(), s.size(), MSG_NOSIGNAL); }
  // Waits up to `seconds` for the server to close the connection (reads and drops what it sends).
  bool closed_by_server_within(int seconds) const {
    timeval tv{seconds, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[4096];
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < end) {
      ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n == 0) return true;
      if (n < 0) return errno == ECONNRESET;
    }
    return false;
  }
};


}  // namespace

// Connections that misbehave below HTTP (issue 19): dropped halfway, a client that leaves in the
// middle of a stream, senders slower than the read timeout. Each is closed or finished cleanly, the
// server answers the next request, and its memory stays where it was.
TEST(Serve, DisconnectsAndSlowSendersAreClosedAndTheServerKeepsServing) {
  ServeOptions o;
  o.read_timeout_s = 2;
  o.threads = 4;
  RunningServer server(o);
  auto good = [&] {
    auto c = server.client();
    int status = 0;
    post(c, "/v1/completions", {{"model", kId}, {"prompt", "Amen"}, {"max_tokens", 2}}, &status);
    return status;
  };
  ASSERT_EQ(good(), 200);
  const int64_t rss_before = lineage::testing::resident_kb();
  for (int round = 0; round < 20; ++round) {
    { RawConnection c(server.port); }  // connect and leave
    {
      RawConnection c(server.port);  // headers promise a body that never comes
      c.send_text("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"mod");
    }
    {
      RawConnection c(server.port);  // a stream abandoned after its first event
      std::string body = json({{"model", kId}, {"prompt", "And God said"}, {"max_tokens", 40}, {"stream", true}}).dump();
      c.send_text("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
                  std::to_string(body.size()) + "\r\n\r\n" + body);
      char buf[256];
      (void)recv(c.fd, buf, sizeof buf, 0);
    }
    { RawConnection c(server.port); c.send_text("GARBAGE\r\n\r\n"); }  // not HTTP at all
  }
  EXPECT_EQ(good(), 200);
  // Slow senders, more of them than HTTP threads: each is cut at the read timeout, and a good
  // request is answered once they are.
  std::vector<std::unique_ptr<RawConnection>> slow;
  for (int i = 0; i < 8; ++i) {
    slow.push_back(std::make_unique<RawConnection>(server.port));
    slow.back()->send_text("POST /v1/completions HTTP/1.1\r\nHost: x\r\n");  // ... and nothing more
  }
  for (auto& c : slow) EXPECT_TRUE(c->closed_by_server_within(10)) << "a silent connection stayed open";
  EXPECT_EQ(good(), 200);
  const int64_t grown_mb = (lineage::testing::resident_kb() - rss_before) / 1024;
  EXPECT_LT(grown_mb, 200) << "resident memory grew by " << grown_mb << " MB over the abuse";
}
