// The teacher cache: building shards from a teacher and reading rows back (layout in cache.h).
#include "lineage/core/json.h"
#include "lineage/teacher/cache.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include "lineage/core/error.h"
#include "lineage/core/progress.h"

namespace lineage::teacher {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr char kMagic[8] = {'L', 'N', 'G', 'C', 'A', 'C', 'H', 'E'};
constexpr uint32_t kVersion = 2;
constexpr uint32_t kDtypeF16 = 1;

struct Header {
  uint32_t version, k, vocab, id_bits, seq_len, rows;
  uint64_t first_row;
  uint32_t record_bytes;
  uint32_t dtype = kDtypeF16;
  uint32_t tail_samples = 0;
  Digest teacher, tokenizer, data, payload;
};

std::string encode_header(const Header& h) {
  std::string s(kCacheHeaderBytes, '\0');
  auto put = [&](size_t off, const void* p, size_t n) { std::memcpy(s.data() + off, p, n); };
  put(0, kMagic, 8);
  put(8, &h.version, 4);
  put(12, &h.k, 4);
  put(16, &h.vocab, 4);
  put(20, &h.id_bits, 4);
  put(24, &h.seq_len, 4);
  put(28, &h.rows, 4);
  put(32, &h.first_row, 8);
  put(40, &h.record_bytes, 4);
  put(44, &h.dtype, 4);
  put(48, h.teacher.data(), 32);
  put(80, h.tokenizer.data(), 32);
  put(112, h.data.data(), 32);
  put(144, h.payload.data(), 32);
  put(176, &h.tail_samples, 4);
  return s;
}

Header decode_header(const uint8_t* p, size_t size, const std::string& path) {
  if (size < kCacheHeaderBytes)
    fail("teacher cache shard '{}' is truncated: {} bytes, the header alone is {}", path, size, kCacheHeaderBytes);
  if (std::memcmp(p, kMagic, 8) != 0) fail("'{}' is not a teacher cache shard (magic 'LNGCACHE' expected)", path);
  Header h;
  ByteReader r(p + 8, kCacheHeaderBytes - 8, path);
  h.version = r.read<uint32_t>("version");
  if (h.version != kVersion) fail("teacher cache shard '{}' has version {}, this build reads {}", path, h.version, kVersion);
  h.k = r.read<uint32_t>("k");
  h.vocab = r.read<uint32_t>("vocab_size");
  h.id_bits = r.read<uint32_t>("id_bits");
  h.seq_len = r.read<uint32_t>("seq_len");
  h.rows = r.read<uint32_t>("rows");
  h.first_row = r.read<uint64_t>("first_row");
  h.record_bytes = r.read<uint32_t>("record_bytes");
  h.dtype = r.read<uint32_t>("logprob dtype");
  if (h.dtype != kDtypeF16) fail("teacher cache shard '{}' stores log-probabilities as dtype {}, this build reads 1 (f16)", path, h.dtype);
  r.read_bytes(h.teacher.data(), 32, "teacher hash");
  r.read_bytes(h.tokenizer.data(), 32, "tokenizer hash");
  r.read_bytes(h.data.data(), 32, "data hash");
  r.read_bytes(h.payload.data(), 32, "payload hash");
  h.tail_samples = r.read<uint32_t>("tail samples");
  return h;
}

void pack_ids(const int64_t* ids, int64_t k, int bits, uint8_t* out) {
  uint64_t acc = 0;
  int filled = 0;
  for (int64_t i = 0; i < k; ++i) {
    acc |= static_cast<uint64_t>(ids[i]) << filled;
    filled += bits;
    while (filled >= 8) {
      *out++ = static_cast<uint8_t>(acc);
      acc >>= 8;
      filled -= 8;
    }
  }
  if (filled > 0) *out = static_cast<uint8_t>(acc);
}

void unpack_ids(const uint8_t* in, int64_t k, int bits, int64_t* ids) {
  uint64_t acc = 0;
  int filled = 0;
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  for (int64_t i = 0; i < k; ++i) {
    while (filled < bits) {
      acc |= static_cast<uint64_t>(*in++) << filled;
      filled += 8;
    }
    ids[i] = static_cast<int64_t>(acc & mask);
    acc >>= bits;
    filled -= bits;
  }
}

std::string shard_name(const std::string& split, int64_t index) { return fmt::format("{}-{:05}.bin", split, index); }

}  // namespace

