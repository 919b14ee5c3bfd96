// The request-log reader as lineage monitor uses it: a JSONL line's body is handed over as the
// parsed element (valid during the call) instead of being written back to text and parsed again.
// Private to protect; the public readers are in include/lineage/protect/request_record.h.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "lineage/protect/request_record.h"

namespace simdjson::dom {
class element;
}

namespace lineage::protect {

// `body`: the JSONL line's "body" object, parsed (null for SQLite rows and bodies given as text;
// then record.body holds the text). With a body element, record.body is left empty.
using ParsedRecordFn = std::function<void(RequestRecord&&, const simdjson::dom::element* body)>;

void read_request_log_parsed(const std::string& path, const ParsedRecordFn& each);
bool read_request_log_since_parsed(const std::string& path, int64_t& position, const ParsedRecordFn& each);

}  // namespace lineage::protect
