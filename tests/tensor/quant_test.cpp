// Scalar quantize/dequantize/dot: round-trip error bounds per format, exact
// cases, and the reference dot against a double-precision dot of the
// dequantized operands (which checks that every format's element order agrees
// between dequantize and dot).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "tensor/kernels_ref.h"
#include "tensor/quant_blocks.h"
#include "test_util.h"

namespace snug::tensor {
namespace {

using testing::quantized;
using testing::random_values;

// Worst-block error of dequant(quant(x)). The bounds sit about 10-30% above
// what these quantizers reach on random_values(); the max-error bounds of the
// symmetric formats include the clamp of the level opposite the absmax
// (q4_0 can be off by absmax/8, q5_0 by absmax/16).
struct Bound {
  DType type;
  double rel_rms;  // bound on RMS error / RMS(x), per block of 256
  double rel_max;  // bound on max error / absmax, per block of 32 (256 for K)
};

class RoundTrip : public ::testing::TestWithParam<Bound> {};

TEST_P(RoundTrip, ErrorWithinBound) {
  const Bound b = GetParam();
  const int64_t n = 256 * 64;
  const std::vector<float> x = random_values(n, 7, 0.0f);
  const std::vector<uint8_t> q = quantized(b.type, x);
  std::vector<float> y(n);
  dequantize_row(b.type, q.data(), y.data(), n);
  const int64_t bs = std::max<int64_t>(32, info(b.type).block_size);
  double worst_rms = 0, worst_max = 0;
  for (int64_t i0 = 0; i0 < n; i0 += bs) {
    double se = 0, ss = 0, amax = 0, emax = 0;
    for (int64_t i = i0; i < i0 + bs; ++i) {
      const double e = std::fabs(static_cast<double>(x[i]) - y[i]);
      se += e * e;
      ss += static_cast<double>(x[i]) * x[i];
      amax = std::max(amax, std::fabs(static_cast<double>(x[i])));
      emax = std::max(emax, e);
    }
    worst_rms = std::max(worst_rms, std::sqrt(se / ss));
    worst_max = std::max(worst_max, emax / amax);
  }
  EXPECT_LE(worst_rms, b.rel_rms) << dtype_name(b.type);
  EXPECT_LE(worst_max, b.rel_max) << dtype_name(b.type);
}

INSTANTIATE_TEST_SUITE_P(
    AllFormats, RoundTrip,
    ::testing::Values(Bound{DType::kF32, 0, 0}, Bound{DType::kF16, 1e-3, 5e-4},
                      Bound{DType::kBF16, 8e-3, 4e-3}, Bound{DType::kQ8_0, 0.015, 0.0045},
                      Bound{DType::kQ4_0, 0.17, 0.13}, Bound{DType::kQ4_1, 0.12, 0.07},
                      Bound{DType::kQ5_0, 0.085, 0.066}, Bound{DType::kQ5_1, 0.06, 0.034},
                      Bound{DType::kQ2_K, 0.45, 0.5}, Bound{DType::kQ3_K, 0.25, 0.25},
                      Bound{DType::kQ4_K, 0.12, 0.15}, Bound{DType::kQ5_K, 0.06, 0.07},
                      Bound{DType::kQ6_K, 0.03, 0.03}, Bound{DType::kQ8_K, 0.03, 0.004}),
    [](const auto& info) { return std::string(dtype_name(info.param.type)); });

TEST(Quant, ZerosStayZeroAndGridValuesAreExact) {
  for (DType t : testing::kWeightTypes) {
    const int64_t n = 512;
    std::vector<float> zeros(n, 0.f), y(n, 1.f);
    dequantize_row(t, quantized(t, zeros).data(), y.data(), n);
    for (float v : y) ASSERT_EQ(v, 0.f) << dtype_name(t);
  }
  // Values on q8_0's grid (d = 1 exactly) survive unchanged.
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = static_cast<float>(i * 8 - 127 < -127 ? -127 : i * 8 - 127);
  x[31] = 127;
  std::vector<float> y(32);
  dequantize_row(DType::kQ8_0, quantized(DType::kQ8_0, x).data(), y.data(), 32);
  EXPECT_EQ(x, y);
}

TEST(Quant, Q4_0LayoutMatchesGgml) {
  // Element j < 16 is the low nibble of qs[j], element j + 16 its high nibble.
  BlockQ4_0 b{};
  b.d = fp32_to_fp16(0.5f);
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  float y[32];
  dequantize_row(DType::kQ4_0, &b, y, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 0.5f * (j - 8));
    EXPECT_EQ(y[j + 16], 0.5f * (7 - j));
  }
}

// The reference dot equals a double dot of the dequantized weight and the
// dequantized activation, up to float accumulation.
TEST(Quant, RefDotMatchesDequantizedDot) {
  const int64_t n = 256 * 6;
  const std::vector<float> w = random_values(n, 11);
  const std::vector<float> x = random_values(n, 12);
  for (DType t : testing::kWeightTypes) {
    const std::vector<uint8_t> qw = quantized(t, w);
    std::vector<uint8_t> qa(ref::activation_row_bytes(t, n));
    ref::quantize_activation_row(t, x.data(), qa.data(), n);
    std::vector<float> wd(n), xd(n);
    ref::dequantize_row(t, qw.data(), wd.data(), n);
    const DType at = activation_type(t);
    if (at == DType::kQ8_0) {
      const auto* a = reinterpret_cast<const BlockQ8A*>(qa.data());
      for (int64_t i = 0; i < n; ++i) xd[i] = a[i / 32].d * a[i / 32].qs[i % 32];
    } else {
      ref::dequantize_row(at, qa.data(), xd.data(), n);
    }
    double want = 0, l1 = 0;
    for (int64_t i = 0; i < n; ++i) {
      want += static_cast<double>(wd[i]) * xd[i];
      l1 += std::fabs(static_cast<double>(wd[i]) * xd[i]);
    }
    // q4_1/q5_1 use the activation block sum s, stored rounded to f16 as in
    // ggml's q8_1: allow that rounding on top of float accumulation.
    double s_l1 = 0;
    if (t == DType::kQ4_1 || t == DType::kQ5_1) {
      const auto* a = reinterpret_cast<const BlockQ8A*>(qa.data());
      const size_t bb = info(t).block_bytes;
      for (int64_t b = 0; b < n / 32; ++b) {
        uint16_t m;
        std::memcpy(&m, qw.data() + b * bb + 2, 2);  // d, then m
        s_l1 += std::fabs(fp16_to_fp32(m) * a[b].s);
      }
    }
    const float got = ref::vec_dot(t, qw.data(), qa.data(), n);
    EXPECT_NEAR(got, want, 1e-5 * l1 + s_l1 / 2048) << dtype_name(t);
  }
}

TEST(Quant, Q8KBlockSums) {
  const std::vector<float> x = random_values(512, 3);
  std::vector<BlockQ8_K> b(2);
  quantize_row(DType::kQ8_K, x.data(), b.data(), 512);
  for (const auto& blk : b) {
    for (int g = 0; g < 16; ++g) {
      int s = 0;
      for (int l = 0; l < 16; ++l) s += blk.qs[16 * g + l];
      EXPECT_EQ(blk.bsums[g], s);
    }
  }
}

}  // namespace
}  // namespace snug::tensor
