// f16/bf16 conversions: exact on every half value, round-to-nearest-even on
// every tie, and the special values (NaN, infinities, subnormals, signed zero).
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include <gtest/gtest.h>

#include "tensor/fp16.h"
#include "tensor/kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace snug::tensor {
namespace {

using detail::f32_bits;
using detail::f32_from_bits;

// f16 value of bits h computed in double from the definition.
double half_value(uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  const double v = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
  return s ? -v : v;
}

TEST(Fp16, EveryHalfDecodesExactlyAndRoundTrips) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = fp16_to_fp32(static_cast<uint16_t>(h));
    const int e = (h >> 10) & 31;
    if (e == 31) {
      if (h & 1023) {
        EXPECT_TRUE(std::isnan(f)) << h;
        EXPECT_EQ(fp32_to_fp16(f) & 0x8000u, h & 0x8000u);
        EXPECT_EQ(fp32_to_fp16(f) & 0x7c00u, 0x7c00u);
        EXPECT_NE(fp32_to_fp16(f) & 0x3ffu, 0u);
      } else {
        EXPECT_TRUE(std::isinf(f));
        EXPECT_EQ(fp32_to_fp16(f), h);
      }
      continue;
    }
    EXPECT_EQ(static_cast<double>(f), half_value(static_cast<uint16_t>(h))) << h;
    EXPECT_EQ(fp32_to_fp16(f), h) << h;
  }
}

TEST(Fp16, TiesRoundToEven) {
  // Midpoints between consecutive finite halves of the same sign.
  for (uint32_t h = 0; h < 0x7bff; ++h) {
    const double mid =
        (half_value(static_cast<uint16_t>(h)) + half_value(static_cast<uint16_t>(h + 1))) / 2;
    const float f = static_cast<float>(mid);
    ASSERT_EQ(static_cast<double>(f), mid);  // exact in f32
    const uint16_t want = (h & 1) ? h + 1 : h;
    EXPECT_EQ(fp32_to_fp16(f), want) << h;
    EXPECT_EQ(fp32_to_fp16(-f), want | 0x8000u) << h;
    // Just above and below the midpoint round away from the tie.
    EXPECT_EQ(fp32_to_fp16(std::nextafter(f, 1e9f)), h + 1) << h;
    EXPECT_EQ(fp32_to_fp16(std::nextafter(f, -1e9f)), h) << h;
  }
}

TEST(Fp16, OverflowUnderflowAndSpecials) {
  EXPECT_EQ(fp32_to_fp16(65504.f), 0x7bffu);
  EXPECT_EQ(fp32_to_fp16(65519.99f), 0x7bffu);
  EXPECT_EQ(fp32_to_fp16(65520.f), 0x7c00u);
  EXPECT_EQ(fp32_to_fp16(1e30f), 0x7c00u);
  EXPECT_EQ(fp32_to_fp16(-std::numeric_limits<float>::infinity()), 0xfc00u);
  EXPECT_EQ(fp32_to_fp16(-0.0f), 0x8000u);
  EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -25)), 0u);                       // tie to even zero
  EXPECT_EQ(fp32_to_fp16(std::nextafter(std::ldexp(1.0f, -25), 1.f)), 1u);  // min subnormal
  EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -140)), 0u);                      // f32 subnormal
  EXPECT_EQ(fp32_to_fp16(std::numeric_limits<float>::quiet_NaN()) & 0x7e00u, 0x7e00u);
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("f16c"))) uint16_t hw_f32_to_f16(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}

TEST(Fp16, MatchesF16cOnRandomBits) {
  if (!__builtin_cpu_supports("f16c")) GTEST_SKIP() << "no F16C";
  std::mt19937 rng(1);
  for (int i = 0; i < 4000000; ++i) {
    const float f = f32_from_bits(rng());
    if (std::isnan(f)) continue;
    ASSERT_EQ(fp32_to_fp16(f), hw_f32_to_f16(f)) << std::hex << f32_bits(f);
  }
}
#endif

TEST(Bf16, RoundTripTiesNanSubnormals) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_to_fp32(static_cast<uint16_t>(h));
    EXPECT_EQ(f32_bits(f), h << 16);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16_to_fp32(fp32_to_bf16(f))));
    } else {
      EXPECT_EQ(fp32_to_bf16(f), h);  // includes subnormals and infinities
    }
  }
  EXPECT_EQ(fp32_to_bf16(f32_from_bits(0x3f808000u)), 0x3f80u);  // tie, even stays
  EXPECT_EQ(fp32_to_bf16(f32_from_bits(0x3f818000u)), 0x3f82u);  // tie, odd rounds up
  EXPECT_EQ(fp32_to_bf16(f32_from_bits(0x3f808001u)), 0x3f81u);
  EXPECT_EQ(fp32_to_bf16(f32_from_bits(0x7f7fffffu)), 0x7f80u);  // overflow to inf
  EXPECT_EQ(fp32_to_bf16(f32_from_bits(0x00018000u)), 0x0002u);  // subnormal tie
  EXPECT_EQ(fp32_to_bf16(f32_from_bits(0x7f800001u)), 0x7fc0u);  // signalling NaN made quiet
}

}  // namespace
}  // namespace snug::tensor
