#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "kv/attention.h"
#include "kv/kv_cache.h"
#include "tensor/kernels.h"

namespace snug::kv {
namespace {

KvLayout small_layout() {
  KvLayout l;
  l.n_layers = 2;
  l.n_kv_heads = 2;
  l.head_dim_k = 32;
  l.head_dim_v = 32;
  l.block_tokens = 4;
  return l;
}

TEST(KvCache, GrowsByBlocksAndReturnsThem) {
  memory::Ledger ledger;
  auto c = KvCache::create(small_layout(), 6, &ledger);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(ledger.current(memory::Category::kKvCache), 6 * small_layout().block_bytes());
  SeqId a = c->create_sequence();
  ASSERT_TRUE(c->prepare_append(a, 5).ok());
  c->commit_append(a, 5);
  EXPECT_EQ(c->length(a), 5);
  EXPECT_EQ(c->free_blocks(), 4);
  EXPECT_EQ(c->blocks_needed(a, 3), 0);
  EXPECT_EQ(c->blocks_needed(a, 4), 1);
  c->truncate(a, 4);
  EXPECT_EQ(c->free_blocks(), 5);
  c->free_sequence(a);
  EXPECT_EQ(c->free_blocks(), 6);
}

TEST(KvCache, FullCacheRefusesWithoutTakingBlocks) {
  memory::Ledger ledger;
  auto c = KvCache::create(small_layout(), 2, &ledger);
  SeqId a = c->create_sequence();
  Status st = c->prepare_append(a, 9);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("KV cache is full"), std::string::npos);
  EXPECT_EQ(c->free_blocks(), 2);
  EXPECT_EQ(c->length(a), 0);
}

TEST(KvCache, ForkSharesBlocksAndCopiesOnWrite) {
  memory::Ledger ledger;
  auto c = KvCache::create(small_layout(), 8, &ledger);
  SeqId a = c->create_sequence();
  ASSERT_TRUE(c->prepare_append(a, 6).ok());
  for (int p = 0; p < 6; ++p) *c->k_row(a, 1, 1, p) = static_cast<uint8_t>(p + 1);
  c->commit_append(a, 6);
  SeqId b = c->fork(a);
  EXPECT_EQ(c->free_blocks(), 6);  // nothing copied yet
  EXPECT_EQ(c->k_row(a, 1, 1, 5), c->k_row(b, 1, 1, 5));
  ASSERT_TRUE(c->prepare_append(b, 1).ok());  // writes into the shared half-full block: copy it
  EXPECT_EQ(c->free_blocks(), 5);
  EXPECT_NE(c->k_row(a, 1, 1, 5), c->k_row(b, 1, 1, 5));
  EXPECT_EQ(*c->k_row(b, 1, 1, 5), 6);
  EXPECT_EQ(c->k_row(a, 1, 1, 0), c->k_row(b, 1, 1, 0));  // the full first block stays shared
  c->free_sequence(a);
  EXPECT_EQ(*c->k_row(b, 1, 1, 0), 1);
  c->free_sequence(b);
  EXPECT_EQ(c->free_blocks(), 8);
}

TEST(KvCache, CancelAppendPutsBackTheBlocksAndTheSharedBlockItCopied) {
  memory::Ledger ledger;
  auto c = KvCache::create(small_layout(), 8, &ledger);
  SeqId a = c->create_sequence();
  ASSERT_TRUE(c->prepare_append(a, 6).ok());
  c->commit_append(a, 6);
  SeqId b = c->fork(a);
  const std::vector<int32_t> table = c->block_table(b);
  ASSERT_TRUE(c->prepare_append(b, 7).ok());  // copies the half-full block, adds two
  EXPECT_EQ(c->free_blocks(), 3);
  c->cancel_append(b);
  EXPECT_EQ(c->free_blocks(), 6);
  EXPECT_EQ(c->block_table(b), table);
  EXPECT_EQ(c->length(b), 6);
  // Sharing is back: the next write to either sequence copies again.
  EXPECT_EQ(c->blocks_needed(a, 1), 1);
  EXPECT_EQ(c->blocks_needed(b, 1), 1);
  c->free_sequence(a);
  c->free_sequence(b);
  EXPECT_EQ(c->free_blocks(), 8);
}

TEST(KvCache, CancelAppendAfterAnotherHolderTookTheBlockOverRestoresBoth) {
  // a and b share a half-full block; b's append copies it, so a's append writes
  // in place. Cancelling both, latest first, restores the sharing.
  memory::Ledger ledger;
  auto c = KvCache::create(small_layout(), 8, &ledger);
  SeqId a = c->create_sequence();
  ASSERT_TRUE(c->prepare_append(a, 6).ok());
  c->commit_append(a, 6);
  SeqId b = c->fork(a);
  ASSERT_TRUE(c->prepare_append(b, 1).ok());
  ASSERT_TRUE(c->prepare_append(a, 1).ok());
  EXPECT_EQ(c->free_blocks(), 5);
  c->cancel_append(a);
  c->cancel_append(b);
  EXPECT_EQ(c->free_blocks(), 6);
  EXPECT_EQ(c->block_table(a), c->block_table(b));
}

// Block hashes for a prompt of n full blocks of 4 tokens under `scope`.
std::vector<BlockHash> chain(const std::string& scope, const std::vector<int32_t>& tokens) {
  std::vector<BlockHash> h;
  BlockHash parent = root_block_hash(scope);
  const std::vector<uint8_t> flags(4, 0);
  for (size_t off = 0; off + 4 <= tokens.size(); off += 4) {
    parent = next_block_hash(parent, std::span<const int32_t>(tokens).subspan(off, 4), flags);
    h.push_back(parent);
  }
  return h;
}

SeqId filled(KvCache& c, int32_t n, uint8_t mark) {
  SeqId s = c.create_sequence();
  EXPECT_TRUE(c.prepare_append(s, n).ok());
  for (int p = 0; p < n; ++p) *c.k_row(s, 0, 0, p) = static_cast<uint8_t>(mark + p);
  c.commit_append(s, n);
  return s;
}

TEST(BlockHash, ChainsCoverTheWholePrefixTheScopeAndTheOrder) {
  const std::vector<int32_t> a = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<int32_t> b = a;
  b[1] = 9;  // differs in the first block only
  EXPECT_EQ(chain("t", a), chain("t", a));
  EXPECT_NE(chain("t", a)[1], chain("t", b)[1]) << "a block's hash must cover its parents";
  EXPECT_NE(chain("t", a)[0], chain("u", a)[0]) << "scopes must not share blocks";
  const std::vector<uint8_t> prompt(4, 0), generated = {0, 0, 0, 1};
  const BlockHash r = root_block_hash("");
  EXPECT_NE(next_block_hash(r, std::span<const int32_t>(a).first(4), prompt),
            next_block_hash(r, std::span<const int32_t>(a).first(4), generated));
}

TEST(PrefixCache, PublishedBlocksOutliveTheirSequenceAndAreFoundAgain) {
  memory::Ledger ledger;
  auto c = KvCache::create(small_layout(), 6, &ledger);
  const std::vector<int32_t> toks = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  const auto h = chain("", toks);  // 2 full blocks
  SeqId a = filled(*c, 10, 40);
  c->publish_block(a, 0, h[0]);
  c->publish_block(a, 1, h[1]);
  c->free_sequence(a);
  EXPECT_EQ(c->cached_blocks(), 2);
  EXPECT_EQ(c->free_blocks(), 6);  // cached blocks are free for admission
  EXPECT_EQ(c->cached_prefix(h), 2);
  SeqId b = c->create_sequence();
  EXPECT_EQ(c->attach_cached(b, h), 2);
  EXPECT_EQ(c->length(b), 8);
  EXPECT_EQ(c->cached_blocks(), 0);
  for (int p = 0; p < 8; ++p) EXPECT_EQ(*c->k_row(b, 0, 0, p), 40 + p);
  // A second holder shares them; a different scope finds nothing.
  SeqId d = c->create_sequence();
  EXPECT_EQ(c->attach_cached(d, h), 2);
  EXPECT_EQ(c->free_blocks(), 4);
  EXPECT_EQ(c->cached_prefix(chain("other", toks)), 0);
  c->free_sequence(b);
  c->free_sequence(d);
  EXPECT_EQ(c->cached_blocks(), 2);
}

TEST(PrefixCache, ThePoolTakesBackTheLeastRecentlyReleasedFirst) {
  memory::Ledger ledger;
  auto c = KvCache::create(small_layout(), 3, &ledger);
  const auto h1 = chain("", {1, 1, 1, 1}), h2 = chain("", {2, 2, 2, 2});
  SeqId a = filled(*c, 4, 10);
  c->publish_block(a, 0, h1[0]);
  SeqId b = filled(*c, 4, 20);
  c->publish_block(b, 0, h2[0]);
  c->free_sequence(a);  // released first: evicted first
  c->free_sequence(b);
  SeqId x = filled(*c, 8, 0);  // one free block, then one cached block is taken
  EXPECT_EQ(c->cached_prefix(h1), 0);
  EXPECT_EQ(c->cached_prefix(h2), 1);
  SeqId y = c->create_sequence();
  ASSERT_EQ(c->attach_cached(y, h2), 1);
  EXPECT_EQ(*c->k_row(y, 0, 0, 0), 20);
  EXPECT_EQ(c->free_blocks(), 0);
  EXPECT_FALSE(c->prepare_append(y, 1).ok());
  c->free_sequence(x);
  c->free_sequence(y);
  c->clear_prefix_cache();
  EXPECT_EQ(c->cached_blocks(), 0);
  EXPECT_EQ(c->free_blocks(), 3);
  EXPECT_EQ(c->cached_prefix(h2), 0);
}

TEST(PrefixCache, WritingIntoAPublishedBlockNeverChangesWhatOthersFind) {
  memory::Ledger ledger;
  auto c = KvCache::create(small_layout(), 6, &ledger);
  const auto h = chain("", {1, 2, 3, 4});
  SeqId a = filled(*c, 4, 50);
  c->publish_block(a, 0, h[0]);
  SeqId b = c->create_sequence();
  ASSERT_EQ(c->attach_cached(b, h), 1);
  // b rewinds into the shared published block and writes: it gets a copy.
  c->truncate(b, 2);
  ASSERT_TRUE(c->prepare_append(b, 1).ok());
  *c->k_row(b, 0, 0, 2) = 99;
  c->commit_append(b, 1);
  EXPECT_EQ(*c->k_row(a, 0, 0, 2), 52);
  // a alone holds it now and rewinds too: the hash no longer names it.
  c->free_sequence(b);
  c->truncate(a, 3);
  ASSERT_TRUE(c->prepare_append(a, 1).ok());
  *c->k_row(a, 0, 0, 3) = 77;
  c->commit_append(a, 1);
  EXPECT_EQ(c->cached_prefix(h), 0);
  c->free_sequence(a);
  EXPECT_EQ(c->cached_blocks(), 0);
  EXPECT_EQ(c->free_blocks(), 6);
}

// Gemma-like: six layers, two global (2 and 5) and four with a window of 6.
KvLayout windowed_layout(int32_t slack = 0) {
  KvLayout l = small_layout();
  l.n_layers = 6;
  l.layer_window = {6, 6, 0, 6, 6, 0};
  l.window_slack = slack;
  return l;
}

// Writes one marker byte into every layer's first key row at positions
// [from, from + n) of `s`: layer * 64 + position, mod 256.
void mark_rows(KvCache& c, SeqId s, int32_t from, int32_t n) {
  for (int32_t p = from; p < from + n; ++p) {
    for (int32_t l = 0; l < c.layout().n_layers; ++l)
      *c.k_row(s, l, 0, p) = static_cast<uint8_t>(l * 64 + p);
  }
}

TEST(KvLayerGroups, LayersOfOneWindowShareBlocksOfEqualSize) {
  const KvLayout l = windowed_layout();
  ASSERT_TRUE(l.check().ok());
  EXPECT_EQ(l.group_layers(), 2);                            // gcd of 2 global and 4 windowed
  EXPECT_EQ(l.block_bytes(), small_layout().block_bytes());  // small_layout has 2 layers
  memory::Ledger ledger;
  auto c = KvCache::create(l, 32, &ledger);
  ASSERT_TRUE(c.ok()) << c.error().message;
  ASSERT_EQ(c->n_groups(), 3);
  EXPECT_EQ(c->group_of(0), c->group_of(1));  // the windowed ones, two by two
  EXPECT_EQ(c->group_of(3), c->group_of(4));
  EXPECT_EQ(c->group_of(2), c->group_of(5));  // the global ones
  EXPECT_NE(c->group_of(0), c->group_of(3));
  EXPECT_NE(c->group_of(0), c->group_of(2));
  // Every layer's rows are its own, and the two layers of a group share a block.
  SeqId s = c->create_sequence();
  ASSERT_TRUE(c->prepare_append(s, 3).ok());
  EXPECT_EQ(c->free_blocks(), 29);  // one block per group
  mark_rows(*c, s, 0, 3);
  c->commit_append(s, 3);
  for (int32_t l = 0; l < 6; ++l) EXPECT_EQ(*c->k_row(s, l, 0, 1), (l * 64 + 1) % 256);
  const uint8_t* block = c->block_data(c->block_table(s, c->group_of(3))[0]);
  EXPECT_EQ(c->k_row(s, 4, 1, 2), block + c->k_offset(4, 1) + 2 * l.k_row_bytes());
  // A model with every layer global keeps one group of all of them.
  KvLayout g = windowed_layout();
  g.layer_window.clear();
  EXPECT_EQ(g.group_layers(), 6);
  // Windows that are not one per layer, or negative, are refused.
  KvLayout bad = windowed_layout();
  bad.layer_window.pop_back();
  EXPECT_FALSE(bad.check().ok());
  bad = windowed_layout();
  bad.layer_window[1] = -1;
  EXPECT_FALSE(bad.check().ok());
}

// One token at a time to 40 positions: the windowed groups hold only the
// blocks their window reaches (and what the plan counts), the rows inside
// the window keep their contents, and the blocks behind it go back to the pool.
TEST(KvLayerGroups, WindowedGroupsGiveBackWhatTheWindowPassed) {
  for (int32_t slack : {0, 5}) {
    SCOPED_TRACE(slack);
    const KvLayout l = windowed_layout(slack);
    memory::Ledger ledger;
    auto c = KvCache::create(l, 64, &ledger);
    ASSERT_TRUE(c.ok());
    SeqId s = c->create_sequence();
    int32_t peak = 0;
    for (int32_t n = 0; n < 40; ++n) {
      ASSERT_TRUE(c->prepare_append(s, 1).ok());
      peak = std::max(peak, c->held_blocks(s));
      mark_rows(*c, s, n, 1);
      c->commit_append(s, 1);
      // The next query (position n + 1) reaches back to n + 1 - 6 + 1.
      const int32_t reach = std::max(0, n + 1 - 6 + 1 - slack);
      for (int32_t g = 0; g < c->n_groups(); ++g) {
        const auto& t = c->block_table(s, g);
        for (int32_t b = 0; b < static_cast<int32_t>(t.size()); ++b) {
          const bool global = g == c->group_of(2);
          const bool needed = global || (b + 1) * 4 > reach;
          EXPECT_EQ(t[static_cast<size_t>(b)] >= 0, needed)
              << "group " << g << " block " << b << " at length " << n + 1;
        }
      }
    }
    for (int32_t l2 : {0, 2, 4}) {
      for (int32_t p = 40 - 6; p < 40; ++p) EXPECT_EQ(*c->k_row(s, l2, 0, p), (l2 * 64 + p) % 256);
    }
    EXPECT_EQ(*c->k_row(s, 5, 0, 0), (5 * 64) % 256);  // a global layer keeps everything
    EXPECT_EQ(peak, l.sequence_blocks(40, 1));         // one token at a time meets every alignment
    EXPECT_EQ(c->held_blocks(s), 64 - c->free_blocks());
    c->free_sequence(s);
    EXPECT_EQ(c->free_blocks(), 64);
  }
}

// The plan's count per sequence bounds the peak of any chunking (it adds
// each group's worst case: chunks that keep the window aligned to blocks, or
// a global group still growing when a windowed one peaks, stay below it), is
// what blocks_to_grow asks for, and a pool of exactly that many runs it.
TEST(KvLayerGroups, SequenceBlocksIsThePeakOfAnyChunking) {
  const KvLayout l = windowed_layout(3);
  for (int32_t chunk : {1, 3, 5, 8, 13}) {
    for (int32_t len : {1, 7, 23, 50}) {
      SCOPED_TRACE(::testing::Message() << "chunk " << chunk << ", length " << len);
      const auto pool = static_cast<int32_t>(l.sequence_blocks(len, chunk));
      memory::Ledger ledger;
      auto c = KvCache::create(l, pool, &ledger);
      ASSERT_TRUE(c.ok());
      SeqId s = c->create_sequence();
      EXPECT_EQ(c->blocks_to_grow(s, len, chunk), pool);
      int32_t peak = 0;
      for (int32_t at = 0; at < len;) {
        const int32_t n = std::min(chunk, len - at);
        EXPECT_LE(c->blocks_needed(s, n), c->blocks_to_grow(s, len - at, chunk));
        ASSERT_TRUE(c->prepare_append(s, n).ok()) << "at " << at;
        peak = std::max(peak, c->held_blocks(s));
        c->commit_append(s, n);
        at += n;
      }
      EXPECT_LE(peak, pool);
      EXPECT_GE(peak, pool - 4) << "the bound is loose";
      EXPECT_EQ(c->blocks_to_grow(s, 0, chunk), 0);
    }
  }
}

TEST(KvLayerGroups, TruncatesOnlyWhereTheWindowStillHasItsRows) {
  const KvLayout l = windowed_layout(2);
  memory::Ledger ledger;
  auto c = KvCache::create(l, 64, &ledger);
  ASSERT_TRUE(c.ok());
  SeqId s = c->create_sequence();
  ASSERT_TRUE(c->prepare_append(s, 30).ok());
  mark_rows(*c, s, 0, 30);
  c->commit_append(s, 30);
  // Held from block (30 - 6 + 1 - 2) / 4 = 5, i.e. position 20 on: a length
  // whose window starts at 20 or later keeps what it needs.
  EXPECT_TRUE(c->can_truncate(s, 30));
  EXPECT_TRUE(c->can_truncate(s, 25));
  EXPECT_FALSE(c->can_truncate(s, 24));
  EXPECT_FALSE(c->can_truncate(s, 31));
  EXPECT_TRUE(c->can_truncate(s, 0));
  c->truncate(s, 25);
  ASSERT_TRUE(c->prepare_append(s, 3).ok());
  mark_rows(*c, s, 25, 3);
  c->commit_append(s, 3);
  for (int32_t p = 28 - 6; p < 28; ++p) EXPECT_EQ(*c->k_row(s, 0, 0, p), p);
  c->truncate(s, 0);
  EXPECT_EQ(c->free_blocks(), 64);
  // A fork shares the held blocks, and each gives them back on its own.
  ASSERT_TRUE(c->prepare_append(s, 21).ok());
  c->commit_append(s, 21);
  SeqId f = c->fork(s);
  const int32_t free_after_fork = c->free_blocks();
  ASSERT_TRUE(c->prepare_append(f, 8).ok());
  c->commit_append(f, 8);
  EXPECT_LT(c->free_blocks(), free_after_fork);
  c->free_sequence(s);
  c->free_sequence(f);
  EXPECT_EQ(c->free_blocks(), 64);
}

// A prefix hit on a windowed layout needs every global block of the prefix
// and, of each windowed group, only the blocks the window reaches from the
// hit's end; blocks the window passed need not be cached at all.
TEST(KvLayerGroups, PrefixHitsNeedOnlyTheWindowOfWindowedGroups) {
  const KvLayout l = windowed_layout();
  memory::Ledger ledger;
  auto c = KvCache::create(l, 64, &ledger);
  ASSERT_TRUE(c.ok());
  std::vector<int32_t> toks(24);
  for (int32_t i = 0; i < 24; ++i) toks[static_cast<size_t>(i)] = i + 1;
  const auto h = chain("", toks);  // 6 blocks
  SeqId a = c->create_sequence();
  for (int32_t n = 0; n < 24; n += 4) {
    ASSERT_TRUE(c->prepare_append(a, 4).ok());
    mark_rows(*c, a, n, 4);
    c->commit_append(a, 4);
    c->publish_block(a, n / 4, h[static_cast<size_t>(n / 4)]);  // as the scheduler does
  }
  c->free_sequence(a);
  EXPECT_EQ(c->cached_prefix(h), 6);
  EXPECT_EQ(c->cached_prefix(std::span<const BlockHash>(h).first(3)), 3);
  SeqId b = c->create_sequence();
  ASSERT_EQ(c->attach_cached(b, h), 6);
  EXPECT_EQ(c->length(b), 24);
  // Positions 24 - 6 + 1 = 19 on are reachable: blocks 4 and 5 of windowed groups.
  EXPECT_EQ(c->block_table(b, c->group_of(0))[3], -1);
  for (int32_t p = 19; p < 24; ++p) {
    for (int32_t layer = 0; layer < 6; ++layer)
      EXPECT_EQ(*c->k_row(b, layer, 0, p), (layer * 64 + p) % 256);
  }
  c->free_sequence(b);
  // Without the window's blocks (the pool took them back), no hit that
  // needs them: only a shorter prefix whose window is still cached, or none.
  c->clear_prefix_cache();
  SeqId d = c->create_sequence();
  for (int32_t n = 0; n < 24; n += 4) {
    ASSERT_TRUE(c->prepare_append(d, 4).ok());
    c->commit_append(d, 4);
    // Publish only after the window moved on: windowed groups gave block 0-2 back.
    if (n == 20) {
      for (int32_t b2 = 0; b2 < 6; ++b2) c->publish_block(d, b2, h[static_cast<size_t>(b2)]);
    }
  }
  EXPECT_EQ(c->cached_prefix(h), 6);  // the window's blocks 4 and 5 are held
  EXPECT_EQ(c->cached_prefix(std::span<const BlockHash>(h).first(2)), 0)
      << "position 8's window reaches blocks the windowed groups gave back";
  c->free_sequence(d);
}

TEST(KvCache, LiveTellsSequencesInUseFromFreedOrUnknownIds) {
  memory::Ledger ledger;
  auto c = KvCache::create(small_layout(), 2, &ledger);
  SeqId a = c->create_sequence(), b = c->create_sequence();
  c->free_sequence(b);
  EXPECT_TRUE(c->is_live(a));
  EXPECT_FALSE(c->is_live(b));
  EXPECT_FALSE(c->is_live(-1));
  EXPECT_FALSE(c->is_live(2));
}

TEST(Attention, MatchesDirectSoftmaxOverPagedRows) {
  memory::Ledger ledger;
  KvLayout lay = small_layout();
  auto c = KvCache::create(lay, 8, &ledger);
  SeqId s = c->create_sequence();
  const int n = 11, d = 32;
  ASSERT_TRUE(c->prepare_append(s, n).ok());
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  std::vector<float> K(n * d), V(n * d), q(4 * d);
  for (auto& x : K) x = nd(rng);
  for (auto& x : V) x = nd(rng);
  for (auto& x : q) x = nd(rng);
  for (int p = 0; p < n; ++p) {
    // kv head 1 of layer 1 (query heads 2 and 3 map to it)
    tensor::quantize_row(tensor::DType::kF16, &K[p * d], c->k_row(s, 1, 1, p), d);
    tensor::quantize_row(tensor::DType::kF16, &V[p * d], c->v_row(s, 1, 1, p), d);
  }
  c->commit_append(s, n);
  AttentionShape shape{4, 2, d, d, 1.f / std::sqrt(float(d))};
  for (bool batched : {false, true}) {
    shape.batched = batched;
    std::vector<float> out(4 * d),
        scratch(static_cast<size_t>(attention_scratch_floats(n, 2, d, d)));
    attend(*c, s, 1, shape, q.data(), n, 3, 4, out.data(), scratch.data());
    // Reference with the same f16-rounded keys and values.
    std::vector<double> w(n);
    double mx = -1e30, sum = 0;
    for (int p = 0; p < n; ++p) {
      double dot = 0;
      for (int i = 0; i < d; ++i) {
        float k = tensor::fp16_to_fp32(tensor::fp32_to_fp16(K[p * d + i]));
        dot += double(k) * tensor::fp16_to_fp32(tensor::fp32_to_fp16(q[3 * d + i]));
      }
      w[p] = dot / std::sqrt(double(d));
      mx = std::max(mx, w[p]);
    }
    for (auto& x : w) sum += (x = std::exp(x - mx));
    for (int i = 0; i < d; ++i) {
      double o = 0;
      for (int p = 0; p < n; ++p)
        o += w[p] / sum * tensor::fp16_to_fp32(tensor::fp32_to_fp16(V[p * d + i]));
      // Probabilities are rounded to f16 (as llama.cpp does) before weighting the values.
      EXPECT_NEAR(out[3 * d + i], o, 2e-3) << i;
    }
  }
}

TEST(KvLayout, RowsFollowEachType) {
  KvLayout l = small_layout();
  l.head_dim_k = 64;
  l.head_dim_v = 64;
  EXPECT_EQ(l.k_row_bytes(), 128u);  // f16
  l.k_type = tensor::DType::kQ8_0;   // 2 blocks of 34 bytes
  l.v_type = tensor::DType::kQ4_0;   // 2 blocks of 18 bytes
  EXPECT_TRUE(l.check().ok());
  EXPECT_EQ(l.k_row_bytes(), 68u);
  EXPECT_EQ(l.v_row_bytes(), 36u);
  EXPECT_EQ(l.bytes_per_token(), 2u * 2u * (68u + 36u));
  l.set_type(tensor::DType::kQ4_0);
  EXPECT_EQ(l.k_row_bytes(), 36u);
  EXPECT_EQ(l.v_row_bytes(), 36u);
  memory::Ledger ledger;
  auto c = KvCache::create(l, 3, &ledger);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(ledger.current(memory::Category::kKvCache), 3 * 4 * l.bytes_per_token());
}

TEST(KvLayout, RefusesTypesAndHeadSizesItCannotStore) {
  memory::Ledger ledger;
  KvLayout l = small_layout();
  l.head_dim_v = 48;  // not a whole number of 32-element blocks
  l.v_type = tensor::DType::kQ8_0;
  auto c = KvCache::create(l, 2, &ledger);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find("V cache type q8_0 needs a head size that is a multiple of"),
            std::string::npos)
      << c.error().message;
  EXPECT_NE(c.error().message.find("48"), std::string::npos);
  l.v_type = tensor::DType::kF16;  // f16 stores any head size
  EXPECT_TRUE(KvCache::create(l, 2, &ledger).ok());
  l.k_type = tensor::DType::kQ5_1;
  auto q51 = KvCache::create(l, 2, &ledger);
  ASSERT_FALSE(q51.ok());
  EXPECT_NE(q51.error().message.find("q5_1 is not stored"), std::string::npos);
  EXPECT_EQ(ledger.current(memory::Category::kKvCache), 0u);
}

