// Reading request logs for the monitor: lineage serve's SQLite log and gateways' JSONL.
// See include/lineage/protect/request_record.h for both layouts.
#include <sqlite3.h>

#include <cstring>
#include <fmt/format.h>
#include <fstream>
#include <memory>
#include <simdjson.h>

#include <algorithm>

#include "lineage/core/json.h"
#include "lineage/core/error.h"
#include "lineage/protect/request_record.h"
#include "request_reader_internal.h"
#include "simdjson_int.h"

namespace lineage::protect {

namespace {

const char* text_at(sqlite3_stmt* st, int col) {
  auto* p = reinterpret_cast<const char*>(sqlite3_column_text(st, col));
  return p ? p : "";
}

bool has_column(sqlite3* db, const char* table, const char* column) {
  sqlite3_stmt* st = nullptr;
  std::string sql = std::string("PRAGMA table_info(") + table + ")";
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) return false;
  bool found = false;
  while (sqlite3_step(st) == SQLITE_ROW) found = found || std::strcmp(text_at(st, 1), column) == 0;
  sqlite3_finalize(st);
  return found;
}

// since < 0: every row by key and time; otherwise the rows after row id `since`, by id (moved on).
void read_sqlite(const std::string& path, const ParsedRecordFn& each, int64_t* since = nullptr) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    std::string m = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    fail("cannot open the request log '{}': {}", path, m);
  }
  std::unique_ptr<sqlite3, int (*)(sqlite3*)> guard(db, sqlite3_close);
  const bool body = has_column(db, "requests", "body");
  const bool response = has_column(db, "requests", "response_sha256");
  std::string sql =
      "SELECT unix_ms, key_id, client, user_agent, endpoint, model, status, prompt_tokens, completion_tokens, "
      "params, prompt, prompt_sha256, " +
      std::string(body ? "body" : "NULL") + ", " +
      std::string(response ? "response_sha256" : "NULL") + ", id FROM requests " +
      (since ? "WHERE id > " + std::to_string(*since) + " ORDER BY id" : "ORDER BY key_id, unix_ms");
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK)
    fail("'{}' is not a lineage request log (table requests with unix_ms, key_id, client, user_agent, ...): {}", path,
         sqlite3_errmsg(db));
  std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> stmt(st, sqlite3_finalize);
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    RequestRecord r;
    r.unix_ms = sqlite3_column_int64(st, 0);
    r.key = sqlite3_column_type(st, 1) == SQLITE_NULL ? "(no key)" : text_at(st, 1);
    r.client = text_at(st, 2);
    r.user_agent = text_at(st, 3);
    r.endpoint = text_at(st, 4);
    r.model = text_at(st, 5);
    r.status = sqlite3_column_type(st, 6) == SQLITE_NULL ? 200 : sqlite3_column_int(st, 6);
    r.prompt_tokens = sqlite3_column_int64(st, 7);
    r.completion_tokens = sqlite3_column_int64(st, 8);
    r.params = text_at(st, 9);
    r.prompt = text_at(st, 10);
    // Without logged text (--no-log-text) the prompt hash still tells repeats apart.
    if (r.prompt.empty()) r.prompt = std::string("#sha256:") + text_at(st, 11);
    r.body = text_at(st, 12);
    r.response_sha256 = text_at(st, 13);
    if (since) *since = sqlite3_column_int64(st, 14);
    each(std::move(r), nullptr);
  }
  if (rc != SQLITE_DONE) fail("reading the request log '{}': {}", path, sqlite3_errmsg(db));
}

// JSONL is read with simdjson (Langdale & Lemire 2019): a gateway's week of requests is gigabytes,
// and a DOM parse per line at nlohmann's speed was most of the monitor's time.
namespace dom = simdjson::dom;

const char* type_name(dom::element_type t) {
  switch (t) {
    case dom::element_type::ARRAY: return "array";
    case dom::element_type::OBJECT: return "object";
    case dom::element_type::STRING: return "string";
    case dom::element_type::BOOL: return "boolean";
    case dom::element_type::NULL_VALUE: return "null";
    default: return "number";
  }
}

