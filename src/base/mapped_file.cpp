#include "base/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

namespace snug {

Result<MappedFile> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return make_error("cannot open '", path, "': ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    return make_error("cannot stat '", path, "': ", std::strerror(e));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    return make_error("'", path, "' is a directory, not a model file");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return make_error("'", path, "' is not a regular file");
  }
  if (st.st_size == 0) {
    ::close(fd);
    return make_error("'", path, "' is empty");
  }
  void* p = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_SHARED, fd, 0);
  int e = errno;
  ::close(fd);
  if (p == MAP_FAILED) return make_error("cannot map '", path, "': ", std::strerror(e));
  MappedFile f;
  f.data_ = static_cast<const uint8_t*>(p);
  f.size_ = static_cast<uint64_t>(st.st_size);
  f.path_ = path;
  f.identity_ = {static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino),
                 static_cast<uint64_t>(st.st_size),
                 static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
  return f;
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      path_(std::move(other.path_)),
      identity_(other.identity_) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    path_ = std::move(other.path_);
    identity_ = other.identity_;
  }
  return *this;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

namespace {

// madvise over the pages holding [offset, offset + length) of a mapping of
// `size` bytes at `data`.
void advise_pages(const uint8_t* data, uint64_t size, uint64_t offset, uint64_t length,
                  int advice) {
  if (!data || offset >= size) return;
  const auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t begin = offset / page * page, end = offset + std::min(length, size - offset);
  ::madvise(const_cast<uint8_t*>(data) + begin, end - begin, advice);
}

}  // namespace

void MappedFile::advise_willneed(uint64_t offset, uint64_t length) const {
  advise_pages(data_, size_, offset, length, MADV_WILLNEED);
}

PageSpan whole_pages(uint64_t offset, uint64_t length, uint64_t page) {
  const uint64_t begin = (offset + page - 1) / page * page, end = (offset + length) / page * page;
  return begin < end ? PageSpan{begin, end} : PageSpan{begin, begin};
}

void MappedFile::release(uint64_t offset, uint64_t length) const {
  if (!data_ || offset >= size_) return;
  const PageSpan s = whole_pages(offset, std::min(size_ - offset, length),
                                 static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)));
  if (s.begin < s.end)
    ::madvise(const_cast<uint8_t*>(data_) + s.begin, s.end - s.begin, MADV_DONTNEED);
}

void MappedFile::advise_small_pages() const {
  advise_small_pages(0, size_);
}

void MappedFile::advise_small_pages(uint64_t offset, uint64_t length) const {
  advise_pages(data_, size_, offset, length, MADV_NOHUGEPAGE);
}

void MappedFile::advise_huge_pages(uint64_t offset, uint64_t length) const {
  advise_pages(data_, size_, offset, length, MADV_HUGEPAGE);
}

void MappedFile::populate() const {
  if (data_) populate_read(data_, size_);
}

void populate_read(const void* data, uint64_t bytes) {
  if (bytes == 0) return;
#ifndef MADV_POPULATE_READ
  constexpr int MADV_POPULATE_READ = 22;  // Linux 5.14; older headers lack it
#endif
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto at = reinterpret_cast<uintptr_t>(data);
  const uintptr_t begin = at / page * page, end = (at + bytes + page - 1) / page * page;
  // NOLINTNEXTLINE(performance-no-int-to-ptr): the page holding `data`
  auto* first = reinterpret_cast<char*>(begin);
  if (::madvise(first, end - begin, MADV_POPULATE_READ) == 0) return;
  uint8_t sum = 0;
  for (uintptr_t off = 0; off < end - begin; off += page)
    sum ^= *reinterpret_cast<const volatile uint8_t*>(first + off);
  (void)sum;
}

}  // namespace snug
