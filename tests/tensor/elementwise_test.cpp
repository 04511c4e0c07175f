// Element-wise kernels against straightforward double-precision formulas.
// silu_mul, gelu_mul and rope_apply are Highway-dispatched: on every target the CPU
// supports they must give the bits of their scalar twins (ref::). rms_norm
// runs the scalar code on every target (ggml sums its squares in double, in
// order), so it is checked once; rms_norm_rows keeps that order a row to a
// lane on AVX-512, and is checked on every target.
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include "tensor/fp16.h"
#include "tensor/kernels.h"
#include "tensor/kernels_ref.h"
#include "test_util.h"

namespace snug::tensor {
namespace {

using testing::random_values;

class ElementwiseDispatched : public testing::PerTarget {};

// Whole vectors of 8 and 16 lanes, and tails of every length the kernels split off.
constexpr int64_t kSizes[] = {1, 7, 8, 64, 577, 2048};

TEST(Elementwise, RmsNorm) {
  for (int64_t n : kSizes) {
    const auto x = random_values(n, 1), w = random_values(n, 2);
    double ss = 0;
    for (float v : x) ss += static_cast<double>(v) * v;
    const double inv = 1.0 / std::sqrt(ss / n + 1e-6);
    std::vector<float> y(n), inplace = x;
    rms_norm(x.data(), w.data(), y.data(), n, 1e-6f);
    rms_norm(inplace.data(), w.data(), inplace.data(), n, 1e-6f);
    for (int64_t i = 0; i < n; ++i) {
      const double want = x[i] * inv * w[i];
      EXPECT_NEAR(y[i], want, 2e-6 * std::fabs(want) + 1e-30) << n << " " << i;
      EXPECT_EQ(inplace[i], y[i]);
    }
  }
}

// Rows normalised together (their sums interleaved, or a row to a lane on
// AVX-512): each row the bits of rms_norm on it alone, in place or not, on
// every target, for row counts around the groups of four, eight and sixteen.
TEST_P(ElementwiseDispatched, RmsNormRowsIsRmsNormPerRow) {
  for (int64_t n : kSizes) {
    for (int64_t rows : {1, 3, 4, 5, 8, 11, 16, 17, 24, 35}) {
      const auto x = random_values(n * rows, 3), w = random_values(n, 4);
      std::vector<float> y(static_cast<size_t>(n * rows)), inplace = x;
      rms_norm_rows(x.data(), w.data(), y.data(), n, rows, 1e-5f);
      rms_norm_rows(inplace.data(), w.data(), inplace.data(), n, rows, 1e-5f);
      std::vector<float> one(static_cast<size_t>(n));
      for (int64_t r = 0; r < rows; ++r) {
        rms_norm(x.data() + r * n, w.data(), one.data(), n, 1e-5f);
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(std::bit_cast<uint32_t>(y[r * n + i]), std::bit_cast<uint32_t>(one[i]))
              << n << " " << rows << " " << r << " " << i;
          ASSERT_EQ(std::bit_cast<uint32_t>(inplace[r * n + i]), std::bit_cast<uint32_t>(one[i]));
        }
      }
    }
  }
}

// Rows whose sum of squares in double depends on the order of the additions
// where it shows in the float mean: 2^24 (x = 2^12), then four 0.25 (x =
// 0.5), then three 2^-30 (x = 2^-15), each lost against 2^24 + 1, leave the
// mean 2^21 + 2^-3, a tie that rounds to 2^21; summed in any other order the
// small squares would carry the mean past the tie. Random rows (above) cannot
// tell an order from another: the float rounding hides the double's last bits.
TEST_P(ElementwiseDispatched, RmsNormRowsKeepsTheOrderOfTheSum) {
  const float pattern[8] = {4096.f, 0.5f, 0.5f, 0.5f, 0.5f, 0x1p-15f, 0x1p-15f, 0x1p-15f};
  for (int64_t n : {8, 16, 64}) {
    for (int64_t rows : {1, 8, 16, 24}) {
      std::vector<float> x(static_cast<size_t>(n * rows), 0.f), w(static_cast<size_t>(n), 1.f);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t at = (r % (n / 8)) * 8;  // the pattern in a different group of eight per row
        for (int i = 0; i < 8; ++i) x[r * n + at + i] = pattern[i];
      }
      std::vector<float> y(x.size()), one(static_cast<size_t>(n));
      rms_norm_rows(x.data(), w.data(), y.data(), n, rows, 0.f);
      for (int64_t r = 0; r < rows; ++r) {
        ref::rms_norm(x.data() + r * n, w.data(), one.data(), n, 0.f);
        const int64_t at = (r % (n / 8)) * 8;
        // 1 / sqrt(2^21 x 8 / n) exactly, as the tie rounded down gives it.
        ASSERT_EQ(one[at], 4096.f / std::sqrt(0x1p21f * 8.f / static_cast<float>(n)));
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(std::bit_cast<uint32_t>(y[r * n + i]), std::bit_cast<uint32_t>(one[i]))
              << n << " " << rows << " " << r << " " << i;
        }
      }
    }
  }
}

