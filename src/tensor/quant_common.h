// Helpers shared by the scalar quantizers (internal to tensor/).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "tensor/fp16.h"
#include "tensor/quant_blocks.h"

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

// Group maxima below this quantize to zero (ggml's GROUP_MAX_EPS).
constexpr float kGroupMaxEps = 1e-15f;

// Packs four 2-bit planes: qs[32h + l] holds L[128h + 32k + l] in bits 2k.
inline void pack_2bit(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < kQKK; j += 128) {
    for (int l = 0; l < 32; ++l) {
      qs[j / 4 + l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                                           (L[j + l + 96] << 6));
    }
  }
}

// The end of a q6_K block, the same with or without importance weights: from
// the 16 group scales (max_scale: the one of largest magnitude, not ~0) the
// block and group scales, the levels of x under them, and their 4+2-bit packing.
inline void finish_q6_K(const float* x, const float* scales, float max_scale, int8_t* L,
                        BlockQ6_K* y) {
  const float iscale = -128.f / max_scale;
  y->d = f32_to_f16(1 / iscale);
  for (int ib = 0; ib < 16; ++ib) {
    y->scales[ib] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
  }
  for (int j = 0; j < 16; ++j) {
    const float d = f16_to_f32(y->d) * y->scales[j];
    if (!d) continue;
    for (int ii = 0; ii < 16; ++ii) {
      L[16 * j + ii] = static_cast<int8_t>(clamp(nearest_int(x[16 * j + ii] / d), -32, 31) + 32);
    }
  }
  for (int h = 0; h < 2; ++h) {
    uint8_t* ql = y->ql + 64 * h;
    uint8_t* qh = y->qh + 32 * h;
    const int8_t* Lh = L + 128 * h;
    for (int l = 0; l < 32; ++l) {
      ql[l] = static_cast<uint8_t>((Lh[l] & 0xF) | ((Lh[l + 64] & 0xF) << 4));
      ql[l + 32] = static_cast<uint8_t>((Lh[l + 32] & 0xF) | ((Lh[l + 96] & 0xF) << 4));
      qh[l] = static_cast<uint8_t>((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) |
                                   ((Lh[l + 64] >> 4) << 4) | ((Lh[l + 96] >> 4) << 6));
    }
  }
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
