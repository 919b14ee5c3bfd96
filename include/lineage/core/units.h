// Sizes as people read them: digit groups for counts, bytes of a file or folder.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace lineage {

std::string group_digits(int64_t n);               // 5246208 -> "5,246,208"
int64_t path_bytes(const std::filesystem::path& p);  // a file's size, or a folder's total

}  // namespace lineage
