// Load on `lineage serve` over loopback: C clients (default 32), each sending completion requests
// back to back for S seconds (default 30), as an OpenAI SDK would. Prints one JSON line:
// requests/s, completion tokens/s, p50/p90/p99 latency, and the count of 5xx and failed requests.
//   bench_serve [MODEL] [--clients C] [--seconds S] [--max-tokens N] [--threads T]
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>
#include <mutex>
#include <map>

#include "bench_common.h"
#include "lineage/core/json.h"
#include "lineage/core/allocator.h"
#include "lineage/core/threads.h"
#include "lineage/serve/server.h"

int main(int argc, char** argv) {
  lineage::settle_openmp_wait_policy(argv);
  lineage::tune_allocator();
  using Clock = std::chrono::steady_clock;
  std::string model = std::string(LINEAGE_SOURCE_DIR) + "/models/lineage-kjv-5m.gguf";
  int clients = 32, seconds = 30, max_tokens = 16, threads = 2;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--clients" && i + 1 < argc) clients = std::stoi(argv[++i]);
    else if (a == "--seconds" && i + 1 < argc) seconds = std::stoi(argv[++i]);
    else if (a == "--max-tokens" && i + 1 < argc) max_tokens = std::stoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::stoi(argv[++i]);
    else if (a.rfind("--", 0) != 0) model = a;
  }
  if (!std::filesystem::exists(model)) {
    lineage::bench::emit({{"bench", "serve"}, {"skipped", "needs " + model}});
    return 0;
  }
  try {
    torch::set_num_threads(threads);
    lineage::serve::ServeOptions o;
    o.model = model;
    o.port = 0;
    o.quiet = true;
    o.max_batch = 32;
    lineage::serve::Server server(o);
    int port = server.bind();
    std::thread serving([&] { server.run(); });
    const std::vector<std::string> prompts = {"In the beginning", "And the LORD said unto Moses", "Blessed are the",
                                              "And it came to pass", "The heavens declare"};
    std::atomic<int64_t> ok{0}, server_errors{0}, failed{0}, tokens{0};
    std::mutex why_mu;
    std::map<std::string, int64_t> why;  // failed requests by reason
    std::vector<std::vector<double>> lat(clients);
    const auto t0 = Clock::now(), end = t0 + std::chrono::seconds(seconds);
    std::vector<std::thread> pool;
    for (int c = 0; c < clients; ++c)
      pool.emplace_back([&, c] {
        httplib::Client cl("127.0.0.1", port);
        cl.set_read_timeout(120, 0);
        cl.set_keep_alive(true);
        for (int i = 0; Clock::now() < end; ++i) {
          nlohmann::json body = {{"model", server.model_id()}, {"prompt", prompts[(c + i) % prompts.size()]},
                                 {"max_tokens", max_tokens}, {"temperature", 0.8}, {"seed", c * 100003 + i}};
          auto s = Clock::now();
          auto r = cl.Post("/v1/completions", {{"User-Agent", "bench_serve"}}, body.dump(), "application/json");
          double ms = std::chrono::duration<double, std::milli>(Clock::now() - s).count();
          if (!r) {
            failed++;
            std::lock_guard lock(why_mu);
            ++why[httplib::to_string(r.error())];
            continue;
          }
          if (r->status >= 500) server_errors++;
          if (r->status != 200) {
            failed++;
            std::lock_guard lock(why_mu);
            ++why["HTTP " + std::to_string(r->status)];
            continue;
          }
          ok++;
          tokens += nlohmann::json::parse(r->body)["usage"]["completion_tokens"].get<int64_t>();
          lat[c].push_back(ms);
        }
      });
    for (auto& t : pool) t.join();
    double wall = std::chrono::duration<double>(Clock::now() - t0).count();
    server.stop();
    serving.join();
    std::vector<double> all;
    for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
    std::sort(all.begin(), all.end());
    auto pct = [&](double p) { return all.empty() ? 0.0 : all[std::min(all.size() - 1, static_cast<size_t>(p * all.size()))]; };
    lineage::bench::emit({{"bench", "serve"}, {"model", std::filesystem::path(model).filename().string()}, {"clients", clients},
                          {"seconds", wall}, {"max_tokens", max_tokens}, {"threads", threads}, {"requests", ok.load()},
                          {"requests_per_s", ok / wall}, {"completion_tokens_per_s", tokens / wall}, {"p50_ms", pct(0.50)},
                          {"p90_ms", pct(0.90)}, {"p99_ms", pct(0.99)}, {"status_5xx", server_errors.load()}, {"failed", failed.load()},
                          {"failed_by_reason", why}});
    return server_errors > 0 || failed > 0 ? 1 : 0;
  } catch (const std::exception& e) {
    lineage::bench::emit({{"bench", "serve"}, {"error", e.what()}});
    return 1;
  }
}
