// `lineage monitor --html`: the page an owner reads before acting on a flag. Flagged communities
// are drawn as graphs (keys as dots sized by their requests, the similarity graph's links between
// them, laid out by Fruchterman & Reingold's 1991 force-directed method), each flagged key shows
// its evidence in words and weights and a timeline of its traffic, and the ordinary keys nearest
// the threshold are listed so that the owner sees what the threshold separates. Inline SVG and
// CSS only: no script, nothing fetched.
#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <map>

#include "lineage/core/html.h"
#include "lineage/protect/monitor.h"
#include "lineage/protect/request_record.h"

namespace lineage::protect {

namespace {

constexpr size_t kMaxDrawnKeys = 60;      // per community graph
constexpr size_t kMaxCommunities = 12;    // drawn
constexpr size_t kMaxFlaggedKeys = 50;    // with evidence and timeline
constexpr size_t kNearest = 10;           // ordinary keys nearest the threshold

std::string short_id(const std::string& id) { return id.size() <= 14 ? id : id.substr(0, 6) + "…" + id.substr(id.size() - 6); }

constexpr size_t kEvidenceRows = 10;  // terms shown per key, the heaviest (the JSON report has all)

std::string evidence_table(const std::vector<Evidence>& all) {
  if (all.empty()) return "<p class=\"muted\">no evidence terms</p>\n";
  std::vector<Evidence> ev(all);
  std::stable_sort(ev.begin(), ev.end(), [](const Evidence& a, const Evidence& b) { return std::abs(a.weight) > std::abs(b.weight); });
  std::string out = "<table class=\"ev\"><tr><th>weight</th><th>signal</th><th>why</th></tr>\n";
  for (size_t i = 0; i < ev.size() && i < kEvidenceRows; ++i)
    out += fmt::format("<tr class=\"{}\"><td>{:+.2f}</td><td>{}</td><td>{}</td></tr>\n", ev[i].weight >= 0 ? "pos" : "neg",
                       ev[i].weight, html_escape(ev[i].signal), html_escape(ev[i].why));
  out += "</table>\n";
  if (ev.size() > kEvidenceRows) {
    double rest = 0;
    for (size_t i = kEvidenceRows; i < ev.size(); ++i) rest += ev[i].weight;
    out += fmt::format("<p class=\"muted\">{} lighter terms, {:+.2f} together</p>\n", ev.size() - kEvidenceRows, rest);
  }
  return out;
}

// Requests per bucket as bars; x in days from the log's first request.
std::string timeline_svg(const std::vector<int32_t>& t, int64_t bucket_ms, int width, int height) {
  if (t.empty()) return {};
  const int32_t top = std::max<int32_t>(1, *std::max_element(t.begin(), t.end()));
  const double bw = static_cast<double>(width - 40) / static_cast<double>(t.size());
  std::string out = fmt::format("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" role=\"img\">", width, height + 16);
  out += fmt::format("<text x=\"0\" y=\"10\" class=\"axis\">{}</text>", top);
  for (size_t i = 0; i < t.size(); ++i) {
    if (!t[i]) continue;
    const double h = std::max(1.0, static_cast<double>(height - 4) * t[i] / top);
    out += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" class=\"bar\"/>", 40 + bw * static_cast<double>(i),
                       height - h, std::max(0.8, bw - 0.6), h);
  }
  const double days = static_cast<double>(bucket_ms) * static_cast<double>(t.size()) / 86400000.0;
  out += fmt::format("<line x1=\"40\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" class=\"rule\"/>", height, width);
  out += fmt::format("<text x=\"40\" y=\"{}\" class=\"axis\">day 0</text><text x=\"{}\" y=\"{}\" class=\"axis\" text-anchor=\"end\">day {:.1f}</text>",
                     height + 13, width, height + 13, days);
  return out + "</svg>";
}

// Fruchterman-Reingold on a unit square, from a circle; deterministic.
std::vector<std::pair<double, double>> layout(size_t n, const std::vector<std::tuple<size_t, size_t, double>>& edges) {
  std::vector<std::pair<double, double>> p(n);
  const double pi = std::acos(-1.0);
  for (size_t i = 0; i < n; ++i)
    p[i] = {0.5 + 0.4 * std::cos(2 * pi * static_cast<double>(i) / static_cast<double>(n)),
            0.5 + 0.4 * std::sin(2 * pi * static_cast<double>(i) / static_cast<double>(n))};
  if (n < 3) return p;
  const double k = std::sqrt(1.0 / static_cast<double>(n));
  double step = 0.1;
  double top = 0;
  for (auto& [a, b, w] : edges) top = std::max(top, w);
  for (int it = 0; it < 150; ++it, step *= 0.97) {
    std::vector<std::pair<double, double>> d(n, {0, 0});
    for (size_t i = 0; i < n; ++i)
      for (size_t j = i + 1; j < n; ++j) {
        double dx = p[i].first - p[j].first, dy = p[i].second - p[j].second;
        const double dist = std::max(1e-3, std::hypot(dx, dy)), f = k * k / dist;
        dx /= dist, dy /= dist;
        d[i].first += dx * f, d[i].second += dy * f, d[j].first -= dx * f, d[j].second -= dy * f;
      }
    for (auto& [a, b, w] : edges) {
      double dx = p[a].first - p[b].first, dy = p[a].second - p[b].second;
      const double dist = std::max(1e-3, std::hypot(dx, dy)), f = dist * dist / k * (0.3 + 0.7 * w / std::max(1e-9, top));
      dx /= dist, dy /= dist;
      d[a].first -= dx * f, d[a].second -= dy * f, d[b].first += dx * f, d[b].second += dy * f;
    }
    for (size_t i = 0; i < n; ++i) {
      const double len = std::max(1e-9, std::hypot(d[i].first, d[i].second)), m = std::min(len, step);
      p[i].first = std::clamp(p[i].first + d[i].first / len * m, 0.04, 0.80);  // room for the labels on the right
      p[i].second = std::clamp(p[i].second + d[i].second / len * m, 0.04, 0.96);
    }
  }
  return p;
}

std::string community_svg(const CommunityFindings& c, const std::map<std::string, const KeyFindings*>& keys) {
  std::vector<std::string> drawn(c.keys.begin(), c.keys.end());
  auto requests = [&](const std::string& id) {
    auto it = keys.find(id);
    return it == keys.end() ? int64_t{0} : it->second->requests;
  };
  std::stable_sort(drawn.begin(), drawn.end(), [&](const std::string& a, const std::string& b) { return requests(a) > requests(b); });
  if (drawn.size() > kMaxDrawnKeys) drawn.resize(kMaxDrawnKeys);
  std::map<std::string, size_t> at;
  for (size_t i = 0; i < drawn.size(); ++i) at[drawn[i]] = i;
  std::vector<std::tuple<size_t, size_t, double>> edges;
  for (const auto& l : c.links)
    if (at.count(l.a) && at.count(l.b)) edges.emplace_back(at[l.a], at[l.b], l.weight);
  const auto p = layout(drawn.size(), edges);
  const int W = 560, H = 400;
  double top_w = 0;
  for (auto& [a, b, w] : edges) top_w = std::max(top_w, w);
  std::string out = fmt::format("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" role=\"img\" class=\"graph\">", W, H);
  for (auto& [a, b, w] : edges)
    out += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke-opacity=\"{:.2f}\" class=\"link\"/>", p[a].first * W,
                       p[a].second * H, p[b].first * W, p[b].second * H, 0.15 + 0.75 * w / std::max(1e-9, top_w));
  for (size_t i = 0; i < drawn.size(); ++i) {
    auto it = keys.find(drawn[i]);
    const bool flagged = it != keys.end() && it->second->flagged;
    const double r = 3 + 2.2 * std::log1p(static_cast<double>(requests(drawn[i])) / 10.0);
    out += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"{:.1f}\" class=\"{}\"><title>{} — {} requests</title></circle>", p[i].first * W,
                       p[i].second * H, r, flagged ? "node flagged" : "node", html_escape(drawn[i]), requests(drawn[i]));
    if (drawn.size() <= 24)
      out += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" class=\"label\">{}</text>", p[i].first * W + r + 2, p[i].second * H + 3,
                         html_escape(short_id(drawn[i])));
  }
  return out + "</svg>";
}

