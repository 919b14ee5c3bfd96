// lineage monitor, piece by piece: what a request body asks for, reading SQLite and JSONL logs
// (and naming what is wrong in them), Louvain on a graph with known communities, allowlists, and
// the labelled evaluation. The held-out figures are in monitor_holdout_test.cpp.
#include <sqlite3.h>

#include <fstream>

#include "lineage/core/json.h"
#include "lineage/protect/monitor.h"
#include "lineage/protect/request_record.h"
#include "lineage/protect/traffic_sim.h"
#include "protect/monitor_internal.h"
#include "test_util.h"

namespace lineage::protect {
namespace {

using nlohmann::json;
using testing::error_of;
using testing::TempDir;

monitor::Request parse(const json& body, int64_t completion = 0) {
  RequestRecord rec;
  rec.body = body.dump();
  rec.completion_tokens = completion;
  monitor::Request r;
  std::vector<uint64_t> sentences, words;
  monitor::parse_request(rec, r, sentences, words);
  return r;
}

TEST(MonitorFeatures, ReadsWhatABodyAsksFor) {
  // Logit-KD scoring: echo + logprobs (the completions API's integer form), nothing generated.
  auto scoring = parse({{"prompt", "The river had long since changed its course."}, {"echo", true}, {"logprobs", 5}, {"max_tokens", 0}});
  EXPECT_TRUE(scoring.flags & monitor::kScoring);
  EXPECT_EQ(scoring.top_logprobs, 5);
  // Log-probabilities of generated text (chat form): not scoring.
  auto generated = parse({{"messages", {{{"role", "user"}, {"content", "Tell me about glaciers."}}}}, {"logprobs", true},
                          {"top_logprobs", 20}, {"max_tokens", 512}, {"n", 4}}, 800);
  EXPECT_TRUE(generated.flags & monitor::kLogprobs);
  EXPECT_FALSE(generated.flags & monitor::kScoring);
  EXPECT_EQ(generated.top_logprobs, 20);
  EXPECT_EQ(generated.samples, 4);
  // A system prompt that asks for reasoning is not the user's own request for it; a follow-up is seen.
  auto ide = parse({{"messages",
                     {{{"role", "system"}, {"content", "You are an assistant. Think step by step before you answer."}},
                      {{"role", "user"}, {"content", "Why does my build fail?"}},
                      {{"role", "assistant"}, {"content", "Which error do you see?"}},
                      {{"role", "user"}, {"content", "An undefined reference to main."}}}}});
  EXPECT_TRUE(ide.flags & monitor::kFollowUp);
  EXPECT_TRUE(ide.flags & monitor::kReasoningAny);
  EXPECT_NE(ide.system, 0u);
  EXPECT_EQ(ide.n_sentences, 1);  // "An undefined reference to main"
  // Content parts, and two phrasings of one request give one content hash only when equal.
  auto parts = parse({{"messages", {{{"role", "user"}, {"content", {{{"type", "text"}, {"text", "Explain your reasoning: 2+2?"}}}}}}}});
  EXPECT_TRUE(parts.flags & monitor::kReasoningAny);
  EXPECT_EQ(parse({{"prompt", "Solve problem 17 now"}}).content, parse({{"prompt", "solve problem 18, now"}}).content);
  EXPECT_NE(parse({{"prompt", "Solve problem 17 now"}}).content, parse({{"prompt", "Solve problem 17 later"}}).content);
}

TEST(MonitorFeatures, NetworksOfAddresses) {
  EXPECT_EQ(monitor::network_of("203.0.113.7"), "203.0.113");
  EXPECT_EQ(monitor::network_of("2001:db8:85a3:8d3:1319:8a2e:370:7348"), "2001:db8:85a3");
  EXPECT_EQ(monitor::network_of("unix"), "unix");
}

TEST(RequestLog, ReadsIsoTimes) {
  EXPECT_EQ(parse_iso_time_ms("1970-01-01T00:00:00Z", "t"), 0);
  EXPECT_EQ(parse_iso_time_ms("2026-11-01T00:00:00Z", "t"), 1793491200000);
  EXPECT_EQ(parse_iso_time_ms("2026-11-01T08:00:00.250+00:00", "t"), 1793491200000 + 8 * 3600000 + 250);
  EXPECT_EQ(parse_iso_time_ms("2024-02-29T12:00:00", "t"), 1709208000000);
  EXPECT_NE(error_of([] { parse_iso_time_ms("2026-11-01T08:00:00+02:00", "line 3"); }).find("only UTC"), std::string::npos);
  EXPECT_NE(error_of([] { parse_iso_time_ms("yesterday", "line 3"); }).find("line 3"), std::string::npos);
}

TEST(RequestLog, ReadsJsonlAndNamesWhatIsWrong) {
  TempDir tmp;
  const auto good = tmp / "good.jsonl";
  testing::spit(good,
                R"({"time": "2026-11-01T08:00:00Z", "key": "k1", "client": "203.0.113.7", "user_agent": "curl/8", "endpoint": "/v1/completions", "body": {"prompt": "hi", "max_tokens": 5}, "prompt_tokens": 2, "completion_tokens": 5})"
                "\n\n"
                R"({"time": 1793491200500, "key_id": "k2", "body": "{\"messages\": []}", "status": 429})"
                "\n");
  std::vector<RequestRecord> got;
  read_request_log(good.string(), [&](RequestRecord&& r) { got.push_back(std::move(r)); });
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].key, "k1");
  EXPECT_EQ(got[0].unix_ms, 1793491200000 + 8 * 3600000);
  EXPECT_EQ(got[0].completion_tokens, 5);
  EXPECT_EQ(json::parse(got[0].body)["max_tokens"], 5);
  EXPECT_EQ(got[1].key, "k2");
  EXPECT_EQ(got[1].status, 429);
  auto bad = [&](const std::string& text) {
    testing::spit(tmp / "bad.jsonl", text);
    return error_of([&] { read_request_log((tmp / "bad.jsonl").string(), [](RequestRecord&&) {}); });
  };
  EXPECT_NE(bad("{\"time\": 1, \"key\": \"a\"}\n{not json\n").find("line 2: not JSON"), std::string::npos);
  EXPECT_NE(bad("{\"time\": 1}\n").find("no \"key\""), std::string::npos);
  EXPECT_NE(bad("{\"key\": \"a\"}\n").find("no \"time\""), std::string::npos);
  EXPECT_NE(bad("{\"time\": 1, \"key\": \"a\", \"prompt_tokens\": \"many\"}\n").find("\"prompt_tokens\" must be an integer"), std::string::npos);
  // Found by fuzz_jsonl: a float past int64 reached a float-to-integer conversion (UB).
  EXPECT_NE(bad("{\"time\": 1, \"key\": \"a\", \"prompt_tokens\": 4.06e33}\n").find("\"prompt_tokens\" must be an integer"), std::string::npos);
  EXPECT_NE(bad("{\"time\": 1e40, \"key\": \"a\"}\n").find("is not whole unix milliseconds"), std::string::npos);
  EXPECT_NE(bad("{\"time\": 1, \"key\": \"a\", \"body\": 7}\n").find("\"body\" must be the request body"), std::string::npos);
  EXPECT_NE(bad("[1, 2]\n").find("expected a JSON object"), std::string::npos);
  EXPECT_NE(bad("time,key\n1,a\n").find("expected SQLite (lineage serve --log) or JSONL"), std::string::npos);
}

