// Per-key statistics for the monitor: what each key harvested (tokens it got back on prompts it
// had not sent before, per active day), how it asked, and from where.
#include <algorithm>
#include <numeric>
#include <unordered_set>

#include "monitor_internal.h"

namespace lineage::protect::monitor {

namespace {

constexpr int64_t kDayMs = 86400000, kHourMs = 3600000;  // hours of the day, UTC
constexpr int kLongAnswer = 200;  // tokens per sample: what a harvest of answers is made of

}  // namespace

KeyStats unit_stats(const Corpus& c, std::span<const size_t> requests) {
  KeyStats s;
  if (requests.empty()) return s;
  s.requests = static_cast<int64_t>(requests.size());
  s.first_ms = c.requests[requests.front()].ms;
  s.last_ms = c.requests[requests.back()].ms;
  std::unordered_set<uint64_t> contents, prefixes;
  std::unordered_set<int64_t> days;
  std::unordered_set<uint32_t> clients, networks, agents;
  std::unordered_set<uint64_t> foreign;
  uint64_t previous_conversation = 0;
  for (size_t q : requests) {
    const auto& r = c.requests[q];
    s.prompt_tokens += r.prompt_tokens;
    s.completion_tokens += r.completion_tokens;
    days.insert(r.ms / kDayMs);
    s.hours_of_day |= 1u << ((r.ms / kHourMs) % 24);
    const bool new_content = contents.insert(r.content).second, new_prefix = prefixes.insert(r.prefix).second;
    const bool follow_up = r.flags & kFollowUp;
    const bool long_answer = r.completion_tokens / r.samples >= kLongAnswer;
    if (r.flags & kScoring) {
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
    clients.insert(r.client), networks.insert(r.network), agents.insert(r.agent);
    if (const int64_t to = answer_sent_to(c, r); to != kUnchecked) {
      ++s.answers_checked;
      // Distinct ones: a few-shot example re-sent with every request is one answer, not many.
      if (to == kNeverSent) s.answers_foreign += foreign.insert(r.answer).second;
      else if (to != r.key) ++s.answers_elsewhere;
    }
  }
  s.active_days = static_cast<double>(days.size());
  s.distinct_content = static_cast<int64_t>(contents.size());
  s.clients = static_cast<int64_t>(clients.size());
  s.networks = static_cast<int64_t>(networks.size());
  s.agents = static_cast<int64_t>(agents.size());
  return s;
}

std::vector<size_t> key_requests(const Corpus& c, uint32_t key) {
  std::vector<size_t> out(c.range[key].second - c.range[key].first);
  std::iota(out.begin(), out.end(), c.range[key].first);
  return out;
}

std::vector<KeyStats> key_stats(const Corpus& c) {
  std::vector<KeyStats> out(c.keys.size());
  for (uint32_t k = 0; k < c.keys.size(); ++k) out[k] = unit_stats(c, key_requests(c, k));
  return out;
}

}  // namespace lineage::protect::monitor
