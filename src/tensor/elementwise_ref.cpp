// Scalar element-wise kernels in ggml's order of operations. rms_norm and rope
// are also what kernels.cpp runs (ggml computes them with scalar loops, so no
// vector path would keep llama.cpp's rounding); silu_mul is the scalar twin of
// ggml_order_simd.cpp's dispatched SiluMulGgml.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "tensor/fp16.h"
#include "tensor/kernels.h"
#include "tensor/kernels_ref.h"

namespace snug::tensor {

float exp_ggml(float x) {
  // Cody-Waite range reduction and a degree-5 polynomial, with the special
  // cases for |n| > 126 (scaling in two steps) and |n| > 192 (overflow/underflow).
  const float r = 0x1.8p23f;
  const float z = std::fma(x, 0x1.715476p+0f, r);
  const float n = z - r;
  const float b = std::fma(-n, 0x1.7f7d1cp-20f, std::fma(-n, 0x1.62e4p-1f, x));
  const uint32_t e = std::bit_cast<uint32_t>(z) << 23;
  const float k = std::bit_cast<float>(e + std::bit_cast<uint32_t>(1.f));
  const float u = b * b;
  const float j = std::fma(std::fma(std::fma(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u,
                                    std::fma(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                           u, 0x1.ffffecp-1f * b);
  if (!(std::fabs(n) > 126.f)) return std::fma(j, k, k);
  const uint32_t g = n <= 0.f ? 0x82000000u : 0u;
  const float s1 = std::bit_cast<float>(g + 0x7f000000u);
  const float s2 = std::bit_cast<float>(e - g);
  if (std::fabs(n) > 192.f) return s1 * s1;
  return std::fma(s2, j, s2) * s1;
}

}  // namespace snug::tensor

namespace snug::tensor::ref {

namespace {
// y = (x * scale) * weight from the row's sum of squares ss.
void rms_scale(const float* x, double ss, const float* weight, float* y, int64_t n, float eps) {
  const auto mean = static_cast<float>(ss / static_cast<double>(n));
  const float scale = 1.0f / std::sqrt(mean + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] * scale) * weight[i];
}
}  // namespace

void rms_norm(const float* x, const float* weight, float* y, int64_t n, float eps) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i] * x[i]);
  rms_scale(x, ss, weight, y, n, eps);
}

void rms_norm_rows(const float* x, const float* weight, float* y, int64_t n, int64_t rows,
                   float eps) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    const float* x0 = x + r * n;
    const float* x1 = x0 + n;
    const float* x2 = x1 + n;
    const float* x3 = x2 + n;
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int64_t i = 0; i < n; ++i) {
      s0 += static_cast<double>(x0[i] * x0[i]);
      s1 += static_cast<double>(x1[i] * x1[i]);
      s2 += static_cast<double>(x2[i] * x2[i]);
      s3 += static_cast<double>(x3[i] * x3[i]);
    }
    rms_scale(x0, s0, weight, y + r * n, n, eps);
    rms_scale(x1, s1, weight, y + (r + 1) * n, n, eps);
    rms_scale(x2, s2, weight, y + (r + 2) * n, n, eps);
    rms_scale(x3, s3, weight, y + (r + 3) * n, n, eps);
  }
  for (; r < rows; ++r) rms_norm(x + r * n, weight, y + r * n, n, eps);
}

void silu_mul(float* gate, const float* up, int64_t n) {
  // ggml_vec_swiglu_f32: groups of 8 with its exp approximation, the tail with libm's expf.
  const int64_t n8 = n - n % 8;
  for (int64_t i = 0; i < n8; ++i) gate[i] = (gate[i] / (1.0f + exp_ggml(-gate[i]))) * up[i];
  for (int64_t i = n8; i < n; ++i) gate[i] = (gate[i] / (1.0f + std::exp(-gate[i]))) * up[i];
}

// ggml's `0.5f*x*(1.0f + tanhf(SQRT_2_OVER_PI*x*(1.0f + GELU_COEF_A*x*x)))`,
// built as GNU C with FMA available, contracts the inner `1 + (a*x)*x` to one
// fma.
const uint16_t* gelu_f16_table() {
  static const std::vector<uint16_t> table = [] {
    std::vector<uint16_t> t(1u << 16);
    constexpr float kCoefA = 0.044715f;
    constexpr float kSqrt2OverPi = 0.79788456080286535587989211986876f;
    for (uint32_t i = 0; i < t.size(); ++i) {
      const float x = detail::f16_to_f32(static_cast<uint16_t>(i));
      const float inner = std::fma(kCoefA * x, x, 1.0f);
      t[i] = detail::f32_to_f16(0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * x * inner)));
    }
    return t;
  }();
  return table.data();
}