TEST(RequestLog, ALogThatIsNotARequestLogIsRefused) {
  TempDir tmp;
  EXPECT_NE(error_of([&] { analyze_log((tmp / "absent.db").string()); }).find("cannot open the request log"), std::string::npos);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((tmp / "other.db").c_str(), &db), SQLITE_OK);
  sqlite3_exec(db, "CREATE TABLE t (x INTEGER);", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  EXPECT_NE(error_of([&] { analyze_log((tmp / "other.db").string()); }).find("is not a lineage request log"), std::string::npos);
  testing::spit(tmp / "junk.db", "this is not sqlite");
  EXPECT_NE(error_of([&] { analyze_log((tmp / "junk.db").string()); }).find("junk.db"), std::string::npos);
}

TEST(Louvain, FindsThreeCliquesJoinedBySingleEdges) {
  // Three 6-cliques in a ring, one edge between neighbours: modularity's optimum is the cliques.
  monitor::Graph g;
  g.adj.resize(18);
  auto link = [&](uint32_t a, uint32_t b, float w) {
    g.adj[a].push_back({b, w});
    g.adj[b].push_back({a, w});
    g.total_weight += w;
  };
  for (uint32_t c = 0; c < 3; ++c)
    for (uint32_t i = 0; i < 6; ++i)
      for (uint32_t j = i + 1; j < 6; ++j) link(c * 6 + i, c * 6 + j, 1.0f);
  link(5, 6, 1.0f), link(11, 12, 1.0f), link(17, 0, 1.0f);
  for (uint64_t seed : {1, 2, 3}) {
    auto comm = monitor::louvain(g, seed);
    for (uint32_t c = 0; c < 3; ++c)
      for (uint32_t i = 1; i < 6; ++i) EXPECT_EQ(comm[c * 6 + i], comm[c * 6]) << "seed " << seed;
    EXPECT_NE(comm[0], comm[6]);
    EXPECT_NE(comm[6], comm[12]);
    EXPECT_NE(comm[0], comm[12]);
  }
}

