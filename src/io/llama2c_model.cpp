// llama2.c checkpoints (karpathy/llama2.c, export.py legacy format):
//
//   int32 x 7   dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
//               (vocab_size < 0: the classifier is not shared with the embedding)
//   float32     token_embedding (vocab, dim)
//               rms_att (L, dim), wq (L, dim, dim), wk (L, kv_dim, dim), wv (L, kv_dim, dim),
//               wo (L, dim, dim), rms_ffn (L, dim), w1 (L, hidden, dim), w2 (L, dim, hidden),
//               w3 (L, hidden, dim), rms_final (dim),
//               freq_cis_real (seq_len, head_dim/2), freq_cis_imag (same) — unused, RoPE is computed
//               wcls (vocab, dim) only when unshared
// RoPE rotates interleaved pairs; rms eps 1e-5, theta 10000 are fixed by run.c.
#include <filesystem>

#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/io/model_file.h"
#include "lineage/io/weight_names.h"
#include "lineage/text/tokenizer_formats.h"

namespace lineage::io {

namespace fs = std::filesystem;

namespace {

struct Segment {
  std::string name;  // own name, with {L} for per-layer stacks
  std::vector<int64_t> shape;
  bool per_layer;
};

std::vector<Segment> layout(const model::ModelConfig& c) {
  const int64_t D = c.dim, H = c.hidden_dim, KV = c.kv_dim();
  return {{"tok_embeddings.weight", {c.vocab_size, D}, false},
          {"layers.{L}.attention_norm.weight", {D}, true},
          {"layers.{L}.attention.wq.weight", {D, D}, true},
          {"layers.{L}.attention.wk.weight", {KV, D}, true},
          {"layers.{L}.attention.wv.weight", {KV, D}, true},
          {"layers.{L}.attention.wo.weight", {D, D}, true},
          {"layers.{L}.ffn_norm.weight", {D}, true},
          {"layers.{L}.feed_forward.w1.weight", {H, D}, true},
          {"layers.{L}.feed_forward.w2.weight", {D, H}, true},
          {"layers.{L}.feed_forward.w3.weight", {H, D}, true},
          {"norm.weight", {D}, false},
          {"freq_cis_real", {c.max_seq_len, c.head_dim() / 2}, false},
          {"freq_cis_imag", {c.max_seq_len, c.head_dim() / 2}, false}};
}

std::string layer_name(const std::string& pattern, int64_t l) {
  std::string s = pattern;
  auto at = s.find("{L}");
  if (at != std::string::npos) s.replace(at, 3, std::to_string(l));
  return s;
}

}  // namespace

namespace {

// The header's config, checked, and the file size it implies; fails naming the field or size.
model::ModelConfig read_llama2c_header(const MappedFile& file, const std::string& path) {
  ByteReader r(file.data(), file.size(), path);
  if (file.size() >= 4 && std::memcmp(file.data(), "ak42", 4) == 0)
    fail("'{}' is a llama2.c versioned export (magic 'ak42'); Lineage reads the legacy export (export.py --version 0)", path);
  int32_t h[7];
  const char* names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
  for (int i = 0; i < 7; ++i) h[i] = r.read<int32_t>(names[i]);
  model::ModelConfig c;
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  c.tie_embeddings = h[5] > 0;
  c.vocab_size = std::abs(h[5]);
  c.max_seq_len = h[6];
  for (int i = 0; i < 7; ++i)
    if (h[i] == 0 || (i != 5 && h[i] < 0) || std::abs(h[i]) > (1 << 24))
      fail("'{}' is not a llama2.c checkpoint: header field {} is {}, expected a positive size", path, names[i], h[i]);
  c.validate(path);

  // Expected size first, so a truncated or foreign file fails before any tensor is read.
  uint64_t floats = 0;
  for (const auto& s : layout(c)) {
    uint64_t n = 1;
    for (int64_t d : s.shape) n *= static_cast<uint64_t>(d);
    floats += s.per_layer ? n * static_cast<uint64_t>(c.n_layers) : n;
  }
  if (!c.tie_embeddings) floats += static_cast<uint64_t>(c.vocab_size * c.dim);
  uint64_t expected = 28 + floats * 4;
  if (file.size() != expected)
    fail("'{}': a llama2.c checkpoint with dim={} hidden_dim={} n_layers={} n_heads={} n_kv_heads={} vocab={} seq_len={} "
         "has {} bytes, this file has {}{}",
         path, c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, h[5], c.max_seq_len, expected, file.size(),
         file.size() < expected ? " (truncated)" : "");
  return c;
}

}  // namespace

bool is_llama2c_checkpoint(const std::string& path) {
  if (!fs::is_regular_file(path)) return false;
  try {
    MappedFile file(path);
    read_llama2c_header(file, path);
    return true;
  } catch (const Error&) {
    return false;
  }
}

std::shared_ptr<text::Tokenizer> llama2c_tokenizer_beside(const std::string& path, int64_t vocab_size) {
  // run.c's tokenizer lives beside the checkpoint: tok<vocab>.bin, else tokenizer.bin.
  fs::path dir = fs::path(path).parent_path();
  for (auto candidate : {dir / fmt::format("tok{}.bin", vocab_size), dir / "tokenizer.bin"})
    if (fs::exists(candidate))
      return text::make_tokenizer(text::read_llama2c_tokenizer(candidate.string(), static_cast<int32_t>(vocab_size)));
  return nullptr;
}

ModelFile read_llama2c(const std::string& path) {
  MappedFile file(path);
  model::ModelConfig c = read_llama2c_header(file, path);
  ByteReader r(file.data(), file.size(), path);
  r.take(28, "header");
  ModelFile m;
  m.format = ModelFormat::kLlama2c;
  m.path = path;
  m.config = c;
  m.stored_dtype = "F32";
  m.name = fs::path(path).stem().string();
  auto take = [&](std::vector<int64_t> shape, const std::string& what) {
    uint64_t n = 1;
    for (int64_t d : shape) n *= static_cast<uint64_t>(d);
    const uint8_t* p = r.take(n * 4, what);
    return torch::from_blob(const_cast<uint8_t*>(p), shape, torch::kFloat32).clone();
  };
  for (const auto& s : layout(c)) {
    if (s.per_layer) {
      for (int64_t l = 0; l < c.n_layers; ++l) m.weights[layer_name(s.name, l)] = take(s.shape, layer_name(s.name, l));
    } else if (s.name.rfind("freq_cis", 0) == 0) {
      take(s.shape, s.name);
    } else {
      m.weights[s.name] = take(s.shape, s.name);
    }
  }
  if (!c.tie_embeddings) m.weights["output.weight"] = take({c.vocab_size, c.dim}, "wcls");
  for (auto& [name, w] : m.weights)
    if (int64_t heads = rope_heads(name, c)) w = rope_interleaved_to_half(w, heads);

  m.tokenizer = llama2c_tokenizer_beside(path, c.vocab_size);
  return m;
}

void write_llama2c(const ModelFile& m, const std::string& path) {
  const auto& c = m.config;
  if (c.qkv_bias) fail("cannot write '{}': llama2.c checkpoints have no QKV bias", path);
  if (c.rope_theta != 10000.0 || std::abs(c.norm_eps - 1e-5) > 1e-12)
    fail("cannot write '{}': llama2.c fixes rope_theta=10000 and norm_eps=1e-5; this model has {} and {}", path,
         c.rope_theta, c.norm_eps);
  check_weights(c, m.weights, m.path);
  int32_t h[7] = {static_cast<int32_t>(c.dim),     static_cast<int32_t>(c.hidden_dim),
                  static_cast<int32_t>(c.n_layers), static_cast<int32_t>(c.n_heads),
                  static_cast<int32_t>(c.n_kv_heads),
                  static_cast<int32_t>(c.tie_embeddings ? c.vocab_size : -c.vocab_size),
                  static_cast<int32_t>(c.max_seq_len)};
  AtomicWriter w(path);
  w.write(h, sizeof(h));
  auto put = [&](const torch::Tensor& t) {
    auto f = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    w.write(f.data_ptr(), f.nbytes());
  };
  auto weight = [&](const std::string& name) {
    const auto& t = m.weights.at(name);
    int64_t heads = rope_heads(name, c);
    return heads ? rope_half_to_interleaved(t, heads) : t;
  };
  for (const auto& s : layout(c)) {
    if (s.per_layer) {
      for (int64_t l = 0; l < c.n_layers; ++l) put(weight(layer_name(s.name, l)));
    } else if (s.name == "freq_cis_real" || s.name == "freq_cis_imag") {
      // run.c ignores these; export.py writes its float32 cos/sin tables, so do the same.
      auto exps = torch::arange(0, c.head_dim(), 2, torch::kFloat32) / static_cast<float>(c.head_dim());
      auto freqs = 1.0 / torch::pow(static_cast<float>(c.rope_theta), exps);
      auto ang = torch::outer(torch::arange(0, c.max_seq_len, torch::kFloat32), freqs);
      put(s.name == "freq_cis_real" ? ang.cos() : ang.sin());
    } else {
      put(weight(s.name));
    }
  }
  if (!c.tie_embeddings) put(m.weights.at("output.weight"));
  w.commit();
  if (m.tokenizer) {
    fs::path tok = fs::path(path).parent_path() / fmt::format("tok{}.bin", c.vocab_size);
    text::write_llama2c_tokenizer(m.tokenizer->vocab(), tok.string());
  }
}

}  // namespace lineage::io
