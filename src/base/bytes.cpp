#include "base/bytes.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <string>

namespace snug {

Result<uint64_t> parse_bytes(std::string_view text) {
  std::string s(text);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t start = 0;
  while (start < s.size() && std::isspace(static_cast<unsigned char>(s[start]))) ++start;
  s = s.substr(start);
  if (s.empty()) return make_error("empty byte size");
  size_t i = 0;
  bool seen_digit = false, seen_dot = false;
  while (i < s.size() &&
         (std::isdigit(static_cast<unsigned char>(s[i])) || (s[i] == '.' && !seen_dot))) {
    if (s[i] == '.')
      seen_dot = true;
    else
      seen_digit = true;
    ++i;
  }
  if (!seen_digit) return make_error("byte size '", s, "' does not start with a number");
  std::string number = s.substr(0, i);
  std::string unit;
  for (size_t j = i; j < s.size(); ++j) {
    if (std::isspace(static_cast<unsigned char>(s[j]))) continue;
    unit.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(s[j]))));
  }
  double mult;
  if (unit.empty() || unit == "b")
    mult = 1;
  else if (unit == "k" || unit == "kib")
    mult = 1024.0;
  else if (unit == "kb")
    mult = 1e3;
  else if (unit == "m" || unit == "mib")
    mult = 1024.0 * 1024;
  else if (unit == "mb")
    mult = 1e6;
  else if (unit == "g" || unit == "gib")
    mult = 1024.0 * 1024 * 1024;
  else if (unit == "gb")
    mult = 1e9;
  else if (unit == "t" || unit == "tib")
    mult = 1024.0 * 1024 * 1024 * 1024;
  else if (unit == "tb")
    mult = 1e12;
  else
    return make_error("byte size '", s, "' has unknown unit '", unit,
                      "' (use B, KiB, MiB, GiB, TiB)");
  double value = std::strtod(number.c_str(), nullptr) * mult;
  if (!std::isfinite(value) || value >= 18446744073709549568.0)
    return make_error("byte size '", s, "' is too large");
  auto bytes = static_cast<uint64_t>(std::llround(value));
  if (bytes == 0) return make_error("byte size '", s, "' is zero");
  return bytes;
}

std::string format_bytes(uint64_t bytes) {
  char buf[64];
  if (bytes < kKiB) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  } else if (bytes < kMiB) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", bytes / double(kKiB));
  } else if (bytes < kGiB) {
    std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / double(kMiB));
  } else {
    std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / double(kGiB));
  }
  return buf;
}

}  // namespace snug
