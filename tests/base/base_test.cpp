#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "base/bytes.h"
#include "base/mapped_file.h"
#include "base/process_image.h"
#include "base/sysmem.h"
#include "base/thread_pool.h"

namespace snug {
namespace {

TEST(Bytes, ParsesUnitsUsersWrite) {
  EXPECT_EQ(*parse_bytes("512MiB"), 512 * kMiB);
  EXPECT_EQ(*parse_bytes("1.5GiB"), 3 * kGiB / 2);
  EXPECT_EQ(*parse_bytes("2G"), 2 * kGiB);
  EXPECT_EQ(*parse_bytes("2GB"), 2000000000u);
  EXPECT_EQ(*parse_bytes("1048576"), 1048576u);
  EXPECT_EQ(*parse_bytes(" 64 kib "), 64 * kKiB);
}

TEST(Bytes, RejectsMalformedBudgets) {
  for (const char* bad :
       {"", "12XB", "-1G", "0", "0GiB", "G", "1.2.3G", "abc", "99999999999999999999T"}) {
    auto r = parse_bytes(bad);
    EXPECT_FALSE(r.ok()) << bad;
  }
  EXPECT_NE(parse_bytes("12XB").error().message.find("unknown unit"), std::string::npos);
}

TEST(Bytes, Formats) {
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(3 * kMiB / 2), "1.5 MiB");
  EXPECT_EQ(format_bytes(2 * kGiB), "2.00 GiB");
}

TEST(MappedFile, ErrorsNameTheProblem) {
  EXPECT_NE(MappedFile::open("/nonexistent/x.gguf").error().message.find("cannot open"),
            std::string::npos);
  EXPECT_NE(MappedFile::open("/tmp").error().message.find("is a directory"), std::string::npos);
  auto p = std::filesystem::temp_directory_path() / "snug_empty_file";
  { std::ofstream(p.string()); }
  EXPECT_NE(MappedFile::open(p.string()).error().message.find("is empty"), std::string::npos);
  std::filesystem::remove(p);
}

// /proc/self/smaps as Linux 6 writes it: a mapping split in three by
// madvise, one mapping before it and one after, and fields in any order.
TEST(Sysmem, CountsThe2MiBPagesOfTheMappingsInsideTheRange) {
  const std::string smaps =
      "7f0000000000-7f0000200000 r--s 00000000 fd:01 12 /m/other.gguf\n"
      "Size:               2048 kB\n"
      "FilePmdMapped:      2048 kB\n"
      "7f0000400000-7f0000600000 r--s 00000000 fd:01 34 /m/model.gguf\n"
      "Size:               2048 kB\n"
      "Rss:                 100 kB\n"
      "FilePmdMapped:         0 kB\n"
      "VmFlags: rd mr me ms\n"
      "7f0000600000-7f0004600000 r--s 00200000 fd:01 34 /m/model.gguf\n"
      "FilePmdMapped:     61440 kB\n"
      "Size:              65536 kB\n"
      "VmFlags: rd mr me ms hg\n"
      "7f0004600000-7f0004700000 r--s 04200000 fd:01 34 /m/model.gguf\n"
      "FilePmdMapped:      2048 kB\n"
      "7fff00000000-7fff00021000 rw-p 00000000 00:00 0                          [stack]\n"
      "FilePmdMapped:      4096 kB\n";
  EXPECT_EQ(pmd_mapped_bytes_in(smaps, 0x7f0000400000, 0x7f0004700000), uint64_t{63488} << 10);
  EXPECT_EQ(pmd_mapped_bytes_in(smaps, 0x7f0000400000, 0x7f0004600000), uint64_t{61440} << 10);
  EXPECT_EQ(pmd_mapped_bytes_in(smaps, 0x7e0000000000, 0x7e0000001000), 0u);
  EXPECT_EQ(pmd_mapped_bytes_in("", 0, ~uintptr_t{0}), 0u);
  EXPECT_EQ(pmd_mapped_bytes_in("garbage\nFilePmdMapped: 12 kB\n-\n", 0, ~uintptr_t{0}), 0u);
  // This process's own: a file mapped and read, never more than its size.
  auto p = std::filesystem::temp_directory_path() / "snug_pmd_file";
  {
    std::ofstream out(p.string(), std::ios::binary);
    const std::string block(1 << 20, 'x');
    for (int i = 0; i < 4; ++i) out << block;
  }
  auto m = MappedFile::open(p.string());
  ASSERT_TRUE(m.ok());
  m->populate();
  const std::optional<uint64_t> huge = pmd_mapped_bytes(m->data(), m->size());
  ASSERT_TRUE(huge.has_value());
  EXPECT_LE(*huge, m->size());
  std::filesystem::remove(p);
}

TEST(ThreadPool, EveryThreadRunsEachJobOnce) {
  for (int n : {1, 2, 3, 4}) {
    ThreadPool pool(n);
    for (int round = 0; round < 200; ++round) {
      std::atomic<int> calls{0}, mask{0};
      pool.run([&](int tid, int nth) {
        EXPECT_EQ(nth, n);
        calls.fetch_add(1);
        mask.fetch_or(1 << tid);
      });
      EXPECT_EQ(calls.load(), n);
      EXPECT_EQ(mask.load(), (1 << n) - 1);
    }
  }
}

TEST(ThreadPool, ChunksCoverTheRangeExactly) {
  for (int64_t n : {0, 1, 7, 64, 1000, 1001}) {
    for (int nth : {1, 2, 3, 5}) {
      std::vector<int> hits(static_cast<size_t>(n), 0);
      for (int tid = 0; tid < nth; ++tid) {
        for_each_chunk(n, 8, tid, nth, [&](int64_t b, int64_t e) {
          EXPECT_EQ(b % 8, 0);
          for (int64_t i = b; i < e; ++i) ++hits[static_cast<size_t>(i)];
        });
      }
      for (int h : hits) EXPECT_EQ(h, 1);
    }
  }
}

// Every element is claimed exactly once, in chunk-aligned pieces, whichever
// thread is faster; each thread's own claims run front to back over one
// contiguous share (one stream), 1/parts of what is left at a time; what
// another thread takes comes off the back, a chunk at a time.
TEST(ThreadPool, ShareQueueHandsOutEachElementOnceOwnersFrontToBack) {
  for (int64_t n : {0, 1, 15, 16, 17, 1000, 49152}) {
    for (int nth : {1, 2, 3}) {
      for (int64_t chunk : {1, 16, 64}) {
        for (int64_t parts : {1, 2, 4}) {
          ThreadPool pool(nth);
          std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
          std::vector<std::vector<std::pair<int64_t, int64_t>>> claims(static_cast<size_t>(nth));
          ShareQueue queue(n, chunk, nth, parts);
          pool.run([&](int tid, int) {
            queue.drain(tid, [&](int64_t b, int64_t e) {
              EXPECT_EQ(b % chunk, 0);
              EXPECT_LT(b, e);
              EXPECT_LE(e, n);
              EXPECT_TRUE((e - b) % chunk == 0 || e == n);
              for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
              claims[static_cast<size_t>(tid)].emplace_back(b, e);
            });
          });
          for (auto& h : hits) EXPECT_EQ(h.load(), 1);
          const int64_t units = (n + chunk - 1) / chunk;
          for (int t = 0; t < nth; ++t) {
            const auto& mine = claims[static_cast<size_t>(t)];
            const int64_t start = units * t / nth * chunk;
            const int64_t share_end = std::min(units * (t + 1) / nth * chunk, n);
            if (mine.empty() || start >= share_end) continue;
            if (nth == 1) {  // alone: 1/parts of its share first (at least a chunk)
              EXPECT_EQ(mine.front().first, 0);
              EXPECT_EQ(mine.front().second,
                        std::min(std::max<int64_t>(units / parts, 1) * chunk, n));
            }
            // Its claims inside its share start there and follow one another
            // (another thread may have taken any of it from the back first).
            int64_t at = start;
            for (const auto& [b, e] : mine) {
              if (b < start || b >= share_end) {
                EXPECT_EQ(e - b <= chunk || e == n, true) << "a taken claim is one chunk";
                continue;
              }
              EXPECT_EQ(b, at) << "n=" << n << " thread " << t;
              at = e;
            }
          }
        }
      }
    }
  }
}

// A thread that sleeps leaves the rest of its share to the others: they take
// it from the back while it works on its first claim.
TEST(ThreadPool, ShareQueueSlowThreadLeavesItsShareToTheOthers) {
  for (int nth : {2, 3}) {
    const int64_t n = 1000, chunk = 16;
    ThreadPool pool(nth);
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    std::atomic<int> slow_claims{0};
    ShareQueue queue(n, chunk, nth, 2);
    pool.run([&](int tid, int) {
      queue.drain(tid, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
        if (tid == 1) slow_claims.fetch_add(1);
        std::this_thread::sleep_for(std::chrono::milliseconds(tid == 1 ? 100 : 1));
      });
    });
    for (auto& h : hits) EXPECT_EQ(h.load(), 1);
    // Its first claim is half its share; the others take the rest meanwhile
    // (a chunk a millisecond).
    EXPECT_LE(slow_claims.load(), 2) << nth << " threads";
  }
}

