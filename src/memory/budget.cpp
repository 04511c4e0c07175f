#include "memory/budget.h"

#include <utility>

#include "base/bytes.h"

namespace snug::memory {

Reservation::Reservation(Reservation&& o) noexcept
    : budget_(std::exchange(o.budget_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}

Reservation& Reservation::operator=(Reservation&& o) noexcept {
  if (this != &o) {
    release();
    budget_ = std::exchange(o.budget_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

void Reservation::release() {
  if (budget_) budget_->give_back(bytes_);
  budget_ = nullptr;
  bytes_ = 0;
}

Result<Reservation> Budget::reserve(uint64_t bytes, const std::string& what) {
  std::lock_guard<std::mutex> lock(mu_);
  if (bytes > limit_ - used_) {
    return make_error(what, " needs ", format_bytes(bytes), " but only ",
                      format_bytes(limit_ - used_), " of the ", format_bytes(limit_),
                      " budget is left");
  }
  used_ += bytes;
  return Reservation(this, bytes);
}

uint64_t Budget::used() const {
  std::lock_guard<std::mutex> lock(mu_);
  return used_;
}

uint64_t Budget::available() const {
  std::lock_guard<std::mutex> lock(mu_);
  return limit_ - used_;
}

void Budget::give_back(uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  used_ -= bytes;
}

}  // namespace snug::memory