void gelu_mul(float* gate, const float* up, int64_t n) {
  const uint16_t* table = gelu_f16_table();
  for (int64_t i = 0; i < n; ++i) {
    const float x = gate[i];
    if (x <= -10.0f) {
      gate[i] = 0.0f;
    } else if (x >= 10.0f) {
      gate[i] = x * up[i];
    } else {
      gate[i] = detail::f16_to_f32(table[detail::f32_to_f16(x)]) * up[i];
    }
  }
}

void rope_cache(int64_t pos, int64_t rot_dim, float freq_base, float freq_scale, float* cs) {
  // Unscaled: no divisors, no YaRN, magnitude 1, which rope_cache_scaled
  // computes with exactly ggml's plain operations.
  RopeScaling s;
  s.freq_base = freq_base;
  s.freq_scale = freq_scale;
  rope_cache_scaled(pos, rot_dim, s, cs);
}

}  // namespace snug::tensor::ref

namespace snug::tensor {

void rope_yarn_corr_dims(int64_t rot_dim, int64_t n_ctx_orig, float freq_base, float beta_fast,
                         float beta_slow, float dims[2]) {
  // ggml_rope_yarn_corr_dim: the pair index whose wavelength spans n_rot turns of n_ctx_orig.
  auto corr_dim = [&](float n_rot) {
    constexpr float kPi = 3.14159265358979323846f;
    return static_cast<float>(rot_dim) *
           std::log(static_cast<float>(n_ctx_orig) / (n_rot * 2 * kPi)) / (2 * std::log(freq_base));
  };
  const float start = std::floor(corr_dim(beta_fast));
  const float end = std::ceil(corr_dim(beta_slow));
  dims[0] = std::max(0.f, start);
  dims[1] = std::min(static_cast<float>(rot_dim - 1), end);
}

void rope_cache_scaled(int64_t pos, int64_t rot_dim, const RopeScaling& s, float* cs) {
  // ggml_rope_cache_init and rope_yarn, operation for operation, with the two
  // multiply-adds GCC contracts into fmas in ggml-cpu's ops.cpp on an FMA
  // machine (checked against that code compiled with -march=native).
  const float theta_scale = std::pow(s.freq_base, -2.0f / static_cast<float>(rot_dim));
  float theta = static_cast<float>(pos);
  for (int64_t i = 0; i < rot_dim / 2; ++i) {
    const float ff = s.freq_factors != nullptr ? s.freq_factors[i] : 1.0f;
    const float extrap = theta / ff;
    const float interp = s.freq_scale * extrap;
    float t = interp, mscale = s.attn_factor;
    if (s.ext_factor != 0.0f) {
      const float y = (static_cast<float>(i) - s.corr_dims[0]) /
                      std::max(0.001f, s.corr_dims[1] - s.corr_dims[0]);
      const float ramp_mix = (1 - std::min(1.f, std::max(0.f, y))) * s.ext_factor;
      t = std::fma(interp, 1 - ramp_mix, extrap * ramp_mix);
      mscale *= std::fma(0.1f, std::log(1.0f / s.freq_scale), 1.0f);
    }
    cs[2 * i] = std::cos(t) * mscale;
    cs[2 * i + 1] = std::sin(t) * mscale;
    theta *= theta_scale;
  }
}

}  // namespace snug::tensor

namespace snug::tensor::ref {

void rope_apply(float* x, int64_t rot_dim, const float* cs, RopeMode mode) {
  const int64_t half = rot_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float c = cs[2 * i], s = cs[2 * i + 1];
    const int64_t i0 = mode == RopeMode::kNorm ? 2 * i : i;
    const int64_t i1 = mode == RopeMode::kNorm ? 2 * i + 1 : i + half;
    const float x0 = x[i0], x1 = x[i1];
    // ggml's rotate_pairs as GCC contracts it into fused multiply-adds.
    x[i0] = std::fma(x0, c, -(x1 * s));
    x[i1] = std::fma(x0, s, x1 * c);
  }
}

void rope(float* x, int64_t head_dim, int64_t rot_dim, int64_t pos, float freq_base,
          float freq_scale, RopeMode mode) {
  float cs[1024];
  ref::rope_cache(pos, rot_dim, freq_base, freq_scale, cs);
  ref::rope_apply(x, rot_dim, cs, mode);
  (void)head_dim;  // elements past rot_dim are left as they are
}

}  // namespace snug::tensor::ref
