// Hugging Face tokenizer.json read and write, for BPE models: byte-level (GPT-2, Llama 3, Qwen2)
// and SentencePiece-style with byte fallback (Llama 1/2). For the latter, merge ranks become
// piece scores (rank r -> score -r), which makes the score-ordered SentencePiece algorithm apply
// the same merges in the same order.
#include <algorithm>
#include <filesystem>
#include <limits>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "lineage/core/json.h"
#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/text/tokenizer_formats.h"
#include "lineage/text/utf8.h"
#include "text_rules_json.h"

namespace lineage::text {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// Every object with "type" == type, depth first, in document order.
void find_typed(const json& j, const std::string& type, std::vector<const json*>& out) {
  if (j.is_object()) {
    auto t = j.find("type");
    if (t != j.end() && t->is_string() && *t == type) out.push_back(&j);
    for (const auto& [k, v] : j.items()) find_typed(v, type, out);
  } else if (j.is_array()) {
    for (const auto& v : j) find_typed(v, type, out);
  }
}

// j[key] without nlohmann's undefined behaviour for a missing key on a const value: null instead.
const json& field(const json& j, const char* key) {
  static const json kNull;
  if (!j.is_object()) return kNull;
  auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

std::string token_content(const json& j) {  // "bos_token": "<s>" or {"content": "<s>", ...}
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"];
  return "";
}

json parse_json_file(const std::string& path) { return parse_json(read_file(path), path); }

// The tokens by id: the model's vocab and the added tokens (special ones become control tokens);
// ids no entry names are <unused_N>.
void read_tokens(const json& j, const json& m, const std::string& path, Vocab& v) {
  std::map<int32_t, std::string> by_id;
  std::map<int32_t, bool> special;
  // Ids index the vocabulary: bounded so that a corrupt one cannot size an allocation.
  const int64_t max_id = std::min<int64_t>(int64_t{1} << 22, 2 * static_cast<int64_t>(field(m, "vocab").size()) + 4096);
  auto checked_id = [&](const json& id, const std::string& tok) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= max_id)
      fail("'{}': token '{}' has id {}, expected an integer in 0..{}", path, tok, id.dump(), max_id - 1);
    return static_cast<int32_t>(id.get<int64_t>());
  };
  for (const auto& [tok, id] : m["vocab"].items()) by_id[checked_id(id, tok)] = tok;
  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (const auto& a : j["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a.contains("content") || !a["content"].is_string())
        fail("'{}': an added_tokens entry lacks id or content", path);
      int32_t id = checked_id(a["id"], a["content"].get<std::string>());
      by_id[id] = a["content"].get<std::string>();
      special[id] = a.value("special", false);
    }
  }
  if (by_id.empty()) fail("'{}': the vocabulary is empty", path);
  int32_t n = by_id.rbegin()->first + 1;
  v.tokens.resize(n);
  v.types.assign(n, TokenType::kUnused);
  v.scores.assign(n, 0.0f);
  for (const auto& [id, tok] : by_id) {
    v.tokens[id] = tok;
    v.types[id] = TokenType::kNormal;
  }
  for (int32_t id = 0; id < n; ++id)
    if (v.tokens[id].empty() && v.types[id] == TokenType::kUnused) v.tokens[id] = fmt::format("<unused_{}>", id);
  for (const auto& [id, sp] : special) v.types[id] = sp ? TokenType::kControl : TokenType::kUserDefined;

}

// Merges as "a b", from either form tokenizer.json files use.
std::vector<std::string> read_merges(const json& m, const std::string& path) {
  std::vector<std::string> merges;
  if (m.contains("merges")) {
    for (const auto& mg : m["merges"]) {
      if (mg.is_string()) merges.push_back(mg);
      else if (mg.is_array() && mg.size() == 2) merges.push_back(mg[0].get<std::string>() + " " + mg[1].get<std::string>());
      else fail("'{}': merge #{} is neither \"a b\" nor [\"a\", \"b\"]", path, merges.size());
    }
  }
  return merges;
}

