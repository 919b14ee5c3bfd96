// What the monitor does with a log that records what the server sent (response_sha256): a
// conversation carried on by the key it was written for is ordinary, a transcript whose assistant
// turns this server never wrote or wrote for another key is evidence; a few-shot example re-sent
// with every request is one answer, not many. And a log that grows (LogFollower: complete lines
// only, rotation), and the owner's page.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lineage/core/hash.h"
#include "lineage/protect/monitor.h"
#include "lineage/protect/request_record.h"
#include "test_util.h"

namespace lineage::protect {
namespace {

using nlohmann::json;
using testing::TempDir;

struct LogBuilder {
  std::string text;
  int64_t ms = 1790000000000;
  // One chat request of `key`: messages, and the answer the server sent back.
  void add(const std::string& key, const json& messages, const std::string& answer, int completion = 300) {
    json line = {{"time", ms},
                 {"key", key},
                 {"client", "198.51.100." + std::to_string(key.size())},
                 {"endpoint", "/v1/chat/completions"},
                 {"body", {{"messages", messages}, {"max_tokens", 1024}}},
                 {"status", 200},
                 {"prompt_tokens", 40},
                 {"completion_tokens", completion},
                 {"response_sha256", hex(sha256(answer))}};
    text += line.dump() + "\n";
    ms += 61000;
  }
};

json user(const std::string& s) { return {{"role", "user"}, {"content", s}}; }
json assistant(const std::string& s) { return {{"role", "assistant"}, {"content", s}}; }

std::map<std::string, KeyFindings> by_key(const MonitorReport& r) {
  std::map<std::string, KeyFindings> out;
  for (const auto& k : r.keys) out[k.key_id] = k;
  return out;
}

double evidence(const KeyFindings& k, const std::string& signal) {
  for (const auto& e : k.evidence)
    if (e.signal == signal) return e.weight;
  return 0;
}

TEST(MonitorAnswers, TranscriptsTheServerNeverWroteAndConversationsHandedBetweenKeys) {
  TempDir tmp;
  LogBuilder log;
  // The first hour of a log is not checked (conversations begun before it): start with filler.
  log.add("filler", json::array({user("Hello there, how are you today?")}), "Fine, thanks.");
  log.ms += 3700000;
  for (int i = 0; i < 30; ++i) {
    const std::string q = "Question number " + std::to_string(i) + " about rivers and their deltas?";
    const std::string a = "Answer " + std::to_string(i) + ": rivers carry silt to the sea.";
    // honest: asks, gets an answer, follows up re-sending that answer.
    log.add("honest", json::array({user(q)}), a);
    log.add("honest", json::array({user(q), assistant(a), user("And why is that so?")}), "Because of the current, " + std::to_string(i));
    // fewshot: the same made-up example turn with every request (a product's prompt).
    log.add("fewshot", json::array({user("Translate: chat"), assistant("cat"), user("Translate: word " + std::to_string(i))}),
            "word " + std::to_string(i));
    // forger: a new transcript each time, with an assistant turn nobody here wrote.
    log.add("forger", json::array({user(q), assistant("A reply written by another model, number " + std::to_string(i)), user("Go on.")}),
            "Continuing " + std::to_string(i), 900);
    // a pool of keys taking turns over one conversation: each turn re-sends the previous key's answer.
    const std::string pool[3] = {"hop-a", "hop-b", "hop-c"};
    json messages = json::array({user("Plan task " + std::to_string(i))});
    for (int step = 0; step < 3; ++step) {
      const std::string said = "Step " + std::to_string(step) + " of task " + std::to_string(i);
      log.add(pool[(i + step) % 3], messages, said);
      messages.push_back(assistant(said));
      messages.push_back(user("next"));
    }
  }
  testing::spit(tmp / "log.jsonl", log.text);
  auto keys = by_key(analyze_log((tmp / "log.jsonl").string()));
  EXPECT_DOUBLE_EQ(keys["honest"].foreign_answers, 0);
  EXPECT_DOUBLE_EQ(keys["honest"].handed_over, 0);
  EXPECT_EQ(evidence(keys["honest"], "transcripts"), 0);
  EXPECT_FALSE(keys["honest"].flagged);
  EXPECT_LT(keys["fewshot"].foreign_answers, 0.1);  // one distinct made-up turn in 30
  EXPECT_EQ(evidence(keys["fewshot"], "transcripts"), 0);
  EXPECT_FALSE(keys["fewshot"].flagged);
  EXPECT_DOUBLE_EQ(keys["forger"].foreign_answers, 1.0);
  EXPECT_GE(evidence(keys["forger"], "transcripts"), 2.5);
  EXPECT_TRUE(keys["forger"].harvests);
  EXPECT_EQ(evidence(keys["forger"], "conversation"), 0) << "its follow-ups are not conversations with this server";
  for (const char* k : {"hop-a", "hop-b", "hop-c"}) {
    EXPECT_GT(keys[k].handed_over, 0.9) << k;  // their first turns are not follow-ups
    EXPECT_GE(evidence(keys[k], "handed_over"), 2.5) << k;
    EXPECT_EQ(keys[k].community, keys["hop-a"].community) << k << ": keys that share conversations are linked";
  }
  EXPECT_GE(keys["hop-a"].community, 0);

  // Without response_sha256 nothing is checked, and the figures say so (-1).
  std::string plain;
  for (size_t at = 0; at < log.text.size();) {
    size_t end = log.text.find('\n', at);
    json j = json::parse(log.text.substr(at, end - at));
    j.erase("response_sha256");
    plain += j.dump() + "\n";
    at = end + 1;
  }
  testing::spit(tmp / "plain.jsonl", plain);
  auto unchecked = by_key(analyze_log((tmp / "plain.jsonl").string()));
  EXPECT_EQ(unchecked["forger"].foreign_answers, -1);
  EXPECT_EQ(evidence(unchecked["forger"], "transcripts"), 0);
}

TEST(MonitorAnswers, ResponseDigestsReadAsTextOrListAndBadOnesNamed) {
  TempDir tmp;
  const std::string a = hex(sha256("one")), b = hex(sha256("two"));
  testing::spit(tmp / "l.jsonl", json({{"time", 1}, {"key", "k"}, {"response_sha256", a + "," + b}}).dump() + "\n" +
                                     json({{"time", 2}, {"key", "k"}, {"response_sha256", {a, b}}}).dump() + "\n");
  std::vector<RequestRecord> got;
  read_request_log((tmp / "l.jsonl").string(), [&](RequestRecord&& r) { got.push_back(std::move(r)); });
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].response_sha256, a + "," + b);
  EXPECT_EQ(got[1].response_sha256, a + "," + b);
  testing::spit(tmp / "bad.jsonl", json({{"time", 1}, {"key", "k"}, {"response_sha256", 7}}).dump() + "\n");
  EXPECT_NE(testing::error_of([&] { read_request_log((tmp / "bad.jsonl").string(), [](RequestRecord&&) {}); }).find("\"response_sha256\""),
            std::string::npos);
  // lineage serve's SQLite log keeps them too.
  {
    RequestLogWriter w((tmp / "l.db").string());
    RequestRecord r;
    r.unix_ms = 5;
    r.key = "k";
    r.response_sha256 = a;
    w.write(r);
  }
  got.clear();
  read_request_log((tmp / "l.db").string(), [&](RequestRecord&& r) { got.push_back(std::move(r)); });
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].response_sha256, a);
}

