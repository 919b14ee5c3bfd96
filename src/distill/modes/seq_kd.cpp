// seq_kd: sequence-level knowledge distillation (Kim & Rush 2016). The teacher writes completions
// of the prompts; the student learns them with cross-entropy, plus the teacher's signal on them
// when alpha > 0. The completions are kept in the run directory (seq_kd.jsonl, one line each,
// appended as they come) so that a resumed run does not ask again.
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "lineage/core/json.h"
#include "lineage/core/file.h"
#include "lineage/core/mix.h"
#include "lineage/core/progress.h"
#include "modes.h"

namespace lineage::distill::modes {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

bool starts_word(const text::Tokenizer& tok, int32_t prev, int32_t id) {
  if (id == tok.bos_id() || id == tok.eos_id()) return true;
  std::string piece = tok.decode_piece(prev, id);
  return !piece.empty() && (piece[0] == ' ' || piece[0] == '\n' || piece[0] == '\t');
}

// A prompt cut from a packed row, for a teacher that is sent text and tokenizes it afresh: the
// window [s, e) of the row's first P tokens nearest to all of them whose text re-encodes to the
// same tokens (a row that starts mid-word, "st" re-encoded as "▁st", moves its start to the next
// word) and that ends before a word (so the teacher goes on with a word of its own, not the rest of
// ours). Returned as the text's own tokens, BOS by the tokenizer's rule: what the teacher was given.
std::vector<int32_t> text_prompt(const text::Tokenizer& tok, const int32_t* row, int64_t P, int64_t row_len) {
  const bool bos_row = P > 0 && row[0] == tok.bos_id();
  const int64_t b = bos_row ? 1 : 0;
  auto fresh = [&](int64_t s, int64_t e) {
    return tok.encode(tok.decode(row + s, static_cast<size_t>(e - s)), tok.vocab().add_bos);
  };
  for (int64_t s = b; s < std::min(P, b + 8); ++s)
    for (int64_t e = P; e > s && e > P - 8; --e) {
      if (e < row_len && !starts_word(tok, row[e - 1], row[e])) continue;
      auto ids = fresh(s, e);
      const int64_t off = !ids.empty() && ids[0] == tok.bos_id() && tok.vocab().add_bos ? 1 : 0;
      if (static_cast<int64_t>(ids.size()) - off == e - s && std::equal(row + s, row + e, ids.begin() + off)) return ids;
    }
  return fresh(b, P);  // nothing nearby round-trips: the text's own tokens
}

// The teacher's completions of the prompts (the data's prompts, or the first prompt_tokens of
// each row), read back from seq_kd.jsonl as far as it goes, then asked for and appended.
TokenRows teacher_completions(const Recipe& r, teacher::Teacher& t, const Dataset& data, const fs::path& out) {
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& p : data.train_prompts) prompts.push_back(p.tokens);
  if (prompts.empty()) {
    const int64_t W = data.train.seq_len + 1;
    const int64_t P = std::min(r.prompt_tokens, data.train.seq_len);
    for (int64_t row = 0; row < data.train.rows(); ++row) {
      const int32_t* at = data.train.tokens.data() + row * W;
      // An in-process teacher is given the tokens themselves; any other, their text.
      if (t.model()) prompts.emplace_back(at, at + P);
      else prompts.push_back(text_prompt(t.tokenizer(), at, P, W));
    }
  }
  int64_t n = r.gen_examples > 0 ? std::min<int64_t>(r.gen_examples, prompts.size()) : prompts.size();
  fs::path file = out / "seq_kd.jsonl";
  std::vector<std::vector<int32_t>> ids;
  std::vector<std::vector<uint8_t>> masks;
  if (fs::exists(file)) {
    std::istringstream in(read_file(file));
    std::string line;
    while (std::getline(in, line) && static_cast<int64_t>(ids.size()) < n) {
      json j = parse_json_or_discarded(line);
      if (!j.is_object()) break;  // a line cut by a kill: generated again
      auto p = j.at("prompt").get<std::vector<int32_t>>();
      auto c = j.at("completion").get<std::vector<int32_t>>();
      std::vector<uint8_t> m(p.size(), 0);
      m.resize(p.size() + c.size(), 1);
      p.insert(p.end(), c.begin(), c.end());
      ids.push_back(std::move(p));
      masks.push_back(std::move(m));
    }
    // Rewrite what was read whole, so appending continues after a complete line.
    std::string kept;
    std::istringstream again(read_file(file));
    for (size_t i = 0; i < ids.size() && std::getline(again, line); ++i) kept += line + "\n";
    write_file_atomic(file, kept);
  }
  if (static_cast<int64_t>(ids.size()) < n) {
    std::fprintf(stderr, "seq_kd: the teacher writes %lld completions of up to %lld tokens (%zu already in %s)\n",
                 static_cast<long long>(n), static_cast<long long>(r.gen_tokens), ids.size(), file.c_str());
    std::ofstream app(file, std::ios::app);
    Progress progress("teacher generates", n, static_cast<int64_t>(ids.size()));
    auto options = [&](int64_t i) {
      model::GenerateOptions g;
      g.max_tokens = static_cast<int>(r.gen_tokens);
      g.sampling = r.sampling;
      g.sampling.seed = splitmix64(r.train.seed ^ splitmix64(static_cast<uint64_t>(i)));
      if (t.tokenizer().eos_id() >= 0) g.stop_ids.push_back(t.tokenizer().eos_id());
      return g;
    };
    // Prompts go in blocks (a remote teacher keeps `concurrency` requests in flight); each
    // completion is written as soon as its block is answered.
    std::map<int64_t, std::vector<int32_t>> ahead;
    for (int64_t i = static_cast<int64_t>(ids.size()); i < n; ++i) {
      if (!ahead.count(i)) {
        ahead.clear();
        std::vector<std::vector<int32_t>> block;
        std::vector<model::GenerateOptions> opts;
        for (int64_t j = i; j < std::min<int64_t>(n, i + 4 * std::max<int64_t>(1, r.concurrency)); ++j) {
          block.push_back(prompts[j]);
          opts.push_back(options(j));
        }
        auto got = t.generate_many(block, opts);
        for (size_t j = 0; j < got.size(); ++j) ahead[i + static_cast<int64_t>(j)] = std::move(got[j]);
      }
      auto c = ahead[i];
      if (static_cast<int64_t>(c.size()) < r.gen_tokens && t.tokenizer().eos_id() >= 0) c.push_back(t.tokenizer().eos_id());
      app << json({{"prompt", prompts[i]}, {"completion", c}}).dump() << "\n";
      app.flush();
      std::vector<int32_t> seq = prompts[i];
      std::vector<uint8_t> m(seq.size(), 0);
      seq.insert(seq.end(), c.begin(), c.end());
      m.resize(seq.size(), 1);
      ids.push_back(std::move(seq));
      masks.push_back(std::move(m));
      progress.update(i + 1, static_cast<int64_t>(c.size()));
    }
    progress.finish();
  }
  return pack_examples(ids, masks, data.train.seq_len, /*pack=*/false, std::max(0, t.tokenizer().eos_id()));
}

class SeqKD : public Objective {
 public:
  explicit SeqKD(const ObjectiveContext& c) : c_(c) {}
  void prepare(const fs::path& out) override { rows_ = teacher_completions(c_.recipe, c_.teacher, c_.data, out); }
  const TokenRows& train_rows() const override { return rows_; }
  StepResult loss(const torch::Tensor& tok, const torch::Tensor& mask, const std::vector<int64_t>&, int64_t) override {
    return batch_loss(c_, tok, mask);
  }

 private:
  ObjectiveContext c_;
  TokenRows rows_;
};

}  // namespace

std::unique_ptr<Objective> seq_kd(const ObjectiveContext& c) { return std::make_unique<SeqKD>(c); }

}  // namespace lineage::distill::modes
