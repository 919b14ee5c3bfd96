// Load on `lineage serve` over loopback: C clients (default 32), each sending completion requests
// back to back for S seconds (default 30), as an OpenAI SDK would. Prints one JSON line per run:
// requests/s, completion tokens/s, p50/p90/p99 latency, and the count of 5xx and failed requests.
//   bench_serve [MODEL] [--clients C] [--seconds S] [--max-tokens N] [--threads T]
//
// With --llama-server [PATH] (default ../shared/tools/llama.cpp/bin/llama-server) it also runs
// llama.cpp's server on the same GGUF with the same clients, prompts, seeds and thread count, one
// run per client count of --clients-list (default 1,8,32,64), every completion max_tokens long
// (ignore_eos, which both servers take), and prints the ratio of completion tokens/s side by side.
//
// With --deterrence PROXY it runs `lineage serve` plain, with antidistillation sampling
// (--antidistill PROXY) and with a fingerprint (a fresh key, --fingerprint-proxy PROXY), one run per
// client count of --clients-list, and prints each defence's completion tokens/s over plain's.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <httplib.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "bench_common.h"
#include "llama_server.h"
#include "lineage/core/allocator.h"
#include "lineage/protect/watermark.h"
#include "lineage/core/json.h"
#include "lineage/core/threads.h"
#include "lineage/serve/server.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

struct Load {
  int clients = 32, seconds = 30, max_tokens = 16;
  bool ignore_eos = false;
};

// C clients against the server on `port` for the load's duration; the figures as JSON.
json run_load(int port, const std::string& model_id, const Load& load) {
  const std::vector<std::string> prompts = {"In the beginning", "And the LORD said unto Moses", "Blessed are the",
                                            "And it came to pass", "The heavens declare"};
  std::atomic<int64_t> ok{0}, server_errors{0}, failed{0}, tokens{0};
  std::mutex why_mu;
  std::map<std::string, int64_t> why;  // failed requests by reason
  std::vector<std::vector<double>> lat(load.clients);
  const auto t0 = Clock::now(), end = t0 + std::chrono::seconds(load.seconds);
  std::vector<std::thread> pool;
  for (int c = 0; c < load.clients; ++c)
    pool.emplace_back([&, c] {
      httplib::Client cl("127.0.0.1", port);
      cl.set_read_timeout(120, 0);
      cl.set_keep_alive(true);
      for (int i = 0; Clock::now() < end; ++i) {
        json body = {{"model", model_id}, {"prompt", prompts[(c + i) % prompts.size()]}, {"max_tokens", load.max_tokens},
                     {"temperature", 0.8}, {"seed", c * 100003 + i}};
        if (load.ignore_eos) body["ignore_eos"] = true;
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
        auto j = lineage::parse_json_or_discarded(r->body);
        if (!j.is_discarded() && j.contains("usage")) tokens += j["usage"].value("completion_tokens", int64_t{0});
        lat[c].push_back(ms);
      }
    });
  for (auto& t : pool) t.join();
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  std::vector<double> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) { return all.empty() ? 0.0 : all[std::min(all.size() - 1, static_cast<size_t>(p * all.size()))]; };
  return {{"clients", load.clients}, {"seconds", wall}, {"max_tokens", load.max_tokens}, {"requests", ok.load()},
          {"requests_per_s", ok / wall}, {"completion_tokens_per_s", tokens / wall}, {"p50_ms", pct(0.50)},
          {"p90_ms", pct(0.90)}, {"p99_ms", pct(0.99)}, {"status_5xx", server_errors.load()}, {"failed", failed.load()},
          {"failed_by_reason", why}};
}


// One run per client count, every completion max_tokens long (ignore_eos), each printed with
// `tags`; completion tokens/s by client count. 5xx and failed requests are added to *bad.
std::map<int, double> sweep(int port, const std::string& model_id, const std::vector<int>& client_list,
                            const Load& load, const json& tags, int* bad) {
  std::map<int, double> rates;
  for (int c : client_list) {
    Load l = load;
    l.clients = c;
    l.ignore_eos = true;
    json r = run_load(port, model_id, l);
    r["bench"] = "serve";
    r.update(tags);
    lineage::bench::emit(r);
    rates[c] = r["completion_tokens_per_s"].get<double>();
    if (bad) *bad += static_cast<int>(r["status_5xx"].get<int64_t>() + r["failed"].get<int64_t>());
  }
  return rates;
}

// The bench's server: the model on a free port, quiet, slots and workers for `clients`.
lineage::serve::ServeOptions bench_options(const std::string& model, int clients) {
  lineage::serve::ServeOptions o;
  o.model = model;
  o.port = 0;
  o.quiet = true;
  o.max_batch = std::max(32, clients);
  o.threads = std::max(64, clients);
  return o;
}