std::string request_line(int64_t ms, const std::string& key, const std::string& prompt) {
  return json({{"time", ms}, {"key", key}, {"client", "203.0.113.9"}, {"body", {{"prompt", prompt}}}, {"completion_tokens", 50}}).dump();
}

TEST(MonitorFollow, ReadsCompleteLinesAsTheyComeAndStartsOverWhenTheLogIsRotated) {
  TempDir tmp;
  const auto path = tmp / "live.jsonl";
  testing::spit(path, "");
  LogFollower f(path.string(), {});
  EXPECT_EQ(f.poll(), 0);
  std::ofstream out(path, std::ios::app | std::ios::binary);
  for (int i = 0; i < 10; ++i) out << request_line(1790000000000 + i * 1000, "k" + std::to_string(i % 3), "prompt " + std::to_string(i)) << "\n";
  const std::string half = request_line(1790000100000, "k9", "the last one");
  out << half.substr(0, half.size() / 2) << std::flush;  // a writer half-way through a line
  EXPECT_EQ(f.poll(), 10);
  EXPECT_FALSE(f.restarted());
  EXPECT_EQ(f.report().requests, 10);
  EXPECT_EQ(f.poll(), 0) << "half a line is not read";
  out << half.substr(half.size() / 2) << "\n" << std::flush;
  EXPECT_EQ(f.poll(), 1);
  auto r = f.report();
  EXPECT_EQ(r.requests, 11);
  EXPECT_EQ(r.keys.size(), 4u);
  out.close();
  // Rotated: a new, shorter file in its place.
  testing::spit(path, request_line(1790000200000, "fresh", "after rotation") + "\n");
  EXPECT_EQ(f.poll(), 1);
  EXPECT_TRUE(f.restarted());
  EXPECT_EQ(f.report().requests, 1);
  // A broken line is named by its byte offset.
  std::ofstream more(path, std::ios::app | std::ios::binary);
  more << "{not json}\n" << std::flush;
  EXPECT_NE(testing::error_of([&] { f.poll(); }).find("at byte"), std::string::npos);
}

