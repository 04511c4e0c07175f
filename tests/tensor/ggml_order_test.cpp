// The "ggml order" kernels must give identical bits on every Highway target:
// the AVX2 path uses ggml's instructions, the others emulate them with scalar
// std::fma. Each target is compared bit for bit with the portable EMU128 one,
// and with formulas written out here in the documented order.
#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include "tensor/kernels.h"
#include "test_util.h"

namespace snug::tensor {
namespace {

using testing::random_values;

std::vector<uint16_t> f16_values(int64_t n, uint32_t seed) {
  std::vector<uint16_t> h(static_cast<size_t>(n));
  const auto f = random_values(n, seed);
  for (int64_t i = 0; i < n; ++i) h[i] = fp32_to_fp16(f[i]);
  return h;
}

struct Outputs {
  std::vector<float> dots, fma, exps, silu, att;
  std::vector<uint8_t> q8a;
  std::vector<double> sums;
};

Outputs run_all() {
  Outputs o;
  for (int64_t n : {8, 24, 32, 64, 100, 256}) {
    const auto a = f16_values(n, 1);
    auto b = random_values(n, 2);
    for (auto& v : b) v = fp16_to_fp32(fp32_to_fp16(v));
    o.dots.push_back(dot_f16_ordered(a.data(), b.data(), n, SumOrder::kGemm));
    o.dots.push_back(dot_f16_ordered(a.data(), b.data(), n, SumOrder::kVecDot));
    std::vector<float> acc = random_values(n, 3);
    fma_f16(0.37f, a.data(), acc.data(), n);
    o.fma.insert(o.fma.end(), acc.begin(), acc.end());
    auto x = random_values(n, 4);
    for (auto& v : x) v *= 30;
    // exp's slow lanes (|n| > 126, and > 192): a masked position's large
    // negative score, in the first and the last chunk.
    x[3] = -200.f;
    x[n - 2] = -100.f;
    o.sums.push_back(exp_sum_ggml(x.data(), n, 5.f));
    o.exps.insert(o.exps.end(), x.begin(), x.end());
    auto g = random_values(n, 5);
    for (auto& v : g) v *= 8;
    const auto up = random_values(n, 6);
    silu_mul(g.data(), up.data(), n);
    o.silu.insert(o.silu.end(), g.begin(), g.end());
  }
  // Activation blocks, including an all-zero block and exact ties (x * 127 / amax = k + 0.5).
  auto xa = random_values(256, 12);
  for (int i = 0; i < 32; ++i) xa[i] = 0.f;
  for (int i = 32; i < 64; ++i) xa[i] = (i % 2 ? 0.5f : 1.5f) * (127.f / 127.f);
  xa[63] = 127.f;
  std::vector<uint8_t> qa(matmul_scratch_bytes(DType::kQ4_1, 256, 1));
  quantize_activations(DType::kQ4_1, xa.data(), 256, 256, 1, qa.data());
  o.q8a = qa;
  // And rows of 35 blocks (AVX-512 converts 16 at a time, then the last 3 one
  // by one), two tokens: blocks of magnitudes 1e-6 to 1e6, zero blocks in the
  // first and second sixteen, ties in both.
  auto xl = random_values(2 * 1120, 13);
  for (int64_t i = 0; i < 2 * 1120; ++i)
    xl[i] *= std::pow(10.f, static_cast<float>(i / 32 % 13) - 6.f);
  for (int64_t i = 0; i < 32; ++i) xl[32 * 20 + i] = xl[1120 + 32 * 3 + i] = 0.f;
  for (int64_t i = 0; i < 32; ++i) xl[32 * 5 + i] = xl[1120 + 32 * 17 + i] = (i % 2 ? 0.5f : 1.5f);
  xl[32 * 5 + 31] = xl[1120 + 32 * 17 + 31] = 127.f;
  std::vector<uint8_t> ql(matmul_scratch_bytes(DType::kQ4_1, 1120, 2));
  quantize_activations(DType::kQ4_1, xl.data(), 1120, 1120, 2, ql.data());
  o.q8a.insert(o.q8a.end(), ql.begin(), ql.end());
  // Attention over 37 positions in blocks of 16 rows, both orders.
  const int64_t n = 37, d = 64, bt = 16;
  const auto kr = f16_values(n * d, 9), vr = f16_values(n * d, 10);
  const uint16_t* kb[3] = {kr.data(), kr.data() + bt * d, kr.data() + 2 * bt * d};
  const uint16_t* vb[3] = {vr.data(), vr.data() + bt * d, vr.data() + 2 * bt * d};
  const auto q = random_values(d, 11);
  std::vector<float> scratch(static_cast<size_t>(attention_scratch_floats(n, d, d))), out(d);
  for (SumOrder order : {SumOrder::kGemm, SumOrder::kVecDot}) {
    attention_f16_ggml(q.data(), {kb, bt, d}, {vb, bt, d}, n, d, d, 0.125f, order, out.data(),
                       scratch.data());
    o.att.insert(o.att.end(), out.begin(), out.end());
  }
  return o;
}

template <typename T>
void expect_same_bits(const std::vector<T>& a, const std::vector<T>& b, const char* what,
                      const char* target) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(std::memcmp(&a[i], &b[i], sizeof(T)), 0)
        << what << " [" << i << "] on " << target << ": " << a[i] << " vs " << b[i];
  }
}

