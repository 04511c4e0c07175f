// A pool of fixed-size blocks carved from one Buffer: the storage behind the
// paged KV cache. Allocation and release are O(1) and never touch the system
// allocator; when the pool is empty, allocate() says so and the caller decides
// (wait, preempt, refuse) instead of the process running out of memory.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "base/result.h"
#include "memory/buffer.h"

namespace snug::memory {

class BlockPool {
 public:
  static Result<BlockPool> create(uint64_t block_bytes, int32_t n_blocks, Ledger* ledger);
  BlockPool() = default;

  std::optional<int32_t> allocate();
  void release(int32_t block);
  uint8_t* block(int32_t id) const {
    return buf_.data() + static_cast<uint64_t>(id) * block_bytes_;
  }

  // Makes the whole pool resident now (Buffer::commit).
  Status commit() { return buf_.commit(); }

  int32_t n_blocks() const { return n_blocks_; }
  int32_t n_free() const { return static_cast<int32_t>(free_.size()); }
  uint64_t block_bytes() const { return block_bytes_; }
  uint64_t bytes() const { return buf_.size(); }

 private:
  Buffer buf_;
  uint64_t block_bytes_ = 0;
  int32_t n_blocks_ = 0;
  std::vector<int32_t> free_;  // stack of free block ids
};

}  // namespace snug::memory
