// Chat templates. See include/lineage/text/chat_template.h.
#include "lineage/text/chat_template.h"

namespace lineage::text {

ChatPrompt apply_chat_template(const std::vector<ChatMessage>& msgs, const Tokenizer& tok) {
  const auto& v = tok.vocab();
  auto find = [&](const std::string& piece) {
    for (int32_t i = 0; i < v.size(); ++i)
      if (v.tokens[i] == piece) return i;
    return -1;
  };
  ChatPrompt p;
  auto add_text = [&](const std::string& s) {
    auto ids = tok.encode(s, false);
    p.ids.insert(p.ids.end(), ids.begin(), ids.end());
  };
  if (int32_t start = find("<|im_start|>"), end = find("<|im_end|>"); start >= 0 && end >= 0) {
    p.template_name = "chatml";
    for (const auto& m : msgs) {
      p.ids.push_back(start);
      add_text(m.role + "\n" + m.content);
      p.ids.push_back(end);
      add_text("\n");
    }
    p.ids.push_back(start);
    add_text("assistant\n");
    p.end_of_turn = end;
  } else if (int32_t sh = find("<|start_header_id|>"), eh = find("<|end_header_id|>"), eot = find("<|eot_id|>");
             sh >= 0 && eh >= 0 && eot >= 0) {
    p.template_name = "llama3";
    if (v.bos_id >= 0) p.ids.push_back(v.bos_id);
    for (const auto& m : msgs) {
      p.ids.push_back(sh);
      add_text(m.role);
      p.ids.push_back(eh);
      add_text("\n\n" + m.content);
      p.ids.push_back(eot);
    }
    p.ids.push_back(sh);
    add_text("assistant");
    p.ids.push_back(eh);
    add_text("\n\n");
    p.end_of_turn = eot;
  } else {
    p.template_name = "plain";
    std::string s;
    for (const auto& m : msgs) s += m.role + ": " + m.content + "\n\n";
    s += "assistant:";
    p.ids = tok.encode(s, v.add_bos);
  }
  return p;
}

}  // namespace lineage::text
