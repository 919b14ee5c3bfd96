// lineage tokenize: text to token ids, pieces and counts with any model's or tokenizer file's
// tokenizer (what llama.cpp's llama-tokenize does for GGUF files).
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/io/model_file.h"

namespace lineage::cli {

namespace {

struct TokenizeOptions {
  std::string model, prompt, file;
  bool from_stdin = false, no_bos = false, ids_only = false, count_only = false, json_out = false;
};

std::string input_text(const TokenizeOptions& o) {
  int given = !o.prompt.empty() + !o.file.empty() + o.from_stdin;
  if (given != 1) fail("lineage tokenize needs exactly one of -p TEXT, -f FILE or --stdin (got {})", given);
  if (o.from_stdin) return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  if (!o.file.empty()) return read_file(o.file);
  return o.prompt;
}

// A piece as llama-tokenize shows it: the text the token adds, quoted, control bytes escaped.
std::string shown(const std::string& bytes) {
  std::string out = "'";
  for (unsigned char c : bytes) {
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\'') out += "\\'";
    else if (c < 0x20 || c == 0x7F) out += fmt::format("\\x{:02x}", c);
    else out += static_cast<char>(c);
  }
  return out + "'";
}

}  // namespace

Run add_tokenize(CLI::App& app) {
  auto o = std::make_shared<TokenizeOptions>();
  auto* sub = app.add_subcommand("tokenize", "Show the token ids and pieces of a text, as the model's tokenizer makes them");
  sub->add_option("-m,--model,--tokenizer", o->model,
                  "a model (GGUF, HF folder, llama2.c .bin with its tokenizer beside it) or a tokenizer file")
      ->required();
  sub->add_option("-p,--prompt", o->prompt, "the text to tokenize");
  sub->add_option("-f,--file", o->file, "read the text from this file");
  sub->add_flag("--stdin", o->from_stdin, "read the text from standard input");
  sub->add_flag("--no-bos", o->no_bos, "do not prepend BOS even when the tokenizer adds one");
  sub->add_flag("--ids", o->ids_only, "print only the ids, as a list: [1, 2, 3]");
  sub->add_flag("--show-count,--count", o->count_only, "print the number of tokens after the tokens");
  sub->add_flag("--json", o->json_out, "print {\"ids\", \"pieces\", \"text\", \"count\"} as one JSON line");
  return [o] {
    auto tok = io::load_tokenizer(o->model);
    std::string text = input_text(*o);
    auto ids = tok->encode(text, !o->no_bos && tok->vocab().add_bos);
    if (o->json_out) {
      nlohmann::json pieces = nlohmann::json::array(), texts = nlohmann::json::array();
      int32_t prev = -1;
      for (int32_t id : ids) {
        pieces.push_back(tok->vocab().tokens[id]);
        texts.push_back(tok->decode_piece(prev, id));
        prev = id;
      }
      nlohmann::json j = {{"ids", ids}, {"pieces", pieces}, {"text", texts}, {"count", ids.size()},
                          {"tokenizer", tok->describe()}};
      std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      return;
    }
    if (o->ids_only) {
      std::cout << "[";
      for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? ", " : "") << ids[i];
      std::cout << "]\n";
    } else {
      int32_t prev = -1;
      for (int32_t id : ids) {
        std::string piece = tok->decode_piece(prev, id);
        if (piece.empty()) piece = tok->vocab().tokens[id];  // control tokens add no text: show their name
        std::cout << fmt::format("{:6d} -> {}\n", id, shown(piece));
        prev = id;
      }
    }
    if (o->count_only) std::cout << "Total number of tokens: " << ids.size() << "\n";
  };
}

}  // namespace lineage::cli