int id_bits(int64_t vocab_size) {
  int b = 1;
  while ((int64_t{1} << b) < vocab_size) ++b;
  return b;
}

int64_t cache_record_bytes(int64_t k, int64_t vocab_size, int64_t tail_samples) {
  return 2 * k + 4 + ((k + tail_samples) * id_bits(vocab_size) + 7) / 8;
}

namespace {

void check_build(const TeacherInfo& info, const CacheBuildOptions& o) {
  if (o.k < 1 || o.k > info.vocab_size)
    fail("--top-k {} is out of range: the teacher's vocabulary has {} tokens", o.k, info.vocab_size);
  if (o.k > 65535) fail("--top-k {} is too large for the cache format", o.k);
  if (o.tail_samples < 0 || o.tail_samples > 65535) fail("--tail-samples {} is out of range (0 to 65535)", o.tail_samples);
  if (o.tail_samples > 0 && o.k + 1 >= info.vocab_size)
    fail("--tail-samples {}: with --top-k {} nothing of the {}-token vocabulary is left to draw from", o.tail_samples, o.k,
         info.vocab_size);
}

// What every shard of this build shares.
Header base_header(const TeacherInfo& info, const CacheBuildOptions& o) {
  Header base{};
  base.version = kVersion;
  base.k = static_cast<uint32_t>(o.k);
  base.vocab = static_cast<uint32_t>(info.vocab_size);
  base.id_bits = static_cast<uint32_t>(id_bits(info.vocab_size));
  base.seq_len = static_cast<uint32_t>(o.seq_len);
  base.record_bytes = static_cast<uint32_t>(cache_record_bytes(o.k, info.vocab_size, o.tail_samples));
  base.tail_samples = static_cast<uint32_t>(o.tail_samples);
  base.teacher = parse_hex_digest(info.sha256, "teacher hash");
  base.tokenizer = parse_hex_digest(info.tokenizer_sha256, "tokenizer hash");
  return base;
}

// A finished shard of an interrupted build with the same inputs is kept as it is: its payload hash,
// or nothing when `path` is absent or another build's.
std::optional<Digest> finished_shard(const fs::path& path, const Header& h) {
  if (!fs::exists(path)) return std::nullopt;
  try {
    MappedFile f(path);
    Header old = decode_header(f.data(), f.size(), path.string());
    const size_t bytes = kCacheHeaderBytes + static_cast<size_t>(int64_t{h.rows} * h.seq_len * h.record_bytes);
    if (old.k == h.k && old.tail_samples == h.tail_samples && old.vocab == h.vocab && old.seq_len == h.seq_len &&
        old.rows == h.rows && old.first_row == h.first_row && old.teacher == h.teacher && old.tokenizer == h.tokenizer &&
        old.data == h.data && f.size() == bytes)
      return old.payload;
  } catch (const Error&) {
  }
  return std::nullopt;
}

// The teacher's records for B rows starting at split row `row`, written at `out` (B * T records).
void encode_rows(Teacher& teacher, const CacheSplitInput& split, int64_t row, int64_t B, const CacheBuildOptions& o,
                 const Header& h, uint8_t* out) {
  const int64_t T = o.seq_len, M = o.tail_samples, KM = o.k + M, rec = h.record_bytes;
  const torch::Device device = torch::kCPU;  // the teacher moves the tokens to its own device
  auto tok = torch::from_blob(const_cast<int32_t*>(split.tokens + row * (T + 1)), {B, T + 1}, torch::kInt32).to(torch::kInt64);
  TopKRequest req;
  req.k = o.k;
  req.next = tok.slice(1, 1, T + 1).to(device);
  req.tail_samples = M;
  req.seed = o.seed ^ (0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(row + 1)) ^ (split.name == "train" ? 0 : 0x5bd1e9955bd1e995ULL);
  TopK top = teacher.top_k(tok.slice(1, 0, T).to(device), req);
  auto lp = top.logprobs.to(torch::kCPU, torch::kFloat32).contiguous();  // (B, T, k)
  auto tail = torch::log1p(-lp.exp().sum(-1).clamp_max(1.0 - 1e-7));    // (B, T)
  auto lp16 = lp.to(torch::kHalf).contiguous();
  auto tail16 = tail.to(torch::kHalf).contiguous();
  auto target16 = top.target_logprobs.to(torch::kCPU, torch::kHalf).contiguous();
  auto ids = top.ids.to(torch::kCPU, torch::kInt64);
  if (M > 0) ids = torch::cat({ids, top.tail_ids.to(torch::kCPU, torch::kInt64)}, -1);
  ids = ids.contiguous();
  const auto* lpp = lp16.data_ptr<at::Half>();
  const auto* tp = tail16.data_ptr<at::Half>();
  const auto* gp = target16.data_ptr<at::Half>();
  const auto* ip = ids.data_ptr<int64_t>();
  for (int64_t i = 0; i < B * T; ++i) {
    uint8_t* r = out + i * rec;
    std::memcpy(r, lpp + i * o.k, 2 * o.k);
    std::memcpy(r + 2 * o.k, tp + i, 2);
    std::memcpy(r + 2 * o.k + 2, gp + i, 2);
    pack_ids(ip + i * KM, KM, static_cast<int>(h.id_bits), r + 2 * o.k + 4);
  }
}

}  // namespace

