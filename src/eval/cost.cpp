// Cost figures (see cost.h).
#include "lineage/eval/cost.h"

#include <chrono>
#include <fstream>
#include <sstream>

#include "lineage/model/generate.h"

namespace lineage::eval {

nlohmann::json CostFigures::to_json() const {
  return {{"parameters", parameters},
          {"file_bytes", file_bytes},
          {"flops_per_token", flops_per_token},
          {"prefill_tokens_per_s", prefill_tokens_per_s},
          {"decode_tokens_per_s", decode_tokens_per_s},
          {"peak_rss_bytes", peak_rss_bytes}};
}

double measure_decode(model::Llama& model, const std::vector<int32_t>& prompt, int tokens, int repeats) {
  torch::NoGradGuard no_grad;
  model::GenerateOptions g;
  g.max_tokens = tokens;
  g.sampling.temperature = 0;
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    auto written = model::generate(model, prompt, g);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!written.empty() && s > 0) best = std::max(best, static_cast<double>(written.size()) / s);
  }
  return best;
}

void measure_speed(model::Llama& model, const std::vector<int32_t>& prompt, int decode_tokens, int repeats,
                   CostFigures& out) {
  torch::NoGradGuard no_grad;
  model->eval();
  auto input = torch::tensor(std::vector<int64_t>(prompt.begin(), prompt.end()), torch::kLong).unsqueeze(0).to(model->device());
  model->forward(input);  // warm-up
  double best_prefill = 0;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    model->forward(input).sum().item<float>();  // .item waits for an asynchronous device
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0) best_prefill = std::max(best_prefill, double(prompt.size()) / s);
  }
  out.prefill_tokens_per_s = best_prefill;
  // Decode after a short prompt: the speed of writing, not of reading.
  std::vector<int32_t> head(prompt.begin(), prompt.begin() + std::min<size_t>(prompt.size(), 8));
  out.decode_tokens_per_s = measure_decode(model, head, decode_tokens, repeats);
}

namespace {

int64_t status_kib(const char* field) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind(field, 0) == 0) {
      std::istringstream ss(line.substr(std::string(field).size()));
      int64_t kib = -1;
      ss >> kib;
      return kib;
    }
  return -1;
}

}  // namespace

void PeakMemory::reset() {
  std::ofstream("/proc/self/clear_refs") << "5";  // resets VmHWM to the current VmRSS
  base_ = status_kib("VmRSS:");
}

int64_t PeakMemory::peak_since_reset() const {
  const int64_t hwm = status_kib("VmHWM:");
  if (hwm < 0 || base_ < 0) return -1;
  return std::max<int64_t>(0, hwm - base_) * 1024;
}

}  // namespace lineage::eval