// lineage serve plain, with antidistillation sampling and with a fingerprint, side by side.
int run_deterrence(const std::string& model, const std::string& proxy, const std::vector<int>& client_list, Load load,
                   int threads) {
  if (!std::filesystem::exists(proxy)) {
    lineage::bench::emit({{"bench", "serve"}, {"skipped", "needs the proxy " + proxy}});
    return 0;
  }
  const auto key = std::filesystem::temp_directory_path() / ("bench_serve_fp_" + std::to_string(::getpid()) + ".key");
  lineage::protect::WatermarkKey::random().write(key);
  const int max_clients = *std::max_element(client_list.begin(), client_list.end());
  std::map<std::string, std::map<int, double>> rates;
  int bad = 0;
  for (const std::string defence : {"plain", "antidistill", "fingerprint"}) {
    auto o = bench_options(model, max_clients);
    if (defence == "antidistill") o.deterrence.antidistill_proxy = proxy;
    if (defence == "fingerprint") {
      o.deterrence.fingerprint_key = key.string();
      o.deterrence.fingerprint_proxy = proxy;
    }
    lineage::serve::Server server(o);
    const int port = server.bind();
    std::thread serving([&] { server.run(); });
    rates[defence] = sweep(port, server.model_id(), client_list, load, {{"defence", defence}, {"threads", threads}}, &bad);
    server.stop();
    serving.join();
  }
  std::filesystem::remove(key);
  for (const std::string defence : {"antidistill", "fingerprint"}) {
    json ratio = json::object();
    for (int c : client_list)
      ratio[std::to_string(c)] = rates["plain"][c] > 0 ? rates[defence][c] / rates["plain"][c] : 0.0;
    lineage::bench::emit({{"bench", "serve"}, {"compare", defence + " / plain completion tokens/s"},
                          {"proxy", std::filesystem::path(proxy).filename().string()}, {"max_tokens", load.max_tokens},
                          {"threads", threads}, {"seconds_each", load.seconds}, {"ratio_by_clients", ratio}});
  }
  return bad > 0 ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  lineage::settle_openmp_wait_policy(argv);
  lineage::tune_allocator();
  std::string model = std::string(LINEAGE_SOURCE_DIR) + "/models/lineage-kjv-5m.gguf";
  std::string llama_server, deterrence_proxy;
  std::vector<int> client_list = {1, 8, 32, 64};
  Load load;
  int threads = 2;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--clients" && i + 1 < argc) load.clients = std::stoi(argv[++i]);
    else if (a == "--seconds" && i + 1 < argc) load.seconds = std::stoi(argv[++i]);
    else if (a == "--max-tokens" && i + 1 < argc) load.max_tokens = std::stoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::stoi(argv[++i]);
    else if (a == "--clients-list" && i + 1 < argc) {
      client_list.clear();
      std::stringstream ss(argv[++i]);
      for (std::string n; std::getline(ss, n, ',');) client_list.push_back(std::stoi(n));
    } else if (a == "--deterrence" && i + 1 < argc) {
      deterrence_proxy = argv[++i];
    } else if (a == "--llama-server") {
      llama_server = (i + 1 < argc && argv[i + 1][0] != '-')
                         ? argv[++i]
                         : std::string(LINEAGE_SOURCE_DIR) + "/../shared/tools/llama.cpp/bin/llama-server";
    } else if (a.rfind("--", 0) != 0) {
      model = a;
    }
  }
  if (!std::filesystem::exists(model)) {
    lineage::bench::emit({{"bench", "serve"}, {"skipped", "needs " + model}});
    return 0;
  }
  if (!llama_server.empty() && !std::filesystem::exists(llama_server)) {
    lineage::bench::emit({{"bench", "serve"}, {"skipped", "needs llama-server at " + llama_server}});
    return 0;
  }
  try {
    torch::set_num_threads(threads);
    if (!deterrence_proxy.empty()) return run_deterrence(model, deterrence_proxy, client_list, load, threads);
    const int max_clients = llama_server.empty() ? load.clients : *std::max_element(client_list.begin(), client_list.end());
    auto o = bench_options(model, max_clients);
    int bad = 0;
    std::map<int, double> ours;
    {
      lineage::serve::Server server(o);
      const int port = server.bind();
      std::thread serving([&] { server.run(); });
      if (llama_server.empty()) {
        json r = run_load(port, server.model_id(), load);
        r["bench"] = "serve";
        r["server"] = "lineage";
        r["model"] = std::filesystem::path(model).filename().string();
        r["threads"] = threads;
        lineage::bench::emit(r);
        bad += r["status_5xx"].get<int64_t>() + r["failed"].get<int64_t>();
      } else {
        ours = sweep(port, server.model_id(), client_list, load, {{"server", "lineage"}, {"threads", threads}}, &bad);
      }
      server.stop();
      serving.join();
    }
    if (!llama_server.empty()) {
      // The model's context per slot, as Lineage serves it.
      const int ctx = 256;
      const std::string log = (std::filesystem::temp_directory_path() / "bench_serve_llama_server.log").string();
      lineage::bench::LlamaServer ls(llama_server, model, max_clients, ctx, threads, log);
      auto theirs = sweep(ls.port, "any", client_list, load, {{"server", "llama-server"}, {"threads", threads}}, nullptr);
      json ratio = json::object();
      for (int c : client_list) ratio[std::to_string(c)] = theirs[c] > 0 ? ours[c] / theirs[c] : 0.0;
      lineage::bench::emit({{"bench", "serve"}, {"compare", "lineage / llama-server completion tokens/s"},
                            {"model", std::filesystem::path(model).filename().string()}, {"max_tokens", load.max_tokens},
                            {"threads", threads}, {"seconds_each", load.seconds}, {"ratio_by_clients", ratio}});
    }
    return bad > 0 ? 1 : 0;
  } catch (const std::exception& e) {
    lineage::bench::emit({{"bench", "serve"}, {"error", e.what()}});
    return 1;
  }
}
