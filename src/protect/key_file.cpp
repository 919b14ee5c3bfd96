// Private key files. See src/protect/key_file.h.
#include "protect/key_file.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>

#include "lineage/core/error.h"
#include "lineage/core/file.h"

namespace lineage::protect {

std::vector<unsigned char> read_private_hex(const std::filesystem::path& path, size_t n, const std::string& what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail("cannot read {} '{}': {}", what, path.string(), std::strerror(errno));
  if (st.st_mode & (S_IRWXG | S_IRWXO))
    fail("{} '{}' can be read by others (mode {:o}); a key must be private: chmod 600 '{}'", what, path.string(),
         st.st_mode & 0777, path.string());
  std::string text = read_file(path);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  std::vector<unsigned char> out(n);
  size_t len = 0;
  bool ok = text.size() == 2 * n &&
            sodium_hex2bin(out.data(), n, text.data(), text.size(), nullptr, &len, nullptr) == 0 && len == n;
  sodium_memzero(text.data(), text.size());
  if (!ok) fail("{} '{}' must hold {} hex digits ({} bytes), as `lineage keygen` writes", what, path.string(), 2 * n, n);
  return out;
}

void write_private_hex(const std::filesystem::path& path, const unsigned char* bytes, size_t n) {
  std::string text(2 * n + 1, '\0');
  sodium_bin2hex(text.data(), text.size(), bytes, n);
  text.back() = '\n';
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) fail("cannot create key file '{}': {}", path.string(), std::strerror(errno));
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  int e = errno;
  ::close(fd);
  sodium_memzero(text.data(), text.size());
  if (!ok) {
    ::unlink(path.c_str());
    fail("cannot write key file '{}': {}", path.string(), std::strerror(e));
  }
}

}  // namespace lineage::protect
