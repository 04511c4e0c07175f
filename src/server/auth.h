// API keys: `--api-key-file F` holds one key per line. A request must carry
// `Authorization: Bearer KEY` with one of them (only /health is public); the
// comparison takes the same time wherever the keys differ, and each key is a
// tenant whose prefix-cache blocks no other key can hit.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace snug::server {

// True when a and b are equal. The time taken depends on the lengths only,
// never on where the bytes differ.
bool constant_time_equal(std::string_view a, std::string_view b);

class ApiKeys {
 public:
  ApiKeys() = default;  // no keys: every request is let in, all share one cache scope
  // Lines are trimmed of spaces, tabs and CR; empty lines and lines starting
  // with '#' are skipped. Errors: an unreadable file, no key in it, a key with
  // bytes outside printable ASCII, a key shorter than 8 bytes.
  static Result<ApiKeys> load(const std::string& path);
  static Result<ApiKeys> from_text(std::string_view text, const std::string& what);

  bool enabled() const { return !keys_.empty(); }
  size_t size() const { return keys_.size(); }

  // The index of the key an Authorization header carries ("Bearer KEY",
  // scheme case-insensitive), or nullopt. Every key is compared, whichever
  // matches, so the time does not tell which one did.
  std::optional<size_t> match(std::string_view authorization_header) const;

  // The prefix-cache scope of a tenant: "" without keys, else "key:<index>".
  static std::string cache_scope(std::optional<size_t> index);

 private:
  std::vector<std::string> keys_;
};

}  // namespace snug::server
