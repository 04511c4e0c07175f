#include "base/result.h"

#include <cstdio>

namespace snug {

std::string printable(std::string_view s, size_t max_bytes) {
  std::string out;
  const size_t n = s.size() < max_bytes ? s.size() : max_bytes;
  for (size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '\\') {
      out += "\\\\";
    } else if (c >= 0x20 && c < 0x7F) {
      out += static_cast<char>(c);
    } else {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    }
  }
  if (n < s.size()) out += "...";
  return out;
}

}  // namespace snug