void build_cache(Teacher& teacher, const std::vector<CacheSplitInput>& splits, const CacheBuildOptions& o,
                 const fs::path& dir) {
  const auto& info = teacher.info();
  check_build(info, o);
  fs::create_directories(dir);
  const Header base = base_header(info, o);
  const int64_t T = o.seq_len, rec = base.record_bytes;
  if (o.parts < 1 || o.part < 0 || o.part >= o.parts) fail("cache build part {} of {} is out of range", o.part, o.parts);
  int64_t total_rows = 0, shard_index = 0;
  for (const auto& s : splits)
    for (int64_t first = 0; first < s.rows; first += o.rows_per_shard)
      if (shard_index++ % o.parts == o.part) total_rows += std::min(o.rows_per_shard, s.rows - first);
  shard_index = 0;
  Progress progress("cache", total_rows);
  progress.set_quiet(o.quiet);
  int64_t done = 0;
  json manifest = {{"format", "lineage-teacher-cache"}, {"version", kVersion}, {"teacher", info.to_json()},
                   {"tokenizer_sha256", info.tokenizer_sha256}, {"k", o.k}, {"vocab_size", info.vocab_size},
                   {"tail_samples", o.tail_samples}, {"seed", o.seed}, {"id_bits", base.id_bits}, {"logprob_dtype", "f16"},
                   {"seq_len", T}, {"record_bytes", rec}, {"bytes_per_token", rec}, {"splits", json::object()}};
  for (const auto& split : splits) {
    Header h = base;
    h.data = split.data_digest;
    json shards = json::array();
    int64_t n_shards = (split.rows + o.rows_per_shard - 1) / o.rows_per_shard;
    for (int64_t s = 0; s < n_shards; ++s) {
      const int64_t first = s * o.rows_per_shard, rows = std::min(o.rows_per_shard, split.rows - first);
      if (shard_index++ % o.parts != o.part) continue;  // another rank's shard
      fs::path path = dir / shard_name(split.name, s);
      h.first_row = static_cast<uint64_t>(first);
      h.rows = static_cast<uint32_t>(rows);
      if (auto kept = finished_shard(path, h)) {
        h.payload = *kept;
        done += rows;
        progress.update(done, rows * T);
      } else {
        std::string payload(static_cast<size_t>(rows * T * rec), '\0');
        for (int64_t b0 = 0; b0 < rows; b0 += o.batch_size) {
          const int64_t B = std::min(o.batch_size, rows - b0);
          encode_rows(teacher, split, first + b0, B, o, h, reinterpret_cast<uint8_t*>(payload.data()) + b0 * T * rec);
          done += B;
          progress.update(done, B * T);
        }
        h.payload = sha256(payload);
        AtomicWriter w(path);
        w.write(encode_header(h));
        w.write(payload);
        w.commit();
      }
      shards.push_back({{"file", path.filename().string()}, {"first_row", first}, {"rows", rows},
                        {"payload_sha256", hex(h.payload)}});
    }
    manifest["splits"][split.name] = {{"rows", split.rows}, {"data_sha256", hex(split.data_digest)}, {"shards", shards}};
  }
  progress.finish();
  if (o.parts == 1) write_file_atomic(dir / "cache.json", manifest.dump(2) + "\n");
}

