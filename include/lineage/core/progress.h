// Progress of long work. On a terminal: one line redrawn in place —
//   train  [#########.........]  412/1000  41%  3,180 tok/s  loss 2.913  ETA 3m05s
// Otherwise (a pipe, a CI log): one JSON line per update, at most every `json_every` seconds:
//   {"task":"train","step":412,"total":1000,"tok_per_s":3180,"loss":2.913,"eta_s":185}
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>

namespace lineage {

class Progress {
 public:
  // `total` units of work (steps, rows); `start` already done (a resumed run).
  Progress(std::string task, int64_t total, int64_t start = 0, FILE* out = stderr);
  ~Progress();  // ends the terminal line

  // Marks `done` units finished, `tokens` more processed since the last call; `values` are shown
  // by name (loss, lr, ...).
  void update(int64_t done, int64_t tokens, const std::map<std::string, double>& values = {});
  void finish();
  // Terminal output off, JSON on (tests), or nothing at all.
  void set_quiet(bool quiet) { quiet_ = quiet; }

  double json_every = 10.0;  // seconds between JSON lines

 private:
  std::string task_;
  int64_t total_, start_, done_ = 0, tokens_ = 0;
  FILE* out_;
  bool tty_, quiet_ = false, finished_ = false;
  std::chrono::steady_clock::time_point t0_, last_print_;
  std::map<std::string, double> values_;
  void print(bool force);
};

// "3m05s", "1h02m", "12s".
std::string format_duration(double seconds);

}  // namespace lineage
