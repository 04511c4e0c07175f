#include "memory/buffer.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstdint>
#include <utility>

#include "base/bytes.h"

namespace snug::memory {

namespace {
constexpr uint64_t kHugePage = uint64_t{2} << 20;  // x86-64's transparent huge page
}  // namespace

Result<Buffer> Buffer::allocate(uint64_t bytes, Ledger* ledger, Category category) {
  Buffer b;
  if (bytes == 0) return b;
  const uint64_t page = 4096;
  uint64_t mapped = (bytes + page - 1) / page * page;
  // A buffer of several huge pages starts on a huge-page boundary, so that
  // advise_huge_pages can cover all of it: map one huge page more and unmap
  // the unaligned head and tail (address space only; nothing was touched).
  const uint64_t slack = mapped >= 2 * kHugePage ? kHugePage : 0;
  void* p =
      ::mmap(nullptr, mapped + slack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return make_error("cannot allocate ", format_bytes(bytes), " for ", category_name(category));
  if (slack > 0) {
    auto* raw = static_cast<uint8_t*>(p);
    const uint64_t head = (kHugePage - reinterpret_cast<uintptr_t>(raw) % kHugePage) % kHugePage;
    if (head > 0) ::munmap(raw, head);
    ::munmap(raw + head + mapped, slack - head);  // head < slack: a tail is always left
    p = raw + head;
  }
  b.data_ = static_cast<uint8_t*>(p);
  b.size_ = bytes;
  b.mapped_ = mapped;
  b.charge_ = Charge(ledger, category, bytes);
  return b;
}

void Buffer::advise_huge_pages() const {
  if (mapped_ > 0) ::madvise(data_, mapped_, MADV_HUGEPAGE);
}

Status Buffer::commit() {
  if (size_ == 0) return ok_status();
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif
  if (::madvise(data_, mapped_, MADV_POPULATE_WRITE) == 0) return ok_status();
  if (errno == ENOMEM || errno == EFAULT)
    return make_error("cannot commit ", format_bytes(size_), ": out of memory");
  // Older kernels: one write per page (the buffer is zero, so writing zero changes nothing).
  const uint64_t page = 4096;
  for (uint64_t off = 0; off < mapped_; off += page) {
    *reinterpret_cast<volatile uint8_t*>(data_ + off) = 0;
  }
  return ok_status();
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