TeacherCache::TeacherCache(const fs::path& dir) : dir_(dir) {
  fs::path mpath = dir / "cache.json";
  if (!fs::exists(mpath)) fail("'{}' is not a teacher cache: cache.json is missing (make one with `lineage cache`)", dir.string());
  manifest_ = parse_json_or_discarded(read_file(mpath));
  if (!manifest_.is_object() || manifest_.value("format", "") != "lineage-teacher-cache")
    fail("'{}' is not a Lineage teacher cache manifest", mpath.string());
  // Bounds before anything is sized by them (the shard headers are checked against these below).
  auto field = [&](const char* key, int64_t lo, int64_t hi) {
    if (!manifest_.contains(key)) fail("'{}': '{}' is missing", mpath.string(), key);
    return need_json_int(manifest_[key], fmt::format("'{}': '{}'", mpath.string(), key), lo, hi);
  };
  k_ = field("k", 1, 1 << 16);
  m_ = manifest_.contains("tail_samples") ? field("tail_samples", 0, 1 << 16) : 0;
  vocab_ = field("vocab_size", 1, int64_t{1} << 31);
  bits_ = id_bits(vocab_);
  seq_len_ = field("seq_len", 1, int64_t{1} << 24);
  record_bytes_ = cache_record_bytes(k_, vocab_, m_);
  teacher_digest_ = parse_hex_digest(manifest_.at("teacher").at("sha256").get<std::string>(), mpath.string() + " teacher.sha256");
  tokenizer_digest_ = parse_hex_digest(manifest_.at("tokenizer_sha256").get<std::string>(), mpath.string() + " tokenizer_sha256");
  for (const auto& [name, s] : manifest_.at("splits").items()) {
    data_digests_[name] = parse_hex_digest(s.at("data_sha256").get<std::string>(), mpath.string() + " data_sha256");
    int64_t expect_first = 0;
    for (const auto& sh : s.at("shards")) {
      fs::path p = dir / sh.at("file").get<std::string>();
      auto f = std::make_unique<MappedFile>(p);
      Header h = decode_header(f->data(), f->size(), p.string());
      const size_t want = kCacheHeaderBytes + static_cast<size_t>(h.rows) * h.seq_len * h.record_bytes;
      if (f->size() != want) fail("teacher cache shard '{}' has {} bytes, its header implies {}", p.string(), f->size(), want);
      if (h.k != k_ || h.tail_samples != m_ || h.vocab != vocab_ || h.seq_len != seq_len_ || h.record_bytes != record_bytes_ ||
          static_cast<int64_t>(h.first_row) != expect_first || h.teacher != teacher_digest_ || h.tokenizer != tokenizer_digest_ ||
          h.data != data_digests_[name])
        fail("teacher cache shard '{}' does not match cache.json (k, vocabulary, rows or hashes differ)", p.string());
      Digest payload = sha256(std::string_view(reinterpret_cast<const char*>(f->data() + kCacheHeaderBytes),
                                               f->size() - kCacheHeaderBytes));
      if (payload != h.payload) fail("teacher cache shard '{}' is corrupt: its payload checksum does not match", p.string());
      expect_first += h.rows;
      splits_[name].push_back({std::move(f), static_cast<int64_t>(h.first_row), static_cast<int64_t>(h.rows)});
    }
    const int64_t rows = need_json_int(s.at("rows"), fmt::format("'{}': splits.{}.rows", mpath.string(), name));
    if (expect_first != rows)
      fail("teacher cache '{}': split '{}' has {} rows in its shards, cache.json says {}", dir.string(), name, expect_first,
           rows);
  }
}

int64_t TeacherCache::split_rows(const std::string& split) const {
  auto it = splits_.find(split);
  if (it == splits_.end()) return 0;
  int64_t n = 0;
  for (const auto& s : it->second) n += s.rows;
  return n;
}

