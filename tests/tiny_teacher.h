// A small teacher written to disk for tests that must not depend on ../shared: a random Llama with
// a byte-level SentencePiece-style vocabulary (<unk>, <s>, </s>, the 256 byte tokens, U+2581 for a space), saved
// as GGUF so it goes through the same loaders as a real model.
#pragma once
#include <fmt/format.h>
#include <torch/torch.h>

#include <filesystem>
#include <string>

#include "lineage/io/model_file.h"
#include "lineage/text/tokenizer.h"

namespace lineage::testing {

inline lineage::text::Vocab byte_vocab() {
  lineage::text::Vocab v;
  v.model = lineage::text::VocabModel::kSpm;
  v.tokens = {"<unk>", "<s>", "</s>"};
  v.types = {lineage::text::TokenType::kUnknown, lineage::text::TokenType::kControl, lineage::text::TokenType::kControl};
  for (int b = 0; b < 256; ++b) {
    v.tokens.push_back(fmt::format("<0x{:02X}>", b));
    v.types.push_back(lineage::text::TokenType::kByte);
  }
  v.tokens.push_back("\u2581");  // the space piece, so text decodes back exactly
  v.types.push_back(lineage::text::TokenType::kNormal);
  v.scores.assign(v.tokens.size(), 0.0f);
  v.add_space_prefix = false;
  v.unk_id = 0;
  v.bos_id = 1;
  v.eos_id = 2;
  v.source = "test byte vocabulary";
  return v;
}

// Writes the teacher to `path` (.gguf) and returns its config. `scale` sets how peaked its
// next-token distributions are (random weights times scale).
inline lineage::model::ModelConfig write_tiny_teacher(const std::filesystem::path& path, uint64_t seed = 7,
                                                      int64_t dim = 32, int64_t layers = 2, double scale = 0.2) {
  lineage::model::ModelConfig c;
  c.vocab_size = 260;
  c.dim = dim;
  c.hidden_dim = dim * 2;
  c.n_layers = layers;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.max_seq_len = 128;
  c.tie_embeddings = true;
  torch::manual_seed(seed);
  lineage::model::Llama net(c);
  lineage::io::ModelFile m;
  m.config = c;
  m.name = "tiny-teacher";
  m.path = path.string();
  for (auto& [name, t] : net->weights())
    m.weights[name] = name.find("norm") != std::string::npos ? torch::ones(t.sizes()) : torch::randn(t.sizes()) * scale;
  m.tokenizer = lineage::text::make_tokenizer(byte_vocab());
  lineage::io::write_model(m, path.string());
  return c;
}

// A random small model that shares `like`'s tokenizer, vocabulary and context (a proxy student or a
// draft for the embedded teacher), written to `path` (.gguf). Returns the path.
inline std::string write_random_like(const std::filesystem::path& path, const lineage::io::ModelFile& like,
                                     uint64_t seed, int64_t dim = 32, int64_t layers = 2, double std = 0.2) {
  lineage::io::ModelFile m;
  m.config = like.config;
  m.config.dim = dim;
  m.config.hidden_dim = 2 * dim;
  m.config.n_layers = layers;
  m.config.n_heads = 4;
  m.config.n_kv_heads = 2;
  torch::manual_seed(seed);
  lineage::model::Llama net(m.config);
  net->init_weights(std);
  m.weights = net->weights();
  m.tokenizer = like.tokenizer;
  m.name = "random model";
  m.path = path.string();
  lineage::io::write_model(m, path.string());
  return path.string();
}

// Some lines of text to train on (written here; varied enough to make many rows).
inline std::string tiny_corpus(int lines = 200) {
  static const char* words[] = {"the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "home", "sun"};
  std::string s;
  uint64_t x = 12345;
  for (int i = 0; i < lines; ++i) {
    int n = 4 + static_cast<int>(i % 7);
    for (int w = 0; w < n; ++w) {
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;
      s += words[(x >> 33) % 13];
      s += w + 1 < n ? " " : ".\n";
    }
    if (i % 5 == 4) s += "\n";  // blank line: a document boundary
  }
  return s;
}

}  // namespace lineage::testing
