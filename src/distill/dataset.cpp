// Loading, tokenizing, splitting and packing training data (see dataset.h for the formats).
#include "lineage/core/json.h"
#include "lineage/distill/dataset.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <functional>
#include <sstream>

#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/core/mix.h"

namespace lineage::distill {
namespace {

using json = nlohmann::json;

// One tokenized example: ids and which of them are targets.
struct Tokens {
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;
};

// Number of leading ids two sequences share.
size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

class Builder {
 public:
  Builder(const text::Tokenizer& tok) : tok_(tok) {}

  // BOS (when the tokenizer's rule adds one) + text + EOS, every token a target.
  Tokens plain(const std::string& text) const {
    Tokens t;
    t.ids = tok_.encode(text, tok_.vocab().add_bos);
    if (tok_.eos_id() >= 0) t.ids.push_back(tok_.eos_id());
    t.mask.assign(t.ids.size(), 1);
    if (!t.ids.empty() && t.ids[0] == tok_.bos_id()) t.mask[0] = 0;
    return t;
  }

  // Tokenized together so a tokenizer that merges across the boundary (or adds a space prefix)
  // sees the text a model would; the targets start where the prompt's own tokens stop matching.
  Tokens prompt_completion(const std::string& prompt, const std::string& completion) const {
    Tokens t;
    auto p = tok_.encode(prompt, tok_.vocab().add_bos);
    t.ids = tok_.encode(prompt + completion, tok_.vocab().add_bos);
    if (tok_.eos_id() >= 0) t.ids.push_back(tok_.eos_id());
    size_t start = std::max<size_t>(1, common_prefix(p, t.ids));
    t.mask.assign(t.ids.size(), 0);
    for (size_t i = start; i < t.ids.size(); ++i) t.mask[i] = 1;
    return t;
  }

  // Chat: targets are the tokens covering assistant contents (and the EOS after the last turn).
  Tokens chat(const std::vector<std::pair<std::string, std::string>>& turns, std::string* prompt_text) const {
    std::string full;
    std::vector<std::pair<size_t, size_t>> spans;  // assistant content [begin, end) in bytes
    for (const auto& [role, content] : turns) {
      std::string header = render_chat_turn(role, "");
      header.pop_back();  // without the closing newline
      full += header;
      if (role == "assistant") {
        if (prompt_text) *prompt_text = full;
        spans.push_back({full.size(), full.size() + content.size()});
      }
      full += content + "\n";
    }
    Tokens t;
    t.ids = tok_.encode(full, tok_.vocab().add_bos);
    t.mask.assign(t.ids.size(), 0);
    for (auto [b, e] : spans) {
      size_t tb = common_prefix(tok_.encode(full.substr(0, b), tok_.vocab().add_bos), t.ids);
      size_t te = common_prefix(tok_.encode(full.substr(0, e), tok_.vocab().add_bos), t.ids);
      for (size_t i = std::max<size_t>(tb, 1); i < te; ++i) t.mask[i] = 1;
    }
    if (tok_.eos_id() >= 0) {
      t.ids.push_back(tok_.eos_id());
      t.mask.push_back(spans.empty() ? 0 : 1);
    }
    return t;
  }

  const text::Tokenizer& tok_;
};

std::string field_string(const json& j, const char* name, const std::string& where) {
  const auto& v = j.at(name);
  if (!v.is_string()) fail("{}: field \"{}\" must be a string, found {}", where, name, v.type_name());
  return v.get<std::string>();
}

// Plain text split into documents at blank lines, long blocks cut at line ends.
std::vector<std::string> text_documents(const std::string& text) {
  constexpr size_t kMaxDoc = 64 * 1024;
  std::vector<std::string> docs;
  std::string cur;
  std::istringstream in(text);
  std::string line;
  auto flush = [&] {
    if (cur.find_first_not_of(" \t\r\n") != std::string::npos) docs.push_back(cur);
    cur.clear();
  };
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) {
      flush();
      continue;
    }
    if (!cur.empty()) cur += '\n';
    cur += line;
    if (cur.size() >= kMaxDoc) flush();
  }
  flush();
  return docs;
}

bool is_jsonl(const std::string& path, const std::string& bytes) {
  if (path.ends_with(".jsonl") || path.ends_with(".ndjson")) return true;
  size_t i = bytes.find_first_not_of(" \t\r\n");
  return i != std::string::npos && bytes[i] == '{' && !path.ends_with(".txt");
}

