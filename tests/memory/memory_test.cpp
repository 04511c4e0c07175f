#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <string>

#include "memory/block_pool.h"
#include "memory/budget.h"
#include "memory/buffer.h"
#include "memory/ledger.h"

namespace snug::memory {
namespace {

TEST(Ledger, ChargesAndReleasesByCategory) {
  Ledger l;
  {
    Charge a(&l, Category::kKvCache, 1000);
    Charge b(&l, Category::kScratch, 24);
    EXPECT_EQ(l.current(Category::kKvCache), 1000u);
    EXPECT_EQ(l.total(), 1024u);
    Charge c = std::move(a);
    EXPECT_EQ(l.current(Category::kKvCache), 1000u);
  }
  EXPECT_EQ(l.total(), 0u);
  EXPECT_EQ(l.peak(Category::kKvCache), 1000u);
}

TEST(Budget, ReserveOrFailNeverOvercommits) {
  Budget b(1000);
  auto r1 = b.reserve(600, "weights");
  ASSERT_TRUE(r1.ok());
  auto r2 = b.reserve(500, "kv cache");
  ASSERT_FALSE(r2.ok());
  EXPECT_NE(r2.error().message.find("kv cache needs"), std::string::npos);
  EXPECT_EQ(b.used(), 600u);
  r1->release();
  EXPECT_EQ(b.used(), 0u);
  EXPECT_TRUE(b.reserve(1000, "all").ok());
  EXPECT_EQ(b.used(), 0u);  // the temporary reservation was returned
}

TEST(Buffer, ChargedForItsLifetime) {
  Ledger l;
  {
    auto buf = Buffer::allocate(10000, &l, Category::kScratch);
    ASSERT_TRUE(buf.ok());
    EXPECT_EQ(l.current(Category::kScratch), 10000u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(buf->data()) % 64, 0u);
    buf->data()[9999] = 1;
  }
  EXPECT_EQ(l.current(Category::kScratch), 0u);
}

// The address space this process has mapped (VmSize), in bytes.
uint64_t mapped_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmSize:", 0) == 0) return std::stoull(line.substr(7)) * 1024;
  }
  return 0;
}

TEST(Buffer, LargeOnesStartOnAHugePageAndMapNothingMore) {
  constexpr uint64_t kHuge = uint64_t{2} << 20;
  for (uint64_t bytes : {2 * kHuge, 5 * kHuge + 100, 64 * kHuge - 4096}) {
    const uint64_t before = mapped_bytes();
    {
      auto buf = Buffer::allocate(bytes, nullptr, Category::kKvCache);
      ASSERT_TRUE(buf.ok());
      EXPECT_EQ(reinterpret_cast<uintptr_t>(buf->data()) % kHuge, 0u) << bytes;
      // The head and tail of the over-sized mapping were given back.
      EXPECT_EQ(mapped_bytes() - before, (bytes + 4095) / 4096 * 4096) << bytes;
      buf->advise_huge_pages();
      EXPECT_EQ(buf->data()[0], 0);
      EXPECT_EQ(buf->data()[bytes - 1], 0);
      buf->data()[bytes - 1] = 1;
    }
    EXPECT_EQ(mapped_bytes(), before) << bytes;
  }
}

TEST(Arena, TakesAlignedSlicesUntilFull) {
  Ledger l;
  Arena a(std::move(Buffer::allocate(256, &l, Category::kScratch)).value());
  void* p = a.take(10);
  void* q = a.take(100);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(q) - reinterpret_cast<uintptr_t>(p), 64u);
  EXPECT_EQ(a.take(100), nullptr);
  a.reset();
  EXPECT_NE(a.take(256), nullptr);
  EXPECT_EQ(a.high_water(), 256u);
}

TEST(BlockPool, AllocatesEveryBlockOnceThenRefuses) {
  Ledger l;
  auto pool = BlockPool::create(128, 8, &l);
  ASSERT_TRUE(pool.ok());
  EXPECT_EQ(l.current(Category::kKvCache), 1024u);
  std::set<int32_t> got;
  for (int i = 0; i < 8; ++i) got.insert(*pool->allocate());
  EXPECT_EQ(got.size(), 8u);
  EXPECT_FALSE(pool->allocate().has_value());
  pool->release(3);
  EXPECT_EQ(*pool->allocate(), 3);
  EXPECT_FALSE(BlockPool::create(0, 8, &l).ok());
  EXPECT_FALSE(BlockPool::create(1ull << 62, 1 << 30, &l).ok());
}

}  // namespace
}  // namespace snug::memory