// A fake /proc and /sys tree for the memory probe.
class FixtureTree {
 public:
  FixtureTree()
      : root_(std::filesystem::temp_directory_path() /
              ("snug_sysmem_" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(root_);
    write("proc/meminfo",
          "MemTotal:       16384000 kB\nMemFree: 1000 kB\nMemAvailable:   8192000 kB\n");
  }
  ~FixtureTree() { std::filesystem::remove_all(root_); }
  void write(const std::string& rel, const std::string& text) {
    auto p = root_ / rel;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p.string()) << text;
  }
  std::string root() const { return root_.string(); }

 private:
  std::filesystem::path root_;
};

TEST(Sysmem, NoCgroup) {
  FixtureTree t;
  auto m = probe_memory_limits(t.root());
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(m->physical_total, 16384000ull * 1024);
  EXPECT_EQ(m->available(), 8192000ull * 1024);
  EXPECT_EQ(m->cgroup_version, 0);
}

TEST(Sysmem, CgroupV2NestedLimitsAndPageCache) {
  FixtureTree t;
  t.write("proc/self/cgroup", "0::/kubepods/pod1/ctr\n");
  t.write("sys/fs/cgroup/kubepods/memory.max", "max\n");
  t.write("sys/fs/cgroup/kubepods/pod1/memory.max", "2147483648\n");
  t.write("sys/fs/cgroup/kubepods/pod1/ctr/memory.max", "4294967296\n");
  t.write("sys/fs/cgroup/kubepods/pod1/ctr/memory.current", "1073741824\n");
  t.write("sys/fs/cgroup/kubepods/pod1/ctr/memory.stat",
          "anon 1000\ninactive_file 536870912\nactive_file 5\n");
  auto m = probe_memory_limits(t.root());
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->cgroup_version, 2);
  EXPECT_EQ(*m->cgroup_limit, 2147483648ull);  // the parent's limit is tighter
  // 2 GiB limit - (1 GiB used - 0.5 GiB reclaimable page cache) = 1.5 GiB
  EXPECT_EQ(m->available(), 1610612736ull);
}

