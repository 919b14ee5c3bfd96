// Vocabulary content hash (see vocab_digest.h).
#include "lineage/text/vocab_digest.h"

namespace lineage::text {

Digest vocab_digest(const Vocab& v) {
  Sha256 h;
  auto put_i32 = [&](int32_t x) { h.update(&x, sizeof x); };
  auto put_str = [&](const std::string& s) {
    put_i32(static_cast<int32_t>(s.size()));
    h.update(s);
  };
  put_i32(static_cast<int32_t>(v.model));
  put_i32(v.size());
  for (int32_t i = 0; i < v.size(); ++i) {
    put_str(v.tokens[i]);
    float score = i < static_cast<int32_t>(v.scores.size()) ? v.scores[i] : 0.0f;
    h.update(&score, sizeof score);
    put_i32(i < static_cast<int32_t>(v.types.size()) ? static_cast<int32_t>(v.types[i]) : 0);
  }
  put_i32(static_cast<int32_t>(v.merges.size()));
  for (const auto& m : v.merges) put_str(m);
  put_str(v.pre);
  for (const auto& r : v.pre_regex) put_str(r);
  for (int32_t id : {v.bos_id, v.eos_id, v.unk_id, v.pad_id}) put_i32(id);
  put_i32(v.add_bos);
  put_i32(v.add_space_prefix);
  return h.finish();
}

}  // namespace lineage::text
