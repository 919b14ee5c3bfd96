// The evidence that scores a key or a community. Every term names its signal and its source:
//  - harvest: long completions (>= 200 tokens) returned on single-turn prompts the key had not
//    sent before, per active day. Sequence-level KD (Kim & Rush 2016) needs many such answers;
//    people ask again, follow up, and read what they get.
//  - scoring: tokens of given text scored with log-probabilities (echo, no generation), new text
//    only, per active day: the signal of logit distillation through an API. Evaluation harnesses
//    score the same contexts with each answer choice and rerun the same items, so their new text
//    is bounded by the benchmark.
//  - logprob harvest: completion tokens returned with log-probabilities, new prompts, long answers.
//  - reasoning: requests whose own words ask for step-by-step reasoning (boilerplate shared by
//    many keys, such as a product's system prompt, excluded): reasoning traces are what the
//    campaigns in the labs' reports were after.
//  - rotation: a new client address for most requests (proxy pools), which people do not do.
//  - churn: a community whose keys live a fraction of its span and follow one another (banned
//    keys replaced).
//  - transcripts, handed over: where the log records a digest of every answer the server sent,
//    follow-ups whose last assistant turn this server never wrote (distinct ones: a few-shot
//    example re-sent with every request counts once) are transcripts assembled elsewhere, and
//    follow-ups re-sending an answer written for another key are a pool of keys taking turns over
//    one conversation (the key turnover of the agentic campaigns in the labs' reports).
//  - conversation (negative): requests that continue a conversation; PRADA (Juuti et al. 2019)
//    tests whether queries look like a natural distribution, and a dialogue that goes on is the
//    plainest sign of a person or a product used by people.
#include <algorithm>
#include <cmath>
#include <fmt/format.h>

#include "monitor_internal.h"

