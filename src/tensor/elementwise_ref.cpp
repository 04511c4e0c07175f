// Scalar element-wise kernels and reductions: the reference for
// elementwise_simd.cpp. Sums accumulate in double where that keeps the
// reference clearly more accurate than the SIMD path it checks.
#include <cmath>

#include "tensor/fp16.h"
#include "tensor/kernels_ref.h"

namespace snug::tensor::ref {

void rms_norm(const float* x, const float* weight, float* y, int64_t n, float eps) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float scale = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale * weight[i];
}

void softmax(float* x, int64_t n) {
  if (n <= 0) return;
  float mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void silu_mul(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void gelu_mul(float* gate, const float* up, int64_t n) {
  constexpr float kSqrt2OverPi = 0.79788456080286535588f;
  for (int64_t i = 0; i < n; ++i) {
    const float v = gate[i];
    const float t = std::tanh(kSqrt2OverPi * v * (1.0f + 0.044715f * v * v));
    gate[i] = 0.5f * v * (1.0f + t) * up[i];
  }
}

float dot_f32(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  return static_cast<float>(s);
}

void axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

float dot_f16_f32(const uint16_t* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(detail::f16_to_f32(a[i])) * b[i];
  return static_cast<float>(s);
}

void axpy_f16(float a, const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * detail::f16_to_f32(x[i]);
}

void rope(float* x, int64_t head_dim, int64_t rot_dim, int64_t pos, float freq_base,
          float freq_scale, RopeMode mode) {
  const int64_t half = rot_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double theta = static_cast<double>(pos) * freq_scale *
                         std::pow(static_cast<double>(freq_base), -2.0 * i / rot_dim);
    const float c = static_cast<float>(std::cos(theta)), s = static_cast<float>(std::sin(theta));
    const int64_t i0 = mode == RopeMode::kNorm ? 2 * i : i;
    const int64_t i1 = mode == RopeMode::kNorm ? 2 * i + 1 : i + half;
    const float x0 = x[i0], x1 = x[i1];
    x[i0] = x0 * c - x1 * s;
    x[i1] = x0 * s + x1 * c;
  }
  (void)head_dim;  // elements past rot_dim are left as they are
}

}  // namespace snug::tensor::ref
