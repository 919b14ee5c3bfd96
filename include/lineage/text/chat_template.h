// Chat templates: a conversation rendered as the token ids a model was trained to read. The
// template is told from the vocabulary: ChatML (<|im_start|> / <|im_end|>, Qwen and others),
// Llama 3 (<|start_header_id|> / <|end_header_id|> / <|eot_id|>), else a plain "role: content"
// layout. The assistant's turn is opened at the end, so the model writes the reply.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lineage/text/tokenizer.h"

namespace lineage::text {

struct ChatMessage {
  std::string role;  // system, user, assistant, tool
  std::string content;
};

struct ChatPrompt {
  std::vector<int32_t> ids;
  int32_t end_of_turn = -1;   // the token that ends a turn (-1: the plain layout has none)
  std::string template_name;  // chatml, llama3 or plain
};

ChatPrompt apply_chat_template(const std::vector<ChatMessage>& messages, const Tokenizer& tok);

}  // namespace lineage::text
