#include "server/auth.h"

#include <fstream>
#include <sstream>

namespace snug::server {

bool constant_time_equal(std::string_view a, std::string_view b) {
  // Walks all of `a` (the presented key) whatever `b` holds; an empty b is
  // compared against zero bytes. The length check is folded in, not a branch.
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  const size_t nb = b.size();
  for (size_t i = 0; i < a.size(); ++i) {
    const unsigned char x = static_cast<unsigned char>(a[i]);
    const unsigned char y = nb == 0 ? 0 : static_cast<unsigned char>(b[i % nb]);
    diff |= static_cast<unsigned>(x ^ y);
  }
  // Keep the compiler from turning the loop into an early exit.
  volatile unsigned sink = diff;
  return sink == 0;
}

Result<ApiKeys> ApiKeys::from_text(std::string_view text, const std::string& what) {
  ApiKeys k;
  size_t line_no = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\r'))
      line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    for (char c : line) {
      if (c < 0x21 || c > 0x7e)
        return make_error(what, " line ", line_no, ": a key may hold printable ASCII only");
    }
    if (line.size() < 8)
      return make_error(what, " line ", line_no, ": a key needs 8 bytes or more");
    k.keys_.emplace_back(line);
  }
  if (k.keys_.empty()) return make_error(what, " holds no key");
  return k;
}

Result<ApiKeys> ApiKeys::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error("cannot read the API key file '", printable(path, 200), "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return from_text(ss.str(), "API key file '" + printable(path, 200) + "'");
}

std::optional<size_t> ApiKeys::match(std::string_view header) const {
  constexpr std::string_view kScheme = "bearer ";
  if (header.size() < kScheme.size()) return std::nullopt;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    char c = header[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != kScheme[i]) return std::nullopt;
  }
  std::string_view presented = header.substr(kScheme.size());
  while (!presented.empty() && presented.front() == ' ') presented.remove_prefix(1);
  std::optional<size_t> found;
  for (size_t i = 0; i < keys_.size(); ++i) {
    if (constant_time_equal(presented, keys_[i]) && !found) found = i;
  }
  return found;
}

std::string ApiKeys::cache_scope(std::optional<size_t> index) {
  return index ? "key:" + std::to_string(*index) : std::string();
}

}  // namespace snug::server
