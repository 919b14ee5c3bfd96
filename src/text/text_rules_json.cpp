// tokenizer.json's "normalizer", "pre_tokenizer" and "decoder" objects read into TextRules and
// written back, with the field names and defaults of the `tokenizers` library's serialization.
#include "text_rules_json.h"

#include "lineage/core/error.h"

namespace lineage::text {

using nlohmann::json;

namespace {

const char* kNormalizers = "NFC, NFD, NFKC, NFKD, Lowercase, Strip, Replace, Prepend, Sequence";
const char* kPreTokenizers = "ByteLevel, Split, Digits, Metaspace, Sequence";
const char* kDecoders = "ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence";

std::string type_of(const json& j, const std::string& path, const char* what) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    fail("'{}': a {} has no \"type\"", path, what);
  return j["type"].get<std::string>();
}

std::string str(const json& j, const char* key, const std::string& path, const std::string& def = "") {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_string()) fail("'{}': {} field \"{}\" must be a string", path, j.value("type", "?"), key);
  return j[key].get<std::string>();
}

bool flag(const json& j, const char* key, bool def) {
  return j.contains(key) && j[key].is_boolean() ? j[key].get<bool>() : def;
}

Pattern read_pattern(const json& j, const std::string& path) {
  if (!j.contains("pattern") || !j["pattern"].is_object()) fail("'{}': {} has no \"pattern\" object", path, j.value("type", "?"));
  const json& p = j["pattern"];
  if (p.contains("String") && p["String"].is_string()) return {p["String"].get<std::string>(), false};
  if (p.contains("Regex") && p["Regex"].is_string()) return {p["Regex"].get<std::string>(), true};
  fail("'{}': {} pattern must be {{\"String\": ...}} or {{\"Regex\": ...}}, got {}", path, j.value("type", "?"), p.dump());
}

json write_pattern(const Pattern& p) { return {{p.regex ? "Regex" : "String", p.text}}; }

PrependScheme read_scheme(const json& j, const std::string& path) {
  if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string()) {
    std::string s = j["prepend_scheme"];
    if (s == "always") return PrependScheme::kAlways;
    if (s == "first") return PrependScheme::kFirst;
    if (s == "never") return PrependScheme::kNever;
    fail("'{}': Metaspace prepend_scheme '{}' is not always, first or never", path, s);
  }
  return flag(j, "add_prefix_space", true) ? PrependScheme::kAlways : PrependScheme::kNever;  // older files
}

const char* scheme_name(PrependScheme s) {
  return s == PrependScheme::kAlways ? "always" : s == PrependScheme::kFirst ? "first" : "never";
}

void read_normalizer(const json& j, const std::string& path, std::vector<Normalizer>& out) {
  using K = Normalizer::Kind;
  std::string t = type_of(j, path, "normalizer");
  Normalizer n;
  if (t == "Sequence") {
    if (!j.contains("normalizers") || !j["normalizers"].is_array()) fail("'{}': Sequence normalizer has no list", path);
    for (const auto& x : j["normalizers"]) read_normalizer(x, path, out);
    return;
  }
  if (t == "NFC") n.kind = K::kNfc;
  else if (t == "NFD") n.kind = K::kNfd;
  else if (t == "NFKC") n.kind = K::kNfkc;
  else if (t == "NFKD") n.kind = K::kNfkd;
  else if (t == "Lowercase") n.kind = K::kLowercase;
  else if (t == "Strip") {
    n.kind = K::kStrip;
    n.left = flag(j, "strip_left", true);
    n.right = flag(j, "strip_right", true);
  } else if (t == "Replace") {
    n.kind = K::kReplace;
    n.pattern = read_pattern(j, path);
    n.content = str(j, "content", path);
  } else if (t == "Prepend") {
    n.kind = K::kPrepend;
    n.content = str(j, "prepend", path);
  } else {
    fail("'{}': normalizer '{}' is not supported; Lineage applies {}", path, t, kNormalizers);
  }
  out.push_back(n);
}

SplitBehavior read_behavior(const json& j, const std::string& path) {
  std::string b = str(j, "behavior", path, "Isolated");
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  fail("'{}': Split behavior '{}' is not Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous", path, b);
}

const char* behavior_name(SplitBehavior b) {
  switch (b) {
    case SplitBehavior::kRemoved: return "Removed";
    case SplitBehavior::kIsolated: return "Isolated";
    case SplitBehavior::kMergedWithPrevious: return "MergedWithPrevious";
    case SplitBehavior::kMergedWithNext: return "MergedWithNext";
    case SplitBehavior::kContiguous: return "Contiguous";
  }
  return "Isolated";
}

void read_pre_tokenizer(const json& j, const std::string& path, std::vector<PreTokenizer>& out) {
  using K = PreTokenizer::Kind;
  std::string t = type_of(j, path, "pre-tokenizer");
  PreTokenizer p;
  if (t == "Sequence") {
    if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array()) fail("'{}': Sequence pre-tokenizer has no list", path);
    for (const auto& x : j["pretokenizers"]) read_pre_tokenizer(x, path, out);
    return;
  }
  if (t == "ByteLevel") {
    p.kind = K::kByteLevel;
    p.add_prefix_space = flag(j, "add_prefix_space", true);
    p.use_regex = flag(j, "use_regex", true);
  } else if (t == "Split") {
    p.kind = K::kSplit;
    p.pattern = read_pattern(j, path);
    p.behavior = read_behavior(j, path);
    p.invert = flag(j, "invert", false);
  } else if (t == "Digits") {
    p.kind = K::kDigits;
    p.individual_digits = flag(j, "individual_digits", false);
  } else if (t == "Metaspace") {
    p.kind = K::kMetaspace;
    p.replacement = str(j, "replacement", path, p.replacement);
    p.prepend = read_scheme(j, path);
    p.split = flag(j, "split", true);
  } else {
    fail("'{}': pre-tokenizer '{}' is not supported; Lineage applies {}", path, t, kPreTokenizers);
  }
  out.push_back(p);
}

