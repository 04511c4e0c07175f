// A read-only memory map of a whole file. Pages stay in the kernel's page
// cache and are shared between processes that map the same file, so weights
// read in place cost no private memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "base/result.h"

namespace snug {

// The pages of `page` bytes lying wholly inside [offset, offset + length):
// [begin, end), empty (begin == end) where there is none.
struct PageSpan {
  uint64_t begin = 0, end = 0;
};
PageSpan whole_pages(uint64_t offset, uint64_t length, uint64_t page);

// Maps every page that [data, data + bytes) touches into this process
// (MADV_POPULATE_READ; a read of each page on a kernel before 5.14, or one
// that refuses). The range must lie inside readable mappings.
void populate_read(const void* data, uint64_t bytes);

// Which file a mapping holds, as fstat saw it when it was opened: the same
// values name the same unchanged file (a file replaced or rewritten in place
// gets a new inode or modification time).
struct FileIdentity {
  uint64_t device = 0, inode = 0, size = 0;
  int64_t mtime_ns = 0;
  bool operator==(const FileIdentity&) const = default;
};

class MappedFile {
 public:
  // Fails with a one-line error for a missing file, a directory, an unreadable
  // or empty file.
  static Result<MappedFile> open(const std::string& path);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  std::span<const uint8_t> bytes() const { return {data_, static_cast<size_t>(size_)}; }
  const std::string& path() const { return path_; }
  const FileIdentity& identity() const { return identity_; }

  // Asks the kernel to read [offset, offset + length) ahead (MADV_WILLNEED).
  void advise_willneed(uint64_t offset, uint64_t length) const;
  // Reads the whole mapping in and maps every page into this process
  // (MADV_POPULATE_READ, or a read of each page on kernels before 5.14), so
  // that the first pass over it takes no page faults. The pages are the page
  // cache's, shared with every process mapping the file.
  void populate() const;
  // Unmaps this process's pages lying wholly inside [offset, offset + length)
  // (whole_pages; MADV_DONTNEED): its RSS drops, the page cache keeps them,
  // and a later read maps them again from the file.
  void release(uint64_t offset, uint64_t length) const;
  // Asks that the file's pages be mapped 4 KiB at a time (MADV_NOHUGEPAGE):
  // where the page cache holds the file in large folios, one read would
  // otherwise map a whole 2 MiB of it again, released ranges included. The
  // ranged form covers the pages of [offset, offset + length) only.
  void advise_small_pages() const;
  void advise_small_pages(uint64_t offset, uint64_t length) const;
  // Asks for the pages of [offset, offset + length) (clamped to the mapping,
  // as the ranged advice above is) in 2 MiB folios, each
  // mapped by one page-table entry where the kernel makes them
  // (MADV_HUGEPAGE): a file read first through such a range enters the page
  // cache in 2 MiB folios, and a pass over it takes a TLB miss per 2 MiB, not
  // per 4 KiB. A file the page cache already holds in smaller folios keeps
  // them (without CONFIG_READ_ONLY_THP_FOR_FS nothing collapses them).
  void advise_huge_pages(uint64_t offset, uint64_t length) const;

 private:
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  std::string path_;
  FileIdentity identity_;
};

}  // namespace snug
