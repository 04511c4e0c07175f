#include <gtest/gtest.h>

#include <cmath>
#include <random>

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
    std::vector<float> out(4 * d), scratch(static_cast<size_t>(attention_scratch_floats(n, d, d)));
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

}  // namespace
}  // namespace snug::kv
