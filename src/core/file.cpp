// File access: reads, memory maps, atomic writes. See include/lineage/core/file.h.
#include "lineage/core/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "lineage/core/error.h"

namespace lineage {

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read '{}': {}", path.string(), std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file_atomic(const fs::path& path, std::string_view data) {
  AtomicWriter w(path);
  w.write(data);
  w.commit();
}

MappedFile::MappedFile(const fs::path& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open '{}': {}", path.string(), std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail("cannot stat '{}': {}", path.string(), std::strerror(e));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    fail("'{}' is a directory, expected a file", path.string());
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      fail("cannot map '{}': {}", path.string(), std::strerror(e));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

AtomicWriter::AtomicWriter(const fs::path& path) : path_(path) {
  tmp_path_ = path;
  tmp_path_ += fmt::format(".tmp.{}", ::getpid());
  fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("cannot write '{}': {}", path.string(), std::strerror(errno));
}

AtomicWriter::~AtomicWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_path_.c_str());
}

void AtomicWriter::write(const void* bytes, size_t n) {
  const char* p = static_cast<const char*>(bytes);
  while (n > 0) {
    ssize_t k = ::write(fd_, p, n);
    if (k < 0) {
      if (errno == EINTR) continue;
      fail("cannot write '{}': {}", path_.string(), std::strerror(errno));
    }
    p += k;
    n -= static_cast<size_t>(k);
    offset_ += static_cast<uint64_t>(k);
  }
}

void AtomicWriter::pad_to(size_t alignment) {
  static const char kZeros[64] = {};
  size_t pad = (alignment - offset_ % alignment) % alignment;
  while (pad > 0) {
    size_t n = std::min(pad, sizeof(kZeros));
    write(kZeros, n);
    pad -= n;
  }
}

void AtomicWriter::commit() {
  if (::fsync(fd_) != 0) fail("cannot flush '{}': {}", path_.string(), std::strerror(errno));
  ::close(fd_);
  fd_ = -1;
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0)
    fail("cannot rename '{}' to '{}': {}", tmp_path_.string(), path_.string(), std::strerror(errno));
  committed_ = true;
}

void ByteReader::read_bytes(void* out, size_t n, std::string_view what) {
  std::memcpy(out, take(n, what), n);
}

const uint8_t* ByteReader::take(size_t n, std::string_view what) {
  if (n > size_ - pos_)
    fail("'{}' is truncated: reading {} ({} bytes) at offset {}, but the file has {} bytes",
         source_, what, n, pos_, size_);
  const uint8_t* p = data_ + pos_;
  pos_ += n;
  return p;
}

void ByteReader::seek(size_t pos, std::string_view what) {
  if (pos > size_)
    fail("'{}' is truncated: {} starts at offset {}, but the file has {} bytes", source_, what,
         pos, size_);
  pos_ = pos;
}

}  // namespace lineage