std::string string_field(dom::object o, const char* name, const std::string& where) {
  dom::element e;
  if (!simdjson_field(o, name, e)) return {};
  std::string_view v;
  if (e.get_string().get(v)) fail("{}: \"{}\" must be a string, found {}", where, name, type_name(e.type()));
  return std::string(v);
}

int64_t int_field(dom::object o, const char* name, int64_t fallback, const std::string& where) {
  dom::element e;
  if (!simdjson_field(o, name, e)) return fallback;
  auto v = simdjson_int(e);
  if (!v) fail("{}: \"{}\" must be an integer, found {}", where, name, simdjson::minify(e).substr(0, 64));
  return *v;
}

// The record of one line. With `body` given, a body object stays parsed there (*parsed set) and
// record.body stays empty.
RequestRecord record_of_json(dom::element doc, const std::string& where, dom::element* body, bool* parsed) {
  dom::object j;
  if (doc.get_object().get(j)) fail("{}: expected a JSON object (one request per line)", where);
  RequestRecord r;
  dom::element t;
  if (!simdjson_field(j, "time", t)) fail("{}: no \"time\" (ISO 8601 or unix milliseconds)", where);
  std::string_view text;
  if (t.is_number()) {
    auto ms = simdjson_int(t);
    if (!ms) fail("{}: \"time\" {} is not whole unix milliseconds", where, simdjson::minify(t).substr(0, 64));
    r.unix_ms = *ms;
  } else if (!t.get_string().get(text)) {
    r.unix_ms = parse_iso_time_ms(std::string(text), where + ": \"time\"");
  } else {
    fail("{}: \"time\" must be ISO 8601 text or unix milliseconds, found {}", where, type_name(t.type()));
  }
  r.key = string_field(j, "key", where);
  if (r.key.empty()) r.key = string_field(j, "key_id", where);
  if (r.key.empty()) fail("{}: no \"key\" (the API key id)", where);
  r.client = string_field(j, "client", where);
  r.user_agent = string_field(j, "user_agent", where);
  r.endpoint = string_field(j, "endpoint", where);
  r.model = string_field(j, "model", where);
  r.status = static_cast<int>(std::clamp<int64_t>(int_field(j, "status", 200, where), 0, 999));
  r.prompt_tokens = int_field(j, "prompt_tokens", 0, where);
  r.completion_tokens = int_field(j, "completion_tokens", 0, where);
  dom::element b;
  if (simdjson_field(j, "body", b)) {
    if (b.is_object()) *body = b, *parsed = true;
    else if (!b.get_string().get(text)) r.body = std::string(text);
    else fail("{}: \"body\" must be the request body (an object or its JSON text)", where);
  }
  dom::element h;
  if (simdjson_field(j, "response_sha256", h)) {
    dom::array hashes;
    if (!h.get_string().get(text)) {
      r.response_sha256 = std::string(text);
    } else if (!h.get_array().get(hashes)) {
      for (dom::element x : hashes) {
        if (x.get_string().get(text)) fail("{}: \"response_sha256\" must hold hex digests (text)", where);
        r.response_sha256 += (r.response_sha256.empty() ? "" : ",") + std::string(text);
      }
    } else {
      fail("{}: \"response_sha256\" must be hex digests, comma-separated or an array", where);
    }
  }
  return r;
}

// The complete lines after byte `position` (moved past them); false when the file is shorter.
// One line's record, named `where` in errors.
void read_line(dom::parser& parser, const std::string& line, const std::string& where, const ParsedRecordFn& each) {
  dom::element doc;
  if (auto err = parser.parse(line).get(doc)) fail("{}: not JSON ({})", where, simdjson::error_message(err));
  dom::element body;
  bool parsed = false;
  RequestRecord r = record_of_json(doc, where, &body, &parsed);
  each(std::move(r), parsed ? &body : nullptr);
}

bool blank(const std::string& line) { return line.find_first_not_of(" \t\r") == std::string::npos; }

