// GGUF metadata without libtorch: the model's hyper-parameters, checked against limits and against
// the tensors in the file, and the embedded tokenizer (see gguf.h).
#include <set>

#include "lineage/core/error.h"
#include "lineage/core/json.h"
#include "lineage/io/gguf.h"
#include "lineage/text/tokenizer.h"

namespace lineage::io {

namespace {

// The hyper-parameters against the tensors the file holds: the blocks present (blk.N), the
// embedding's width, the first block's shapes; so a corrupt count fails here, named.
void check_against_tensors(const GgufFile& g, const model::ModelConfig& c, const std::string& path) {
  std::set<int64_t> blocks;
  for (const auto& info : g.tensors())
    if (info.name.rfind("blk.", 0) == 0) {
      size_t dot = info.name.find('.', 4);
      try {
        blocks.insert(std::stoll(info.name.substr(4, dot - 4)));
      } catch (const std::exception&) {
        fail("'{}': tensor '{}' has no block number", path, info.name);
      }
    }
  const int64_t present = static_cast<int64_t>(blocks.size());
  if (c.n_layers != present || (present > 0 && *blocks.rbegin() != present - 1))
    fail("'{}': {}.block_count is {}, but the file holds tensors for {} blocks (blk.0 to blk.{})", path, c.arch, c.n_layers,
         present, present ? *blocks.rbegin() : -1);
  const GgufTensorInfo* embd = g.find_tensor("token_embd.weight");
  if (embd->ne.size() != 2 || static_cast<int64_t>(embd->ne[0]) != c.dim)
    fail("'{}': {}.embedding_length is {}, but token_embd.weight is {} wide", path, c.arch, c.dim,
         embd->ne.empty() ? 0 : embd->ne[0]);
  if (const GgufTensorInfo* q = g.find_tensor("blk.0.attn_k.weight"))
    if (q->ne.size() == 2 && static_cast<int64_t>(q->ne[1]) != c.kv_dim())
      fail("'{}': {}.attention.head_count_kv {} with head_count {} gives keys of {} rows, but blk.0.attn_k.weight has {}",
           path, c.arch, c.n_kv_heads, c.n_heads, c.kv_dim(), q->ne[1]);
  if (const GgufTensorInfo* f = g.find_tensor("blk.0.ffn_up.weight"))
    if (f->ne.size() == 2 && static_cast<int64_t>(f->ne[1]) != c.hidden_dim)
      fail("'{}': {}.feed_forward_length is {}, but blk.0.ffn_up.weight has {} rows", path, c.arch, c.hidden_dim, f->ne[1]);
}

}  // namespace

model::ModelConfig read_gguf_config(const GgufFile& g) {
  const std::string& path = g.path();
  std::string arch = g.get_string("general.architecture");
  if (arch != "llama" && arch != "qwen2")
    fail("'{}': general.architecture '{}' is not supported, expected llama or qwen2", path, arch);
  model::ModelConfig c;
  c.arch = arch;
  c.dim = g.get_int(arch + ".embedding_length");
  c.hidden_dim = g.get_int(arch + ".feed_forward_length");
  c.n_layers = g.get_int(arch + ".block_count");
  c.n_heads = g.get_int(arch + ".attention.head_count");
  c.n_kv_heads = g.find(arch + ".attention.head_count_kv") ? g.get_int(arch + ".attention.head_count_kv") : c.n_heads;
  c.max_seq_len = g.get_int(arch + ".context_length");
  c.norm_eps = g.get_float(arch + ".attention.layer_norm_rms_epsilon");
  if (g.find(arch + ".rope.freq_base")) c.rope_theta = g.get_float(arch + ".rope.freq_base");
  const GgufTensorInfo* embd = g.find_tensor("token_embd.weight");
  if (!embd) fail("'{}': tensor 'token_embd.weight' is missing", path);
  c.vocab_size = static_cast<int64_t>(embd->ne.size() == 2 ? embd->ne[1] : 0);
  c.tie_embeddings = g.find_tensor("output.weight") == nullptr;
  c.qkv_bias = g.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.validate(path);  // before any division by, loop over or allocation from these fields
  check_against_tensors(g, c, path);
  if (g.find(arch + ".rope.dimension_count") && g.get_int(arch + ".rope.dimension_count") != c.head_dim())
    fail("'{}': {}.rope.dimension_count {} differs from the head size {}; partial RoPE is not supported", path, arch,
         g.get_int(arch + ".rope.dimension_count"), c.head_dim());
  return c;
}

text::Vocab read_gguf_vocab(const GgufFile& g) {
  const std::string& path = g.path();
  text::Vocab v;
  v.source = path + " (embedded)";
  std::string model = g.get_string("tokenizer.ggml.model");
  if (model == "llama") v.model = text::VocabModel::kSpm;
  else if (model == "gpt2") v.model = text::VocabModel::kBpe;
  else fail("'{}': tokenizer.ggml.model '{}' is not supported, expected llama or gpt2", path, model);
  const GgufKV* tokens = g.find("tokenizer.ggml.tokens");
  if (!tokens || tokens->type != GgufType::kArray || tokens->array_type != GgufType::kString)
    fail("'{}': tokenizer.ggml.tokens is missing or not an array of strings", path);
  v.tokens = tokens->value.get<std::vector<std::string>>();
  const size_t n = v.tokens.size();
  if (const GgufKV* s = g.find("tokenizer.ggml.scores")) {
    v.scores = s->value.get<std::vector<float>>();
    if (v.scores.size() != n) fail("'{}': {} tokenizer scores for {} tokens", path, v.scores.size(), n);
  } else {
    v.scores.assign(n, 0.0f);
  }
  v.types.assign(n, text::TokenType::kNormal);
  if (const GgufKV* t = g.find("tokenizer.ggml.token_type")) {
    if (t->value.size() != n) fail("'{}': {} token types for {} tokens", path, t->value.size(), n);
    for (size_t i = 0; i < n; ++i) {
      std::optional<int64_t> type = json_int(t->value[i]);
      if (!type || *type < 0 || *type > 6)  // llama.cpp's token types: 0 (undefined) to 6 (byte)
        fail("'{}': tokenizer.ggml.token_type[{}] is {}, expected an integer from 0 to 6", path, i, t->value[i].dump());
      v.types[i] = static_cast<text::TokenType>(*type);
    }
  }
  if (const GgufKV* mg = g.find("tokenizer.ggml.merges")) v.merges = mg->value.get<std::vector<std::string>>();
  if (const GgufKV* p = g.find("tokenizer.ggml.pre")) v.pre = p->value.get<std::string>();
  // GGUF has no key for HF's ignore_merges: llama.cpp sets it for the Llama 3 pre-tokenizer.
  v.ignore_merges = v.model == text::VocabModel::kBpe && v.pre == "llama-bpe";
  if (v.model == text::VocabModel::kBpe) {
    try {
      text::pre_tokenizer_patterns(v.pre);
    } catch (const Error&) {
      fail("'{}': BPE pre-tokenizer '{}' (tokenizer.ggml.pre) is not supported, expected gpt-2, llama-bpe or qwen2", path,
           v.pre);
    }
  }
  auto id = [&](const char* key, int32_t& out) {
    // llama.cpp's converters store "no such token" as uint32 0xFFFFFFFF: read as int32 it is -1.
    if (const GgufKV* kv = g.find(key))
      out = static_cast<int32_t>(static_cast<uint32_t>(
          need_json_int(kv->value, fmt::format("'{}': {}", path, key), INT32_MIN, UINT32_MAX)));
  };
  id("tokenizer.ggml.bos_token_id", v.bos_id);
  id("tokenizer.ggml.eos_token_id", v.eos_id);
  id("tokenizer.ggml.unknown_token_id", v.unk_id);
  id("tokenizer.ggml.padding_token_id", v.pad_id);
  v.add_bos = v.model == text::VocabModel::kSpm;
  if (const GgufKV* kv = g.find("tokenizer.ggml.add_bos_token")) v.add_bos = kv->value.get<bool>();
  v.add_space_prefix = v.model == text::VocabModel::kSpm;
  if (const GgufKV* kv = g.find("tokenizer.ggml.add_space_prefix")) v.add_space_prefix = kv->value.get<bool>();
  v.validate();
  return v;
}

}  // namespace lineage::io
