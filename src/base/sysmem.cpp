#include "base/sysmem.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace snug {
namespace {

std::optional<std::string> read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Value of "Key:   123 kB" lines in /proc files, in bytes.
std::optional<uint64_t> kb_field(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, key.size(), key) == 0 && line.size() > key.size() &&
        line[key.size()] == ':') {
      std::istringstream v(line.substr(key.size() + 1));
      uint64_t kb = 0;
      if (v >> kb) return kb * 1024;
    }
  }
  return std::nullopt;
}

// A limit file's content: a number, or "max" (no limit).
std::optional<uint64_t> parse_limit(const std::optional<std::string>& text) {
  if (!text) return std::nullopt;
  std::string s = *text;
  s.erase(std::remove_if(s.begin(), s.end(), [](char c) { return c == '\n' || c == ' '; }),
          s.end());
  if (s.empty() || s == "max") return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  // cgroup v1 writes "no limit" as a huge page-rounded number.
  if (v >= (uint64_t{1} << 62)) return std::nullopt;
  return v;
}

std::optional<uint64_t> stat_field(const std::optional<std::string>& text, const std::string& key) {
  if (!text) return std::nullopt;
  std::istringstream in(*text);
  std::string k;
  uint64_t v;
  while (in >> k >> v) {
    if (k == key) return v;
  }
  return std::nullopt;
}

void tighten(std::optional<uint64_t>& limit, std::optional<uint64_t> candidate) {
  if (candidate && (!limit || *candidate < *limit)) limit = candidate;
}

}  // namespace

uint64_t MemoryLimits::available() const {
  uint64_t avail = physical_available;
  if (cgroup_limit) {
    uint64_t used = cgroup_usage.value_or(0);
    used = used > cgroup_reclaimable ? used - cgroup_reclaimable : 0;
    uint64_t room = *cgroup_limit > used ? *cgroup_limit - used : 0;
    avail = std::min(avail, room);
  }
  return avail;
}

Result<MemoryLimits> probe_memory_limits(const std::string& root_in) {
  std::string root = root_in;
  if (!root.empty() && root.back() == '/') root.pop_back();
  MemoryLimits m;
  auto meminfo = read_text(root + "/proc/meminfo");
  if (!meminfo) return make_error("cannot read ", root, "/proc/meminfo");
  m.physical_total = kb_field(*meminfo, "MemTotal").value_or(0);
  m.physical_available = kb_field(*meminfo, "MemAvailable").value_or(m.physical_total);
  if (m.physical_total == 0) return make_error(root, "/proc/meminfo has no MemTotal");

  auto cg = read_text(root + "/proc/self/cgroup");
  if (!cg) return m;
  std::istringstream in(*cg);
  std::string line;
  std::string v2_path;
  std::string v1_path;
  bool have_v2 = false, have_v1 = false;
  while (std::getline(in, line)) {
    // "hierarchy-id:controllers:path"
    auto a = line.find(':');
    auto b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    std::string id = line.substr(0, a), ctl = line.substr(a + 1, b - a - 1),
                path = line.substr(b + 1);
    if (id == "0" && ctl.empty()) {
      have_v2 = true;
      v2_path = path;
    }
    std::istringstream cs(ctl);
    std::string c;
    while (std::getline(cs, c, ',')) {
      if (c == "memory") {
        have_v1 = true;
        v1_path = path;
      }
    }
  }
  const std::string base = root + "/sys/fs/cgroup";
  if (have_v1) {
    std::string dir = base + "/memory" + (v1_path == "/" ? "" : v1_path);
    if (read_text(dir + "/memory.limit_in_bytes") || read_text(dir + "/memory.usage_in_bytes")) {
      m.cgroup_version = 1;
      // Walk up: the tightest limit on the path applies.
      std::string p = v1_path;
      for (;;) {
        std::string d = base + "/memory" + (p == "/" ? "" : p);
        tighten(m.cgroup_limit, parse_limit(read_text(d + "/memory.limit_in_bytes")));
        if (p == "/" || p.empty()) break;
        auto slash = p.find_last_of('/');
        p = slash == 0 ? "/" : p.substr(0, slash);
      }
      m.cgroup_usage = parse_limit(read_text(dir + "/memory.usage_in_bytes"));
      auto stat = read_text(dir + "/memory.stat");
      m.cgroup_reclaimable = stat_field(stat, "total_inactive_file")
                                 .value_or(stat_field(stat, "inactive_file").value_or(0));
      return m;
    }
  }
  if (have_v2) {
    std::string dir = base + (v2_path == "/" ? "" : v2_path);
    m.cgroup_version = 2;
    std::string p = v2_path;
    for (;;) {
      std::string d = base + (p == "/" ? "" : p);
      tighten(m.cgroup_limit, parse_limit(read_text(d + "/memory.max")));
      if (p == "/" || p.empty()) break;
      auto slash = p.find_last_of('/');
      p = slash == 0 ? "/" : p.substr(0, slash);
    }
    auto cur = read_text(dir + "/memory.current");
    if (cur) m.cgroup_usage = parse_limit(cur);
    m.cgroup_reclaimable = stat_field(read_text(dir + "/memory.stat"), "inactive_file").value_or(0);
  }
  return m;
}

ProcessMemory probe_process_memory() {
  ProcessMemory pm;
  auto status = read_text("/proc/self/status");
  if (!status) return pm;
  pm.rss = kb_field(*status, "VmRSS").value_or(0);
  pm.peak_rss = kb_field(*status, "VmHWM").value_or(0);
  return pm;
}

uint64_t pmd_mapped_bytes_in(std::string_view smaps, uintptr_t begin, uintptr_t end) {
  uint64_t total = 0;
  bool inside = false;
  std::string section;  // the fields of the mapping last named
  const auto close = [&] {
    if (inside) total += kb_field(section, "FilePmdMapped").value_or(0);
    section.clear();
  };
  std::istringstream in{std::string(smaps)};
  std::string line;
  while (std::getline(in, line)) {
    // A mapping's first line: "start-end perms offset dev inode [path]", hex.
    char* stop = nullptr;
    const unsigned long long start = std::strtoull(line.c_str(), &stop, 16);
    if (stop != line.c_str() && *stop == '-') {
      close();
      inside = start >= begin && start < end;
    } else {
      section.append(line).push_back('\n');
    }
  }
  close();
  return total;
}

std::optional<uint64_t> pmd_mapped_bytes(const void* data, uint64_t bytes) {
  const std::optional<std::string> smaps = read_text("/proc/self/smaps");
  if (!smaps) return std::nullopt;
  const auto at = reinterpret_cast<uintptr_t>(data);
  return pmd_mapped_bytes_in(*smaps, at, at + bytes);
}

void release_free_heap() {
#if defined(__GLIBC__)
  ::malloc_trim(0);
#endif
}

}  // namespace snug
