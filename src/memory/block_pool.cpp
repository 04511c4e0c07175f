#include "memory/block_pool.h"

#include "base/check.h"
#include "base/checked.h"

namespace snug::memory {

Result<BlockPool> BlockPool::create(uint64_t block_bytes, int32_t n_blocks, Ledger* ledger) {
  if (block_bytes == 0 || n_blocks <= 0)
    return make_error("block pool needs a positive block size and count");
  auto total = checked_mul(block_bytes, static_cast<uint64_t>(n_blocks));
  if (!total) return make_error("block pool size overflows");
  BlockPool p;
  SNUG_ASSIGN_OR_RETURN(p.buf_, Buffer::allocate(*total, ledger, Category::kKvCache));
  // Attention reads a sequence's blocks scattered over the pool, a few KiB of
  // each: on 4 KiB pages nearly every run costs a TLB miss (sixteen streams of
  // 256 positions read 94 MB of f16 K and V a step). Pages still become
  // resident only when first touched, now up to 2 MiB at a time, within the
  // pool the plan charges in full.
  p.buf_.advise_huge_pages();
  p.block_bytes_ = block_bytes;
  p.n_blocks_ = n_blocks;
  p.free_.reserve(static_cast<size_t>(n_blocks));
  // Low ids are handed out first, so a short sequence touches the start of the pool.
  for (int32_t b = n_blocks - 1; b >= 0; --b) p.free_.push_back(b);
  return p;
}

std::optional<int32_t> BlockPool::allocate() {
  if (free_.empty()) return std::nullopt;
  int32_t b = free_.back();
  free_.pop_back();
  return b;
}

void BlockPool::release(int32_t block) {
  SNUG_DCHECK(block >= 0 && block < n_blocks_);
  free_.push_back(block);
}

}  // namespace snug::memory
