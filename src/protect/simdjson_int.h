// simdjson helpers shared by the request-log reader and the monitor's body parsing. Whole numbers
// follow core/json.h's rule for nlohmann values (json_int): integers, and floats that are whole and
// within int64; nothing else is a count.
#pragma once

#include <simdjson.h>

#include <cstdint>
#include <optional>

#include "lineage/core/json.h"

namespace lineage::protect {

inline std::optional<int64_t> simdjson_int(simdjson::dom::element e) {
  int64_t i;
  uint64_t u;
  double d;
  switch (e.type()) {
    case simdjson::dom::element_type::INT64: return e.get_int64().get(i) ? std::nullopt : std::optional<int64_t>(i);
    case simdjson::dom::element_type::UINT64:
      if (e.get_uint64().get(u) || u > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
      return static_cast<int64_t>(u);
    case simdjson::dom::element_type::DOUBLE:
      if (e.get_double().get(d) || !is_whole_int64(d)) return std::nullopt;
      return static_cast<int64_t>(d);
    default: return std::nullopt;
  }
}

// An object's field, when present and not null.
inline bool simdjson_field(simdjson::dom::object o, const char* name, simdjson::dom::element& out) {
  return !o.at_key(name).get(out) && !out.is_null();
}

}  // namespace lineage::protect
