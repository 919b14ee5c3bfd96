// A SentencePiece .model (Kudo & Richardson 2018) through Debian's libsentencepiece, reached via
// liblineage_spm.so, loaded into a link-map namespace of its own with dlmopen (see
// sentencepiece_shim/shim.cpp for why). Only C types and memory the shim frees itself cross over. Encoding and
// decoding are the library's; pieces, scores and types are also exposed as a Vocab so the
// tokenizer can be embedded in a GGUF or written as tokenizer.json.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>

#include "lineage/core/json.h"
#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/text/tokenizer.h"
#include "lineage/text/tokenizer_formats.h"

namespace lineage::text {

namespace {

namespace fs = std::filesystem;

struct Shim {
  void* (*load)(const char*, char*, size_t);
  void (*free_model)(void*);
  int (*piece_size)(void*);
  const char* (*piece)(void*, int, size_t*);
  float (*score)(void*, int);
  int (*type)(void*, int);
  int (*special)(void*, int);
  int (*encode)(void*, const char*, size_t, int**, size_t*, char*, size_t);
  int (*decode)(void*, const int*, size_t, char**, size_t*, char*, size_t);
  void (*release)(void*);
  int (*train)(const char*, char*, size_t);
};

std::vector<fs::path> shim_candidates() {
  std::vector<fs::path> out;
  if (const char* env = std::getenv("LINEAGE_SPM_SHIM")) out.emplace_back(env);
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    out.push_back(exe.parent_path() / "liblineage_spm.so");
    out.push_back(exe.parent_path().parent_path() / "liblineage_spm.so");
    out.push_back(exe.parent_path().parent_path() / "lib" / "liblineage_spm.so");
  }
#ifdef LINEAGE_SPM_SHIM_PATH
  out.emplace_back(LINEAGE_SPM_SHIM_PATH);
#endif
  return out;
}

const Shim& shim() {
  static Shim s;
  static std::once_flag once;
  static std::string error;
  std::call_once(once, [] {
    void* h = nullptr;
    std::string tried;
    for (const auto& p : shim_candidates()) {
      if (!fs::exists(p)) {
        tried += fmt::format(" {}", p.string());
        continue;
      }
      h = dlmopen(LM_ID_NEWLM, p.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (h) break;
      tried += fmt::format(" {} ({})", p.string(), dlerror());
    }
    if (!h) {
      error = fmt::format("SentencePiece support needs liblineage_spm.so beside the lineage binary (or LINEAGE_SPM_SHIM); tried:{}",
                          tried);
      return;
    }
    auto sym = [&](const char* name) {
      void* f = dlsym(h, name);
      if (!f) error = fmt::format("liblineage_spm.so lacks '{}'", name);
      return f;
    };
    s.load = reinterpret_cast<decltype(s.load)>(sym("lineage_spm_load"));
    s.free_model = reinterpret_cast<decltype(s.free_model)>(sym("lineage_spm_free"));
    s.piece_size = reinterpret_cast<decltype(s.piece_size)>(sym("lineage_spm_piece_size"));
    s.piece = reinterpret_cast<decltype(s.piece)>(sym("lineage_spm_piece"));
    s.score = reinterpret_cast<decltype(s.score)>(sym("lineage_spm_score"));
    s.type = reinterpret_cast<decltype(s.type)>(sym("lineage_spm_type"));
    s.special = reinterpret_cast<decltype(s.special)>(sym("lineage_spm_special"));
    s.encode = reinterpret_cast<decltype(s.encode)>(sym("lineage_spm_encode"));
    s.decode = reinterpret_cast<decltype(s.decode)>(sym("lineage_spm_decode"));
    s.release = reinterpret_cast<decltype(s.release)>(sym("lineage_spm_release"));
    s.train = reinterpret_cast<decltype(s.train)>(sym("lineage_spm_train"));
  });
  if (!error.empty()) fail("{}", error);
  return s;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) {
    // libsentencepiece reads a charsmap's trie without bounds checks: a forged one is refused here.
    if (fs::is_regular_file(path)) check_sentencepiece_model(read_file(path), path);
    char err[512] = {};
    handle_ = shim().load(path.c_str(), err, sizeof(err));
    if (!handle_) fail("cannot load SentencePiece model '{}': {}", path, err);
    vocab_.source = path;
    vocab_.model = VocabModel::kSpm;
    for (int id = 0; id < shim().piece_size(handle_); ++id) {
      size_t len = 0;
      const char* p = shim().piece(handle_, id, &len);
      vocab_.tokens.emplace_back(p, len);
      vocab_.scores.push_back(shim().score(handle_, id));
      vocab_.types.push_back(static_cast<TokenType>(shim().type(handle_, id)));
    }
    vocab_.bos_id = shim().special(handle_, 0);
    vocab_.eos_id = shim().special(handle_, 1);
    vocab_.unk_id = shim().special(handle_, 2);
    vocab_.pad_id = shim().special(handle_, 3);
    vocab_.validate();
  }
  ~SentencePieceTokenizer() override { shim().free_model(handle_); }

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override {
    int* ids = nullptr;
    size_t n = 0;
    char err[512] = {};
    if (shim().encode(handle_, text.data(), text.size(), &ids, &n, err, sizeof(err)) != 0)
      fail("SentencePiece '{}' cannot encode text: {}", vocab_.source, err);
    std::vector<int32_t> out;
    if (add_bos && vocab_.bos_id >= 0) out.push_back(vocab_.bos_id);
    out.insert(out.end(), ids, ids + n);
    shim().release(ids);
    return out;
  }

  using Tokenizer::decode;
  std::string decode(const int32_t* ids, size_t n) const override {
    std::vector<int> v(ids, ids + n);
    char* text = nullptr;
    size_t len = 0;
    char err[512] = {};
    if (shim().decode(handle_, v.data(), v.size(), &text, &len, err, sizeof(err)) != 0)
      fail("SentencePiece '{}' cannot decode ids: {}", vocab_.source, err);
    std::string out(text, len);
    shim().release(text);
    return out;
  }

  const Vocab& vocab() const override { return vocab_; }
  std::string describe() const override {
    return fmt::format("SentencePiece model, {} tokens ({})", vocab_.size(), vocab_.source);
  }

 private:
  void* handle_ = nullptr;
  Vocab vocab_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::string& path) {
  return std::make_unique<SentencePieceTokenizer>(path);
}

void train_sentencepiece(const std::string& args) {
  char err[512] = {};
  if (shim().train(args.c_str(), err, sizeof(err)) != 0) fail("SentencePiece training failed: {}", err);
}

}  // namespace lineage::text
