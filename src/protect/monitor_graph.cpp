// The key-similarity graph and its communities. Keys are alike when their own words are (cosine
// of TF-IDF-weighted content words and shared sentences, a sentence weighing more the fewer keys
// send it) and when they share infrastructure (the same address, the same network, a rare user
// agent). Features shared by many keys are linked through a random ring of each key's
// neighbours in the feature's list instead of every pair: the weight a key gets stays the same in
// expectation and the cost stays linear. Communities by Louvain (Blondel, Guillaume, Lambiotte &
// Lefebvre 2008): greedy modularity moves, then aggregation, repeated.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <unordered_set>

#include "lineage/core/mix.h"
#include "monitor_internal.h"

namespace lineage::protect::monitor {

namespace {

constexpr size_t kFullPairs = 96;  // lists up to this size link every pair
constexpr size_t kRing = 8;        // above it, each key links to this many ring neighbours on each side
constexpr size_t kMaxSentencesPerKey = 2000;
constexpr size_t kNeighbours = 10;  // strongest links kept per key
constexpr float kMinLink = 0.6f;    // weaker links are not kept at all

class PairWeights {
 public:
  void add(uint32_t a, uint32_t b, double w) {
    if (a == b || w <= 0) return;
    if (a > b) std::swap(a, b);
    w_[(uint64_t{a} << 32) | b] += static_cast<float>(w);
  }
  // Members of one feature, each with its weight; pair weight = weight product * scale.
  void add_group(std::vector<std::pair<uint32_t, float>>& members, double scale, uint64_t salt) {
    const size_t n = members.size();
    if (n < 2) return;
    if (n <= kFullPairs) {
      for (size_t i = 0; i < n; ++i)
        for (size_t j = i + 1; j < n; ++j) add(members[i].first, members[j].first, scale * members[i].second * members[j].second);
      return;
    }
    std::sort(members.begin(), members.end(), [&](const auto& x, const auto& y) {
      return splitmix64(x.first ^ salt) < splitmix64(y.first ^ salt);
    });
    for (size_t i = 0; i < n; ++i)
      for (size_t d = 1; d <= kRing; ++d) {
        const auto& o = members[(i + d) % n];
        add(members[i].first, o.first, scale * members[i].second * o.second);
      }
  }
  // The graph of each key's strongest links (k nearest neighbours, kept when either end keeps
  // them): similarity spread thinly over everybody, which any shared vocabulary gives, does not
  // merge communities.
  Graph graph(size_t nodes, size_t keep, float min_weight) const {
    std::vector<std::vector<Edge>> all(nodes);
    for (auto& [k, w] : w_) {
      if (w < min_weight) continue;
      const uint32_t a = static_cast<uint32_t>(k >> 32), b = static_cast<uint32_t>(k);
      all[a].push_back({b, w});
      all[b].push_back({a, w});
    }
    std::unordered_map<uint64_t, float> kept;
    for (uint32_t a = 0; a < nodes; ++a) {
      auto& e = all[a];
      const size_t n = std::min(keep, e.size());
      std::partial_sort(e.begin(), e.begin() + static_cast<std::ptrdiff_t>(n), e.end(),
                        [](const Edge& x, const Edge& y) { return x.weight > y.weight; });
      for (size_t i = 0; i < n; ++i) {
        const uint32_t lo = std::min(a, e[i].to), hi = std::max(a, e[i].to);
        kept[(uint64_t{lo} << 32) | hi] = e[i].weight;
      }
    }
    Graph g;
    g.adj.resize(nodes);
    for (auto& [k, w] : kept) {
      const uint32_t a = static_cast<uint32_t>(k >> 32), b = static_cast<uint32_t>(k);
      g.adj[a].push_back({b, w});
      g.adj[b].push_back({a, w});
      g.total_weight += w;
    }
    return g;
  }

