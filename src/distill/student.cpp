// Student initialisation by layer selection (see student.h).
#include "lineage/distill/student.h"

#include <fmt/format.h>

#include <sstream>

#include "lineage/core/error.h"

namespace lineage::distill {

std::vector<int64_t> parse_layer_selection(const std::string& spec, int64_t n_layers) {
  std::vector<int64_t> out;
  auto bad = [&] { fail("--init-from-teacher '{}': expected 'every:N' or a list of layer numbers like '0,2,4'", spec); };
  try {
    if (spec.rfind("every:", 0) == 0) {
      size_t used = 0;
      int64_t n = std::stoll(spec.substr(6), &used);
      if (used != spec.size() - 6 || n < 1) bad();
      for (int64_t i = 0; i < n_layers; i += n) out.push_back(i);
    } else {
      std::stringstream ss(spec);
      std::string item;
      while (std::getline(ss, item, ',')) {
        size_t used = 0;
        int64_t l = std::stoll(item, &used);
        if (used != item.size()) bad();
        out.push_back(l);
      }
    }
  } catch (const std::logic_error&) {
    bad();
  }
  if (out.empty()) bad();
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] < 0 || out[i] >= n_layers)
      fail("--init-from-teacher '{}': layer {} does not exist (the teacher has layers 0..{})", spec, out[i], n_layers - 1);
    if (i && out[i] <= out[i - 1]) fail("--init-from-teacher '{}': layers must be increasing", spec);
  }
  return out;
}

model::ModelConfig select_layers_config(const model::ModelConfig& teacher, const std::vector<int64_t>& layers) {
  model::ModelConfig c = teacher;
  c.n_layers = static_cast<int64_t>(layers.size());
  return c;
}

std::map<std::string, torch::Tensor> select_layers_weights(const std::map<std::string, torch::Tensor>& teacher,
                                                           const std::vector<int64_t>& layers) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& [name, t] : teacher) {
    if (name.rfind("layers.", 0) != 0) {
      out[name] = t.clone();
      continue;
    }
    size_t dot = name.find('.', 7);
    int64_t l = std::stoll(name.substr(7, dot - 7));
    auto it = std::find(layers.begin(), layers.end(), l);
    if (it == layers.end()) continue;
    out[fmt::format("layers.{}{}", it - layers.begin(), name.substr(dot))] = t.clone();
  }
  return out;
}

}  // namespace lineage::distill
