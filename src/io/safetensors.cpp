// safetensors read and write. Layout in include/lineage/io/safetensors.h.
#include "lineage/core/json.h"
#include "lineage/io/safetensors.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <tuple>

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
  std::vector<std::tuple<uint64_t, uint64_t, std::string>> spans;  // data_offsets, for overlaps and gaps
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
    // Integers only (a float such as 1e41 is no size), each checked before it is used.
    const json& fields = entry;
    const std::string& tensor = name;  // (C++17 lambdas cannot capture structured bindings)
    auto integers = [&](const char* key) {
      const json& a = fields[key];
      if (!a.is_array()) fail("'{}': tensor '{}' {} must be an array of integers", path, tensor, key);
      std::vector<uint64_t> v;
      for (const auto& x : a) {
        if (!x.is_number_unsigned() && !(x.is_number_integer() && x.get<int64_t>() >= 0))
          fail("'{}': tensor '{}' {} holds {}, expected non-negative integers", path, tensor, key, x.dump());
        v.push_back(x.get<uint64_t>());
      }
      return v;
    };
    const std::vector<uint64_t> dims = integers("shape");
    auto offs = integers("data_offsets");
    if (offs.size() != 2 || offs[0] > offs[1] || offs[1] > data_size)
      fail("'{}': tensor '{}' data_offsets [{}] are outside the data section of {} bytes", path, name,
           fmt::join(offs, ", "), data_size);
    uint64_t count = 1;
    for (uint64_t d : dims) {
      if (d != 0 && count > data_size / d)  // larger than the file: and no wrap-around in the product
        fail("'{}': tensor '{}' of shape [{}] holds more elements than the file has bytes", path, name, fmt::join(dims, ", "));
      count *= d;
    }
    std::vector<int64_t> shape(dims.begin(), dims.end());
    spans.emplace_back(offs[0], offs[1], name);
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
  // As the reference implementation requires: the tensors tile the data section, no overlap, no gap.
  std::sort(spans.begin(), spans.end());
  uint64_t covered = 0;
  for (const auto& [begin, end, name] : spans) {
    if (begin != covered)
      fail("'{}': tensor '{}' starts at byte {} of the data section, expected {} ({})", path, name, begin, covered,
           begin < covered ? "it overlaps the tensor before it" : "a gap no tensor covers");
    covered = end;
  }
  if (covered != data_size)
    fail("'{}': the tensors cover {} bytes of the {}-byte data section", path, covered, data_size);
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