TEST(MonitorFollow, FollowsLineageServesSqliteLogByRowId) {
  TempDir tmp;
  const auto path = (tmp / "serve.db").string();
  RequestLogWriter w(path);
  auto write = [&](int64_t ms, const std::string& key) {
    RequestRecord r;
    r.unix_ms = ms;
    r.key = key;
    r.body = json({{"prompt", "hello " + std::to_string(ms)}}).dump();
    w.write(r);
  };
  write(1, "b");
  write(2, "a");
  LogFollower f(path, {});
  EXPECT_EQ(f.poll(), 2);
  write(3, "a");
  EXPECT_EQ(f.poll(), 1);
  EXPECT_EQ(f.poll(), 0);
  EXPECT_EQ(f.report().requests, 3);
}

TEST(MonitorHtml, ThePageShowsFlagsEvidenceGraphsAndTheNearestOrdinaryKeys) {
  MonitorReport r;
  r.requests = 120;
  r.threshold = 4;
  r.first_ms = 1790000000000;
  r.last_ms = r.first_ms + 2 * 86400000;
  r.bucket_ms = (r.last_ms - r.first_ms) / 96 + 1;
  for (int i = 0; i < 6; ++i) {
    KeyFindings k;
    k.key_id = "key<" + std::to_string(i) + ">";
    k.requests = 20;
    k.flagged = i < 3;
    k.score = 6 - i;
    k.community = i < 3 ? 0 : -1;
    k.evidence = {{"harvest", 2.5, "long answers & more"}, {"conversation", -0.5, "some follow-ups"}};
    k.timeline.assign(96, 0);
    k.timeline[static_cast<size_t>(i * 10)] = 5;
    r.keys.push_back(k);
  }
  CommunityFindings c;
  c.id = 0;
  c.flagged = true;
  c.keys = {"key<0>", "key<1>", "key<2>"};
  c.links = {{"key<0>", "key<1>", 2.0}, {"key<1>", "key<2>", 1.0}};
  c.evidence = {{"churn", 1.2, "keys replace one another"}};
  r.communities.push_back(c);
  const std::string html = monitor_html(r, "lineage monitor: test.jsonl", "a note");
  EXPECT_NE(html.find("key&lt;0&gt;"), std::string::npos) << "ids are escaped";
  EXPECT_EQ(html.find("key<0>"), std::string::npos);
  EXPECT_NE(html.find("long answers &amp; more"), std::string::npos);
  EXPECT_NE(html.find("keys replace one another"), std::string::npos);
  EXPECT_NE(html.find("Ordinary keys nearest the threshold"), std::string::npos);
  EXPECT_NE(html.find("Key key&lt;3&gt; — score 3.00"), std::string::npos);
  size_t circles = 0, lines = 0;
  for (size_t at = html.find("<circle"); at != std::string::npos; at = html.find("<circle", at + 1)) ++circles;
  for (size_t at = html.find("class=\"link\""); at != std::string::npos; at = html.find("class=\"link\"", at + 1)) ++lines;
  EXPECT_EQ(circles, 3u);
  EXPECT_EQ(lines, 2u);
  EXPECT_EQ(html.find("<script"), std::string::npos);
}

}  // namespace
}  // namespace lineage::protect
