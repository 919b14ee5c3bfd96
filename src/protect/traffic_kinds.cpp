// The traffic simulator's world: time, addresses, agents, request bodies, and the mix of kinds.
// The kinds themselves are in traffic_ordinary.cpp and traffic_campaigns.cpp.
#include <algorithm>
#include <fmt/format.h>

#include "traffic_kinds.h"

namespace lineage::protect::sim {

namespace {

constexpr int64_t kStartMs = 1793491200000;  // 2026-11-01T00:00:00Z
constexpr int64_t kDayMs = 86400000;

const std::vector<std::string> kBrowsers = {
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 15) AppleWebKit/537.36 Chrome/131.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36 Edg/130.0"};
const std::vector<std::string> kSdks = {"OpenAI/Python 1.54.0", "OpenAI/Python 1.57.2", "OpenAI/JS 4.73.0",
                                        "python-httpx/0.27.2", "python-requests/2.32.3", "curl/8.5.0", "aiohttp/3.10.5",
                                        "Go-http-client/2.0"};

}  // namespace

World::World(Sink& sink, uint64_t seed, int days, std::shared_ptr<const RealText> real)
    : rng_(seed), content_(rng_, std::move(real)), sink_(sink), days_(days) {}

std::string World::residential() {
  return fmt::format("{}.{}.{}.{}", uniform(24, 223), uniform(0, 255), uniform(0, 255), uniform(1, 254));
}
std::string World::datacenter(int subnet) {
  return fmt::format("{}.{}.{}.{}", 34 + subnet % 60, (subnet * 37) % 256, (subnet * 101) % 256, uniform(2, 250));
}
std::string World::browser() { return kBrowsers[static_cast<size_t>(uniform(0, static_cast<int>(kBrowsers.size()) - 1))]; }
std::string World::sdk() { return kSdks[static_cast<size_t>(uniform(0, static_cast<int>(kSdks.size()) - 1))]; }

std::vector<int64_t> World::human_times(int n, int first_day, int last_day, int tz) {
  std::vector<int64_t> out;
  last_day = std::min(last_day, days_ - 1);
  first_day = std::min(first_day, last_day);
  while (static_cast<int>(out.size()) < n) {
    const int day = uniform(first_day, last_day);
    const double hour = 7.5 + 16 * real() - tz;  // waking hours, local
    int64_t ms = kStartMs + day * kDayMs + static_cast<int64_t>(hour * 3600000);
    const int in_session = std::min(n - static_cast<int>(out.size()), uniform(1, 9));
    for (int i = 0; i < in_session; ++i) {
      ms += static_cast<int64_t>(1000 * (8 + expo(120)));
      out.push_back(ms);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<int64_t> World::paced_times(int n, int64_t from, double gap_s, double jitter) {
  std::vector<int64_t> out;
  int64_t ms = from;
  for (int i = 0; i < n; ++i) {
    ms += static_cast<int64_t>(1000 * gap_s * (1 - jitter + 2 * jitter * real())) + 1;
    out.push_back(ms);
  }
  return out;
}

void World::label(const std::string& key, const std::string& kind, const std::string& campaign) {
  labels_[key] = {{"label", campaign.empty() ? "ordinary" : "campaign"}, {"kind", kind}, {"campaign", campaign}};
}

nlohmann::json World::chat(const std::vector<Turn>& turns, const std::string& system, int max_tokens, double temperature) {
  json messages = json::array();
  if (!system.empty()) messages.push_back({{"role", "system"}, {"content", system}});
  for (size_t i = 0; i < turns.size(); ++i) {
    messages.push_back({{"role", "user"}, {"content", turns[i].user}});
    if (i + 1 < turns.size())
      messages.push_back({{"role", "assistant"}, {"content", fmt::format("(answer of {} tokens)", turns[i].completion)}});
  }
  json body = {{"model", "teacher"}, {"messages", messages}};
  if (max_tokens > 0) body["max_tokens"] = max_tokens;
  if (temperature >= 0) body["temperature"] = temperature;
  return body;
}

void World::emit(const std::string& key, int64_t ms, const std::string& client, const std::string& agent, json body,
                 int64_t completion_tokens) {
  RequestRecord r;
  r.unix_ms = ms;
  r.key = key;
  r.client = client;
  r.user_agent = agent;
  r.endpoint = body.contains("messages") ? "/v1/chat/completions" : "/v1/completions";
  r.model = "teacher";
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  r.prompt_tokens = static_cast<int64_t>(r.body.size() / 4);
  const int64_t cap = body.value("max_tokens", int64_t{4096});
  r.completion_tokens = std::clamp<int64_t>(completion_tokens, 0, cap) * body.value("n", int64_t{1});
  sink_.write(r);
  ++requests_;
}

void World::run(int ordinary_keys, int campaign_keys) {
  // The mix of kinds is itself drawn: each share scaled by a factor in [0.5, 1.5].
  auto split = [&](std::vector<double> w, int total) {
    double sum = 0;
    for (auto& x : w) sum += (x *= real(0.5, 1.5));
    std::vector<int> n(w.size());
    int given = 0;
    for (size_t i = 0; i + 1 < w.size(); ++i) given += n[i] = static_cast<int>(total * w[i] / sum);
    n.back() = total - given;
    return n;
  };
  // casual, student, power, ide, calibration, eval, enterprise
  auto o = split({0.33, 0.1, 0.1, 0.16, 0.07, 0.06, 0.13}, ordinary_keys);
  int id = 0;
  for (int i = 0; i < o[0]; ++i) casual(fmt::format("casual-{:05d}", id++), false);
  for (int i = 0; i < o[1]; ++i) casual(fmt::format("student-{:05d}", id++), true);
  for (int i = 0; i < o[2]; ++i) power(fmt::format("power-{:05d}", id++));
  for (int left = o[3]; left > 0;) {
    int users = std::min(left, uniform(20, 250));
    ide_product(id, users), id += users, left -= users;
  }
  for (int i = 0; i < o[4]; ++i) calibration(fmt::format("calibration-{:05d}", id++));
  for (int left = o[5]; left > 0;) {
    int keys = std::min(left, uniform(1, 5));
    eval_harness(id, keys), id += keys, left -= keys;
  }
  for (int left = o[6]; left > 0;) {
    int keys = std::min(left, uniform(5, 60));
    enterprise(id, keys), id += keys, left -= keys;
  }
  if (campaign_keys <= 0) return;
  // hydra, careful, seq_kd, logit_kd, reseller; every kind present once there are 10 keys.
  auto c = split({0.35, 0.3, 0.15, 0.1, 0.1}, campaign_keys);
  if (campaign_keys >= 10)
    for (size_t k = 1; k < c.size(); ++k)
      if (c[k] == 0) ++c[k], --c[0];
  int no = 0;
  for (int left = c[0]; left > 0;) {
    int keys = std::min(left, uniform(25, 300));
    hydra(no++, keys), left -= keys;
  }
  for (int left = c[1]; left > 0;) {
    int keys = std::min(left, uniform(15, 80));
    careful(no++, keys), left -= keys;
  }
  for (int left = c[2]; left > 0;) {
    int keys = std::min(left, uniform(1, 6));
    seq_kd(no++, keys), left -= keys;
  }
  for (int left = c[3]; left > 0;) {
    int keys = std::min(left, uniform(1, 4));
    logit_kd(no++, keys), left -= keys;
  }
  for (int i = 0; i < c[4]; ++i) reseller(no++, 1);
}

}  // namespace lineage::protect::sim