// Every f16 value, the midpoints between neighbours (where rounding to f16
// ties) and the floats either side of them, the +-10 bounds and beyond, the
// infinities: the bits of the scalar twin (any NaN for a NaN).
TEST_P(ElementwiseDispatched, GeluMulIsItsScalarTwin) {
  std::vector<float> g;
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float v = detail::f16_to_f32(static_cast<uint16_t>(h));
    const float next = detail::f16_to_f32(static_cast<uint16_t>(h + 1));
    g.push_back(v);
    if ((h & 0x7C00) != 0x7C00 && ((h + 1) & 0x7C00) != 0x7C00) {
      const float mid = static_cast<float>((static_cast<double>(v) + next) / 2);
      g.insert(g.end(), {mid, std::nextafter(mid, -1e30f), std::nextafter(mid, 1e30f)});
    }
  }
  for (float v : {-10.f, 10.f, std::nextafter(-10.f, 0.f), std::nextafter(10.f, 0.f), -1e30f, 1e30f,
                  -INFINITY, INFINITY}) {
    g.push_back(v);
  }
  const int64_t n = static_cast<int64_t>(g.size());
  auto up = random_values(n, 6);
  up[1] = INFINITY;  // g[1] is the smallest positive subnormal: a finite product
  std::vector<float> s = g, sr = g;
  gelu_mul(s.data(), up.data(), n);
  ref::gelu_mul(sr.data(), up.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(sr[i])) {
      EXPECT_TRUE(std::isnan(s[i])) << i << ": gelu(" << g[i] << ")";
      continue;
    }
    ASSERT_EQ(std::bit_cast<uint32_t>(s[i]), std::bit_cast<uint32_t>(sr[i]))
        << i << ": gelu(" << g[i] << ") x " << up[i] << " = " << s[i] << " vs scalar " << sr[i];
  }
  // Below -10 the result is 0 whatever up holds.
  std::vector<float> low = {-11.f, -11.f, -11.f, -11.f, -11.f, -11.f, -11.f, -11.f, -11.f};
  const std::vector<float> wild = {INFINITY, -INFINITY, NAN, 1.f, 2.f, 3.f, 4.f, 5.f, NAN};
  gelu_mul(low.data(), wild.data(), 9);
  for (float v : low) EXPECT_EQ(std::bit_cast<uint32_t>(v), 0u);
}

TEST_P(ElementwiseDispatched, SiluMulIsItsScalarTwin) {
  for (int64_t n : kSizes) {
    auto g = random_values(n, 4);
    for (auto& v : g) v *= 5;
    g[0] = 100.f;              // exp(-x) underflows: silu(x) = x
    if (n > 1) g[1] = -100.f;  // exp(-x) overflows: silu(x) = -0
    // Both again, and past exp's second bound (|n| > 192), in later chunks
    // of 16 and 8 lanes.
    if (n > 40) g[20] = 140.f, g[37] = -95.f, g[n - 3] = -140.f, g[n - 9] = 89.f;
    const auto up = random_values(n, 5);
    std::vector<float> s = g, sr = g;
    silu_mul(s.data(), up.data(), n);
    ref::silu_mul(sr.data(), up.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double v = g[i];
      const double want = v / (1 + std::exp(-v)) * up[i];
      EXPECT_EQ(std::bit_cast<uint32_t>(s[i]), std::bit_cast<uint32_t>(sr[i]))
          << "n " << n << " i " << i << ": " << s[i] << " vs scalar " << sr[i];
      EXPECT_NEAR(sr[i], want, 3e-6 * std::fabs(v * up[i]) + 1e-30) << v;
    }
  }
}