// Byte-level BPE (GPT-2, Llama 3, Qwen): merges as they are, the pre-tokenizer's split patterns.
void byte_level_bpe(const json& j, const std::string& path, std::vector<std::string> merges, Vocab& v) {
  v.model = VocabModel::kBpe;
  v.merges = std::move(merges);
  v.add_space_prefix = false;
  v.ignore_merges = field(j, "model").value("ignore_merges", false);
  std::vector<const json*> splits;
  find_typed(field(j, "pre_tokenizer"), "Split", splits);
  for (const json* s : splits) {
    const json& pat = field(*s, "pattern");
    if (pat.contains("Regex")) v.pre_regex.push_back(pat["Regex"]);  // String splits: in v.rules only
  }
  std::vector<const json*> bl_pre;
  find_typed(field(j, "pre_tokenizer"), "ByteLevel", bl_pre);
  if (!bl_pre.empty() && bl_pre[0]->value("use_regex", true)) {
    auto gpt2 = pre_tokenizer_patterns("gpt-2");
    v.pre_regex.insert(v.pre_regex.end(), gpt2.begin(), gpt2.end());
  }
  // Name the pre-tokenizer when it is one llama.cpp knows, for GGUF export.
  for (const char* name : {"gpt-2", "llama-bpe", "qwen2"})
    if (v.pre_regex == pre_tokenizer_patterns(name)) v.pre = name;
  if (v.pre_regex.empty()) v.pre_regex.push_back(".+");  // no split at all: one piece
}

// SentencePiece-style BPE (Llama 2, Mistral): scores from merge ranks, byte fallback, the space
// prefix its normalizer or pre-tokenizer adds.
void spm_bpe(const json& j, const json& m, const std::string& path, const std::vector<std::string>& merges,
             const std::function<int32_t(const std::string&)>& lookup, Vocab& v) {
  const int32_t n = v.size();
  v.model = VocabModel::kSpm;
  // Scores from merge ranks; tokens no merge produces can never be merge results.
  const float kNever = -std::numeric_limits<float>::infinity();
  for (int32_t id = 0; id < n; ++id) {
    size_t first = utf8::seq_len(static_cast<unsigned char>(v.tokens[id][0]));
    if (v.tokens[id].size() > first && v.types[id] == TokenType::kNormal) v.scores[id] = kNever;
  }
  for (size_t r = 0; r < merges.size(); ++r) {
    auto sp = merges[r].find(' ');
    if (sp == std::string::npos) fail("'{}': merge #{} '{}' has no space", path, r, merges[r]);
    int32_t id = lookup(merges[r].substr(0, sp) + merges[r].substr(sp + 1));
    if (id >= 0 && v.scores[id] == kNever) v.scores[id] = -static_cast<float>(r);
  }
  if (m.value("byte_fallback", false))
    for (int32_t id = 0; id < n; ++id)
      if (utf8::parse_byte_piece(v.tokens[id]) >= 0) v.types[id] = TokenType::kByte;
  std::string norm = field(j, "normalizer").dump() + field(j, "pre_tokenizer").dump();
  v.add_space_prefix = norm.find("Prepend") != std::string::npos ||
                       (norm.find("Metaspace") != std::string::npos && norm.find("\"never\"") == std::string::npos);
}

// BOS, EOS and padding: the TemplateProcessing post-processor, then tokenizer_config.json and
// config.json beside the file.
void read_special_ids(const json& j, const std::string& path, const std::function<int32_t(const std::string&)>& lookup,
                      Vocab& v) {
  // BOS: the special token a TemplateProcessing post-processor puts before $A.
  v.add_bos = false;
  std::vector<const json*> templates;
  find_typed(field(j, "post_processor"), "TemplateProcessing", templates);
  if (!templates.empty() && (*templates[0]).contains("single")) {
    const json& single = (*templates[0])["single"];
    if (single.is_array() && !single.empty() && single[0].contains("SpecialToken")) {
      v.bos_id = lookup(field(field(single[0], "SpecialToken"), "id").get<std::string>());
      v.add_bos = v.bos_id >= 0;
    }
  }
  fs::path dir = fs::path(path).parent_path();
  if (fs::exists(dir / "tokenizer_config.json")) {
    json tc = parse_json_file((dir / "tokenizer_config.json").string());
    if (tc.contains("bos_token")) { int32_t id = lookup(token_content(tc["bos_token"])); if (id >= 0) v.bos_id = id; }
    if (tc.contains("eos_token")) { int32_t id = lookup(token_content(tc["eos_token"])); if (id >= 0) v.eos_id = id; }
    if (tc.contains("pad_token")) { int32_t id = lookup(token_content(tc["pad_token"])); if (id >= 0) v.pad_id = id; }
    if (tc.contains("add_bos_token") && tc["add_bos_token"].is_boolean()) v.add_bos = tc["add_bos_token"];
  }
  if (fs::exists(dir / "config.json")) {
    json cfg = parse_json_file((dir / "config.json").string());
    auto id_from = [&](const char* key, int32_t& out) {
      if (!cfg.contains(key)) return;
      const json& x = cfg[key];
      if (x.is_number_integer()) out = x;
      else if (x.is_array() && !x.empty() && x[0].is_number_integer()) out = x[0];
    };
    if (v.bos_id < 0) id_from("bos_token_id", v.bos_id);
    if (v.eos_id < 0) id_from("eos_token_id", v.eos_id);
  }
}

}  // namespace

