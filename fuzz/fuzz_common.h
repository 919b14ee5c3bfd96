// Shared by the libFuzzer targets (fuzz/README.md): Lineage's readers take paths, as users' files
// are, so each input is written to a file in a private scratch folder first; an expected refusal
// (an exception with a message) is a pass, anything the sanitizers or libFuzzer see is a finding.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>

namespace lineage::fuzz {

inline const std::filesystem::path& scratch() {
  static const std::filesystem::path dir = [] {
    const char* shm = std::filesystem::exists("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path().c_str();
    auto d = std::filesystem::path(shm) / ("lineage-fuzz-" + std::to_string(getpid()));
    std::filesystem::create_directories(d);
    std::atexit([] { std::error_code ec; std::filesystem::remove_all(scratch(), ec); });
    return d;
  }();
  return dir;
}

// The input as a file named `name` in the scratch folder; its path.
inline std::string as_file(const uint8_t* data, size_t size, const std::string& name) {
  auto p = scratch() / name;
  std::filesystem::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return p.string();
}

// Runs f; a thrown exception is the reader refusing the input, which is what it should do.
template <typename F>
int refusing_is_fine(F&& f) {
  try {
    f();
  } catch (const std::exception&) {
  }
  return 0;
}

}  // namespace lineage::fuzz
