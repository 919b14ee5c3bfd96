// GGUF read and write. Layout in include/lineage/io/gguf.h.
#include "lineage/io/gguf.h"

#include <cstring>

#include "lineage/core/error.h"
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

template <typename T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}

void put_string(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out += s;
}

void put_scalar(std::string& out, GgufType t, const json& v) {
  switch (t) {
    case GgufType::kU8: put<uint8_t>(out, v.get<uint8_t>()); break;
    case GgufType::kI8: put<int8_t>(out, v.get<int8_t>()); break;
    case GgufType::kU16: put<uint16_t>(out, v.get<uint16_t>()); break;
    case GgufType::kI16: put<int16_t>(out, v.get<int16_t>()); break;
    case GgufType::kU32: put<uint32_t>(out, v.get<uint32_t>()); break;
    case GgufType::kI32: put<int32_t>(out, v.get<int32_t>()); break;
    case GgufType::kF32: put<float>(out, v.get<float>()); break;
    case GgufType::kBool: put<uint8_t>(out, v.get<bool>() ? 1 : 0); break;
    case GgufType::kString: put_string(out, v.get<std::string>()); break;
    case GgufType::kU64: put<uint64_t>(out, v.get<uint64_t>()); break;
    case GgufType::kI64: put<int64_t>(out, v.get<int64_t>()); break;
    case GgufType::kF64: put<double>(out, v.get<double>()); break;
    default: fail("GGUF writer: value type {} is not a scalar", static_cast<uint32_t>(t));
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
  if (const GgufKV* a = g.find("general.alignment")) alignment = a->value.get<uint64_t>();
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

torch::Tensor GgufFile::load_tensor(const GgufTensorInfo& info) const {
  std::vector<int64_t> shape(info.ne.rbegin(), info.ne.rend());
  void* p = const_cast<uint8_t*>(file_->data() + data_start_ + info.offset);
  switch (info.type) {
    case 0: return torch::from_blob(p, shape, torch::kFloat32).clone();
    case 1: return torch::from_blob(p, shape, torch::kFloat16).to(torch::kFloat32);
    case 30: return torch::from_blob(p, shape, torch::kBFloat16).to(torch::kFloat32);
    case 8: {
      const uint64_t blocks = info.bytes / kQ8BlockBytes;
      auto raw = torch::from_blob(p, {static_cast<int64_t>(blocks), static_cast<int64_t>(kQ8BlockBytes)}, torch::kUInt8);
      auto scale = raw.narrow(1, 0, 2).contiguous().view(torch::kFloat16).to(torch::kFloat32);  // (blocks, 1)
      auto q = raw.narrow(1, 2, 32).contiguous().view(torch::kInt8).to(torch::kFloat32);        // (blocks, 32)
      return (q * scale).reshape(shape);
    }
  }
  fail("'{}': tensor '{}' has unsupported ggml type {}", path_, info.name, info.type);
}

void GgufWriter::add(const std::string& key, GgufType type, json value) {
  kvs_.push_back({key, type, GgufType::kU8, std::move(value)});
}

void GgufWriter::add_array(const std::string& key, GgufType element_type, json values) {
  kvs_.push_back({key, GgufType::kArray, element_type, std::move(values)});
}

void GgufWriter::add_tensor(const std::string& name, const torch::Tensor& t, GgmlType type) {
  if (type != GgmlType::kF32 && type != GgmlType::kF16) fail("GGUF writer: tensor '{}': only F32 and F16 are written", name);
  auto dt = type == GgmlType::kF32 ? torch::kFloat32 : torch::kFloat16;
  tensors_.emplace_back(name, t.detach().to(torch::kCPU, dt).contiguous());
  types_.push_back(type);
}

void GgufWriter::write(const std::string& path) const {
  std::string head;
  head += "GGUF";
  put<uint32_t>(head, 3);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, kvs_.size());
  for (const auto& kv : kvs_) {
    put_string(head, kv.key);
    put<uint32_t>(head, static_cast<uint32_t>(kv.type));
    if (kv.type == GgufType::kArray) {
      put<uint32_t>(head, static_cast<uint32_t>(kv.array_type));
      put<uint64_t>(head, kv.value.size());
      for (const auto& e : kv.value) put_scalar(head, kv.array_type, e);
    } else {
      put_scalar(head, kv.type, kv.value);
    }
  }
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const auto& [name, t] = tensors_[i];
    put_string(head, name);
    put<uint32_t>(head, static_cast<uint32_t>(t.dim()));
    for (int64_t d = t.dim() - 1; d >= 0; --d) put<uint64_t>(head, static_cast<uint64_t>(t.size(d)));
    put<uint32_t>(head, static_cast<uint32_t>(types_[i]));
    put<uint64_t>(head, offset);
    offset += (static_cast<uint64_t>(t.nbytes()) + kAlignment - 1) / kAlignment * kAlignment;
  }
  AtomicWriter w(path);
  w.write(head);
  w.pad_to(kAlignment);
  for (const auto& [name, t] : tensors_) {
    w.write(t.data_ptr(), t.nbytes());
    w.pad_to(kAlignment);
  }
  w.commit();
}

}  // namespace lineage::io
