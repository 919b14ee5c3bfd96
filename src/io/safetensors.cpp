// safetensors read and write. Layout in include/lineage/io/safetensors.h.
#include "lineage/core/json.h"
#include "lineage/io/safetensors.h"

#include <nlohmann/json.hpp>

#include "lineage/core/error.h"
#include "lineage/core/file.h"

namespace lineage::io {

using nlohmann::json;

namespace {

struct DtypeInfo {
  const char* name;
  torch::Dtype dtype;
  size_t bytes;
};
constexpr DtypeInfo kDtypes[] = {
    {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2}, {"BF16", torch::kBFloat16, 2},
    {"F64", torch::kFloat64, 8}, {"I64", torch::kInt64, 8},   {"I32", torch::kInt32, 4},
    {"I16", torch::kInt16, 2},   {"I8", torch::kInt8, 1},     {"U8", torch::kUInt8, 1},
    {"BOOL", torch::kBool, 1},
};

const DtypeInfo* find_dtype(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

const DtypeInfo& info_of(torch::Dtype t) {
  for (const auto& d : kDtypes)
    if (d.dtype == t) return d;
  fail("safetensors cannot store dtype {}", c10::toString(t));
}

}  // namespace

SafetensorsFile read_safetensors(const std::string& path) {
  MappedFile file(path);
  ByteReader r(file.data(), file.size(), path);
  uint64_t n = r.read<uint64_t>("header length");
  if (n > file.size() - 8)
    fail("'{}' is not a safetensors file or is truncated: header length {} exceeds the file size {}", path, n,
         file.size());
  const char* hdr = reinterpret_cast<const char*>(r.take(n, "JSON header"));
  json j;
  try {
    check_json_depth(std::string_view(hdr, n), fmt::format("'{}': the safetensors header", path));
    j = json::parse(hdr, hdr + n);
  } catch (const json::parse_error& e) {
    fail("'{}': safetensors header is not valid JSON: {}", path, e.what());
  }
  if (!j.is_object()) fail("'{}': safetensors header must be a JSON object", path);
  const size_t data_start = 8 + n;
  const size_t data_size = file.size() - data_start;

  SafetensorsFile out;
  for (const auto& [name, entry] : j.items()) {
    if (name == "__metadata__") {
      if (entry.is_object())
        for (const auto& [k, v] : entry.items())
          if (v.is_string()) out.metadata[k] = v;
      continue;
    }
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets"))
      fail("'{}': tensor '{}' lacks dtype, shape or data_offsets", path, name);
    std::string dt = entry["dtype"].get<std::string>();
    const DtypeInfo* info = find_dtype(dt);
    if (!info)
      fail("'{}': tensor '{}' has dtype '{}', expected one of F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL", path,
           name, dt);
    std::vector<int64_t> shape = entry["shape"].get<std::vector<int64_t>>();
    auto offs = entry["data_offsets"].get<std::vector<uint64_t>>();
    if (offs.size() != 2 || offs[0] > offs[1] || offs[1] > data_size)
      fail("'{}': tensor '{}' data_offsets [{}] are outside the data section of {} bytes", path, name,
           fmt::join(offs, ", "), data_size);
    uint64_t count = 1;
    for (int64_t d : shape) {
      if (d < 0) fail("'{}': tensor '{}' has a negative dimension", path, name);
      count *= static_cast<uint64_t>(d);
    }
    if (count * info->bytes != offs[1] - offs[0])
      fail("'{}': tensor '{}' of shape [{}] {} needs {} bytes, data_offsets span {}", path, name,
           fmt::join(shape, ", "), dt, count * info->bytes, offs[1] - offs[0]);
    void* ptr = const_cast<uint8_t*>(file.data() + data_start + offs[0]);
    auto t = torch::from_blob(ptr, shape, info->dtype).clone();
    if (t.is_floating_point()) {
      out.dtype = dt;
      t = t.to(torch::kFloat32);
    }
    out.tensors[name] = t;
  }
  return out;
}

void write_safetensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata, torch::Dtype dtype) {
  const DtypeInfo& info = info_of(dtype);
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    auto c = t.detach().to(torch::kCPU, dtype).contiguous();
    uint64_t bytes = static_cast<uint64_t>(c.numel()) * info.bytes;
    header[name] = {{"dtype", info.name}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(c);
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  uint64_t n = h.size();
  AtomicWriter w(path);
  w.write(&n, 8);
  w.write(h);
  for (const auto& c : data) w.write(c.data_ptr(), static_cast<size_t>(c.numel()) * info.bytes);
  w.commit();
}

}  // namespace lineage::io