void TeacherCache::check(const std::string& teacher_sha256, const std::string& tokenizer_sha256, const std::string& split,
                         const Digest& data_digest, int64_t seq_len) const {
  if (hex(teacher_digest_) != teacher_sha256)
    fail("teacher cache '{}' was made by another teacher ({}, sha256 {}…), not the one given (sha256 {}…)", dir_.string(),
         manifest_["teacher"].value("source", "?"), hex(teacher_digest_).substr(0, 12), teacher_sha256.substr(0, 12));
  if (hex(tokenizer_digest_) != tokenizer_sha256)
    fail("teacher cache '{}' was made with another tokenizer (sha256 {}…, this teacher's is {}…)", dir_.string(),
         hex(tokenizer_digest_).substr(0, 12), tokenizer_sha256.substr(0, 12));
  if (seq_len != seq_len_)
    fail("teacher cache '{}' holds rows of {} positions, this run uses --seq-len {}", dir_.string(), seq_len_, seq_len);
  auto it = data_digests_.find(split);
  if (it == data_digests_.end()) fail("teacher cache '{}' has no '{}' split", dir_.string(), split);
  if (it->second != data_digest)
    fail("teacher cache '{}' was made for other '{}' rows (different data, split or packing options)", dir_.string(), split);
}

TopK TeacherCache::rows(const std::string& split, const std::vector<int64_t>& index, torch::Device device) const {
  auto it = splits_.find(split);
  if (it == splits_.end()) fail("teacher cache '{}' has no '{}' split", dir_.string(), split);
  const auto& shards = it->second;
  const int64_t B = static_cast<int64_t>(index.size()), T = seq_len_, K = k_, KM = k_ + m_;
  auto ids = torch::empty({B, T, KM}, torch::kInt64);
  auto lp16 = torch::empty({B, T, K}, torch::kHalf);
  auto target16 = torch::empty({B, T}, torch::kHalf);
  auto* ip = ids.data_ptr<int64_t>();
  auto* lp = lp16.data_ptr<at::Half>();
  auto* gp = target16.data_ptr<at::Half>();
  for (int64_t b = 0; b < B; ++b) {
    auto sh = std::upper_bound(shards.begin(), shards.end(), index[b],
                               [](int64_t row, const Shard& s) { return row < s.first_row; });
    if (sh == shards.begin() || index[b] < 0 || index[b] >= (sh - 1)->first_row + (sh - 1)->rows)
      fail("teacher cache '{}': row {} of split '{}' is not in the cache", dir_.string(), index[b], split);
    --sh;
    const uint8_t* row = sh->file->data() + kCacheHeaderBytes + (index[b] - sh->first_row) * T * record_bytes_;
    for (int64_t t = 0; t < T; ++t) {
      const uint8_t* r = row + t * record_bytes_;
      std::memcpy(lp + (b * T + t) * K, r, 2 * K);
      std::memcpy(gp + b * T + t, r + 2 * K + 2, 2);
      unpack_ids(r + 2 * K + 4, KM, static_cast<int>(bits_), ip + (b * T + t) * KM);
    }
  }
  ids = ids.to(device);
  TopK out{ids.slice(-1, 0, K), lp16.to(device, torch::kFloat32), target16.to(device, torch::kFloat32), {}};
  if (m_ > 0) out.tail_ids = ids.slice(-1, K, KM);
  return out;
}

CachedTeacher::CachedTeacher(std::unique_ptr<Teacher> model, const fs::path& dir) : model_(std::move(model)), cache_(dir) {
  if (!model_) fail("the teacher cache '{}' needs the teacher it was made by", dir.string());
}

Abilities CachedTeacher::abilities() const {
  Abilities a = model_->abilities();
  a.top_k = a.next_logprob = a.by_row = true;
  a.max_top_k = cache_.k();
  a.tail_draws = cache_.tail_samples() > 0;
  return a;
}

TopK CachedTeacher::top_k(const torch::Tensor& tokens, const TopKRequest& request) {
  if (request.rows.empty()) return model_->top_k(tokens, request);
  if (static_cast<int64_t>(request.rows.size()) != tokens.size(0))
    fail("{} rows asked of the teacher cache for a batch of {}", request.rows.size(), tokens.size(0));
  return cache_.rows(request.split.empty() ? "train" : request.split, request.rows, tokens.device());
}

void CachedTeacher::expect_rows(const std::string& split, const Digest& rows_digest, int64_t seq_len) const {
  const auto& i = model_->info();
  cache_.check(i.sha256, i.tokenizer_sha256, split, rows_digest, seq_len);
}

}  // namespace lineage::teacher