void pack_rows(const std::vector<Tokens>& examples, int64_t T, bool pack, int32_t pad_id, TokenRows& out) {
  out.seq_len = T;
  const int64_t W = T + 1;
  if (!pack) {
    for (const auto& e : examples) {
      int64_t n = std::min<int64_t>(W, static_cast<int64_t>(e.ids.size()));
      if (n < 2) continue;
      out.tokens.insert(out.tokens.end(), e.ids.begin(), e.ids.begin() + n);
      out.mask.insert(out.mask.end(), e.mask.begin(), e.mask.begin() + n);
      out.mask[out.mask.size() - n] = 0;
      out.tokens.resize(out.tokens.size() + (W - n), pad_id);
      out.mask.resize(out.mask.size() + (W - n), 0);
    }
    return;
  }
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;
  for (const auto& e : examples) {
    ids.insert(ids.end(), e.ids.begin(), e.ids.end());
    mask.insert(mask.end(), e.mask.begin(), e.mask.end());
  }
  const int64_t n = static_cast<int64_t>(ids.size());
  for (int64_t start = 0; start + 1 < n; start += T) {
    int64_t len = std::min<int64_t>(W, n - start);
    out.tokens.insert(out.tokens.end(), ids.begin() + start, ids.begin() + start + len);
    out.mask.insert(out.mask.end(), mask.begin() + start, mask.begin() + start + len);
    out.mask[out.mask.size() - len] = 0;  // the row's first token is only an input
    out.tokens.resize(out.tokens.size() + (W - len), pad_id);
    out.mask.resize(out.mask.size() + (W - len), 0);
  }
}

}  // namespace

TokenRows pack_examples(const std::vector<std::vector<int32_t>>& ids, const std::vector<std::vector<uint8_t>>& masks,
                        int64_t seq_len, bool pack, int32_t pad_id) {
  if (ids.size() != masks.size()) fail("pack_examples: {} id lists but {} masks", ids.size(), masks.size());
  std::vector<Tokens> ex(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i].size() != masks[i].size()) fail("pack_examples: example {} has {} ids but {} mask entries", i, ids[i].size(), masks[i].size());
    ex[i] = {ids[i], masks[i]};
  }
  TokenRows out;
  pack_rows(ex, seq_len, pack, pad_id, out);
  return out;
}

std::string render_chat_turn(const std::string& role, const std::string& content) {
  return "<|" + role + "|>\n" + content + "\n";
}

int64_t TokenRows::target_tokens() const {
  int64_t n = 0;
  for (uint8_t m : mask) n += m;
  return n;
}

Digest TokenRows::digest() const {
  Sha256 h;
  h.update(&seq_len, sizeof seq_len);
  h.update(tokens.data(), tokens.size() * sizeof(int32_t));
  h.update(mask.data(), mask.size());
  return h.finish();
}

std::vector<int64_t> DataCursor::next(int64_t n, int64_t rows) {
  if (rows <= 0) fail("the training split has no rows");
  std::vector<int64_t> out;
  out.reserve(n);
  std::vector<int64_t> perm;
  auto make_perm = [&] {
    // Fisher-Yates with splitmix64: the same order on every platform and library.
    perm.resize(rows);
    for (int64_t i = 0; i < rows; ++i) perm[i] = i;
    uint64_t state = splitmix64(seed * 0x100000001b3ULL + static_cast<uint64_t>(epoch));
    for (int64_t i = rows - 1; i > 0; --i) {
      state = splitmix64(state);
      std::swap(perm[i], perm[static_cast<int64_t>(state % static_cast<uint64_t>(i + 1))]);
    }
  };
  make_perm();
  while (static_cast<int64_t>(out.size()) < n) {
    if (position >= rows) {
      ++epoch;
      position = 0;
      make_perm();
    }
    out.push_back(perm[position++]);
  }
  return out;
}