std::string key_summary(const KeyFindings& k) {
  std::string s = fmt::format("{} requests over {:.1f} days ({:.0f} active), {} completion tokens, {} client addresses, {} user agents",
                              k.requests, k.lifetime_days, k.active_days, k.completion_tokens, k.clients, k.agents);
  if (k.community >= 0) s += fmt::format("; community {} (score {:.2f}{})", k.community, k.community_score, k.community_flagged ? ", flagged" : "");
  return s;
}

}  // namespace

std::string monitor_html(const MonitorReport& r, const std::string& title, const std::string& threshold_note) {
  std::map<std::string, const KeyFindings*> by_id;
  size_t flagged_keys = 0, flagged_communities = 0;
  for (const auto& k : r.keys) by_id[k.key_id] = &k, flagged_keys += k.flagged;
  for (const auto& c : r.communities) flagged_communities += c.flagged;
  std::string h =
      "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + html_escape(title) +
      "</title>\n<style>\n"
      "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:980px;color:#222}\n"
      "h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}h3{font-size:15px;margin:20px 0 6px}\n"
      ".muted{color:#777}.flag{color:#b3261e;font-weight:600}\n"
      "table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 7px;vertical-align:top;text-align:left}\n"
      "th{background:#f3f3f3}tr.pos td:first-child{color:#b3261e}tr.neg td:first-child{color:#1b6e2d}\n"
      ".node{fill:#8a8f98;stroke:#fff;stroke-width:1}.node.flagged{fill:#d1453b}.link{stroke:#4a6fa5;stroke-width:1.4}\n"
      ".label{font-size:10px;fill:#333}.bar{fill:#4a6fa5}.rule{stroke:#999}.axis{font-size:10px;fill:#666}\n"
      "svg.graph{border:1px solid #eee;background:#fcfcfc}\n"
      "</style></head><body>\n";
  h += "<h1>" + html_escape(title) + "</h1>\n";
  h += fmt::format("<p>{} requests from {} keys, {} to {}. <span class=\"flag\">{} keys flagged</span>, {} of {} communities of 2+ keys "
                   "flagged.<br>Threshold {:.2f}: {}.</p>\n",
                   r.requests, r.keys.size(), r.requests ? iso_time_ms(r.first_ms) : "-", r.requests ? iso_time_ms(r.last_ms) : "-",
                   flagged_keys, flagged_communities, r.communities.size(), r.threshold, html_escape(threshold_note));

  // Communities flagged as such (the rules), or holding 2+ flagged keys (any scorer).
  h += "<h2>Communities of flagged keys</h2>\n";
  size_t shown = 0;
  for (const auto& c : r.communities) {
    size_t members = 0;
    for (const auto& k : c.keys)
      if (auto it = by_id.find(k); it != by_id.end()) members += it->second->flagged;
    if (!c.flagged && members < 2) continue;
    if (shown++ >= kMaxCommunities) break;
    h += fmt::format("<h3>Community {}: {} keys ({} flagged), {} requests, score {:.2f}{}</h3>\n", c.id, c.keys.size(), members,
                     c.requests, c.score, c.flagged ? ", flagged as a community" : "");
    h += community_svg(c, by_id);
    if (c.keys.size() > kMaxDrawnKeys) h += fmt::format("<p class=\"muted\">the {} busiest of its {} keys are drawn</p>", kMaxDrawnKeys, c.keys.size());
    h += "<p class=\"muted\">red: keys flagged; lines: links of the key-similarity graph (shared sentences, content, addresses, "
         "networks, agents, handed-over conversations), darker when stronger</p>\n";
    h += evidence_table(c.evidence);
  }
  if (!shown) h += "<p class=\"muted\">none</p>\n";

  h += "<h2>Flagged keys</h2>\n";
  shown = 0;
  for (const auto& k : r.keys) {
    if (!k.flagged) continue;
    if (shown++ >= kMaxFlaggedKeys) {
      h += fmt::format("<p class=\"muted\">{} more flagged keys are in the JSON report (--json)</p>\n", flagged_keys - kMaxFlaggedKeys);
      break;
    }
    h += fmt::format("<h3 id=\"{0}\">Key {0} — score {1:.2f}</h3>\n<p>{2}</p>\n", html_escape(k.key_id), k.score, html_escape(key_summary(k)));
    h += evidence_table(k.evidence);
    h += timeline_svg(k.timeline, r.bucket_ms, 640, 70);
  }
  if (!shown) h += "<p class=\"muted\">none</p>\n";

  h += "<h2>Ordinary keys nearest the threshold</h2>\n<p class=\"muted\">Not flagged; the highest scores below the threshold, "
       "with what scored them.</p>\n";
  std::vector<const KeyFindings*> near;
  for (const auto& k : r.keys)
    if (!k.flagged) near.push_back(&k);
  std::stable_sort(near.begin(), near.end(), [](const KeyFindings* a, const KeyFindings* b) { return a->score > b->score; });
  if (near.size() > kNearest) near.resize(kNearest);
  for (const KeyFindings* k : near) {
    h += fmt::format("<h3>Key {} — score {:.2f} (threshold {:.2f})</h3>\n<p>{}</p>\n", html_escape(k->key_id), k->score, r.threshold,
                     html_escape(key_summary(*k)));
    h += evidence_table(k->evidence);
    h += timeline_svg(k->timeline, r.bucket_ms, 640, 50);
  }
  if (near.empty()) h += "<p class=\"muted\">none</p>\n";
  return h + "<p class=\"muted\">Written by lineage monitor.</p>\n</body></html>\n";
}

}  // namespace lineage::protect
