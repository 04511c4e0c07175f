#include "memory/ledger.h"

#include <utility>

namespace snug::memory {

std::string_view category_name(Category c) {
  switch (c) {
    case Category::kWeightsMapped:
      return "weights (mapped)";
    case Category::kWeightsResident:
      return "weights (resident copies)";
    case Category::kKvCache:
      return "kv cache";
    case Category::kScratch:
      return "scratch";
    case Category::kTokenizer:
      return "tokenizer";
    case Category::kOther:
      return "other";
    default:
      return "?";
  }
}

void Ledger::charge(Category c, uint64_t bytes) {
  uint64_t now = cur_[idx(c)].fetch_add(bytes, std::memory_order_relaxed) + bytes;
  uint64_t p = peak_[idx(c)].load(std::memory_order_relaxed);
  while (now > p && !peak_[idx(c)].compare_exchange_weak(p, now, std::memory_order_relaxed)) {
  }
}

void Ledger::release(Category c, uint64_t bytes) {
  cur_[idx(c)].fetch_sub(bytes, std::memory_order_relaxed);
}

uint64_t Ledger::total(bool with_mapped) const {
  uint64_t t = 0;
  for (int k = 0; k < static_cast<int>(Category::kCount); ++k) {
    if (!with_mapped && k == static_cast<int>(Category::kWeightsMapped)) continue;
    t += cur_[static_cast<size_t>(k)].load(std::memory_order_relaxed);
  }
  return t;
}

Charge::Charge(Ledger* ledger, Category c, uint64_t bytes)
    : ledger_(ledger), category_(c), bytes_(bytes) {
  if (ledger_) ledger_->charge(c, bytes);
}

Charge::Charge(Charge&& o) noexcept
    : ledger_(std::exchange(o.ledger_, nullptr)),
      category_(o.category_),
      bytes_(std::exchange(o.bytes_, 0)) {}

Charge& Charge::operator=(Charge&& o) noexcept {
  if (this != &o) {
    reset();
    ledger_ = std::exchange(o.ledger_, nullptr);
    category_ = o.category_;
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

void Charge::reset() {
  if (ledger_ && bytes_) ledger_->release(category_, bytes_);
  ledger_ = nullptr;
  bytes_ = 0;
}

}  // namespace snug::memory