// attend() over quantized keys and values (and mixed pairs) against a double
// softmax over the unquantized rows: the difference is the types' own error,
// bounded by 3e-2 (q8_0) or 0.25 (q4_0) times the largest value.
TEST(Attention, QuantizedCacheStaysNearTheExactResult) {
  using tensor::DType;
  const int n = 21, d = 64;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  std::vector<float> K(n * d), V(n * d), q(4 * d);
  for (auto& x : K) x = nd(rng);
  for (auto& x : V) x = nd(rng);
  for (auto& x : q) x = 3 * nd(rng);
  const float scale = 1.f / std::sqrt(float(d));
  // The exact result for query head 2 (KV head 1).
  std::vector<double> w(n), want(d, 0.0);
  double mx = -1e30, sum = 0, vmax = 0;
  for (int p = 0; p < n; ++p) {
    double dot = 0;
    for (int i = 0; i < d; ++i) dot += double(K[p * d + i]) * q[2 * d + i];
    mx = std::max(mx, w[p] = dot * scale);
  }
  for (auto& x : w) sum += (x = std::exp(x - mx));
  for (int p = 0; p < n; ++p)
    for (int i = 0; i < d; ++i) {
      want[i] += w[p] / sum * V[p * d + i];
      vmax = std::max(vmax, double(std::fabs(V[p * d + i])));
    }
  const std::pair<DType, DType> pairs[] = {{DType::kQ8_0, DType::kQ8_0},
                                           {DType::kQ4_0, DType::kQ4_0},
                                           {DType::kQ8_0, DType::kF16},
                                           {DType::kF16, DType::kQ4_0}};
  for (auto [kt, vt] : pairs) {
    KvLayout lay = small_layout();
    lay.head_dim_k = lay.head_dim_v = d;
    lay.k_type = kt;
    lay.v_type = vt;
    memory::Ledger ledger;
    auto c = KvCache::create(lay, 8, &ledger);
    ASSERT_TRUE(c.ok()) << c.error().message;
    SeqId s = c->create_sequence();
    ASSERT_TRUE(c->prepare_append(s, n).ok());
    for (int p = 0; p < n; ++p) {
      tensor::quantize_kv_row(kt, &K[p * d], c->k_row(s, 0, 1, p), d);
      tensor::quantize_kv_row(vt, &V[p * d], c->v_row(s, 0, 1, p), d);
    }
    c->commit_append(s, n);
    AttentionShape shape{4, 2, d, d, scale};
    std::vector<float> out(4 * d),
        scratch(static_cast<size_t>(attention_scratch_floats(n, 2, d, d)));
    attend(*c, s, 0, shape, q.data(), n, 2, 4, out.data(), scratch.data());
    const double tol = (kt == DType::kQ4_0 || vt == DType::kQ4_0) ? 0.25 : 3e-2;
    for (int i = 0; i < d; ++i)
      ASSERT_NEAR(out[2 * d + i], want[i], tol * vmax)
          << tensor::dtype_name(kt) << "/" << tensor::dtype_name(vt) << " " << i;
  }
}

