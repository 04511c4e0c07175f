// An owned, 64-byte aligned, zero-initialised allocation charged to the ledger
// for its whole life. Large buffers come from anonymous mmap, so pages become
// resident only when first touched.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/result.h"
#include "memory/ledger.h"

namespace snug::memory {

class Buffer {
 public:
  static Result<Buffer> allocate(uint64_t bytes, Ledger* ledger, Category category);
  Buffer() = default;
  Buffer(Buffer&& o) noexcept;
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer();

  // Makes every page resident now instead of at first touch, so memory a plan
  // promised is committed at start-up: a shortfall shows here, before any
  // work, and the peak RSS is what the plan predicted. Fails (ENOMEM) without
  // side effects beyond the pages already committed.
  Status commit();
  // Asks for transparent huge pages over the buffer (MADV_HUGEPAGE), for one
  // that is streamed whole: fewer TLB misses. Where the kernel has none, or
  // allows them only at its own choosing, nothing changes.
  void advise_huge_pages() const;

  uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  template <typename T>
  T* as() const {
    return reinterpret_cast<T*>(data_);
  }

 private:
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  uint64_t mapped_ = 0;
  Charge charge_;
};

// Bump allocator over one Buffer for per-step scratch: the planner sizes it,
// the token loop takes slices and resets it; nothing is allocated per token.
class Arena {
 public:
  Arena() = default;
  explicit Arena(Buffer buffer) : buf_(std::move(buffer)) {}
  // Returns `bytes` (rounded up to 64) or nullptr when the arena is exhausted;
  // exhaustion means the plan was wrong, which callers treat as a programmer error.
  void* take(uint64_t bytes);
  template <typename T>
  T* take_array(uint64_t n) {
    return static_cast<T*>(take(n * sizeof(T)));
  }
  void reset() { used_ = 0; }
  uint64_t used() const { return used_; }
  uint64_t high_water() const { return high_; }
  uint64_t capacity() const { return buf_.size(); }

 private:
  Buffer buf_;
  uint64_t used_ = 0;
  uint64_t high_ = 0;
};

}  // namespace snug::memory
