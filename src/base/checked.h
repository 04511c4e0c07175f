// Checked arithmetic for sizes that come from untrusted input (file headers,
// requests). Every count * size and offset + length read from a file goes
// through these, so an overflow becomes an error instead of a short buffer.
#pragma once

#include <cstdint>
#include <optional>

namespace snug {

inline std::optional<uint64_t> checked_mul(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

inline std::optional<uint64_t> checked_add(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// True when [offset, offset + length) lies inside [0, size).
inline bool range_within(uint64_t offset, uint64_t length, uint64_t size) {
  return offset <= size && length <= size - offset;
}

}  // namespace snug