TEST(GgmlOrder, EveryTargetGivesTheSameBits) {
  hwy::SetSupportedTargetsForTest(HWY_EMU128);
  const Outputs base = run_all();
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    const Outputs o = run_all();
    const char* name = hwy::TargetName(target);
    expect_same_bits(o.dots, base.dots, "dot_f16_ordered", name);
    expect_same_bits(o.fma, base.fma, "fma_f16", name);
    expect_same_bits(o.exps, base.exps, "exp_sum_ggml values", name);
    expect_same_bits(o.sums, base.sums, "exp_sum_ggml sum", name);
    expect_same_bits(o.silu, base.silu, "silu_mul", name);
    expect_same_bits(o.att, base.att, "attention_f16_ggml", name);
    expect_same_bits(o.q8a, base.q8a, "quantize_activations (q8a)", name);
  }
  hwy::SetSupportedTargetsForTest(0);
}

TEST(GgmlOrder, DotsFollowTheDocumentedOrder) {
  const int64_t n = 64;
  const auto a = f16_values(n, 7);
  const auto b = random_values(n, 8);
  // kGemm: lanes i % 8 accumulate by fma, then ((l0+l4)+(l2+l6))+((l1+l5)+(l3+l7)).
  float l[8] = {};
  for (int64_t i = 0; i < n; ++i) l[i % 8] = std::fma(fp16_to_fp32(a[i]), b[i], l[i % 8]);
  const float gemm = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
  EXPECT_EQ(dot_f16_ordered(a.data(), b.data(), n, SumOrder::kGemm), gemm);
  // kVecDot: slots i % 32, folded 32 -> 8 -> 4 -> 1.
  float s[32] = {};
  for (int64_t i = 0; i < n; ++i) s[i % 32] = std::fma(fp16_to_fp32(a[i]), b[i], s[i % 32]);
  for (int i = 0; i < 8; ++i) {
    s[i] += s[i + 16];
    s[i + 8] += s[i + 24];
  }
  for (int i = 0; i < 8; ++i) s[i] += s[i + 8];
  const float vec = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
  EXPECT_EQ(dot_f16_ordered(a.data(), b.data(), n, SumOrder::kVecDot), vec);
}

TEST(GgmlOrder, ExpIsCloseToLibmAndSaturates) {
  for (float x : {-100.f, -20.f, -1.f, -1e-3f, 0.f, 1e-3f, 1.f, 20.f, 80.f}) {
    EXPECT_NEAR(exp_ggml(x), std::exp(x), 3e-7 * std::exp(x)) << x;
  }
  EXPECT_EQ(exp_ggml(-INFINITY), 0.f);
  EXPECT_EQ(exp_ggml(-200.f), 0.f);
  EXPECT_TRUE(std::isinf(exp_ggml(200.f)));
}

}  // namespace
}  // namespace snug::tensor
