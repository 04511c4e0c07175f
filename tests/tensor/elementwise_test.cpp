// Element-wise kernels (dispatched and reference) against straightforward
// double-precision formulas, on every Highway target the CPU supports.
#include <cmath>
#include <vector>

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include "tensor/kernels.h"
#include "tensor/kernels_ref.h"
#include "test_util.h"

namespace snug::tensor {
namespace {

using testing::random_values;

class Elementwise : public ::testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override { hwy::SetSupportedTargetsForTest(GetParam()); }
  void TearDown() override { hwy::SetSupportedTargetsForTest(0); }
};

constexpr int64_t kSizes[] = {1, 7, 64, 577, 2048};

TEST_P(Elementwise, RmsNorm) {
  for (int64_t n : kSizes) {
    const auto x = random_values(n, 1), w = random_values(n, 2);
    double ss = 0;
    for (float v : x) ss += static_cast<double>(v) * v;
    const double inv = 1.0 / std::sqrt(ss / n + 1e-6);
    std::vector<float> y(n), yr(n), inplace = x;
    rms_norm(x.data(), w.data(), y.data(), n, 1e-6f);
    ref::rms_norm(x.data(), w.data(), yr.data(), n, 1e-6f);
    rms_norm(inplace.data(), w.data(), inplace.data(), n, 1e-6f);
    for (int64_t i = 0; i < n; ++i) {
      const double want = x[i] * inv * w[i];
      EXPECT_NEAR(y[i], want, 2e-6 * std::fabs(want) + 1e-30) << n << " " << i;
      EXPECT_NEAR(yr[i], want, 2e-6 * std::fabs(want) + 1e-30);
      EXPECT_EQ(inplace[i], y[i]);
    }
  }
}

TEST_P(Elementwise, Softmax) {
  for (int64_t n : kSizes) {
    auto x = random_values(n, 3);
    for (auto& v : x) v *= 10;
    double mx = -1e300, sum = 0;
    for (float v : x) mx = std::max(mx, static_cast<double>(v));
    for (float v : x) sum += std::exp(v - mx);
    std::vector<float> y = x, yr = x;
    softmax(y.data(), n);
    ref::softmax(yr.data(), n);
    double total = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double want = std::exp(x[i] - mx) / sum;
      EXPECT_NEAR(y[i], want, 4e-6 * want + 1e-37) << n << " " << i;
      EXPECT_NEAR(yr[i], want, 4e-6 * want + 1e-37);
      total += y[i];
    }
    EXPECT_NEAR(total, 1.0, 1e-5);
  }
}

TEST_P(Elementwise, SiluAndGeluMul) {
  for (int64_t n : kSizes) {
    auto g = random_values(n, 4);
    for (auto& v : g) v *= 5;
    const auto up = random_values(n, 5);
    std::vector<float> s = g, sr = g, ge = g, ger = g;
    silu_mul(s.data(), up.data(), n);
    ref::silu_mul(sr.data(), up.data(), n);
    gelu_mul(ge.data(), up.data(), n);
    ref::gelu_mul(ger.data(), up.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double v = g[i];
      const double silu = v / (1 + std::exp(-v)) * up[i];
      const double gelu =
          0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))) * up[i];
      const double scale = std::fabs(v * up[i]) + 1e-30;
      EXPECT_NEAR(s[i], silu, 3e-6 * scale) << v;
      EXPECT_NEAR(sr[i], silu, 3e-6 * scale) << v;
      EXPECT_NEAR(ge[i], gelu, 3e-6 * scale) << v;
      EXPECT_NEAR(ger[i], gelu, 3e-6 * scale) << v;
    }
  }
}

TEST_P(Elementwise, DotAndAxpy) {
  for (int64_t n : kSizes) {
    const auto a = random_values(n, 6), b = random_values(n, 7);
    std::vector<uint16_t> ah(n);
    for (int64_t i = 0; i < n; ++i) ah[i] = fp32_to_fp16(a[i]);
    double want = 0, want_h = 0, l1 = 0;
    for (int64_t i = 0; i < n; ++i) {
      want += static_cast<double>(a[i]) * b[i];
      want_h += static_cast<double>(fp16_to_fp32(ah[i])) * b[i];
      l1 += std::fabs(static_cast<double>(a[i]) * b[i]);
    }
    EXPECT_NEAR(dot_f32(a.data(), b.data(), n), want, 1e-6 * l1);
    EXPECT_NEAR(ref::dot_f32(a.data(), b.data(), n), want, 1e-6 * l1);
    EXPECT_NEAR(dot_f16_f32(ah.data(), b.data(), n), want_h, 1e-6 * l1);
    EXPECT_NEAR(ref::dot_f16_f32(ah.data(), b.data(), n), want_h, 1e-6 * l1);
    std::vector<float> y = b, yh = b;
    axpy(0.37f, a.data(), y.data(), n);
    axpy_f16(0.37f, ah.data(), yh.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_NEAR(y[i], b[i] + 0.37 * a[i], 1e-6 * (std::fabs(b[i]) + std::fabs(a[i])));
      EXPECT_NEAR(yh[i], b[i] + 0.37 * fp16_to_fp32(ah[i]),
                  1e-6 * (std::fabs(b[i]) + std::fabs(a[i])));
    }
  }
}

TEST_P(Elementwise, Rope) {
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

INSTANTIATE_TEST_SUITE_P(Targets, Elementwise,
                         ::testing::ValuesIn(hwy::SupportedAndGeneratedTargets()),
                         [](const auto& info) { return std::string(hwy::TargetName(info.param)); });

}  // namespace
}  // namespace snug::tensor