// A sliding window: attention over positions [begin, end) of a sequence
// equals attention over a sequence that holds just those rows, bit for bit,
// for every KV type and every kernel (the window starts anywhere in a block):
// f16 heads of 64 take the AVX-512 heads kernel where there is one, heads of
// 40 ggml's order (every other target's path), q8_0 and q4_0 the flash one.
TEST(Attention, AWindowEqualsASequenceOfJustItsRows) {
  const std::pair<tensor::DType, int32_t> cases[] = {{tensor::DType::kF16, 64},
                                                     {tensor::DType::kF16, 40},
                                                     {tensor::DType::kQ8_0, 64},
                                                     {tensor::DType::kQ4_0, 64}};
  for (const auto& [type, d] : cases) {
    const auto ud = static_cast<size_t>(d);
    KvLayout lay;
    lay.n_layers = 1;
    lay.n_kv_heads = 2;
    lay.head_dim_k = d;
    lay.head_dim_v = d;
    lay.block_tokens = 16;
    lay.k_type = lay.v_type = type;
    memory::Ledger ledger;
    auto c = KvCache::create(lay, 64, &ledger);
    ASSERT_TRUE(c.ok());
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.f, 1.f);
    const int32_t n = 200;
    std::vector<float> rows(static_cast<size_t>(n) * 2 * 2 * ud);
    for (float& x : rows) x = nd(rng);
    const auto row = [&](int32_t p, int32_t h, int kv) {
      return rows.data() +
             ((static_cast<size_t>(p) * 2 + static_cast<size_t>(h)) * 2 + static_cast<size_t>(kv)) *
                 ud;
    };
    const SeqId full = c->create_sequence();
    ASSERT_TRUE(c->prepare_append(full, n).ok());
    for (int32_t p = 0; p < n; ++p) {
      for (int32_t h = 0; h < 2; ++h) {
        tensor::quantize_kv_row(type, row(p, h, 0), c->k_row(full, 0, h, p), d);
        tensor::quantize_kv_row(type, row(p, h, 1), c->v_row(full, 0, h, p), d);
      }
    }
    c->commit_append(full, n);
    AttentionShape shape;
    shape.n_heads = 4;
    shape.n_kv_heads = 2;
    shape.head_dim_k = shape.head_dim_v = d;
    shape.scale = 0.125f;
    std::vector<float> q(4 * ud),
        scratch(static_cast<size_t>(attention_scratch_floats(n, 2, d, d)));
    for (float& x : q) x = nd(rng);
    for (int32_t begin : {0, 1, 15, 16, 37, 150}) {
      for (bool batched : {false, true}) {
        shape.batched = batched;
        const int32_t end = n - (begin % 3);
        std::vector<float> got(4 * ud), want(4 * ud);
        attend(*c, full, 0, shape, q.data(), end, 0, 4, got.data(), scratch.data(), begin);
        const SeqId part = c->create_sequence();
        ASSERT_TRUE(c->prepare_append(part, end - begin).ok());
        for (int32_t p = begin; p < end; ++p) {
          for (int32_t h = 0; h < 2; ++h) {
            tensor::quantize_kv_row(type, row(p, h, 0), c->k_row(part, 0, h, p - begin), d);
            tensor::quantize_kv_row(type, row(p, h, 1), c->v_row(part, 0, h, p - begin), d);
          }
        }
        c->commit_append(part, end - begin);
        attend(*c, part, 0, shape, q.data(), end - begin, 0, 4, want.data(), scratch.data());
        c->free_sequence(part);
        EXPECT_EQ(got, want) << "type " << static_cast<int>(type) << ", head " << d << ", window ["
                             << begin << ", " << end << ")";
      }
    }
  }
}

}  // namespace
}  // namespace snug::kv