Vocab read_hf_tokenizer(const std::string& path) {
  json j = parse_json_file(path);
  Vocab v;
  v.source = path;
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object())
    fail("'{}' is not a Hugging Face tokenizer.json: no \"model\" object", path);
  const json& m = j["model"];
  std::string type = m.value("type", "BPE");
  if (type != "BPE")
    fail("'{}': tokenizer model type '{}' is not supported, expected BPE (Unigram tokenizers: use the SentencePiece .model)",
         path, type);
  if (!m.contains("vocab") || !m["vocab"].is_object()) fail("'{}': model has no \"vocab\" object", path);
  read_tokens(j, m, path, v);
  const int32_t n = v.size();
  std::vector<std::string> merges = read_merges(m, path);
  std::unordered_map<std::string, int32_t> id_of;
  for (int32_t id = 0; id < n; ++id) id_of.emplace(v.tokens[id], id);
  std::function<int32_t(const std::string&)> lookup = [&](const std::string& s) {
    auto it = id_of.find(s);
    return it == id_of.end() ? -1 : it->second;
  };
  std::vector<const json*> byte_level;
  find_typed(field(j, "pre_tokenizer"), "ByteLevel", byte_level);
  find_typed(field(j, "decoder"), "ByteLevel", byte_level);
  if (!byte_level.empty())
    byte_level_bpe(j, path, std::move(merges), v);
  else
    spm_bpe(j, m, path, merges, lookup, v);
  if (m.contains("unk_token") && m["unk_token"].is_string()) {
    v.unk_id = lookup(m["unk_token"]);
    if (v.unk_id >= 0) v.types[v.unk_id] = TokenType::kUnknown;
  }
  read_special_ids(j, path, lookup, v);
  v.rules = read_text_rules(j, path);
  // Byte-level found by the decoder alone: the bytes are still mapped before the merges.
  if (v.model == VocabModel::kBpe && !v.rules.has_byte_level()) {
    PreTokenizer bl;
    bl.kind = PreTokenizer::Kind::kByteLevel;
    bl.add_prefix_space = false;
    bl.use_regex = v.rules.pre_tokenizers.empty();  // nothing else splits: GPT-2's expression, as before
    v.rules.pre_tokenizers.push_back(bl);
  }
  for (int32_t id : {v.bos_id, v.eos_id})
    if (id >= 0 && id < n && v.types[id] == TokenType::kNormal) v.types[id] = TokenType::kControl;
  v.validate();
  return v;
}

namespace {

// Merges that reproduce score-ordered SentencePiece BPE: every split of every piece into two
// pieces, ordered by the merged piece's score (then id), as HF's SentencePiece converters do.
std::vector<json> spm_merges(const Vocab& v) {
  std::unordered_map<std::string, int32_t> id_of;
  for (int32_t id = 0; id < v.size(); ++id) id_of.emplace(v.tokens[id], id);
  struct M { float score; int32_t id, left, right; std::string a, b; };
  std::vector<M> all;
  for (int32_t id = 0; id < v.size(); ++id) {
    if (v.types[id] != TokenType::kNormal && v.types[id] != TokenType::kUserDefined) continue;
    if (v.scores[id] == -std::numeric_limits<float>::infinity()) continue;
    const std::string& t = v.tokens[id];
    for (size_t i = utf8::seq_len(static_cast<unsigned char>(t[0])); i < t.size();
         i += utf8::seq_len(static_cast<unsigned char>(t[i]))) {
      auto l = id_of.find(t.substr(0, i)), r = id_of.find(t.substr(i));
      if (l != id_of.end() && r != id_of.end()) all.push_back({v.scores[id], id, l->second, r->second, l->first, r->first});
    }
  }
  std::stable_sort(all.begin(), all.end(), [](const M& x, const M& y) {
    if (x.score != y.score) return x.score > y.score;
    if (x.id != y.id) return x.id < y.id;
    return std::pair(x.left, x.right) < std::pair(y.left, y.right);
  });
  std::vector<json> out;
  for (const auto& mg : all) out.push_back(json::array({mg.a, mg.b}));
  return out;
}

}  // namespace

