// File access used by every format: whole-file reads, read-only memory maps (weights stay on disk
// until touched) and atomic writes (temp file in the same folder, fsync, rename), so a killed
// process never leaves a half-written model or checkpoint behind.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace lineage {

namespace fs = std::filesystem;

// The whole file as bytes; fails with the path and the OS reason.
std::string read_file(const fs::path& path);

// Writes `data` to `path` atomically.
void write_file_atomic(const fs::path& path, std::string_view data);

// A read-only memory map of a whole file.
class MappedFile {
 public:
  explicit MappedFile(const fs::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Streams bytes into `<path>.tmp.<pid>`; commit() fsyncs and renames it over `path`. Destroyed
// without commit() (an exception on the way), it removes the temp file and `path` is untouched.
class AtomicWriter {
 public:
  explicit AtomicWriter(const fs::path& path);
  ~AtomicWriter();
  AtomicWriter(const AtomicWriter&) = delete;
  AtomicWriter& operator=(const AtomicWriter&) = delete;

  void write(const void* bytes, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  void pad_to(size_t alignment);  // zero bytes up to the next multiple of alignment
  uint64_t offset() const { return offset_; }
  void commit();

 private:
  fs::path path_, tmp_path_;
  int fd_ = -1;
  uint64_t offset_ = 0;
  bool committed_ = false;
};

// Little-endian cursor over a byte range that checks every read against the end, so a truncated
// file fails with the field being read and the offset instead of reading past the buffer.
class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size, std::string source)
      : data_(data), size_(size), source_(std::move(source)) {}

  template <typename T>
  T read(std::string_view what) {
    T v;
    read_bytes(&v, sizeof(T), what);
    return v;
  }
  void read_bytes(void* out, size_t n, std::string_view what);
  const uint8_t* take(size_t n, std::string_view what);  // pointer into the buffer, advances
  size_t offset() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }
  void seek(size_t pos, std::string_view what);
  const std::string& source() const { return source_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  std::string source_;
};

}  // namespace lineage
