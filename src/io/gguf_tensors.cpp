// GGUF tensors: loading them into torch, and writing a GGUF (see gguf.h).
#include <torch/torch.h>

#include "lineage/core/error.h"
#include "lineage/core/file.h"
#include "lineage/io/gguf.h"

namespace lineage::io {

using nlohmann::json;

namespace {

constexpr uint64_t kAlignment = 32;
constexpr uint64_t kQ8BlockBytes = 34;  // f16 scale + 32 int8

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
