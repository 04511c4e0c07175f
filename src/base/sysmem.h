// What memory this process may really use: physical RAM, the cgroup (v2 or
// v1) limit of the process and its ancestors, reclaimable page cache, and this
// process's resident set. The root of /proc and /sys is a parameter so tests
// can point it at fixture trees.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"

namespace snug {

struct MemoryLimits {
  uint64_t physical_total = 0;           // MemTotal, bytes
  uint64_t physical_available = 0;       // MemAvailable, bytes
  std::optional<uint64_t> cgroup_limit;  // tightest memory.max / limit_in_bytes on the path
  std::optional<uint64_t> cgroup_usage;  // memory.current / usage_in_bytes of the leaf
  uint64_t cgroup_reclaimable = 0;       // inactive_file of the leaf cgroup, bytes
  int cgroup_version = 0;                // 0: none found, 1 or 2
  // What may be taken now: min(physical available, cgroup limit - usage + reclaimable).
  uint64_t available() const;
};

// Reads limits below `root` (normally "/"): root/proc/meminfo, root/proc/self/cgroup,
// root/sys/fs/cgroup/....
Result<MemoryLimits> probe_memory_limits(const std::string& root = "/");

struct ProcessMemory {
  uint64_t rss = 0;       // VmRSS, bytes
  uint64_t peak_rss = 0;  // VmHWM, bytes
};

// This process's resident set from /proc/self/status (zeros if unreadable).
ProcessMemory probe_process_memory();

// The bytes of [data, data + bytes) that this process maps with 2 MiB
// page-table entries over a file's large folios: the FilePmdMapped of every
// mapping /proc/self/smaps lists as starting inside the range (madvise on
// part of a mapping splits it). nullopt where smaps cannot be read.
std::optional<uint64_t> pmd_mapped_bytes(const void* data, uint64_t bytes);
// The same sum over the text of an smaps file, for mappings starting in
// [begin, end).
uint64_t pmd_mapped_bytes_in(std::string_view smaps, uintptr_t begin, uintptr_t end);

// Returns the heap's free pages to the system (glibc keeps freed memory for
// reuse): after a large owner of many small allocations goes away, such as an
// unloaded model's tokenizer, so that what the plan no longer counts is not
// resident either. A no-op elsewhere.
void release_free_heap();

}  // namespace snug
