// ModelConfig validation, counting and (de)serialisation in Lineage's own JSON form.
#include "lineage/core/json.h"
#include "lineage/model/config.h"

#include <nlohmann/json.hpp>
#include <type_traits>

#include "lineage/core/error.h"
#include "lineage/core/json.h"

namespace lineage::model {

void ModelConfig::validate(const std::string& source) const {
  auto positive = [&](const char* name, int64_t v) {
    if (v <= 0) fail("'{}': {} must be positive, found {}", source, name, v);
  };
  if (arch != "llama" && arch != "qwen2")
    fail("'{}': unsupported architecture '{}', expected llama or qwen2", source, arch);
  positive("vocab_size", vocab_size);
  positive("dim", dim);
  positive("hidden_dim", hidden_dim);
  positive("n_layers", n_layers);
  positive("n_heads", n_heads);
  positive("n_kv_heads", n_kv_heads);
  positive("max_seq_len", max_seq_len);
  // Sane limits, well above any released model, so that a field from an untrusted file never
  // reaches a loop bound or an allocation unchecked (a corrupt block_count of 2^31 would hang).
  auto at_most = [&](const char* name, int64_t v, int64_t limit, const char* largest) {
    if (v > limit) fail("'{}': {} is {}, above the limit of {} ({})", source, name, v, limit, largest);
  };
  at_most("vocab_size", vocab_size, int64_t{1} << 22, "the largest vocabularies have ~260k tokens");
  at_most("dim", dim, int64_t{1} << 16, "the widest models have 16k-32k");
  at_most("hidden_dim", hidden_dim, int64_t{1} << 18, "the widest MLPs have ~100k");
  at_most("n_layers", n_layers, 1024, "the deepest models have ~130 layers");
  at_most("n_heads", n_heads, 1024, "the most heads in use are 128");
  at_most("max_seq_len", max_seq_len, int64_t{1} << 24, "the longest contexts in use are 1-10M tokens");
  if (dim % n_heads != 0)
    fail("'{}': dim {} is not divisible by n_heads {}", source, dim, n_heads);
  if (head_dim() % 2 != 0)
    fail("'{}': head dimension {} must be even for rotary embeddings", source, head_dim());
  if (n_heads % n_kv_heads != 0)
    fail("'{}': n_heads {} is not a multiple of n_kv_heads {}", source, n_heads, n_kv_heads);
  if (!(rope_theta > 0)) fail("'{}': rope_theta must be positive, found {}", source, rope_theta);
  if (!(norm_eps > 0)) fail("'{}': norm_eps must be positive, found {}", source, norm_eps);
}

int64_t ModelConfig::num_parameters() const {
  int64_t attn = dim * dim * 2 + dim * kv_dim() * 2 + (qkv_bias ? dim + 2 * kv_dim() : 0);
  int64_t mlp = 3 * dim * hidden_dim;
  int64_t per_layer = attn + mlp + 2 * dim;
  int64_t embed = vocab_size * dim;
  return embed + (tie_embeddings ? 0 : embed) + n_layers * per_layer + dim;
}

double ModelConfig::flops_per_token(int64_t context) const {
  // Weight multiplies (every non-embedding matrix, plus the classifier) and attention over
  // `context` keys: q·k and p·v, each head_dim multiply-adds per key per head.
  double matmul = static_cast<double>(n_layers) *
                      (dim * dim * 2 + dim * kv_dim() * 2 + 3.0 * dim * hidden_dim) +
                  static_cast<double>(vocab_size) * dim;
  double attention = static_cast<double>(n_layers) * n_heads * head_dim() * 2.0 * context;
  return 2.0 * (matmul + attention);
}

nlohmann::json to_json(const ModelConfig& c) {
  return {{"arch", c.arch},           {"vocab_size", c.vocab_size}, {"dim", c.dim},
          {"hidden_dim", c.hidden_dim}, {"n_layers", c.n_layers},   {"n_heads", c.n_heads},
          {"n_kv_heads", c.n_kv_heads}, {"max_seq_len", c.max_seq_len},
          {"rope_theta", c.rope_theta}, {"norm_eps", c.norm_eps},
          {"tie_embeddings", c.tie_embeddings}, {"qkv_bias", c.qkv_bias}};
}

ModelConfig config_from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) fail("'{}': model config must be a JSON object", source);
  ModelConfig c;
  auto get = [&](const char* key, auto& out, bool required) {
    auto it = j.find(key);
    if (it == j.end()) {
      if (required) fail("'{}': model config is missing '{}'", source, key);
      return;
    }
    try {
      if constexpr (std::is_same_v<std::decay_t<decltype(out)>, int64_t>) {
        auto v = json_int(*it);
        if (!v) fail("'{}': model config field '{}' is {}, expected an integer", source, key, it->dump());
        out = *v;
      } else {
        it->get_to(out);
      }
    } catch (const nlohmann::json::exception&) {
      fail("'{}': model config field '{}' has the wrong type ({})", source, key, it->type_name());
    }
  };
  get("arch", c.arch, false);
  get("vocab_size", c.vocab_size, true);
  get("dim", c.dim, true);
  get("hidden_dim", c.hidden_dim, true);
  get("n_layers", c.n_layers, true);
  get("n_heads", c.n_heads, true);
  c.n_kv_heads = c.n_heads;
  get("n_kv_heads", c.n_kv_heads, false);
  get("max_seq_len", c.max_seq_len, true);
  get("rope_theta", c.rope_theta, false);
  get("norm_eps", c.norm_eps, false);
  get("tie_embeddings", c.tie_embeddings, false);
  get("qkv_bias", c.qkv_bias, false);
  c.validate(source);
  return c;
}

}  // namespace lineage::model
