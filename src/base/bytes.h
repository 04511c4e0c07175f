// Byte sizes as users write them ("512MiB", "1.5GiB", "2G", "1048576") and as
// snug prints them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "base/result.h"

namespace snug {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kGiB = 1024 * kMiB;

// Parses a positive byte size. Units: B, K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB
// (case-insensitive; K, M, G, T alone and the *iB forms are powers of 1024, the
// *B forms powers of 1000). Rejects empty, negative, zero, unknown units and
// values that overflow 64 bits.
Result<uint64_t> parse_bytes(std::string_view text);

// "1.50 GiB", "312.4 MiB", "512 B".
std::string format_bytes(uint64_t bytes);

}  // namespace snug
