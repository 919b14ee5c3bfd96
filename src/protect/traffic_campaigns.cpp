// Extraction campaigns for the traffic simulator, after the labs' public reports on distillation
// through APIs (2025-26): hydra clusters, logit harvests, sequence-level harvests, resellers and
// careful imitators. Every parameter is drawn per campaign from a wide range.
#include <algorithm>
#include <fmt/format.h>

#include "traffic_kinds.h"

namespace lineage::protect::sim {

namespace {
constexpr int64_t kStartMs = 1793491200000;  // 2026-11-01T00:00:00Z
constexpr int64_t kDayMs = 86400000;

std::vector<int> some_styles(std::mt19937_64& rng, int count, int from) {
  std::vector<int> all;
  for (int s = from; s < Content::reasoning_styles(); ++s) all.push_back(s);
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(std::min<size_t>(all.size(), static_cast<size_t>(count)));
  return all;
}
}  // namespace

// Many keys, each banned after a day or few and replaced, behind rotating proxies; reasoning
// elicitation on the campaign's target capabilities mixed with cover traffic.
void World::hydra(int no, int keys) {
  const std::string cname = fmt::format("hydra-{}", no);
  const double reasoning = real(0.25, 0.65), cover = real(0.15, 0.4), rotate = real(0.3, 1.0);
  const bool browsers = chance(0.5);
  const std::string agent = sdk();
  const int subnet = uniform(0, 10000), lifetime = uniform(1, std::min(4, days_));
  std::vector<size_t> targets;
  for (int i = uniform(2, 5); i > 0; --i) targets.push_back(domain());
  const auto styles = some_styles(rng_, uniform(2, 6), 0);
  const bool around_clock = chance(0.5);
  const int max_tokens = chance(0.3) ? 0 : uniform(2048, 8192);
  for (int k = 0; k < keys; ++k) {
    const std::string key = fmt::format("{}-{:03d}", cname, k);
    label(key, "hydra", cname);
    // Keys follow each other: a new one starts as an old one is banned.
    const double start_day = (days_ - lifetime) * (keys > 1 ? double(k) / (keys - 1) : 0.0) + real(-0.3, 0.3);
    const int64_t from = kStartMs + static_cast<int64_t>(std::max(0.0, start_day) * kDayMs);
    const int n = static_cast<int>(lifetime * real(60, 500));
    const auto times = around_clock ? paced_times(n, from, lifetime * 86400.0 / n, 0.6)
                                    : human_times(n, static_cast<int>(start_day), static_cast<int>(start_day) + lifetime - 1, uniform(-8, 9));
    const std::string fixed_ip = datacenter(subnet + uniform(0, 2));
    const std::string key_agent = browsers ? browser() : agent;
    for (int64_t ms : times) {
      const size_t d = targets[static_cast<size_t>(uniform(0, static_cast<int>(targets.size()) - 1))];
      const double r = real();
      std::string text = r < reasoning ? content_.reasoning_request(d, styles[static_cast<size_t>(uniform(0, static_cast<int>(styles.size()) - 1))])
                         : r < reasoning + cover ? (chance(0.5) ? content_.chatter() : content_.question(domain()))
                                                 : content_.instruction(d);
      const bool harvest = r < reasoning || r >= reasoning + cover;
      emit(key, ms, chance(rotate) ? residential() : fixed_ip, key_agent, chat({{text, 0}}, "", max_tokens, real(0.6, 1.0)),
           static_cast<int64_t>(expo(harvest ? 700 : 200)) + 50);
    }
  }
}

// Scoring given text for logit distillation: echo + top_logprobs, no generation, thousands of
// passages a day from a few servers.
void World::logit_kd(int no, int keys) {
  const std::string cname = fmt::format("logit_kd-{}", no);
  const int subnet = uniform(0, 10000), top = uniform(5, 20);
  const std::string agent = sdk();
  for (int k = 0; k < keys; ++k) {
    const std::string key = fmt::format("{}-{:02d}", cname, k);
    label(key, "logit_kd", cname);
    const int life = uniform(2, days_), start = uniform(0, days_ - life);
    const int per_day = uniform(500, 2500);
    const auto times = paced_times(per_day * life, kStartMs + start * kDayMs, 86400.0 / per_day, 0.5);
    const std::string ip = datacenter(subnet);
    for (int64_t ms : times) {
      json body = {{"model", "teacher"}, {"prompt", content_.passage(uniform(3, 15))}, {"max_tokens", chance(0.7) ? 0 : 1},
                   {"echo", true}, {"logprobs", top}, {"temperature", 1.0}};
      emit(key, ms, ip, agent, body, 0);
    }
  }
}

// Sequence-level KD: many diverse prompts across the capability space, long completions at
// temperature 0.7-1.0, no log-probabilities.
void World::seq_kd(int no, int keys) {
  const std::string cname = fmt::format("seq_kd-{}", no);
  const int subnet = uniform(0, 10000);
  const double rotate = chance(0.3) ? real(0.5, 1.0) : 0.0, reasoning = real(0, 0.3);
  const std::string agent = sdk();
  for (int k = 0; k < keys; ++k) {
    const std::string key = fmt::format("{}-{:02d}", cname, k);
    label(key, "seq_kd", cname);
    const int life = uniform(2, days_), start = uniform(0, days_ - life);
    const int per_day = uniform(100, 1000);
    const std::string ip = datacenter(subnet);
    const int max_tokens = uniform(1024, 4096);
    for (int64_t ms : paced_times(per_day * life, kStartMs + start * kDayMs, 86400.0 / per_day, 0.7)) {
      const size_t d = domain();
      std::string text = chance(reasoning) ? content_.reasoning_request(d, uniform(0, Content::reasoning_styles() - 1))
                                           : chance(0.7) ? content_.instruction(d) : content_.question(d);
      emit(key, ms, chance(rotate) ? residential() : ip, agent, chat({{text, 0}}, "", max_tokens, real(0.7, 1.0)),
           static_cast<int64_t>(expo(600)) + 150);
    }
  }
}

// A reseller's key: its own users' traffic (each user's conversations, interleaved; code,
// chatter, questions) from the reseller's servers, with a campaign's harvest mixed in.
void World::reseller(int no, int keys) {
  const std::string cname = fmt::format("reseller-{}", no);
  const int subnet = uniform(0, 10000);
  const std::string agent = chance(0.5) ? sdk() : fmt::format("ProxyGate/{}.{}", uniform(1, 4), uniform(0, 9));
  const double share = real(0.1, 0.5);
  for (int k = 0; k < keys; ++k) {
    const std::string key = fmt::format("{}-{:02d}", cname, k);
    label(key, "reseller", cname);
    const int per_day = uniform(100, 800);
    std::vector<std::vector<Turn>> users(static_cast<size_t>(uniform(10, 200)));
    for (int64_t ms : paced_times(per_day * days_, kStartMs, 86400.0 / per_day, 0.9)) {
      const size_t d = domain();
      if (chance(share)) {  // the campaign's part
        std::string text = chance(0.5) ? content_.reasoning_request(d, uniform(0, Content::reasoning_styles() - 1)) : content_.instruction(d);
        emit(key, ms, datacenter(subnet), agent, chat({{text, 0}}, "", 4096, real(0.7, 1.0)), static_cast<int64_t>(expo(700)) + 150);
        continue;
      }
      auto& conv = users[static_cast<size_t>(uniform(0, static_cast<int>(users.size()) - 1))];
      if (conv.empty() || conv.size() >= 6 || chance(0.5)) conv.clear();
      conv.push_back({chance(0.3) ? content_.chatter() : chance(0.5) ? content_.code_question() : content_.question(d),
                      static_cast<int64_t>(expo(300)) + 10});
      emit(key, ms, datacenter(subnet), agent, chat(conv, "", chance(0.5) ? 0 : 2048, real(0, 1)), conv.back().completion);
    }
  }
}

// Careful imitators: per key one home address, one browser, human hours, 12-50 requests a day,
// a life of 3-7 days; reasoning requests on the campaign's targets, paraphrased.
void World::careful(int no, int keys) {
  const std::string cname = fmt::format("careful-{}", no);
  std::vector<size_t> targets;
  for (int i = uniform(1, 3); i > 0; --i) targets.push_back(domain());
  const auto styles = some_styles(rng_, uniform(3, 8), chance(0.5) ? 0 : 6);  // half use only unusual wordings
  const double reasoning = real(0.6, 1.0), follow_up = real(0, 0.2);
  const int tz = uniform(-8, 9);
  const bool one_zone = chance(0.5);
  for (int k = 0; k < keys; ++k) {
    const std::string key = fmt::format("{}-{:03d}", cname, k);
    label(key, "careful", cname);
    const int life = std::min(days_, uniform(3, 7));
    const int start = keys > 1 ? static_cast<int>(std::lround(double(days_ - life) * k / (keys - 1))) : 0;
    const int n = life * uniform(12, 50);
    const std::string ip = residential(), agent = browser();
    std::vector<Turn> conv;
    for (int64_t ms : human_times(n, start, start + life - 1, one_zone ? tz : uniform(-8, 9))) {
      if (conv.empty() || conv.size() >= 3 || !chance(follow_up)) conv.clear();
      const size_t d = targets[static_cast<size_t>(uniform(0, static_cast<int>(targets.size()) - 1))];
      std::string text = chance(reasoning) ? content_.reasoning_request(d, styles[static_cast<size_t>(uniform(0, static_cast<int>(styles.size()) - 1))])
                                           : content_.question(d);
      conv.push_back({text, static_cast<int64_t>(expo(600)) + 200});
      emit(key, ms, ip, agent, chat(conv, "", chance(0.5) ? 0 : uniform(2048, 4096), chance(0.5) ? -1 : 0.7), conv.back().completion);
    }
  }
}

}  // namespace lineage::protect::sim
