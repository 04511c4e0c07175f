// Helpers shared by the scalar quantizers (internal to tensor/).
#pragma once

#include <cstdint>
#include <cstring>

namespace snug::tensor::detail {

// Round to nearest (ties to even) for |f| <= 2^22, exactly as ggml's
// nearest_int: adding 1.5 * 2^23 leaves the rounded integer in the mantissa.
inline int nearest_int(float f) {
  const float v = f + 12582912.f;
  int32_t i;
  std::memcpy(&i, &v, 4);
  return (i & 0x007fffff) - 0x00400000;
}

template <typename T>
inline T clamp(T v, T lo, T hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

// K-format quantizers (quantize_k_ref.cpp); n is a multiple of 256.
void quantize_row_q2_K(const float* x, void* y, int64_t n);
void quantize_row_q3_K(const float* x, void* y, int64_t n);
void quantize_row_q4_K(const float* x, void* y, int64_t n);
void quantize_row_q5_K(const float* x, void* y, int64_t n);
void quantize_row_q6_K(const float* x, void* y, int64_t n);
void quantize_row_q8_K(const float* x, void* y, int64_t n);
// snug's activation block for the 32-element formats; n is a multiple of 32.
void quantize_row_q8a(const float* x, void* y, int64_t n);

}  // namespace snug::tensor::detail
