// Sizes as people read them. See include/lineage/core/units.h.
#include "lineage/core/units.h"

namespace lineage {

namespace fs = std::filesystem;

std::string group_digits(int64_t n) {
  std::string d = std::to_string(n < 0 ? -n : n), out;
  for (size_t i = 0; i < d.size(); ++i) {
    if (i && (d.size() - i) % 3 == 0) out += ',';
    out += d[i];
  }
  return n < 0 ? "-" + out : out;
}

int64_t path_bytes(const fs::path& p) {
  if (!fs::is_directory(p)) return static_cast<int64_t>(fs::file_size(p));
  int64_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(p))
    if (e.is_regular_file()) n += static_cast<int64_t>(e.file_size());
  return n;
}

}  // namespace lineage