namespace {

using AddExample = std::function<void(Tokens, Prompt*)>;

// One JSONL example: {"prompt", "completion"} (the loss on the completion), {"text"}, or chat
// {"messages": [{"role", "content"}, ...]} (the loss on the assistant's turns).
void add_jsonl_example(const json& j, const std::string& where, Builder& builder, const text::Tokenizer& tokenizer,
                       DataFile& df, const AddExample& add) {
  if (j.contains("prompt")) {
    std::string prompt = field_string(j, "prompt", where);
    std::string completion = j.contains("completion") ? field_string(j, "completion", where) : "";
    Prompt p{tokenizer.encode(prompt, tokenizer.vocab().add_bos), {}};
    Tokens t = builder.prompt_completion(prompt, completion);
    for (size_t i = 0; i < t.ids.size(); ++i)
      if (t.mask[i]) p.completion.push_back(t.ids[i]);
    df.format = "jsonl prompt/completion";
    add(std::move(t), &p);
  } else if (j.contains("text")) {
    df.format = "jsonl text";
    add(builder.plain(field_string(j, "text", where)), nullptr);
  } else if (j.contains("messages")) {
    const auto& m = j["messages"];
    if (!m.is_array() || m.empty()) fail("{}: \"messages\" must be a non-empty array", where);
    std::vector<std::pair<std::string, std::string>> turns;
    for (size_t i = 0; i < m.size(); ++i) {
      std::string w = fmt::format("{} message {}", where, i);
      if (!m[i].is_object() || !m[i].contains("role") || !m[i].contains("content"))
        fail("{}: expected {{\"role\": ..., \"content\": ...}}", w);
      turns.emplace_back(field_string(m[i], "role", w), field_string(m[i], "content", w));
    }
    std::string prompt_text;
    Tokens t = builder.chat(turns, &prompt_text);
    df.format = "jsonl messages";
    if (prompt_text.empty()) {
      add(std::move(t), nullptr);
    } else {
      Prompt p{tokenizer.encode(prompt_text, tokenizer.vocab().add_bos), {}};
      add(std::move(t), &p);
    }
  } else {
    fail("{}: expected a \"prompt\" (with \"completion\"), \"text\" or \"messages\" field", where);
  }
}

// The examples of a JSONL file, at most options.max_examples; a malformed line fails with its number.
void read_jsonl(const std::string& bytes, const std::string& path, const DataOptions& options, Builder& builder,
                const text::Tokenizer& tokenizer, DataFile& df, const AddExample& add) {
  std::istringstream in(bytes);
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (options.max_examples && df.examples >= options.max_examples) break;
    std::string where = fmt::format("{} line {}", path, line_no);
    json j;
    try {
      check_json_depth(line, where);
      j = json::parse(line);
    } catch (const json::exception& e) {
      fail("{}: not valid JSON ({})", where, e.what());
    }
    if (!j.is_object()) fail("{}: expected a JSON object, found {}", where, j.type_name());
    add_jsonl_example(j, where, builder, tokenizer, df, add);
  }
  if (df.examples == 0) fail("data file '{}' has no examples", path);
}

}  // namespace

Dataset load_dataset(const std::vector<std::string>& paths, const text::Tokenizer& tokenizer,
                     const DataOptions& options) {
  if (paths.empty()) fail("no data files given (--data)");
  if (options.seq_len < 2) fail("context length {} is too short (at least 2)", options.seq_len);
  if (!(options.valid_fraction >= 0 && options.valid_fraction < 1))
    fail("validation fraction {} must be in [0, 1)", options.valid_fraction);
  Builder builder(tokenizer);
  Dataset ds;
  std::vector<Tokens> train, valid;
  for (const auto& path : paths) {
    std::string bytes = read_file(path);
    DataFile df;
    df.path = path;
    df.bytes = static_cast<int64_t>(bytes.size());
    Digest digest = sha256(bytes);
    df.sha256 = hex(digest);
    if (bytes.find_first_not_of(" \t\r\n") == std::string::npos) fail("data file '{}' is empty", path);
    uint64_t file_key;
    std::memcpy(&file_key, digest.data(), sizeof file_key);
    auto is_valid = [&](int64_t index) {
      uint64_t h = splitmix64(file_key ^ splitmix64(options.split_seed ^ splitmix64(static_cast<uint64_t>(index))));
      return static_cast<double>(h >> 11) * 0x1.0p-53 < options.valid_fraction;
    };
    AddExample add = [&](Tokens t, Prompt* prompt) {
      bool v = is_valid(df.examples++);
      (v ? valid : train).push_back(std::move(t));
      (v ? ds.valid_examples : ds.train_examples)++;
      if (prompt) (v ? ds.valid_prompts : ds.train_prompts).push_back(std::move(*prompt));
    };
    if (is_jsonl(path, bytes)) {
      read_jsonl(bytes, path, options, builder, tokenizer, df, add);
    } else {
      df.format = "text";
      for (auto& doc : text_documents(bytes)) {
        if (options.max_examples && df.examples >= options.max_examples) break;
        add(builder.plain(doc), nullptr);
      }
    }
    ds.files.push_back(df);
  }
  int32_t pad = std::max(0, tokenizer.eos_id());
  pack_rows(train, options.seq_len, options.pack, pad, ds.train);
  pack_rows(valid, options.seq_len, options.pack, pad, ds.valid);
  if (ds.train.rows() == 0) fail("the data gives no training rows (all {} examples fell into validation)", ds.valid_examples);
  return ds;
}

}  // namespace lineage::distill
