// A memory budget: reserve-or-fail, never over-commit. A reservation is taken
// before memory is allocated; if it does not fit, the caller gets an Error
// saying how much was asked, how much is left and what already holds it.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>

#include "base/result.h"

namespace snug::memory {

class Budget;

// RAII reservation against a Budget; returns its bytes when destroyed.
class Reservation {
 public:
  Reservation() = default;
  Reservation(Reservation&& o) noexcept;
  Reservation& operator=(Reservation&& o) noexcept;
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;
  ~Reservation() { release(); }
  void release();
  uint64_t bytes() const { return bytes_; }

 private:
  friend class Budget;
  Reservation(Budget* b, uint64_t bytes) : budget_(b), bytes_(bytes) {}
  Budget* budget_ = nullptr;
  uint64_t bytes_ = 0;
};

class Budget {
 public:
  explicit Budget(uint64_t limit_bytes) : limit_(limit_bytes) {}
  // Takes `bytes` for `what` (e.g. "kv cache") or fails without taking anything.
  Result<Reservation> reserve(uint64_t bytes, const std::string& what);
  uint64_t limit() const { return limit_; }
  uint64_t used() const;
  uint64_t available() const;

 private:
  friend class Reservation;
  void give_back(uint64_t bytes);
  uint64_t limit_;
  mutable std::mutex mu_;
  uint64_t used_ = 0;
};

}  // namespace snug::memory
