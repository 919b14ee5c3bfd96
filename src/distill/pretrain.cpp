// lineage train: plain language-model pre-training with cross-entropy — how the embedded default
// teacher is made. Trains a SentencePiece BPE tokenizer on the data when none is given.
#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "lineage/core/json.h"
#include "lineage/core/device.h"
#include "lineage/core/units.h"
#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/core/hash.h"
#include "lineage/distill/data_parallel.h"
#include "lineage/distill/compare.h"
#include "lineage/distill/evaluate.h"
#include "lineage/distill/losses.h"
#include "lineage/distill/provenance.h"
#include "lineage/distill/data_parallel.h"
#include "lineage/distill/jobs.h"
#include "lineage/distill/run.h"
#include "lineage/distill/run_common.h"
#include "lineage/io/model_file.h"
#include "lineage/text/tokenizer_formats.h"

namespace lineage::distill {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// The text of every data file, one line per sentence, for the tokenizer trainer.
void write_tokenizer_corpus(const std::vector<std::string>& paths, const fs::path& out) {
  std::ofstream o(out);
  for (const auto& path : paths) {
    std::string bytes = read_file(path);
    std::istringstream in(bytes);
    std::string line;
    bool jsonl = path.ends_with(".jsonl");
    int64_t line_no = 0;
    while (std::getline(in, line)) {
      ++line_no;
      if (!jsonl) {
        o << line << "\n";
        continue;
      }
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      json j = parse_json(line, fmt::format("{} line {}", path, line_no));
      if (!j.is_object()) fail("{} line {}: expected a JSON object", path, line_no);
      for (const char* k : {"prompt", "completion", "text"})
        if (j.contains(k) && j[k].is_string()) o << j[k].get<std::string>() << "\n";
      if (j.contains("messages") && j["messages"].is_array())
        for (const auto& m : j["messages"])
          if (m.is_object() && m.contains("content") && m["content"].is_string()) o << m["content"].get<std::string>() << "\n";
    }
  }
  if (!o) fail("cannot write the tokenizer corpus '{}'", out.string());
}

std::shared_ptr<text::Tokenizer> train_or_load_tokenizer(const Recipe& r, const fs::path& out) {
  fs::path model = out / "tokenizer.model";
  if (!r.tokenizer.empty()) return io::load_tokenizer(r.tokenizer);
  if (!fs::exists(model)) {
    if (r.vocab_size < 260) fail("--vocab-size {} is too small (byte fallback alone needs 256 + 3)", r.vocab_size);
    fs::path corpus = out / "tokenizer_corpus.txt.tmp";
    write_tokenizer_corpus(r.data, corpus);
    fs::path prefix = out / "tokenizer.tmp";
    std::fprintf(stderr, "training a SentencePiece BPE tokenizer of %lld tokens on the data\n",
                 static_cast<long long>(r.vocab_size));
    // Identity normalisation and no whitespace folding: the Vocab Lineage exports (GGUF) carries no
    // normaliser, so its own SentencePiece-style BPE then splits exactly as libsentencepiece does.
    text::train_sentencepiece(fmt::format(
        "--input={} --model_prefix={} --vocab_size={} --model_type=bpe --byte_fallback=true "
        "--character_coverage=1.0 --normalization_rule_name=identity --remove_extra_whitespaces=false "
        "--split_digits=true --num_threads=2 --minloglevel=2 --max_sentence_length=16384",
        corpus.string(), prefix.string(), r.vocab_size));
    fs::remove(corpus);
    fs::rename(prefix.string() + ".model", model);
    fs::remove(prefix.string() + ".vocab");
  }
  // Lineage's own BPE over the trained vocabulary: what a reader of the exported GGUF will run.
  return text::make_tokenizer(io::load_tokenizer(model.string())->vocab());
}

}  // namespace

void run_train(Recipe r, const std::string& command, bool resume) {
  if (r.out.empty()) fail("no run directory given (--out DIR)");
  Run run(r, "train", command, resume);
  torch::Device device = parse_device(r.device);
  torch::Dtype dtype = parse_dtype(r.dtype);

  // Rank 0 trains (or finds) the tokenizer first; the others then load the one it wrote.
  DataParallel* dp = data_parallel();
  if (dp && !dp->writes()) dp->barrier();
  auto tokenizer = train_or_load_tokenizer(r, run.out());
  if (dp && dp->writes()) dp->barrier();
  Dataset data = load_dataset(r.data, *tokenizer, r.data_options);
  model::ModelConfig config = r.model_config(tokenizer->vocab_size());
  torch::manual_seed(r.train.seed);
  model::Llama model(config);
  model->init_weights();
  model->to(device, dtype);
  std::fprintf(stderr, "model: %s parameters (dim %lld, %lld layers, vocab %lld); data: %lld train rows of %lld, %lld validation rows\n",
               group_digits(config.num_parameters()).c_str(), static_cast<long long>(config.dim),
               static_cast<long long>(config.n_layers), static_cast<long long>(config.vocab_size),
               static_cast<long long>(data.train.rows()), static_cast<long long>(r.data_options.seq_len),
               static_cast<long long>(data.valid.rows()));

  run.start(model, data.train, data, *tokenizer, nullptr);
  auto loss = [&](const torch::Tensor& tok, const torch::Tensor& mask, const std::vector<int64_t>&, int64_t) {
    auto logits = model->forward(tok.slice(1, 0, -1));  // (B, T, V)
    const int64_t V = logits.size(-1);
    StepResult s;
    s.loss = ce_loss(logits.reshape({-1, V}).to(torch::kFloat32), tok.slice(1, 1).reshape({-1}), mask.slice(1, 1).reshape({-1}));
    s.tokens = tok.size(0) * (tok.size(1) - 1);
    return s;
  };
  auto eval = [&](int64_t) { return evaluate_lm(model, data.valid, nullptr, r.eval_rows, 8, dp).to_json(); };
  if (!run.train(loss, eval)) return;
  if (dp && !dp->writes()) return;  // rank 0 writes the model
  run.export_model(model, tokenizer, {"model.gguf"});
  run.save_final();
  std::fprintf(stderr, "done: validation loss %.4f, perplexity %.3f; model written to %s\n",
               run.trainer().last_eval().value("loss", 0.0), run.trainer().last_eval().value("ppl", 0.0),
               (run.out() / "model.gguf").c_str());
}

}  // namespace lineage::distill