namespace lineage::protect::monitor {

namespace {

// 1 + log2(x / x0) between 0 and cap: 0 at x0 / 2, 1 at x0, 2 at 2 x0.
double excess(double x, double x0, double cap) { return x <= x0 / 2 ? 0.0 : std::min(cap, 1 + std::log2(x / x0)); }

std::string pct(double x) { return fmt::format("{:.0f}%", 100 * x); }
std::string tokens(double x) { return x >= 1e6 ? fmt::format("{:.1f}M", x / 1e6) : fmt::format("{:.0f}k", x / 1e3); }

void add(std::vector<Evidence>& ev, double& score, const char* signal, double w, std::string why) {
  if (w == 0) return;
  score += w;
  ev.push_back({signal, w, std::move(why)});
}

// Transcripts (a share of checked follow-ups re-sending turns this server never wrote) from half of
// them on, and hand-overs (a share re-sending answers written for another key) from a fifth.
double transcripts_weight(double share) { return share < 0.5 ? 0.0 : std::min(3.0, 1.5 + 3 * (share - 0.5)); }
double handed_over_weight(double share) { return share < 0.2 ? 0.0 : std::min(3.0, 1 + 4 * share); }

bool harvested(const std::vector<Evidence>& ev) {
  for (const auto& e : ev)
    if ((e.signal == "harvest" || e.signal == "volume" || e.signal == "scoring" || e.signal == "logprob_harvest" ||
         e.signal == "transcripts" || e.signal == "handed_over") &&
        e.weight >= 1)
      return true;
  return false;
}

// Keys that take over from one another: of the keys that live under half the span, the share
// that start within 12 hours of another member's last request.
double succession(const std::vector<std::pair<int64_t, int64_t>>& lives, int64_t span) {
  constexpr int64_t kNear = 12 * 3600000LL;
  std::vector<int64_t> ends;
  for (auto& [a, b] : lives) ends.push_back(b);
  std::sort(ends.begin(), ends.end());
  int64_t following = 0;
  for (auto& [a, b] : lives) {
    if (b - a >= span / 2) continue;
    auto it = std::lower_bound(ends.begin(), ends.end(), a - kNear);
    bool near = false;
    for (; it != ends.end() && *it <= a + kNear && !near; ++it) near = *it != b;
    following += near;
  }
  return lives.empty() ? 0 : static_cast<double>(following) / static_cast<double>(lives.size());
}

}  // namespace

void score_key(const KeyStats& s, KeyFindings& f) {
  const double n = static_cast<double>(s.requests), days = std::max(1.0, s.active_days);
  f.generated_per_day = s.generated / days;
  f.scored_per_day = s.scored / days;
  f.logprob_generated_per_day = s.logprob_generated / days;
  f.reasoning_share = s.reasoning / n;
  f.follow_up_share = s.follow_up / n;
  f.rotation = static_cast<double>(s.clients) / n;
  f.novelty = static_cast<double>(s.distinct_content) / n;
  f.hot_share = s.hot / n;
  f.hours_of_day = __builtin_popcount(s.hours_of_day);
  auto& ev = f.evidence;
  double& score = f.score;
  if (double w = 1.5 * excess(f.generated_per_day, 25e3, 4))
    add(ev, score, "harvest", w, fmt::format("{} tokens a day of long answers to single-turn prompts it had not sent before", tokens(f.generated_per_day)));
  if (double w = 1.5 * excess(f.scored_per_day, 60e3, 4))
    add(ev, score, "scoring", w, fmt::format("{} tokens a day of new given text scored with log-probabilities (echo, no generation)", tokens(f.scored_per_day)));
  if (double w = 1.2 * excess(f.logprob_generated_per_day, 30e3, 4))
    add(ev, score, "logprob_harvest", w, fmt::format("{} tokens a day of long answers returned with log-probabilities", tokens(f.logprob_generated_per_day)));
  if (n >= 20 && f.reasoning_share >= 0.2)
    add(ev, score, "reasoning", std::min(1.5, 3 * (f.reasoning_share - 0.1)),
        fmt::format("its own words ask for step-by-step reasoning in {} of {} requests", pct(f.reasoning_share), s.requests));
  // Proxy pools and server farms: many addresses for one key (people use a few).
  if (s.clients >= 30 || (s.clients >= 15 && f.rotation >= 0.3))
    add(ev, score, "rotation", std::min(2.5, 1 + 3 * f.rotation), fmt::format("{} client addresses for {} requests", s.clients, s.requests));
  if (n >= 100 && f.hours_of_day >= 21)
    add(ev, score, "around_the_clock", 1.0, fmt::format("active in {} of the 24 hours of the day", f.hours_of_day));
  bool not_ours = false;  // its follow-ups do not continue conversations with this server
  if (s.answers_checked >= 10) {
    f.foreign_answers = s.answers_foreign / s.answers_checked;
    f.handed_over = s.answers_elsewhere / s.answers_checked;
    if (double w = transcripts_weight(f.foreign_answers)) {
      not_ours = true;
      add(ev, score, "transcripts", w,
          fmt::format("{} of {} checked follow-ups re-send an assistant turn this server never wrote (distinct ones): transcripts assembled elsewhere",
                      pct(f.foreign_answers), s.answers_checked));
    }
    if (double w = handed_over_weight(f.handed_over)) {
      not_ours = true;
      add(ev, score, "handed_over", w,
          fmt::format("{} of {} checked follow-ups continue answers this server wrote for other keys", pct(f.handed_over),
                      s.answers_checked));
    }
  }
  f.interleaving = s.follow_up > 0 ? s.interleaved / s.follow_up : 0;
  if (not_ours) {
    // Its follow-ups are not a person's conversation with this server: no discount for them.
  } else if (s.follow_up >= 20 && f.interleaving >= 0.5) {
    // Many conversations at once: a service for many people (a reseller, a proxy). Their
    // follow-ups say nothing of what the key's own single-turn traffic is.
    add(ev, score, "many_people", 0.5, fmt::format("{} of its follow-ups continue another conversation than the one before: many people on one key",
                                                   pct(f.interleaving)));
  } else if (n >= 10 && f.follow_up_share > 0.05) {
    add(ev, score, "conversation", -1.5 * f.follow_up_share, fmt::format("{} of its requests continue a conversation", pct(f.follow_up_share)));
  }
  f.harvests = harvested(ev);
}

void score_community(const std::vector<uint32_t>& members, const std::vector<KeyStats>& stats, const Graph& g,
                     const std::vector<int>& community, CommunityFindings& c) {
  double n = 0, generated = 0, scored = 0, lp = 0, reasoning = 0, follow = 0, clients = 0, inside = 0, all = 0, key_days = 0;
  double checked = 0, foreign = 0, elsewhere = 0;
  int64_t first = INT64_MAX, last = 0;
  std::vector<std::pair<int64_t, int64_t>> lives;
  for (uint32_t k : members) {
    const auto& s = stats[k];
    n += static_cast<double>(s.requests);
    generated += s.generated, scored += s.scored, lp += s.logprob_generated;
    reasoning += s.reasoning_any, follow += s.follow_up, clients += static_cast<double>(s.clients);
    checked += s.answers_checked, foreign += s.answers_foreign, elsewhere += s.answers_elsewhere;
    key_days += std::max(1.0, s.active_days);
    first = std::min(first, s.first_ms), last = std::max(last, s.last_ms);
    lives.push_back({s.first_ms, s.last_ms});
    c.requests += s.requests;
    c.completion_tokens += s.completion_tokens;
    for (auto& e : g.adj[k]) (community[e.to] == community[k] ? inside : all) += e.weight;
  }
  all += inside;
  const double span = static_cast<double>(last - first), span_days = std::max(1.0, span / 86400000.0);
  c.generated_per_day = generated / span_days;
  c.scored_per_day = scored / span_days;
  c.generated_per_key_day = generated / key_days;
  c.scored_per_key_day = scored / key_days;
  c.logprob_generated_per_key_day = lp / key_days;
  c.reasoning_share = reasoning / n;
  c.follow_up_share = follow / n;
  c.rotation = clients / n;
  c.cohesion = all > 0 ? inside / all : 0;
  c.foreign_answers = checked > 0 ? foreign / checked : 0;
  c.handed_over = checked > 0 ? elsewhere / checked : 0;
  c.churn = succession(lives, last - first);
  const double keys = static_cast<double>(members.size());
  auto& ev = c.evidence;
  double& score = c.score;
  if (keys < 3) return;
  // What its keys take, each on an average day of its own, and what they take together.
  if (double w = 1.5 * excess(c.generated_per_key_day, 20e3, 3))
    add(ev, score, "harvest", w, fmt::format("its {} keys take {} tokens a key-day of long answers to new single-turn prompts",
                                             members.size(), tokens(c.generated_per_key_day)));
  if (double w = excess(c.generated_per_day, 300e3, 3) * std::min(1.0, c.generated_per_key_day / 20e3))
    add(ev, score, "volume", w, fmt::format("together {} tokens a day of long answers to new single-turn prompts", tokens(c.generated_per_day)));
  if (keys >= 5 && c.follow_up_share < 0.1 && c.generated_per_key_day >= 10e3)
    add(ev, score, "single_turn", 1.0, fmt::format("{} of its requests follow up on an answer: each prompt is asked once and left",
                                                   pct(c.follow_up_share)));
  if (double w = 1.5 * excess(c.scored_per_key_day, 40e3, 3))
    add(ev, score, "scoring", w, fmt::format("its keys score {} tokens a key-day of new given text ({} a day together)",
                                             tokens(c.scored_per_key_day), tokens(c.scored_per_day)));
  if (double w = 1.2 * excess(c.logprob_generated_per_key_day, 20e3, 3))
    add(ev, score, "logprob_harvest", w, fmt::format("its keys take {} tokens a key-day of long answers with log-probabilities", tokens(c.logprob_generated_per_key_day)));
  if (c.reasoning_share >= 0.1)
    add(ev, score, "reasoning", std::min(2.0, 5 * (c.reasoning_share - 0.05)),
        fmt::format("its keys ask for step-by-step reasoning in {} of requests (shared templates and system prompts included)", pct(c.reasoning_share)));
  if (c.rotation >= 0.2) add(ev, score, "rotation", std::min(2.5, 3 * c.rotation), fmt::format("{:.0f} client addresses per 100 requests", 100 * c.rotation));
  if (keys >= 5 && c.template_share >= 0.3)
    add(ev, score, "coordination", 2 * c.template_share,
        fmt::format("{} of its requests carry a sentence sent by 3+ of its keys and almost no other key", pct(c.template_share)));
  if (keys >= 5 && c.churn >= 0.3)
    add(ev, score, "churn", 2 * c.churn, fmt::format("{} of its {} keys live under half of its {:.1f} days", pct(c.churn), members.size(), span_days));
  const double transcripts = checked >= 20 ? transcripts_weight(c.foreign_answers) : 0.0;
  const double handed = checked >= 20 ? handed_over_weight(c.handed_over) : 0.0;
  const bool not_ours = transcripts > 0 || handed > 0;
  if (transcripts > 0)
    add(ev, score, "transcripts", transcripts,
        fmt::format("{} of its keys' checked follow-ups re-send assistant turns this server never wrote", pct(c.foreign_answers)));
  if (handed > 0)
    add(ev, score, "handed_over", handed,
        fmt::format("{} of its keys' checked follow-ups continue answers this server wrote for another key", pct(c.handed_over)));
  if (c.follow_up_share > 0.05 && !not_ours)
    add(ev, score, "conversation", -4 * c.follow_up_share, fmt::format("{} of its requests continue a conversation", pct(c.follow_up_share)));
  c.harvests = harvested(ev);
}

bool takes_part(const KeyStats& s, const CommunityFindings& c) {
  // A flagged community flags the members that show, at a third of its level or more, one of
  // the signs it was flagged for: a key that only shares its vocabulary or network is not
  // taken along.
  const double days = std::max(1.0, s.active_days), n = std::max<double>(1, static_cast<double>(s.requests));
  for (const auto& e : c.evidence) {
    if (e.weight < 0.5) continue;
    if ((e.signal == "harvest" || e.signal == "volume" || e.signal == "single_turn") && s.generated / days >= c.generated_per_key_day / 3)
      return true;
    if (e.signal == "scoring" && s.scored / days >= c.scored_per_key_day / 3) return true;
    if (e.signal == "logprob_harvest" && s.logprob_generated / days >= c.logprob_generated_per_key_day / 3) return true;
    if (e.signal == "reasoning" && s.reasoning_any / n >= c.reasoning_share / 3) return true;
    if (e.signal == "rotation" && static_cast<double>(s.clients) / n >= c.rotation / 3) return true;
    const double checked = std::max(1.0, s.answers_checked);
    if (e.signal == "transcripts" && s.answers_foreign / checked >= c.foreign_answers / 3) return true;
    if (e.signal == "handed_over" && s.answers_elsewhere / checked >= c.handed_over / 3) return true;
  }
  return false;
}

}  // namespace lineage::protect::monitor