TEST(Monitor, JsonlAndSqliteOfOneSimulationGiveOneReport) {
  TempDir tmp;
  SimulationOptions so;
  so.ordinary_keys = 200, so.campaign_keys = 60, so.days = 3, so.seed = 7;
  auto a = simulate_traffic((tmp / "sim.db").string(), so);
  auto b = simulate_traffic((tmp / "sim.jsonl").string(), so);
  EXPECT_EQ(a.requests, b.requests);
  EXPECT_EQ(a.keys, 260);
  EXPECT_EQ(testing::slurp(a.labels_path), testing::slurp(b.labels_path));
  auto ra = analyze_log((tmp / "sim.db").string()), rb = analyze_log((tmp / "sim.jsonl").string());
  EXPECT_EQ(ra.requests, a.requests);
  ASSERT_EQ(ra.keys.size(), rb.keys.size());
  for (size_t i = 0; i < ra.keys.size(); ++i) {
    EXPECT_EQ(ra.keys[i].key_id, rb.keys[i].key_id);
    EXPECT_EQ(ra.keys[i].flagged, rb.keys[i].flagged) << ra.keys[i].key_id;
    EXPECT_NEAR(ra.keys[i].score, rb.keys[i].score, 1e-9) << ra.keys[i].key_id;
  }
  EXPECT_NE(error_of([&] { simulate_traffic((tmp / "sim.db").string(), so); }).find("exists"), std::string::npos);
}

TEST(Monitor, EveryFlagIsExplainedAndAllowlistsAreHonoured) {
  TempDir tmp;
  SimulationOptions so;
  so.ordinary_keys = 300, so.campaign_keys = 80, so.days = 4, so.seed = 8;
  auto sim = simulate_traffic((tmp / "sim.db").string(), so);
  auto report = analyze_log((tmp / "sim.db").string());
  std::vector<std::string> flagged;
  for (const auto& k : report.keys) {
    if (!k.flagged) continue;
    flagged.push_back(k.key_id);
    // Its own evidence reaches the threshold, or its community's does and it shows one of its signs.
    double own = 0;
    for (const auto& e : k.evidence) own += e.weight;
    EXPECT_NEAR(own, k.score, 1e-9);
    EXPECT_TRUE(k.score >= report.threshold || (k.takes_part && k.community_score >= report.threshold)) << k.key_id;
    EXPECT_FALSE(k.evidence.empty() && k.community < 0) << k.key_id;
  }
  ASSERT_GE(flagged.size(), 10u);
  MonitorOptions allow;
  allow.allow_keys = {flagged[0], flagged[1]};
  auto quiet = analyze_log((tmp / "sim.db").string(), allow);
  for (const auto& k : quiet.keys) EXPECT_TRUE(k.key_id != flagged[0] && k.key_id != flagged[1]);
  // The evaluation counts keys and requests per kind from the labels the simulation wrote.
  auto labels = read_labels(sim.labels_path);
  EXPECT_EQ(labels.size(), 380u);
  auto e = evaluate_monitor(report, labels);
  int64_t keys = 0, flagged_keys = 0;
  for (const auto& s : e.kinds) keys += s.keys, flagged_keys += s.flagged;
  EXPECT_EQ(keys, 380);
  EXPECT_EQ(flagged_keys, static_cast<int64_t>(flagged.size()));
  EXPECT_EQ(e.true_positives + e.false_positives, e.flagged_keys);
  EXPECT_NE(format_evaluation(e).find("precision"), std::string::npos);
}

TEST(Monitor, LabelsThatAreNotLabelsAreRefused) {
  TempDir tmp;
  testing::spit(tmp / "l.json", R"({"k": {"label": "bad"}})");
  EXPECT_NE(error_of([&] { read_labels((tmp / "l.json").string()); }).find("expected campaign or ordinary"), std::string::npos);
  testing::spit(tmp / "l.json", R"([1])");
  EXPECT_NE(error_of([&] { read_labels((tmp / "l.json").string()); }).find("expected an object"), std::string::npos);
  testing::spit(tmp / "l.json", R"({"k": {"kind": "x"}})");
  EXPECT_NE(error_of([&] { read_labels((tmp / "l.json").string()); }).find("key 'k' needs"), std::string::npos);
}

// The {"keys": {KEY: {label, kind}}} wrapper reads as the bare object; a key named "keys" still
// reads as a key.
TEST(Monitor, LabelsUnderAKeysWrapperRead) {
  TempDir tmp;
  testing::spit(tmp / "l.json",
                R"({"scenario": "x", "keys": {"a": {"label": "campaign", "kind": "cot"}, "b": {"label": "ordinary", "kind": "casual"}}})");
  auto l = read_labels((tmp / "l.json").string());
  ASSERT_EQ(l.size(), 2u);
  EXPECT_TRUE(l.at("a").campaign);
  EXPECT_EQ(l.at("a").kind, "cot");
  EXPECT_FALSE(l.at("b").campaign);
  testing::spit(tmp / "l.json", R"({"keys": {"label": "ordinary", "kind": "casual"}})");
  l = read_labels((tmp / "l.json").string());
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l.at("keys").kind, "casual");
  testing::spit(tmp / "l.json", R"({"keys": {"a": {"label": "maybe"}}})");
  EXPECT_NE(error_of([&] { read_labels((tmp / "l.json").string()); }).find("expected campaign or ordinary"), std::string::npos);
}

}  // namespace
}  // namespace lineage::protect
