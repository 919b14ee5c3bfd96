// Progress bar / JSON progress lines.
#include "lineage/core/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <nlohmann/json.hpp>

namespace lineage {

Progress::Progress(std::string task, int64_t total, int64_t start, FILE* out)
    : task_(std::move(task)), total_(total), start_(start), done_(start), out_(out) {
  tty_ = isatty(fileno(out_)) != 0;
  t0_ = last_print_ = std::chrono::steady_clock::now();
}

Progress::~Progress() {
  if (!finished_) finish();
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  auto t = static_cast<int64_t>(std::llround(s));
  if (t >= 3600) return fmt::format("{}h{:02}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

void Progress::update(int64_t done, int64_t tokens, const std::map<std::string, double>& values) {
  done_ = done;
  tokens_ += tokens;
  for (const auto& [k, v] : values) values_[k] = v;
  print(false);
}

void Progress::finish() {
  if (finished_) return;
  print(true);
  if (tty_ && !quiet_) std::fputc('\n', out_);
  finished_ = true;
}

void Progress::print(bool force) {
  if (quiet_) return;
  auto now = std::chrono::steady_clock::now();
  double since_print = std::chrono::duration<double>(now - last_print_).count();
  if (!force && since_print < (tty_ ? 0.2 : json_every)) return;
  last_print_ = now;
  double elapsed = std::chrono::duration<double>(now - t0_).count();
  double rate = elapsed > 0 ? tokens_ / elapsed : 0.0;
  int64_t this_run = done_ - start_;
  double eta = this_run > 0 ? elapsed / this_run * (total_ - done_) : NAN;
  if (tty_) {
    constexpr int kWidth = 24;
    int filled = total_ > 0 ? static_cast<int>(kWidth * done_ / total_) : 0;
    std::string bar(filled, '#');
    bar.append(kWidth - filled, '.');
    std::string vals;
    for (const auto& [k, v] : values_) vals += fmt::format("  {} {:.4g}", k, v);
    std::fprintf(out_, "\r%s [%s] %lld/%lld %3d%%  %.0f tok/s%s  ETA %s\x1b[K", task_.c_str(), bar.c_str(),
                 static_cast<long long>(done_), static_cast<long long>(total_),
                 total_ > 0 ? static_cast<int>(100 * done_ / total_) : 0, rate, vals.c_str(),
                 format_duration(eta).c_str());
  } else {
    nlohmann::json j = {{"task", task_}, {"step", done_}, {"total", total_}, {"tok_per_s", std::round(rate)}};
    for (const auto& [k, v] : values_) j[k] = v;
    j["eta_s"] = std::isfinite(eta) ? std::round(eta) : -1.0;
    j["elapsed_s"] = std::round(elapsed);
    std::fprintf(out_, "%s\n", j.dump().c_str());
  }
  std::fflush(out_);
}

}  // namespace lineage
