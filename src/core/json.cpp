// Bounded JSON parsing (see json.h).
#include "lineage/core/json.h"

#include <cmath>
#include <cstdint>

#include "lineage/core/error.h"

namespace lineage {

int json_depth(std::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > deepest && (deepest = depth) > limit) return deepest;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

void check_json_depth(std::string_view text, const std::string& source) {
  if (json_depth(text) > kMaxJsonDepth)
    fail("{} nests JSON deeper than {} levels: not something Lineage writes or reads", source, kMaxJsonDepth);
}

nlohmann::json parse_json(std::string_view text, const std::string& source) {
  check_json_depth(text, "'" + source + "'");
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    fail("'{}' is not valid JSON: {}", source, e.what());
  }
}

std::optional<int64_t> json_int(const nlohmann::json& v) {
  if (v.is_number_unsigned())
    return v.get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX) ? std::optional<int64_t>(v.get<int64_t>()) : std::nullopt;
  if (v.is_number_integer()) return v.get<int64_t>();
  if (!v.is_number_float()) return std::nullopt;
  const double d = v.get<double>();
  if (!is_whole_int64(d)) return std::nullopt;
  return static_cast<int64_t>(d);
}

bool is_whole_int64(double d) {
  // [-2^63, 2^63): both bounds exact in double; NaN fails both comparisons.
  return d >= -9223372036854775808.0 && d < 9223372036854775808.0 && d == std::floor(d);
}

int64_t need_json_int(const nlohmann::json& v, const std::string& what, int64_t lo, int64_t hi) {
  std::optional<int64_t> i = json_int(v);
  if (!i || *i < lo || *i > hi) {
    std::string shown = v.dump();
    if (shown.size() > 64) shown = shown.substr(0, 64) + "...";
    if (lo == INT64_MIN && hi == INT64_MAX) fail("{}: expected an integer, found {}", what, shown);
    fail("{}: expected an integer in [{}, {}], found {}", what, lo, hi, shown);
  }
  return *i;
}

nlohmann::json parse_json_or_discarded(std::string_view text) {
  if (json_depth(text) > kMaxJsonDepth) return nlohmann::json(nlohmann::json::value_t::discarded);
  return nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
}

}  // namespace lineage
