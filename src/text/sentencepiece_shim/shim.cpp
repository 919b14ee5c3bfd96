// A C interface over libsentencepiece, built as its own shared library (liblineage_spm.so) and
// loaded with dlmopen(LM_ID_NEWLM), in a link-map namespace of its own. Debian's libsentencepiece
// carries a private copy of protobuf-lite and exports its symbols; in one namespace with
// libtorch's libprotobuf, the two bind to each other's functions and crash at start-up
// (RTLD_DEEPBIND is not enough: it breaks libstdc++'s iostreams). Only C types cross this
// interface, and memory is freed on the side that allocated it.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace {

void set_error(char* err, size_t err_len, const std::string& msg) {
  if (err && err_len > 0) {
    std::strncpy(err, msg.c_str(), err_len - 1);
    err[err_len - 1] = '\0';
  }
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) void* lineage_spm_load(const char* path, char* err, size_t err_len) {
  auto* sp = new sentencepiece::SentencePieceProcessor();
  auto status = sp->Load(path);
  if (!status.ok()) {
    set_error(err, err_len, status.ToString());
    delete sp;
    return nullptr;
  }
  return sp;
}

__attribute__((visibility("default"))) void lineage_spm_free(void* h) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(h);
}

__attribute__((visibility("default"))) int lineage_spm_piece_size(void* h) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(h)->GetPieceSize();
}

__attribute__((visibility("default"))) const char* lineage_spm_piece(void* h, int id, size_t* len) {
  const std::string& p = static_cast<sentencepiece::SentencePieceProcessor*>(h)->IdToPiece(id);
  *len = p.size();
  return p.data();
}

__attribute__((visibility("default"))) float lineage_spm_score(void* h, int id) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(h)->GetScore(id);
}

// GGUF token types: 1 normal, 2 unknown, 3 control, 5 unused, 6 byte.
__attribute__((visibility("default"))) int lineage_spm_type(void* h, int id) {
  auto* sp = static_cast<sentencepiece::SentencePieceProcessor*>(h);
  if (sp->IsUnknown(id)) return 2;
  if (sp->IsControl(id)) return 3;
  if (sp->IsUnused(id)) return 5;
  if (sp->IsByte(id)) return 6;
  return 1;
}

// which: 0 bos, 1 eos, 2 unk, 3 pad.
__attribute__((visibility("default"))) int lineage_spm_special(void* h, int which) {
  auto* sp = static_cast<sentencepiece::SentencePieceProcessor*>(h);
  switch (which) {
    case 0: return sp->bos_id();
    case 1: return sp->eos_id();
    case 2: return sp->unk_id();
    default: return sp->pad_id();
  }
}

// On success *ids is malloc'd (free with lineage_spm_release) and 0 is returned.
__attribute__((visibility("default"))) int lineage_spm_encode(void* h, const char* text, size_t len, int** ids,
                                                                size_t* n, char* err, size_t err_len) {
  std::vector<int> out;
  auto status = static_cast<sentencepiece::SentencePieceProcessor*>(h)->Encode(std::string_view(text, len), &out);
  if (!status.ok()) {
    set_error(err, err_len, status.ToString());
    return 1;
  }
  *n = out.size();
  *ids = static_cast<int*>(std::malloc(sizeof(int) * (out.size() + 1)));
  std::memcpy(*ids, out.data(), sizeof(int) * out.size());
  return 0;
}

__attribute__((visibility("default"))) int lineage_spm_decode(void* h, const int* ids, size_t n, char** text,
                                                                size_t* len, char* err, size_t err_len) {
  std::string out;
  auto status = static_cast<sentencepiece::SentencePieceProcessor*>(h)->Decode(std::vector<int>(ids, ids + n), &out);
  if (!status.ok()) {
    set_error(err, err_len, status.ToString());
    return 1;
  }
  *len = out.size();
  *text = static_cast<char*>(std::malloc(out.size() + 1));
  std::memcpy(*text, out.data(), out.size());
  return 0;
}

__attribute__((visibility("default"))) void lineage_spm_release(void* p) { std::free(p); }

// Trains a model with SentencePiece's trainer; `args` as its command line
// ("--input=... --model_prefix=... --vocab_size=... --model_type=bpe").
__attribute__((visibility("default"))) int lineage_spm_train(const char* args, char* err, size_t err_len) {
  auto status = sentencepiece::SentencePieceTrainer::Train(args);
  if (!status.ok()) {
    set_error(err, err_len, status.ToString());
    return 1;
  }
  return 0;
}

}  // extern "C"
