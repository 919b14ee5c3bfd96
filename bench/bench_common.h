// Shared bits of the benchmark binaries: wall-clock timing and the one JSON line each prints.
#pragma once

#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>

namespace lineage::bench {

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline void emit(const nlohmann::json& j) { std::cout << j.dump() << std::endl; }

}  // namespace lineage::bench
