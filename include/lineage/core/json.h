// JSON from outside the process (files, request bodies, answers) parsed with a bound on nesting:
// nlohmann::json copies, compares and dumps values recursively, so a file of 10^5 nested
// brackets overflows the stack wherever the parsed value is used. No format Lineage reads nests
// deeper than a handful of levels; kMaxJsonDepth leaves ample room.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace lineage {

inline constexpr int kMaxJsonDepth = 128;

// The deepest nesting of [ and { in `text` (string contents skipped), counting no further than
// limit + 1.
int json_depth(std::string_view text, int limit = kMaxJsonDepth);

// Fails naming `source` when `text` nests deeper than kMaxJsonDepth (call before json::parse).
void check_json_depth(std::string_view text, const std::string& source);

// Parses `text`; fails naming `source` when it is not JSON or nests deeper than kMaxJsonDepth.
nlohmann::json parse_json(std::string_view text, const std::string& source);

// An integer from a JSON number: an integer as it is, a float only when it is whole and within
// int64's range; nullopt otherwise. (nlohmann's get<int64_t>() of 1e40 is undefined behaviour.)
std::optional<int64_t> json_int(const nlohmann::json& v);

// json_int within [lo, hi], or a failure naming `what`: "WHAT: expected an integer in [lo, hi], found V".
int64_t need_json_int(const nlohmann::json& v, const std::string& what, int64_t lo = INT64_MIN, int64_t hi = INT64_MAX);

// Whether a double is a whole number within int64's range (what a cast to int64_t may take).
bool is_whole_int64(double d);

// Parses `text`; a discarded value (is_discarded()) when it is not JSON or nests too deep.
nlohmann::json parse_json_or_discarded(std::string_view text);

}  // namespace lineage
