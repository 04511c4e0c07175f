#include "memory/buffer.h"

#include <sys/mman.h>

#include <utility>

#include "base/bytes.h"

namespace snug::memory {

Result<Buffer> Buffer::allocate(uint64_t bytes, Ledger* ledger, Category category) {
  Buffer b;
  if (bytes == 0) return b;
  const uint64_t page = 4096;
  uint64_t mapped = (bytes + page - 1) / page * page;
  void* p = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return make_error("cannot allocate ", format_bytes(bytes), " for ", category_name(category));
  b.data_ = static_cast<uint8_t*>(p);
  b.size_ = bytes;
  b.mapped_ = mapped;
  b.charge_ = Charge(ledger, category, bytes);
  return b;
}

Buffer::Buffer(Buffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      mapped_(std::exchange(o.mapped_, 0)),
      charge_(std::move(o.charge_)) {}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    if (data_) ::munmap(data_, mapped_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    mapped_ = std::exchange(o.mapped_, 0);
    charge_ = std::move(o.charge_);
  }
  return *this;
}

Buffer::~Buffer() {
  if (data_) ::munmap(data_, mapped_);
}

void* Arena::take(uint64_t bytes) {
  uint64_t rounded = (bytes + 63) / 64 * 64;
  if (rounded > buf_.size() - used_) return nullptr;
  void* p = buf_.data() + used_;
  used_ += rounded;
  if (used_ > high_) high_ = used_;
  return p;
}

}  // namespace snug::memory
