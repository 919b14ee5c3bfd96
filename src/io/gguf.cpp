// GGUF read: the container, its key-values and tensor infos (no libtorch). Layout in
// include/lineage/io/gguf.h; tensors and writing in gguf_tensors.cpp.
#include "lineage/io/gguf.h"

#include <cstring>

#include "lineage/core/error.h"
#include "lineage/core/json.h"
#include "lineage/core/file.h"

namespace lineage::io {

using nlohmann::json;

namespace {

constexpr uint64_t kAlignment = 32;
constexpr uint64_t kQ8Block = 32;       // values per Q8_0 block
constexpr uint64_t kQ8BlockBytes = 34;  // f16 scale + 32 int8

const char* type_name(uint32_t t) {
  switch (t) {
    case 0: return "F32";
    case 1: return "F16";
    case 8: return "Q8_0";
    case 30: return "BF16";
    default: return nullptr;
  }
}

std::string read_string(ByteReader& r, std::string_view what) {
  uint64_t n = r.read<uint64_t>(what);
  if (n > r.remaining())
    fail("'{}' is truncated or corrupt: {} claims {} bytes at offset {}, {} remain", r.source(), what, n, r.offset(),
         r.remaining());
  const uint8_t* p = r.take(n, what);
  return std::string(reinterpret_cast<const char*>(p), n);
}

json read_scalar(ByteReader& r, GgufType t, const std::string& what) {
  switch (t) {
    case GgufType::kU8: return r.read<uint8_t>(what);
    case GgufType::kI8: return r.read<int8_t>(what);
    case GgufType::kU16: return r.read<uint16_t>(what);
    case GgufType::kI16: return r.read<int16_t>(what);
    case GgufType::kU32: return r.read<uint32_t>(what);
    case GgufType::kI32: return r.read<int32_t>(what);
    case GgufType::kF32: {
      // The shortest decimal that reads back as this float: 1e-5 stays 1e-5, not 9.99999974e-06.
      float f = r.read<float>(what);
      return std::stod(fmt::format("{}", f));
    }
    case GgufType::kBool: return r.read<uint8_t>(what) != 0;
    case GgufType::kString: return read_string(r, what);
    case GgufType::kU64: return r.read<uint64_t>(what);
    case GgufType::kI64: return r.read<int64_t>(what);
    case GgufType::kF64: return r.read<double>(what);
    default: fail("'{}': {} has unknown value type {}, expected 0..12", r.source(), what, static_cast<uint32_t>(t));
  }
}

}  // namespace

GgufFile GgufFile::read(const std::string& path) {
  GgufFile g;
  g.path_ = path;
  g.file_ = std::make_shared<MappedFile>(path);
  ByteReader r(g.file_->data(), g.file_->size(), path);
  char magic[4];
  r.read_bytes(magic, 4, "magic");
  if (std::memcmp(magic, "GGUF", 4) != 0) {
    std::string shown;
    for (char c : magic) shown += (c >= 32 && c < 127) ? std::string(1, c) : fmt::format("\\x{:02x}", static_cast<uint8_t>(c));
    fail("'{}' is not a GGUF file: magic is '{}', expected 'GGUF'", path, shown);
  }
  g.version_ = r.read<uint32_t>("version");
  if (g.version_ != 2 && g.version_ != 3) fail("'{}': GGUF version {} is not supported, expected 2 or 3", path, g.version_);
  uint64_t n_tensors = r.read<uint64_t>("n_tensors");
  uint64_t n_kv = r.read<uint64_t>("n_kv");
  // Every key-value and tensor info takes at least 12 bytes: reject absurd counts before allocating.
  if (n_kv > r.remaining() / 12 || n_tensors > r.remaining() / 12)
    fail("'{}' is truncated or corrupt: {} key-values and {} tensors cannot fit in {} bytes", path, n_kv, n_tensors,
         r.remaining());
  for (uint64_t i = 0; i < n_kv; ++i) {
    GgufKV kv;
    kv.key = read_string(r, fmt::format("key of key-value {}", i));
    kv.type = static_cast<GgufType>(r.read<uint32_t>(kv.key));
    if (kv.type == GgufType::kArray) {
      kv.array_type = static_cast<GgufType>(r.read<uint32_t>(kv.key));
      uint64_t n = r.read<uint64_t>(kv.key);
      if (n > r.remaining())
        fail("'{}' is truncated or corrupt: array '{}' claims {} elements, {} bytes remain", path, kv.key, n, r.remaining());
      kv.value = json::array();
      for (uint64_t k = 0; k < n; ++k) kv.value.push_back(read_scalar(r, kv.array_type, kv.key));
    } else {
      kv.value = read_scalar(r, kv.type, kv.key);
    }
    g.kvs_.push_back(std::move(kv));
  }
  uint64_t alignment = kAlignment;
  if (const GgufKV* a = g.find("general.alignment"))
    alignment = static_cast<uint64_t>(need_json_int(a->value, fmt::format("'{}': general.alignment", path), 1, 1 << 30));
  if (alignment == 0 || (alignment & (alignment - 1)) != 0)
    fail("'{}': general.alignment is {}, expected a power of two", path, alignment);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = read_string(r, fmt::format("name of tensor {}", i));
    uint32_t n_dims = r.read<uint32_t>(t.name);
    if (n_dims < 1 || n_dims > 4) fail("'{}': tensor '{}' has {} dimensions, expected 1..4", path, t.name, n_dims);
    uint64_t count = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      t.ne.push_back(r.read<uint64_t>(t.name));
      count *= t.ne.back();
    }
    t.type = r.read<uint32_t>(t.name);
    t.offset = r.read<uint64_t>(t.name);
    if (!type_name(t.type))
      fail("'{}': tensor '{}' has ggml type {}, expected F32 (0), F16 (1), Q8_0 (8) or BF16 (30)", path, t.name, t.type);
    if (t.type == 8) {
      if (t.ne[0] % kQ8Block != 0) fail("'{}': Q8_0 tensor '{}' has a row of {} values, not a multiple of 32", path, t.name, t.ne[0]);
      t.bytes = count / kQ8Block * kQ8BlockBytes;
    } else {
      t.bytes = count * (t.type == 0 ? 4 : 2);
    }
    g.tensors_.push_back(std::move(t));
  }
  g.data_start_ = (r.offset() + alignment - 1) / alignment * alignment;
  for (const auto& t : g.tensors_) {
    if (t.offset > g.file_->size() || g.data_start_ + t.offset + t.bytes > g.file_->size())
      fail("'{}' is truncated: tensor '{}' ({} bytes at offset {}) ends past the file's {} bytes", path, t.name, t.bytes,
           g.data_start_ + t.offset, g.file_->size());
  }
  return g;
}

const GgufKV* GgufFile::find(const std::string& key) const {
  for (const auto& kv : kvs_)
    if (kv.key == key) return &kv;
  return nullptr;
}

std::string GgufFile::get_string(const std::string& key) const {
  const GgufKV* kv = find(key);
  if (!kv) fail("'{}': GGUF key '{}' is missing", path_, key);
  if (kv->type != GgufType::kString) fail("'{}': GGUF key '{}' is not a string", path_, key);
  return kv->value.get<std::string>();
}

int64_t GgufFile::get_int(const std::string& key) const {
  const GgufKV* kv = find(key);
  if (!kv) fail("'{}': GGUF key '{}' is missing", path_, key);
  if (!kv->value.is_number_integer()) fail("'{}': GGUF key '{}' is not an integer", path_, key);
  return kv->value.get<int64_t>();
}

double GgufFile::get_float(const std::string& key) const {
  const GgufKV* kv = find(key);
  if (!kv) fail("'{}': GGUF key '{}' is missing", path_, key);
  if (!kv->value.is_number()) fail("'{}': GGUF key '{}' is not a number", path_, key);
  return kv->value.get<double>();
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

}  // namespace lineage::io
