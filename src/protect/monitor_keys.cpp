// Per-key statistics for the monitor: what each key harvested (tokens it got back on prompts it
// had not sent before, per active day), how it asked, and from where.
#include <algorithm>
#include <unordered_set>

#include "monitor_internal.h"

namespace lineage::protect::monitor {

namespace {

constexpr int64_t kDayMs = 86400000, kHourMs = 3600000;
constexpr int kLongAnswer = 200;  // tokens per sample: what a harvest of answers is made of

template <typename T>
uint32_t most_common(const std::unordered_map<T, uint32_t>& counts, T& out) {
  uint32_t best = 0;
  for (auto& [v, n] : counts)
    if (n > best || (n == best && v < out)) best = n, out = v;
  return best;
}

KeyStats stats_of(const Corpus& c, size_t from, size_t to, int64_t origin) {
  KeyStats s;
  s.requests = static_cast<int64_t>(to - from);
  s.first_ms = c.requests[from].ms;
  s.last_ms = c.requests[to - 1].ms;
  std::unordered_set<uint64_t> contents, prefixes;
  std::unordered_set<int64_t> days;
  std::unordered_map<uint32_t, uint32_t> clients, networks, agents;
  std::unordered_map<uint64_t, uint32_t> systems;
  uint64_t previous_conversation = 0;
  for (size_t q = from; q < to; ++q) {
    const auto& r = c.requests[q];
    s.prompt_tokens += r.prompt_tokens;
    s.completion_tokens += r.completion_tokens;
    days.insert(r.ms / kDayMs);
    const uint32_t hour = static_cast<uint32_t>((r.ms - origin) / kHourMs);
    if (s.hours.empty() || s.hours.back() != hour) s.hours.push_back(hour);
    s.hours_of_day |= 1u << ((r.ms / kHourMs) % 24);
    const bool new_content = contents.insert(r.content).second, new_prefix = prefixes.insert(r.prefix).second;
    const bool follow_up = r.flags & kFollowUp;
    const bool long_answer = r.completion_tokens / r.samples >= kLongAnswer;
    if (r.flags & kScoring) {
      ++s.scoring;
      if (new_prefix) s.scored += r.prompt_tokens;
    } else if (r.flags & kLogprobs) {
      if (new_content && long_answer) s.logprob_generated += r.completion_tokens;
    }
    if (!follow_up && new_content && long_answer && !(r.flags & kScoring)) s.generated += r.completion_tokens;
    s.reasoning += (r.flags & kReasoning) != 0;
    s.reasoning_any += (r.flags & (kReasoning | kReasoningAny)) != 0;
    s.follow_up += follow_up;
    if (follow_up && r.conversation != previous_conversation) ++s.interleaved;
    previous_conversation = r.conversation;
    const bool hot = r.temperature < 0 || r.temperature >= 0.6f, roomy = r.max_tokens < 0 || r.max_tokens >= 256;
    s.hot += hot && roomy && !(r.flags & kScoring);
    s.long_answers += r.completion_tokens >= 300;
    ++clients[r.client], ++networks[r.network], ++agents[r.agent];
    if (r.system) ++systems[r.system];
  }
  s.active_days = static_cast<double>(days.size());
  s.distinct_content = static_cast<int64_t>(contents.size());
  s.clients = static_cast<int64_t>(clients.size());
  s.networks = static_cast<int64_t>(networks.size());
  s.agents = static_cast<int64_t>(agents.size());
  most_common(clients, s.top_client);
  most_common(networks, s.top_network);
  most_common(agents, s.top_agent);
  most_common(systems, s.top_system);
  for (auto& [a, n] : agents)
    if (c.agents.name(a).rfind("Mozilla/", 0) == 0) s.browser_share += n;
  s.browser_share /= static_cast<double>(s.requests);
  return s;
}

}  // namespace

std::vector<KeyStats> key_stats(const Corpus& c) {
  int64_t origin = INT64_MAX;
  for (const auto& r : c.requests) origin = std::min(origin, r.ms);
  std::vector<KeyStats> out(c.keys.size());
  for (uint32_t k = 0; k < c.keys.size(); ++k)
    if (c.range[k].second > c.range[k].first) out[k] = stats_of(c, c.range[k].first, c.range[k].second, origin);
  return out;
}

}  // namespace lineage::protect::monitor
