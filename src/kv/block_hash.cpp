#include "kv/block_hash.h"

#include <openssl/evp.h>

#include <vector>

#include "base/check.h"

namespace snug::kv {
namespace {

BlockHash sha256(const uint8_t* data, size_t n) {
  BlockHash h;
  unsigned int len = 0;
  SNUG_CHECK(EVP_Digest(data, n, h.bytes.data(), &len, EVP_sha256(), nullptr) == 1 &&
             len == h.bytes.size());
  return h;
}

}  // namespace

BlockHash root_block_hash(std::string_view scope) {
  // A domain prefix keeps a root from ever equalling a block's hash input.
  std::vector<uint8_t> in = {'s', 'n', 'u', 'g', '-', 'r', 'o', 'o', 't', 0};
  in.insert(in.end(), scope.begin(), scope.end());
  return sha256(in.data(), in.size());
}

BlockHash next_block_hash(const BlockHash& parent, std::span<const int32_t> tokens,
                          std::span<const uint8_t> decode) {
  SNUG_CHECK(tokens.size() == decode.size());
  std::vector<uint8_t> in(parent.bytes.begin(), parent.bytes.end());
  in.reserve(in.size() + tokens.size() * 5);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const auto t = static_cast<uint32_t>(tokens[i]);
    for (int b = 0; b < 4; ++b) in.push_back(static_cast<uint8_t>(t >> (8 * b)));  // little-endian
    in.push_back(decode[i] ? 1 : 0);
  }
  return sha256(in.data(), in.size());
}

}  // namespace snug::kv