TEST(Sysmem, CgroupV2Unlimited) {
  FixtureTree t;
  t.write("proc/self/cgroup", "0::/\n");
  t.write("sys/fs/cgroup/memory.max", "max\n");
  auto m = probe_memory_limits(t.root());
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(m->cgroup_limit.has_value());
  EXPECT_EQ(m->available(), 8192000ull * 1024);
}

TEST(Sysmem, CgroupV1) {
  FixtureTree t;
  t.write("proc/self/cgroup", "12:cpu,cpuacct:/x\n9:memory:/docker/abc\n");
  t.write("sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes", "1073741824\n");
  t.write("sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes", "104857600\n");
  t.write("sys/fs/cgroup/memory/docker/abc/memory.stat", "cache 5\ntotal_inactive_file 52428800\n");
  t.write("sys/fs/cgroup/memory/docker/memory.limit_in_bytes", "9223372036854771712\n");
  auto m = probe_memory_limits(t.root());
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->cgroup_version, 1);
  EXPECT_EQ(*m->cgroup_limit, 1073741824ull);
  EXPECT_EQ(m->available(), 1073741824ull - (104857600ull - 52428800ull));
}

TEST(Sysmem, CgroupV1NestedParentLimitAndCacheBeyondUsage) {
  FixtureTree t;
  t.write("proc/self/cgroup", "4:memory:/pod/ctr\n");
  t.write("sys/fs/cgroup/memory/pod/memory.limit_in_bytes", "536870912\n");
  t.write("sys/fs/cgroup/memory/pod/ctr/memory.limit_in_bytes", "9223372036854771712\n");
  t.write("sys/fs/cgroup/memory/pod/ctr/memory.usage_in_bytes", "10485760\n");
  // More inactive page cache than usage (stat and usage are read at different moments).
  t.write("sys/fs/cgroup/memory/pod/ctr/memory.stat", "total_inactive_file 20971520\n");
  auto m = probe_memory_limits(t.root());
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->cgroup_version, 1);
  EXPECT_EQ(*m->cgroup_limit, 536870912ull);  // the parent's, though the leaf says "no limit"
  EXPECT_EQ(m->available(), 536870912ull);    // never more than the limit
}