void read_decoder(const json& j, const std::string& path, std::vector<Decoder>& out) {
  using K = Decoder::Kind;
  std::string t = type_of(j, path, "decoder");
  Decoder d;
  if (t == "Sequence") {
    if (!j.contains("decoders") || !j["decoders"].is_array()) fail("'{}': Sequence decoder has no list", path);
    for (const auto& x : j["decoders"]) read_decoder(x, path, out);
    return;
  }
  if (t == "ByteLevel") d.kind = K::kByteLevel;
  else if (t == "ByteFallback") d.kind = K::kByteFallback;
  else if (t == "Fuse") d.kind = K::kFuse;
  else if (t == "Replace") {
    d.kind = K::kReplace;
    d.pattern = read_pattern(j, path);
    d.content = str(j, "content", path);
  } else if (t == "Strip") {
    d.kind = K::kStrip;
    d.content = str(j, "content", path, " ");
    d.start = j.value("start", 0);
    d.stop = j.value("stop", 0);
  } else if (t == "Metaspace") {
    d.kind = K::kMetaspace;
    d.replacement = str(j, "replacement", path, d.replacement);
    d.prepend = read_scheme(j, path);
  } else {
    fail("'{}': decoder '{}' is not supported; Lineage applies {}", path, t, kDecoders);
  }
  out.push_back(d);
}

json sequence(const char* type, const char* key, json items) {
  if (items.empty()) return nullptr;
  if (items.size() == 1) return items[0];
  return {{"type", type}, {key, items}};
}

}  // namespace

TextRules read_text_rules(const json& j, const std::string& path) {
  TextRules r;
  if (j.contains("normalizer") && !j["normalizer"].is_null()) read_normalizer(j["normalizer"], path, r.normalizers);
  if (j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null()) read_pre_tokenizer(j["pre_tokenizer"], path, r.pre_tokenizers);
  if (j.contains("decoder") && !j["decoder"].is_null()) read_decoder(j["decoder"], path, r.decoders);
  return r;
}

void write_text_rules(const TextRules& r, json& j) {
  using NK = Normalizer::Kind;
  json norms = json::array();
  for (const auto& n : r.normalizers) {
    switch (n.kind) {
      case NK::kNfc: norms.push_back({{"type", "NFC"}}); break;
      case NK::kNfd: norms.push_back({{"type", "NFD"}}); break;
      case NK::kNfkc: norms.push_back({{"type", "NFKC"}}); break;
      case NK::kNfkd: norms.push_back({{"type", "NFKD"}}); break;
      case NK::kLowercase: norms.push_back({{"type", "Lowercase"}}); break;
      case NK::kStrip: norms.push_back({{"type", "Strip"}, {"strip_left", n.left}, {"strip_right", n.right}}); break;
      case NK::kReplace: norms.push_back({{"type", "Replace"}, {"pattern", write_pattern(n.pattern)}, {"content", n.content}}); break;
      case NK::kPrepend: norms.push_back({{"type", "Prepend"}, {"prepend", n.content}}); break;
    }
  }
  using PK = PreTokenizer::Kind;
  json pres = json::array();
  for (const auto& p : r.pre_tokenizers) {
    switch (p.kind) {
      case PK::kByteLevel:
        pres.push_back({{"type", "ByteLevel"}, {"add_prefix_space", p.add_prefix_space}, {"trim_offsets", true},
                        {"use_regex", p.use_regex}});
        break;
      case PK::kSplit:
        pres.push_back({{"type", "Split"}, {"pattern", write_pattern(p.pattern)}, {"behavior", behavior_name(p.behavior)},
                        {"invert", p.invert}});
        break;
      case PK::kDigits: pres.push_back({{"type", "Digits"}, {"individual_digits", p.individual_digits}}); break;
      case PK::kMetaspace:
        pres.push_back({{"type", "Metaspace"}, {"replacement", p.replacement}, {"prepend_scheme", scheme_name(p.prepend)},
                        {"split", p.split}});
        break;
    }
  }
  using DK = Decoder::Kind;
  json decs = json::array();
  for (const auto& d : r.decoders) {
    switch (d.kind) {
      case DK::kByteLevel: decs.push_back({{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}); break;
      case DK::kByteFallback: decs.push_back({{"type", "ByteFallback"}}); break;
      case DK::kFuse: decs.push_back({{"type", "Fuse"}}); break;
      case DK::kReplace: decs.push_back({{"type", "Replace"}, {"pattern", write_pattern(d.pattern)}, {"content", d.content}}); break;
      case DK::kStrip: decs.push_back({{"type", "Strip"}, {"content", d.content}, {"start", d.start}, {"stop", d.stop}}); break;
      case DK::kMetaspace:
        decs.push_back({{"type", "Metaspace"}, {"replacement", d.replacement}, {"prepend_scheme", scheme_name(d.prepend)},
                        {"split", true}});
        break;
    }
  }
  j["normalizer"] = sequence("Sequence", "normalizers", norms);
  j["pre_tokenizer"] = sequence("Sequence", "pretokenizers", pres);
  j["decoder"] = sequence("Sequence", "decoders", decs);
}

}  // namespace lineage::text