bool read_jsonl_since(const std::string& path, int64_t& position, const ParsedRecordFn& each) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) fail("cannot open the request log '{}'", path);
  const int64_t size = static_cast<int64_t>(in.tellg());
  if (size < position) return false;
  in.seekg(position);
  dom::parser parser;
  std::string line;
  while (std::getline(in, line)) {
    if (in.eof()) break;  // no line end yet: the writer is still writing it
    const int64_t at = position;
    position += static_cast<int64_t>(line.size()) + 1;
    if (!blank(line)) read_line(parser, line, fmt::format("'{}' at byte {}", path, at), each);
  }
  return true;
}

void read_jsonl(const std::string& path, const ParsedRecordFn& each) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open the request log '{}'", path);
  dom::parser parser;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n)
    if (!blank(line)) read_line(parser, line, "'" + path + "' line " + std::to_string(n), each);
}

// For callers that want the body as text: a parsed body written back (minified).
ParsedRecordFn with_body_text(const std::function<void(RequestRecord&&)>& each) {
  return [&each](RequestRecord&& r, const dom::element* body) {
    if (body) r.body = simdjson::minify(*body);
    each(std::move(r));
  };
}

}  // namespace

bool read_request_log_since(const std::string& path, int64_t& position, const std::function<void(RequestRecord&&)>& each) {
  return read_request_log_since_parsed(path, position, with_body_text(each));
}

bool read_request_log_since_parsed(const std::string& path, int64_t& position, const ParsedRecordFn& each) {
  std::ifstream probe(path, std::ios::binary);
  if (!probe) fail("cannot open the request log '{}': no such file or not readable", path);
  char head[16] = {0};
  probe.read(head, sizeof head);
  if (std::string(head, static_cast<size_t>(probe.gcount())).rfind("SQLite format 3", 0) == 0) {
    read_sqlite(path, each, &position);
    return true;
  }
  return read_jsonl_since(path, position, each);
}

int64_t parse_iso_time_ms(const std::string& s, const std::string& what) {
  int y, mo, d, h, mi;
  double sec;
  char tail[16] = {0};
  int n = std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%lf%15s", &y, &mo, &d, &h, &mi, &sec, tail);
  if (n < 6 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec < 0 || sec >= 61)
    fail("{}: '{}' is not an ISO 8601 time (expected 2026-11-01T08:00:00Z)", what, s);
  std::string zone = tail;
  if (!zone.empty() && zone != "Z" && zone != "+00:00" && zone != "+0000")
    fail("{}: '{}' has zone '{}'; only UTC (Z or +00:00) is read", what, s, zone);
  // Days from the civil date (Howard Hinnant's days_from_civil).
  y -= mo <= 2;
  const int era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * static_cast<unsigned>(mo + (mo > 2 ? -3 : 9)) + 2) / 5 + static_cast<unsigned>(d) - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  const int64_t days = int64_t{era} * 146097 + static_cast<int64_t>(doe) - 719468;
  return ((days * 24 + h) * 60 + mi) * 60000 + static_cast<int64_t>(sec * 1000 + 0.5);
}

void read_request_log(const std::string& path, const std::function<void(RequestRecord&&)>& each) {
  read_request_log_parsed(path, with_body_text(each));
}

void read_request_log_parsed(const std::string& path, const ParsedRecordFn& each) {
  std::ifstream probe(path, std::ios::binary);
  if (!probe) fail("cannot open the request log '{}': no such file or not readable", path);
  char head[16] = {0};
  probe.read(head, sizeof head);
  const std::string start(head, static_cast<size_t>(probe.gcount()));
  if (start.rfind("SQLite format 3", 0) == 0) return read_sqlite(path, each);
  const size_t first = start.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && (start[first] == '{' || start[first] == '[')) return read_jsonl(path, each);
  if (start.empty()) return;  // an empty JSONL log: no requests
  fail("'{}' is not a request log: expected SQLite (lineage serve --log) or JSONL (one request object per line)", path);
}

}  // namespace lineage::protect
