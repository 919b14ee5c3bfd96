// Private key files of the protect module (watermark and signing keys): hex text, created with
// O_EXCL at mode 600, refused when the group or others can read them.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace lineage::protect {

// The `n` bytes written as 2n hex digits in `path`; `what` names the key in errors.
std::vector<unsigned char> read_private_hex(const std::filesystem::path& path, size_t n, const std::string& what);
// Creates `path` (mode 600; fails if it exists) holding `bytes` as hex and a newline.
void write_private_hex(const std::filesystem::path& path, const unsigned char* bytes, size_t n);

}  // namespace lineage::protect
