// lineage distill: a student learns from a teacher, in one of four modes (recipe.h), with the
// losses of distill/losses.h, through the shared trainer.
//   online     the teacher's logits for every batch, full vocabulary (or its top-k + tail)
//   offline    top-k + tail from a teacher cache (lineage cache), no teacher forward passes
//   seq_kd     the teacher writes completions for the prompts (Kim & Rush 2016); the student
//              learns them with cross-entropy, plus the teacher's logits on them when alpha > 0
//   on_policy  with probability lambda per step the batch is the student's own continuations of
//              prompts, scored token by token by the teacher (GKD, Agarwal et al. 2024); the
//              other steps are online batches
#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/core/mix.h"
#include "lineage/core/progress.h"
#include "lineage/distill/compare.h"
#include "lineage/distill/evaluate.h"
#include "lineage/distill/losses.h"
#include "lineage/distill/provenance.h"
#include "lineage/distill/recipe.h"
#include "lineage/distill/run_common.h"
#include "lineage/distill/student.h"
#include "lineage/io/model_file.h"
#include "lineage/model/generate.h"
#include "lineage/teacher/cache.h"
#include "lineage/teacher/http_teacher.h"
#include "lineage/text/vocab_digest.h"

namespace lineage::distill {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Uniform in [0, 1) from (seed, a, b): decisions that repeat exactly on resume.
// A teacher's top-k answer for a batch, flattened to positions, with the tokens that come next.
SparseTeacher sparse(const teacher::TopK& top, const torch::Tensor& next) {
  const int64_t K = top.ids.size(-1);
  SparseTeacher st;
  st.ids = top.ids.reshape({-1, K});
  st.logprobs = top.logprobs.reshape({-1, K});
  if (top.target_logprobs.defined()) {
    st.next = next.reshape({-1});
    st.next_logprobs = top.target_logprobs.reshape({-1});
  }
  if (top.tail_ids.defined()) st.tail_ids = top.tail_ids.reshape({-1, top.tail_ids.size(-1)});
  return st;
}

double unit(uint64_t seed, uint64_t a, uint64_t b = 0) {
  return static_cast<double>(splitmix64(seed ^ splitmix64(a ^ splitmix64(b))) >> 11) * 0x1.0p-53;
}

void check_recipe(const Recipe& r, const teacher::Teacher& t) {
  if (r.data.empty()) fail("no data given (--data FILE...)");
  if (r.alpha < 0 || r.alpha > 1) fail("--alpha {} must be in [0, 1]", r.alpha);
  if (r.lambda < 0 || r.lambda > 1) fail("--lambda {} must be in [0, 1]", r.lambda);
  if (r.kd.beta < 0 || r.kd.beta > 1) fail("--beta {} must be in [0, 1]", r.kd.beta);
  if (!(r.kd.temperature > 0)) fail("--temperature {} must be positive", r.kd.temperature);
  if (r.top_k < 0 || r.top_k > t.info().vocab_size)
    fail("--top-k {} is out of range: the teacher's vocabulary has {} tokens", r.top_k, t.info().vocab_size);
  if (r.mode == Mode::kOffline && r.cache.empty()) fail("--mode offline needs --cache DIR (make one with `lineage cache`)");
  if (!t.has_logits()) {  // an HTTP teacher: top-k log-probabilities, no tail draws
    const bool needs_top_k = (r.alpha > 0 && (r.mode == Mode::kOnline || r.mode == Mode::kSeqKD)) || r.mode == Mode::kOnPolicy;
    if (needs_top_k && r.top_k == 0)
      fail("teacher '{}' is reached over HTTP and gives top-k log-probabilities, not full logits: set --top-k (at most 20)", r.teacher);
    if (needs_top_k && r.tail_samples > 0)
      fail("teacher '{}' is reached over HTTP and cannot draw from its tail: set --tail-samples 0 (one tail bucket)", r.teacher);
    if (!r.init_from_teacher.empty()) fail("--init-from-teacher needs the teacher's weights; '{}' is reached over HTTP", r.teacher);
  }
  if ((r.mode == Mode::kSeqKD || r.mode == Mode::kOnPolicy) && r.gen_tokens < 1)
    fail("--gen-tokens {} must be at least 1", r.gen_tokens);
  model::validate(r.sampling);
}

// The student model on `device`: from a file, from teacher layers, or fresh from the recipe.
model::Llama make_student(const Recipe& r, teacher::Teacher& t, torch::Device device, torch::Dtype dtype) {
  auto* local = dynamic_cast<teacher::LocalTeacher*>(&t);
  if (!r.student.empty()) {
    io::ModelFile sf = io::read_model(r.student);
    if (sf.config.vocab_size != t.info().vocab_size)
      fail("student '{}' has a vocabulary of {} tokens, the teacher '{}' has {}: distillation over logits needs the same "
           "vocabulary", r.student, sf.config.vocab_size, t.info().source, t.info().vocab_size);
    if (sf.tokenizer && hex(text::vocab_digest(sf.tokenizer->vocab())) != t.info().tokenizer_sha256)
      fail("student '{}' uses another tokenizer than the teacher '{}' (same size, different tokens)", r.student, t.info().source);
    return io::make_model(sf, device, dtype);
  }
  torch::manual_seed(r.train.seed);
  if (!local) {  // a teacher known only through its answers: a fresh student on the student's tokenizer
    model::ModelConfig c = r.model_config(t.info().vocab_size);
    c.max_seq_len = std::max<int64_t>(c.max_seq_len, r.data_options.seq_len);
    model::Llama m(c);
    m->init_weights();
    m->to(device, dtype);
    return m;
  }
  const auto& tc = local->model()->config();
  if (!r.init_from_teacher.empty()) {
    auto layers = parse_layer_selection(r.init_from_teacher, tc.n_layers);
    model::Llama m(select_layers_config(tc, layers));
    m->load_weights(select_layers_weights(local->weights(), layers), "the teacher's selected layers");
    m->to(device, dtype);
    return m;
  }
  model::ModelConfig c = r.model_config(tc.vocab_size);
  c.max_seq_len = std::max(c.max_seq_len, tc.max_seq_len);
  c.rope_theta = tc.rope_theta;
  model::Llama m(c);
  m->init_weights();
  m->to(device, dtype);
  return m;
}

// Sequence-level KD data: the teacher's completions of the prompts, kept in the run directory
// (seq_kd.jsonl, one line per completion, appended as they come) so a resumed run reuses them.
TokenRows teacher_completions(const Recipe& r, teacher::Teacher& t, const Dataset& data, const fs::path& out) {
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& p : data.train_prompts) prompts.push_back(p.tokens);
  if (prompts.empty()) {
    const int64_t W = data.train.seq_len + 1;
    const int64_t P = std::min(r.prompt_tokens, data.train.seq_len);
    for (int64_t row = 0; row < data.train.rows(); ++row)
      prompts.emplace_back(data.train.tokens.begin() + row * W, data.train.tokens.begin() + row * W + P);
  }
  int64_t n = r.gen_examples > 0 ? std::min<int64_t>(r.gen_examples, prompts.size()) : prompts.size();
  fs::path file = out / "seq_kd.jsonl";
  std::vector<std::vector<int32_t>> ids;
  std::vector<std::vector<uint8_t>> masks;
  if (fs::exists(file)) {
    std::istringstream in(read_file(file));
    std::string line;
    while (std::getline(in, line) && static_cast<int64_t>(ids.size()) < n) {
      json j = json::parse(line, nullptr, false);
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
    // An HTTP teacher answers a block of prompts at once, `concurrency` requests in flight.
    auto* http = dynamic_cast<teacher::HttpTeacher*>(&t);
    std::map<int64_t, std::vector<int32_t>> ahead;
    for (int64_t i = static_cast<int64_t>(ids.size()); i < n; ++i) {
      if (http && !ahead.count(i)) {
        ahead.clear();
        std::vector<std::vector<int32_t>> block;
        std::vector<model::GenerateOptions> opts;
        for (int64_t j = i; j < std::min<int64_t>(n, i + 4 * std::max<int64_t>(1, r.concurrency)); ++j) {
          block.push_back(prompts[j]);
          opts.push_back(options(j));
        }
        auto got = http->generate_many(block, opts);
        for (size_t j = 0; j < got.size(); ++j) ahead[i + static_cast<int64_t>(j)] = std::move(got[j]);
      }
      auto c = http ? ahead[i] : t.generate(prompts[i], options(i));
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

}  // namespace

void run_distill(Recipe r, const std::string& command, bool resume) {
  if (r.out.empty()) fail("no run directory given (--out DIR)");
  if (r.teacher.empty()) fail("no teacher given (--teacher MODEL)");
  torch::Device device = parse_device(r.device);
  torch::Dtype dtype = parse_dtype(r.dtype);
  fs::path out(r.out);

  // Everything that can be wrong with the inputs is found before the first step.
  // An HTTP teacher's answers go to the run directory as they arrive: a resumed run does not ask again.
  auto teacher_ptr = open_recipe_teacher(r, out);
  auto* teacher = dynamic_cast<teacher::LocalTeacher*>(teacher_ptr.get());
  check_recipe(r, *teacher_ptr);
  auto tokenizer = std::shared_ptr<text::Tokenizer>(text::make_tokenizer(teacher_ptr->tokenizer().vocab()));
  Dataset data = load_dataset(r.data, *tokenizer, r.data_options);
  std::unique_ptr<teacher::TeacherCache> cache;
  if (r.mode == Mode::kOffline) {
    cache = std::make_unique<teacher::TeacherCache>(r.cache);
    cache->check(teacher_ptr->info().sha256, teacher_ptr->info().tokenizer_sha256, "train", data.train.digest(),
                 r.data_options.seq_len);
  }
  model::Llama student = make_student(r, *teacher_ptr, device, dtype);
  const auto& sc = student->config();
  if (sc.vocab_size != teacher_ptr->info().vocab_size)
    fail("the student's vocabulary ({}) differs from the teacher's ({})", sc.vocab_size, teacher_ptr->info().vocab_size);
  if (sc.max_seq_len < r.data_options.seq_len)
    fail("--seq-len {} is longer than the student's context ({})", r.data_options.seq_len, sc.max_seq_len);
  prepare_run_dir(out, r, resume);

  const TokenRows* train_rows = &data.train;
  TokenRows seq_rows;
  if (r.mode == Mode::kSeqKD) {
    seq_rows = teacher_completions(r, *teacher_ptr, data, out);
    train_rows = &seq_rows;
  }
  std::fprintf(stderr,
               "distill (%s, %s): teacher %s (%s parameters) -> student %s parameters; %lld training rows of %lld tokens\n",
               mode_name(r.mode), r.to_json()["loss"].get<std::string>().c_str(), teacher_ptr->info().source.c_str(),
               group_digits(teacher_ptr->info().parameters).c_str(), group_digits(sc.num_parameters()).c_str(),
               static_cast<long long>(train_rows->rows()), static_cast<long long>(r.data_options.seq_len));

  Trainer trainer(student, *train_rows, r.train, out);
  json prov = make_provenance("distill", command, r, data, *tokenizer, &teacher_ptr->info(), sc);
  if (resume) resume_provenance(out, prov, trainer);

  const bool need_kd = r.alpha > 0;
  const bool use_cache = r.mode == Mode::kOffline;
  auto kd_and_ce = [&](const torch::Tensor& s_logits, const torch::Tensor& input, const torch::Tensor& target,
                       const torch::Tensor& m, const std::vector<int64_t>& rows, StepResult& res) {
    const int64_t V = s_logits.size(-1);
    auto s = s_logits.reshape({-1, V}).to(torch::kFloat32);
    torch::Tensor loss = torch::zeros({}, s.options());
    if (need_kd) {
      torch::Tensor kd;
      if (use_cache) {
        kd = kd_loss_sparse(s, sparse(cache->rows("train", rows, s.device()), target), m, r.kd);
      } else if (r.top_k > 0) {
        teacher::TopKRequest req;
        req.k = r.top_k;
        req.next = target.reshape(input.sizes());
        req.tail_samples = r.tail_samples;
        req.seed = splitmix64(static_cast<uint64_t>(r.train.seed) ^ splitmix64(static_cast<uint64_t>(trainer.step()) + 0x7461696cULL));
        kd = kd_loss_sparse(s, sparse(teacher_ptr->top_k(input, req), target), m, r.kd);
      } else {
        kd = kd_loss(s, teacher_ptr->logits(input).reshape({-1, V}), m, r.kd);
      }
      loss = loss + r.alpha * kd;
      res.stats["kd"] = kd.item<double>();
    }
    if (r.alpha < 1) {
      auto ce = ce_loss(s, target, m);
      loss = loss + (1 - r.alpha) * ce;
      res.stats["ce"] = ce.item<double>();
    }
    return loss;
  };

  auto loss_fn = [&](const torch::Tensor& tok, const torch::Tensor& mask, const std::vector<int64_t>& rows, int64_t step) {
    StepResult res;
    res.tokens = tok.size(0) * (tok.size(1) - 1);
    if (r.mode == Mode::kOnPolicy && unit(r.train.seed, 0x6f6e706f6c696379ULL, static_cast<uint64_t>(step)) < r.lambda) {
      // The student continues the first prompt_tokens of each row; the teacher scores what it wrote.
      const int64_t B = tok.size(0), P = std::min<int64_t>(r.prompt_tokens, tok.size(1) - 1);
      std::vector<std::vector<int64_t>> seqs;
      int64_t L = 0;
      {
        torch::NoGradGuard no_grad;
        student->eval();
        auto cpu = tok.to(torch::kCPU);
        for (int64_t b = 0; b < B; ++b) {
          std::vector<int32_t> prompt(P);
          for (int64_t i = 0; i < P; ++i) prompt[i] = static_cast<int32_t>(cpu[b][i].item<int64_t>());
          model::GenerateOptions g;
          g.max_tokens = static_cast<int>(std::min<int64_t>(r.gen_tokens, sc.max_seq_len - P));
          g.sampling = r.sampling;
          g.sampling.seed = splitmix64(r.train.seed ^ splitmix64(static_cast<uint64_t>(step) * 1315423911ULL + b));
          auto c = model::generate(student, prompt, g);
          std::vector<int64_t> s(prompt.begin(), prompt.end());
          s.insert(s.end(), c.begin(), c.end());
          L = std::max<int64_t>(L, s.size());
          seqs.push_back(std::move(s));
        }
        student->train();
      }
      auto t2 = torch::zeros({B, L}, torch::kInt64);
      auto m2 = torch::zeros({B, L}, torch::kBool);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < static_cast<int64_t>(seqs[b].size()); ++i) {
          t2[b][i] = seqs[b][i];
          if (i >= P) m2[b][i] = true;
        }
      t2 = t2.to(tok.device());
      m2 = m2.to(tok.device());
      auto input = t2.slice(1, 0, -1);
      auto m = m2.slice(1, 1).reshape({-1});
      auto s_logits = student->forward(input);
      const int64_t V = s_logits.size(-1);
      auto s_flat = s_logits.reshape({-1, V}).to(torch::kFloat32);
      if (teacher_ptr->has_logits()) {
        res.loss = kd_loss(s_flat, teacher_ptr->logits(input).reshape({-1, V}), m, r.kd);
      } else {
        teacher::TopKRequest req;
        req.k = r.top_k;
        req.next = t2.slice(1, 1);
        res.loss = kd_loss_sparse(s_flat, sparse(teacher_ptr->top_k(input, req), t2.slice(1, 1).reshape({-1})), m, r.kd);
      }
      res.stats["on_policy"] = 1;
      res.tokens = B * (L - 1);
      return res;
    }
    auto input = tok.slice(1, 0, -1);
    auto target = tok.slice(1, 1).reshape({-1});
    auto m = mask.slice(1, 1).reshape({-1});
    auto s_logits = student->forward(input);
    res.loss = kd_and_ce(s_logits, input, target, m, rows, res);
    if (r.mode == Mode::kOnPolicy) res.stats["on_policy"] = 0;
    return res;
  };
  // An HTTP teacher is not asked during evaluations (its answers cost); the end compares both.
  auto eval = [&](int64_t) { return evaluate_lm(student, data.valid, teacher, r.eval_rows).to_json(); };
  auto on_checkpoint = [&](int64_t step, const json& e) { save_provenance(out, prov, step, trainer.tokens_seen(), e, false); };
  trainer.run(loss_fn, eval, on_checkpoint);
  if (trainer.step() < r.train.steps) {
    std::fprintf(stderr, "stopped at step %lld; continue with --resume %s\n", static_cast<long long>(trainer.step()), out.c_str());
    return;
  }

  // Export, then the side-by-side comparison on the validation rows.
  save_provenance(out, prov, trainer.step(), trainer.tokens_seen(), trainer.last_eval(), true);
  export_model(student, tokenizer, r, prov, out / "student.gguf");
  export_model(student, tokenizer, r, prov, out / "student");
  auto [tf, sf] = teacher ? compare_models(*teacher, student, out / "student.gguf", data.valid, r.eval_rows)
                          : compare_with_sparse_teacher(*teacher_ptr, student, out / "student.gguf", data.valid, r.eval_rows);
  json summary = {{"teacher", tf.to_json()}, {"student", sf.to_json()}, {"mode", mode_name(r.mode)},
                  {"steps", trainer.step()}, {"tokens_seen", trainer.tokens_seen()}};
  prov["comparison"] = summary;
  save_provenance(out, prov, trainer.step(), trainer.tokens_seen(), trainer.last_eval(), true);
  write_file_atomic(out / "summary.json", summary.dump(2) + "\n");
  std::printf("\n%s\n", format_comparison(tf, sf).c_str());
  std::printf("student: %s (GGUF), %s (HF); run record: %s\n", (out / "student.gguf").c_str(), (out / "student").c_str(),
              (out / "lineage.json").c_str());
}

}  // namespace lineage::distill