TEST(Sysmem, CgroupV2MaxEverywhereFallsBackToRam) {
  FixtureTree t;
  t.write("proc/self/cgroup", "0::/a/b\n");
  t.write("sys/fs/cgroup/a/memory.max", "max\n");
  t.write("sys/fs/cgroup/a/b/memory.max", "max\n");
  t.write("sys/fs/cgroup/a/b/memory.current", "1048576\n");
  auto m = probe_memory_limits(t.root());
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->cgroup_version, 2);
  EXPECT_FALSE(m->cgroup_limit.has_value());
  EXPECT_EQ(m->available(), 8192000ull * 1024);
}

TEST(Sysmem, ThisProcess) {
  auto pm = probe_process_memory();
  EXPECT_GT(pm.rss, 0u);
  EXPECT_GE(pm.peak_rss, pm.rss);
  EXPECT_TRUE(probe_memory_limits().ok());
}

TEST(ProcessImage, CountsTheReadableMappingsOfExecutableObjects) {
  // Lines in /proc/PID/maps's format: an executable with a guard gap, a
  // library, a mapped model (no executable mapping), anonymous memory,
  // pseudo-files, and malformed lines.
  const std::string maps =
      "555555554000-555555556000 r--p 00000000 fd:01 100 /usr/bin/snug\n"
      "555555556000-55555555a000 r-xp 00002000 fd:01 100 /usr/bin/snug\n"
      "55555555a000-55555555b000 ---p 00006000 fd:01 100 /usr/bin/snug\n"
      "55555555b000-55555555c000 rw-p 00006000 fd:01 100 /usr/bin/snug\n"
      "55555555c000-55555557d000 rw-p 00000000 00:00 0 [heap]\n"
      "7ffff7000000-7ffff7800000 r--s 00000000 fd:01 200 /models/a model.gguf\n"
      "7ffff7a00000-7ffff7a28000 r--p 00000000 fd:01 300 /usr/lib/libc.so.6\n"
      "7ffff7a28000-7ffff7b00000 r-xp 00028000 fd:01 300 /usr/lib/libc.so.6\n"
      "7ffff7c00000-7ffff7c01000 r-xp 00000000 00:00 0\n"
      "7ffff7fc1000-7ffff7fc3000 r-xp 00000000 00:00 0 [vdso]\n"
      "garbage line\n"
      "7ffff7fd0000-7ffff7fc0000 r-xp 00000000 fd:01 400 /backwards\n"
      "7ffff7fd0000-7ffff7fd1000 r-xp\n";
  const auto ranges = image_ranges(maps);
  uint64_t total = 0;
  for (const auto& r : ranges) total += r.end - r.begin;
  ASSERT_EQ(ranges.size(), 5u);
  EXPECT_EQ(total, 0x2000u + 0x4000u + 0x1000u + 0x28000u + 0xd8000u);
  EXPECT_TRUE(image_ranges("").empty());
}

TEST(ProcessImage, PopulatedImageIsAllResident) {
#ifdef SNUG_SANITIZE
  // Sanitizer builds count a stand-in (process_image.h); the release build checks the rest.
  EXPECT_EQ(process_image_bytes(), kReleaseImageBytes);
  return;
#endif
  populate_process_image();
  const uint64_t bytes = process_image_bytes();
  EXPECT_GT(bytes, 1u << 20);  // at least this test binary and libc
  EXPECT_EQ(bytes, process_image_bytes());
  // Every image mapping's Rss equals its Size in /proc/self/smaps.
  std::ifstream in("/proc/self/smaps");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string smaps = ss.str();
  for (const auto& r : image_ranges(smaps)) {
    char head[64];
    std::snprintf(head, sizeof head, "%lx-%lx ", static_cast<unsigned long>(r.begin),
                  static_cast<unsigned long>(r.end));
    const size_t at = smaps.find(head);
    ASSERT_NE(at, std::string::npos) << head;
    const size_t rss = smaps.find("\nRss:", at);
    ASSERT_NE(rss, std::string::npos);
    const uint64_t kb = std::stoull(smaps.substr(rss + 5, 32));
    EXPECT_EQ(kb * 1024, r.end - r.begin) << head;
  }
}

}  // namespace
}  // namespace snug