TEST(Elementwise, Rope) {
  for (RopeMode mode : {RopeMode::kNorm, RopeMode::kNeox}) {
    for (int64_t pos : {0, 1, 17, 4095}) {
      const int64_t head_dim = 64, rot_dim = 48;
      const auto x = random_values(head_dim, 8);
      std::vector<float> y = x;
      rope(y.data(), head_dim, rot_dim, pos, 10000.f, 0.5f, mode);
      // The angle follows ggml's float recurrence theta_{i+1} = theta_i * base^(-2/rot_dim),
      // which llama.cpp's results depend on; the rotation is checked in double.
      const float theta_scale = std::pow(10000.f, -2.0f / static_cast<float>(rot_dim));
      float theta_f = static_cast<float>(pos);
      for (int64_t i = 0; i < rot_dim / 2; ++i, theta_f *= theta_scale) {
        const double th = static_cast<double>(0.5f * theta_f);
        const int64_t i0 = mode == RopeMode::kNorm ? 2 * i : i;
        const int64_t i1 = mode == RopeMode::kNorm ? 2 * i + 1 : i + rot_dim / 2;
        const double x0 = x[i0], x1 = x[i1];
        const double tol = 2e-6 * (std::fabs(x0) + std::fabs(x1));
        EXPECT_NEAR(y[i0], x0 * std::cos(th) - x1 * std::sin(th), tol);
        EXPECT_NEAR(y[i1], x0 * std::sin(th) + x1 * std::cos(th), tol);
      }
      for (int64_t i = rot_dim; i < head_dim; ++i) EXPECT_EQ(y[i], x[i]);
    }
  }
}

// Head sizes with whole vectors and every tail, both pair layouts, angles
// from positions 0 to 100000, and values that test signed zeros, huge and
// tiny magnitudes.
TEST_P(ElementwiseDispatched, RopeApplyIsItsScalarTwin) {
  for (RopeMode mode : {RopeMode::kNorm, RopeMode::kNeox}) {
    for (int64_t rot_dim : {2, 6, 8, 14, 16, 24, 48, 64, 80, 128, 256}) {
      for (int64_t pos : {0, 3, 511, 100000}) {
        std::vector<float> cs(static_cast<size_t>(rot_dim));
        rope_cache(pos, rot_dim, 10000.f, 1.f, cs.data());
        auto x = random_values(rot_dim, 9 + rot_dim);
        // -0 rotated by an angle whose sine is +0 (position 0): the sign of
        // each zero term decides the result's.
        x[0] = -0.f;
        x[1] = 0.f;
        x[rot_dim / 2] = 0.f;
        if (rot_dim > 3) x[3] = 3e38f;
        if (rot_dim > 5) x[5] = 1e-40f;
        std::vector<float> y = x, yr = x;
        rope_apply(y.data(), rot_dim, cs.data(), mode);
        ref::rope_apply(yr.data(), rot_dim, cs.data(), mode);
        for (int64_t i = 0; i < rot_dim; ++i) {
          EXPECT_EQ(std::bit_cast<uint32_t>(y[i]), std::bit_cast<uint32_t>(yr[i]))
              << "rot_dim " << rot_dim << " pos " << pos << " i " << i << ": " << y[i]
              << " vs scalar " << yr[i];
        }
      }
    }
  }
}

SNUG_INSTANTIATE_TARGETS(ElementwiseDispatched);

}  // namespace
}  // namespace snug::tensor
