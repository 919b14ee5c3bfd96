// The weight-name table. {L} stands for the layer index.
#include "lineage/io/weight_names.h"


namespace lineage::io {

namespace {

struct Row {
  const char* own;
  const char* hf;
  const char* gguf;
};

constexpr Row kTable[] = {
    {"tok_embeddings.weight", "model.embed_tokens.weight", "token_embd.weight"},
    {"norm.weight", "model.norm.weight", "output_norm.weight"},
    {"output.weight", "lm_head.weight", "output.weight"},
    {"layers.{L}.attention_norm.weight", "model.layers.{L}.input_layernorm.weight", "blk.{L}.attn_norm.weight"},
    {"layers.{L}.attention.wq.weight", "model.layers.{L}.self_attn.q_proj.weight", "blk.{L}.attn_q.weight"},
    {"layers.{L}.attention.wk.weight", "model.layers.{L}.self_attn.k_proj.weight", "blk.{L}.attn_k.weight"},
    {"layers.{L}.attention.wv.weight", "model.layers.{L}.self_attn.v_proj.weight", "blk.{L}.attn_v.weight"},
    {"layers.{L}.attention.wq.bias", "model.layers.{L}.self_attn.q_proj.bias", "blk.{L}.attn_q.bias"},
    {"layers.{L}.attention.wk.bias", "model.layers.{L}.self_attn.k_proj.bias", "blk.{L}.attn_k.bias"},
    {"layers.{L}.attention.wv.bias", "model.layers.{L}.self_attn.v_proj.bias", "blk.{L}.attn_v.bias"},
    {"layers.{L}.attention.wo.weight", "model.layers.{L}.self_attn.o_proj.weight", "blk.{L}.attn_output.weight"},
    {"layers.{L}.ffn_norm.weight", "model.layers.{L}.post_attention_layernorm.weight", "blk.{L}.ffn_norm.weight"},
    {"layers.{L}.feed_forward.w1.weight", "model.layers.{L}.mlp.gate_proj.weight", "blk.{L}.ffn_gate.weight"},
    {"layers.{L}.feed_forward.w2.weight", "model.layers.{L}.mlp.down_proj.weight", "blk.{L}.ffn_down.weight"},
    {"layers.{L}.feed_forward.w3.weight", "model.layers.{L}.mlp.up_proj.weight", "blk.{L}.ffn_up.weight"},
};

const char* column(const Row& r, Naming n) {
  return n == Naming::kOwn ? r.own : n == Naming::kHf ? r.hf : r.gguf;
}

// Matches `name` against a pattern with at most one {L}; fills `layer`.
bool match(std::string_view pattern, std::string_view name, std::string& layer) {
  size_t at = pattern.find("{L}");
  if (at == std::string_view::npos) return pattern == name;
  std::string_view head = pattern.substr(0, at), tail = pattern.substr(at + 3);
  if (name.size() <= head.size() + tail.size() || name.substr(0, head.size()) != head ||
      name.substr(name.size() - tail.size()) != tail)
    return false;
  std::string_view mid = name.substr(head.size(), name.size() - head.size() - tail.size());
  for (char c : mid)
    if (c < '0' || c > '9') return false;
  layer = mid;
  return true;
}

}  // namespace

std::optional<std::string> rename_weight(const std::string& name, Naming from, Naming to) {
  for (const Row& r : kTable) {
    std::string layer;
    if (!match(column(r, from), name, layer)) continue;
    std::string out = column(r, to);
    size_t at = out.find("{L}");
    if (at != std::string::npos) out.replace(at, 3, layer);
    return out;
  }
  return std::nullopt;
}

int64_t rope_heads(const std::string& own_name, const model::ModelConfig& c) {
  std::string layer;
  if (match("layers.{L}.attention.wq.weight", own_name, layer) || match("layers.{L}.attention.wq.bias", own_name, layer))
    return c.n_heads;
  if (match("layers.{L}.attention.wk.weight", own_name, layer) || match("layers.{L}.attention.wk.bias", own_name, layer))
    return c.n_kv_heads;
  return 0;
}

torch::Tensor rope_interleaved_to_half(const torch::Tensor& w, int64_t heads) {
  auto shape = w.sizes().vec();
  std::vector<int64_t> view{heads, shape[0] / heads / 2, 2};
  view.insert(view.end(), shape.begin() + 1, shape.end());
  return w.reshape(view).transpose(1, 2).reshape(shape).contiguous();
}

torch::Tensor rope_half_to_interleaved(const torch::Tensor& w, int64_t heads) {
  auto shape = w.sizes().vec();
  std::vector<int64_t> view{heads, 2, shape[0] / heads / 2};
  view.insert(view.end(), shape.begin() + 1, shape.end());
  return w.reshape(view).transpose(1, 2).reshape(shape).contiguous();
}

}  // namespace lineage::io
