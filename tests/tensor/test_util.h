// Shared helpers for the tensor tests: random data and the formats under test.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include "tensor/dtype.h"
#include "tensor/kernels.h"

namespace snug::tensor::testing {

inline constexpr DType kWeightTypes[] = {DType::kF32,  DType::kF16,    DType::kBF16,  DType::kQ4_0,
                                         DType::kQ4_1, DType::kQ5_0,   DType::kQ5_1,  DType::kQ8_0,
                                         DType::kQ2_K, DType::kQ3_K,   DType::kQ4_K,  DType::kQ5_K,
                                         DType::kQ6_K, DType::kQ8_0NM, DType::kQ4_0NM};

// Gaussian values with a per-32 scale that varies over two decades and a few
// outliers, like real weights and activations.
inline std::vector<float> random_values(int64_t n, uint32_t seed, float outlier_rate = 0.01f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.f, 1.f);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::vector<float> v(static_cast<size_t>(n));
  float scale = 1.f;
  for (int64_t i = 0; i < n; ++i) {
    if (i % 32 == 0) scale = std::pow(10.f, u(rng) * 2 - 1.5f);
    v[i] = g(rng) * scale * (u(rng) < outlier_rate ? 8.f : 1.f);
  }
  return v;
}

inline std::vector<uint8_t> quantized(DType t, const std::vector<float>& x) {
  std::vector<uint8_t> q(*row_bytes(t, static_cast<int64_t>(x.size())));
  quantize_row(t, x.data(), q.data(), static_cast<int64_t>(x.size()));
  return q;
}

// A test run once for every Highway target this build has and this CPU
// runs, with dispatch limited to that target while it runs; instantiated by
// SNUG_INSTANTIATE_TARGETS(Suite) for a suite `class Suite : public PerTarget {}`.
class PerTarget : public ::testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override { hwy::SetSupportedTargetsForTest(GetParam()); }
  void TearDown() override { hwy::SetSupportedTargetsForTest(0); }
};

// The grouped f32 kernel's arithmetic (attention_f16_heads on AVX-512, and on
// AVX2 in block-sum order; attention_kv_heads on the rows as stored) for one head in scalar code: a
// score's 16 lane sums fused over 16-column chunks, reduced as _mm512_reduce_add_ps does (lanes i +
// 8, then j + 4, k + 2, 0 + 1), times scale; exp_sum_ggml; each output element the fma chain over
// the positions, times 1 / sum.
inline std::vector<float> grouped_heads_twin(const float* q, const std::vector<float>& kf,
                                             const std::vector<float>& vf, int64_t n, int64_t dk,
                                             int64_t dv, float scale) {
  std::vector<float> p(static_cast<size_t>(n));
  float mx = -INFINITY;
  for (int64_t t = 0; t < n; ++t) {
    float a[16] = {};
    for (int64_t c = 0; c < dk; c += 16) {
      for (int i = 0; i < 16; ++i)
        a[i] = std::fma(kf[static_cast<size_t>(t * dk + c + i)], q[c + i], a[i]);
    }
    float s[8], u[4];
    for (int i = 0; i < 8; ++i) s[i] = a[i] + a[i + 8];
    for (int j = 0; j < 4; ++j) u[j] = s[j] + s[j + 4];
    const float f = (u[0] + u[2]) + (u[1] + u[3]);
    p[static_cast<size_t>(t)] = f * scale;
    mx = std::max(mx, p[static_cast<size_t>(t)]);
  }
  const auto inv = static_cast<float>(1.0 / exp_sum_ggml(p.data(), n, mx));
  std::vector<float> out(static_cast<size_t>(dv), 0.f);
  for (int64_t i = 0; i < dv; ++i) {
    for (int64_t t = 0; t < n; ++t) {
      out[static_cast<size_t>(i)] =
          std::fma(vf[static_cast<size_t>(t * dv + i)], p[static_cast<size_t>(t)],
                   out[static_cast<size_t>(i)]);
    }
    out[static_cast<size_t>(i)] *= inv;
  }
  return out;
}

inline std::string target_param_name(const ::testing::TestParamInfo<int64_t>& info) {
  return hwy::TargetName(info.param);
}

}  // namespace snug::tensor::testing

#define SNUG_INSTANTIATE_TARGETS(Suite)                                              \
  INSTANTIATE_TEST_SUITE_P(Targets, Suite,                                           \
                           ::testing::ValuesIn(hwy::SupportedAndGeneratedTargets()), \
                           ::snug::tensor::testing::target_param_name)
