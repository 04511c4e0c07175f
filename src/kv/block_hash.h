// Names for the contents of a full KV block, for the prefix cache: a chain of
// SHA-256 hashes. A block's hash covers its parent's hash (so it names the
// whole prefix up to and including the block, not just its own tokens), its
// tokens, and how each token was computed (prompt or generated order, see
// model::Batch::decode: the rows differ in the last bits). The chain starts
// from a hash of a scope string (a tenant's salt), so requests of different
// scopes never share a block even for identical text, and one tenant cannot
// learn from timing what another has sent.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

namespace snug::kv {

struct BlockHash {
  std::array<uint8_t, 32> bytes{};
  bool operator==(const BlockHash&) const = default;
};

struct BlockHashKey {
  size_t operator()(const BlockHash& h) const {
    size_t v;
    std::memcpy(&v, h.bytes.data(), sizeof v);
    return v;
  }
};

// The start of a chain for requests of `scope` (any bytes; "" is a scope too).
BlockHash root_block_hash(std::string_view scope);
// The hash of a block holding `tokens` (decode[i]: token i was generated),
// following the block whose hash is `parent`. tokens and decode have the same size.
BlockHash next_block_hash(const BlockHash& parent, std::span<const int32_t> tokens,
                          std::span<const uint8_t> decode);

}  // namespace snug::kv