void write_hf_tokenizer(const Vocab& v, const std::string& dir) {
  json vocab = json::object();
  json added = json::array();
  for (int32_t id = 0; id < v.size(); ++id) {
    vocab[v.tokens[id]] = id;
    auto t = v.types[id];
    if (t == TokenType::kControl || t == TokenType::kUnknown || t == TokenType::kUserDefined)
      added.push_back({{"id", id}, {"content", v.tokens[id]}, {"single_word", false}, {"lstrip", false},
                       {"rstrip", false}, {"normalized", false}, {"special", t != TokenType::kUserDefined}});
  }
  json post = nullptr;
  if (v.add_bos && v.bos_id >= 0) {
    const std::string& bos = v.tokens[v.bos_id];
    post = {{"type", "TemplateProcessing"},
            {"single", json::array({{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
            {"pair", json::array({{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                  {{"SpecialToken", {{"id", bos}, {"type_id", 1}}}}, {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
            {"special_tokens", {{bos, {{"id", bos}, {"ids", {v.bos_id}}, {"tokens", {bos}}}}}}};
  }
  json j = {{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr}, {"added_tokens", added},
            {"post_processor", post}};
  json model = {{"type", "BPE"}, {"dropout", nullptr}, {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr}, {"vocab", vocab}};
  if (v.model == VocabModel::kBpe) {
    json pre = json::array();
    auto patterns = v.pre_regex.empty() ? pre_tokenizer_patterns(v.pre) : v.pre_regex;
    for (const auto& p : patterns)
      pre.push_back({{"type", "Split"}, {"pattern", {{"Regex", p}}}, {"behavior", "Isolated"}, {"invert", false}});
    pre.push_back({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}});
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", pre}};
    j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
    json merges = json::array();
    for (const auto& mg : v.merges) {
      auto sp = mg.find(' ', 1);
      merges.push_back(json::array({mg.substr(0, sp), mg.substr(sp + 1)}));
    }
    model["merges"] = merges;
    model["fuse_unk"] = false;
    model["byte_fallback"] = false;
    model["ignore_merges"] = v.ignore_merges;
  } else {
    json norm = json::array();
    if (v.add_space_prefix) norm.push_back({{"type", "Prepend"}, {"prepend", utf8::kSpace}});
    norm.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", utf8::kSpace}});
    j["normalizer"] = {{"type", "Sequence"}, {"normalizers", norm}};
    j["pre_tokenizer"] = nullptr;
    json dec = json::array({{{"type", "Replace"}, {"pattern", {{"String", utf8::kSpace}}}, {"content", " "}},
                            {{"type", "ByteFallback"}}, {{"type", "Fuse"}}});
    if (v.add_space_prefix) dec.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
    j["decoder"] = {{"type", "Sequence"}, {"decoders", dec}};
    model["merges"] = spm_merges(v);
    model["fuse_unk"] = true;
    model["byte_fallback"] = true;
    model["ignore_merges"] = false;
  }
  if (!v.rules.empty()) write_text_rules(v.rules, j);  // the rules it was read with, as they were
  if (v.unk_id >= 0) model["unk_token"] = v.tokens[v.unk_id];
  else model["unk_token"] = nullptr;
  j["model"] = model;

  json tc = {{"add_bos_token", v.add_bos}, {"add_eos_token", false},
             {"tokenizer_class", v.model == VocabModel::kSpm ? "LlamaTokenizerFast" : "PreTrainedTokenizerFast"},
             {"clean_up_tokenization_spaces", false}, {"model_max_length", 1000000000}};
  if (v.bos_id >= 0) tc["bos_token"] = v.tokens[v.bos_id];
  if (v.eos_id >= 0) tc["eos_token"] = v.tokens[v.eos_id];
  if (v.unk_id >= 0) tc["unk_token"] = v.tokens[v.unk_id];
  if (v.pad_id >= 0) tc["pad_token"] = v.tokens[v.pad_id];
  fs::create_directories(dir);
  write_file_atomic(fs::path(dir) / "tokenizer.json", j.dump(2));
  write_file_atomic(fs::path(dir) / "tokenizer_config.json", tc.dump(2));
}

}  // namespace lineage::text
