// The ledger: every large allocation is charged to a named category, so snug
// can say where every byte went (--memory-report) and compare it with the plan.
// Thread-safe; charging is a couple of atomic adds.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string_view>

namespace snug::memory {

enum class Category : int {
  kWeightsMapped = 0,  // tensor data read in place from the mapped file (page cache, shareable)
  kWeightsResident,    // weights copied, repacked or dequantized into private memory
  kKvCache,            // paged KV blocks
  kScratch,            // per-step activations and work buffers
  kTokenizer,          // vocabulary, merges, lookup tables
  kOther,              // metadata, bookkeeping
  kCount,
};
std::string_view category_name(Category c);

class Ledger {
 public:
  void charge(Category c, uint64_t bytes);
  void release(Category c, uint64_t bytes);
  uint64_t current(Category c) const { return cur_[idx(c)].load(std::memory_order_relaxed); }
  uint64_t peak(Category c) const { return peak_[idx(c)].load(std::memory_order_relaxed); }
  // Sum over categories; with_mapped=false leaves out kWeightsMapped (shared pages).
  uint64_t total(bool with_mapped = true) const;

 private:
  static size_t idx(Category c) { return static_cast<size_t>(c); }
  std::array<std::atomic<uint64_t>, static_cast<size_t>(Category::kCount)> cur_{};
  std::array<std::atomic<uint64_t>, static_cast<size_t>(Category::kCount)> peak_{};
};

// RAII charge: releases what it charged when destroyed. Movable, not copyable.
class Charge {
 public:
  Charge() = default;
  Charge(Ledger* ledger, Category c, uint64_t bytes);
  Charge(Charge&& o) noexcept;
  Charge& operator=(Charge&& o) noexcept;
  Charge(const Charge&) = delete;
  Charge& operator=(const Charge&) = delete;
  ~Charge() { reset(); }
  void reset();
  uint64_t bytes() const { return bytes_; }

 private:
  Ledger* ledger_ = nullptr;
  Category category_ = Category::kOther;
  uint64_t bytes_ = 0;
};

}  // namespace snug::memory