 private:
  std::unordered_map<uint64_t, float> w_;
};

using Features = std::unordered_map<uint64_t, std::vector<std::pair<uint32_t, float>>>;

// Content: each key's TF-IDF vector over its content words and its sentences, unit length.
void content_features(const Corpus& c, Features& f) {
  const double K = static_cast<double>(c.keys.size());
  std::unordered_map<uint64_t, uint32_t> df;
  for (const auto& p : c.profile)
    for (auto& [w, n] : p) ++df[w];
  std::vector<std::pair<uint64_t, float>> v;
  for (uint32_t k = 0; k < c.keys.size(); ++k) {
    auto [from, to] = c.range[k];
    if (from == to) continue;
    v.clear();
    for (auto& [w, n] : c.profile[k]) {
      const double idf = std::log(K / df[w]);
      if (df[w] >= 2 && idf > 0.5) v.push_back({w, static_cast<float>((1 + std::log(double(n))) * idf)});
    }
    std::unordered_map<uint64_t, uint32_t> sentences;
    for (size_t q = from; q < to && sentences.size() < kMaxSentencesPerKey; ++q)
      for (uint32_t s = 0; s < c.requests[q].n_sentences; ++s) ++sentences[c.sentences[c.requests[q].first_sentence + s] & ~uint64_t{1}];
    for (auto& [h, n] : sentences) {
      auto it = c.sentence_keys.find(h);
      if (it == c.sentence_keys.end() || it->second < 2) continue;
      v.push_back({h ^ 0x5e7ULL, static_cast<float>((1 + std::log(double(n))) * std::log(K / it->second))});
    }
    double norm = 0;
    for (auto& [x, w] : v) norm += double(w) * w;
    norm = std::sqrt(norm);
    if (norm <= 0) continue;
    for (auto& [x, w] : v) f[x].push_back({k, static_cast<float>(w / norm)});
  }
}

// Infrastructure: the same address, the same network, the same rare non-browser user agent.
void infrastructure(const Corpus& c, PairWeights& pw) {
  std::unordered_map<uint32_t, std::vector<std::pair<uint32_t, float>>> by_client, by_network, by_agent;
  for (uint32_t k = 0; k < c.keys.size(); ++k) {
    auto [from, to] = c.range[k];
    std::unordered_map<uint32_t, int> cl, nw, ag;
    for (size_t q = from; q < to; ++q) ++cl[c.requests[q].client], ++nw[c.requests[q].network], ++ag[c.requests[q].agent];
    // A key's weight on an address is the share of its requests from there.
    const double n = static_cast<double>(to - from);
    for (auto& [x, m] : cl) by_client[x].push_back({k, static_cast<float>(m / n)});
    for (auto& [x, m] : nw) by_network[x].push_back({k, static_cast<float>(m / n)});
    for (auto& [x, m] : ag)
      if (c.agents.name(x).rfind("Mozilla/", 0) != 0) by_agent[x].push_back({k, static_cast<float>(m / n)});
  }
  for (auto& [x, m] : by_client) pw.add_group(m, 1.5, 0xc1 + x);
  for (auto& [x, m] : by_network) pw.add_group(m, 1.0, 0x4e7 + x);
  for (auto& [x, m] : by_agent)
    if (m.size() <= 16) pw.add_group(m, 0.2, 0xa9e + x);
}

// Keys that carry on one another's conversations: a follow-up re-sending an answer the server
// sent to another key (a pool of keys taking turns over one transcript).
void handovers(const Corpus& c, PairWeights& pw) {
  if (!c.answers_logged) return;
  for (const auto& r : c.requests)
    if (int64_t to = answer_sent_to(c, r); to >= 0 && to != r.key) pw.add(r.key, static_cast<uint32_t>(to), 0.5);
}

}  // namespace

Graph build_graph(const Corpus& c) {
  PairWeights pw;
  Features f;
  content_features(c, f);
  for (auto& [x, members] : f) pw.add_group(members, 3.0, x);
  infrastructure(c, pw);
  handovers(c, pw);
  return pw.graph(c.keys.size(), kNeighbours, kMinLink);
}

namespace {

// One level of Louvain: moves nodes between communities while modularity rises.
std::vector<int> local_moves(const Graph& g, std::mt19937_64& rng) {
  const size_t n = g.adj.size();
  std::vector<int> comm(n);
  std::iota(comm.begin(), comm.end(), 0);
  std::vector<double> degree(n, 0), tot(n, 0);
  for (size_t i = 0; i < n; ++i) {
    for (auto& e : g.adj[i]) degree[i] += e.weight;
    if (!g.loops.empty()) degree[i] += g.loops[i];
    tot[i] = degree[i];
  }
  const double m2 = 2 * g.total_weight;
  if (m2 <= 0) return comm;
  std::vector<uint32_t> order(n);
  std::iota(order.begin(), order.end(), 0u);
  std::unordered_map<int, double> links;
  for (int pass = 0; pass < 20; ++pass) {
    std::shuffle(order.begin(), order.end(), rng);
    bool moved = false;
    for (uint32_t i : order) {
      if (g.adj[i].empty()) continue;
      links.clear();
      for (auto& e : g.adj[i]) links[comm[e.to]] += e.weight;
      const int own = comm[i];
      tot[own] -= degree[i];
      int best = own;
      double gain = links[own] - tot[own] * degree[i] / m2;
      for (auto& [cm, w] : links) {
        const double gn = w - tot[cm] * degree[i] / m2;
        if (gn > gain + 1e-12) gain = gn, best = cm;
      }
      tot[best] += degree[i];
      if (best != own) comm[i] = best, moved = true;
    }
    if (!moved) break;
  }
  return comm;
}

}  // namespace

std::vector<int> louvain(const Graph& g, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const size_t n = g.adj.size();
  std::vector<int> of(n);
  std::iota(of.begin(), of.end(), 0);
  Graph level = g;
  for (int round = 0; round < 8; ++round) {
    std::vector<int> comm = local_moves(level, rng);
    // Renumber and aggregate.
    std::unordered_map<int, int> id;
    for (int& c : comm) c = id.emplace(c, static_cast<int>(id.size())).first->second;
    if (id.size() == level.adj.size()) break;  // nothing merged
    for (int& o : of) o = comm[static_cast<size_t>(o)];
    std::vector<std::unordered_map<uint32_t, float>> agg(id.size());
    Graph next;
    next.loops.assign(id.size(), 0.0);
    for (size_t i = 0; i < level.adj.size(); ++i) {
      const int a = comm[i];
      if (!level.loops.empty()) next.loops[static_cast<size_t>(a)] += level.loops[i];
      for (auto& e : level.adj[i]) {
        const int b = comm[e.to];
        if (a != b) agg[static_cast<size_t>(a)][static_cast<uint32_t>(b)] += e.weight;
        else next.loops[static_cast<size_t>(a)] += e.weight;  // each inside edge is seen from both ends
      }
    }
    next.adj.resize(id.size());
    for (size_t a = 0; a < agg.size(); ++a)
      for (auto& [b, w] : agg[a]) next.adj[a].push_back({b, w});
    next.total_weight = level.total_weight;
    level = std::move(next);
  }
  return of;
}

std::unordered_map<int, double> own_template_shares(const Corpus& c, const std::vector<int>& community) {
  std::unordered_map<uint64_t, std::vector<int>> where;  // sentence -> the community of each key sending it
  for (uint32_t k = 0; k < c.keys.size(); ++k) {
    auto [from, to] = c.range[k];
    std::unordered_set<uint64_t> seen;
    for (size_t q = from; q < to && seen.size() < kMaxSentencesPerKey; ++q)
      for (uint32_t s = 0; s < c.requests[q].n_sentences; ++s) {
        const uint64_t h = c.sentences[c.requests[q].first_sentence + s] & ~uint64_t{1};
        auto it = c.sentence_keys.find(h);
        if (it != c.sentence_keys.end() && it->second >= 3 && seen.insert(h).second) where[h].push_back(community[k]);
      }
  }
  std::unordered_map<uint64_t, int> own;  // sentence -> the community it belongs to
  std::unordered_map<int, int> count;
  for (auto& [h, comms] : where) {
    count.clear();
    int best = -1, most = 0;
    for (int cm : comms)
      if (++count[cm] > most) most = count[cm], best = cm;
    if (most >= 3 && most >= 0.8 * static_cast<double>(comms.size())) own[h] = best;
  }
  std::unordered_map<int, double> hits, total;
  for (const auto& r : c.requests) {
    const int cm = community[r.key];
    total[cm] += 1;
    for (uint32_t s = 0; s < r.n_sentences; ++s) {
      auto it = own.find(c.sentences[r.first_sentence + s] & ~uint64_t{1});
      if (it != own.end() && it->second == cm) {
        hits[cm] += 1;
        break;
      }
    }
  }
  for (auto& [cm, n] : hits) n /= total[cm];
  return hits;
}

}  // namespace lineage::protect::monitor
