// Text for HTML and SVG content: the pages Lineage writes (lineage report, lineage monitor --html).
#pragma once

#include <string>

namespace lineage {

// & < > " ' as entities; everything else as it is.
inline std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

}  // namespace lineage
