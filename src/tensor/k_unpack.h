// The integer form of one K-format super-block, shared by the scalar dot
// products and the portable SIMD path: 256 signed levels in element order plus
// per-group integer scales and mins, so that
//   dot(block, a) = d * a.d * sum_g scale[g] * sum_{i in g} q[i] * a.qs[i]
//               - dmin * a.d * sum_g min[g] * sum_{i in g} a.qs[i].
#pragma once

#include <cstdint>
#include <cstring>

#include "tensor/fp16.h"
#include "tensor/quant_blocks.h"

namespace snug::tensor::detail {

struct KBlockInts {
  int8_t q[kQKK];
  int16_t scale[16];
  int16_t min[16];
  int group;  // elements per group: 16 (q2_K, q3_K, q6_K) or 32 (q4_K, q5_K)
  float d, dmin;
};

inline void unpack_k(const BlockQ2_K& b, KBlockInts* o) {
  o->group = 16;
  o->d = f16_to_f32(b.d);
  o->dmin = f16_to_f32(b.dmin);
  for (int g = 0; g < 16; ++g) {
    o->scale[g] = b.scales[g] & 0xF;
    o->min[g] = b.scales[g] >> 4;
  }
  for (int e = 0; e < kQKK; ++e) {
    o->q[e] = static_cast<int8_t>((b.qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3);
  }
}

inline void unpack_k(const BlockQ3_K& b, KBlockInts* o) {
  o->group = 16;
  o->d = f16_to_f32(b.d);
  o->dmin = 0;
  int8_t sc[16];
  q3k_scales(b.scales, sc);
  for (int g = 0; g < 16; ++g) {
    o->scale[g] = sc[g];
    o->min[g] = 0;
  }
  for (int e = 0; e < kQKK; ++e) {
    const int low = (b.qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
    const bool high = b.hmask[e % 32] & (1u << (e / 32));
    o->q[e] = static_cast<int8_t>(low - (high ? 0 : 4));
  }
}

// q4_K and q5_K share their header: f16 d and dmin, then 8 groups of 32
// with 6-bit scales and mins packed in 12 bytes.
template <typename Block>
inline void unpack_k4_header(const Block& b, KBlockInts* o) {
  o->group = 32;
  o->d = f16_to_f32(b.d);
  o->dmin = f16_to_f32(b.dmin);
  for (int g = 0; g < 8; ++g) {
    uint8_t sc, m;
    k4_scale_min(g, b.scales, &sc, &m);
    o->scale[g] = sc;
    o->min[g] = m;
  }
}

inline void unpack_k(const BlockQ4_K& b, KBlockInts* o) {
  unpack_k4_header(b, o);
  for (int e = 0; e < kQKK; ++e) {
    const int g = e / 32;
    o->q[e] = static_cast<int8_t>((b.qs[32 * (g / 2) + e % 32] >> (4 * (g % 2))) & 0xF);
  }
}

inline void unpack_k(const BlockQ5_K& b, KBlockInts* o) {
  unpack_k4_header(b, o);
  for (int e = 0; e < kQKK; ++e) {
    const int g = e / 32, l = e % 32;
    const int lo = (b.qs[32 * (g / 2) + l] >> (4 * (g % 2))) & 0xF;
    o->q[e] = static_cast<int8_t>(lo | (((b.qh[l] >> g) & 1) << 4));
  }
}

inline void unpack_k(const BlockQ6_K& b, KBlockInts* o) {
  o->group = 16;
  o->d = f16_to_f32(b.d);
  o->dmin = 0;
  for (int g = 0; g < 16; ++g) {
    o->scale[g] = b.scales[g];
    o->min[g] = 0;
  }
  for (int e = 0; e < kQKK; ++e) {
    const int h = e / 128, k = (e % 128) / 32, l = e % 32;
    const int lo = (b.ql[64 * h + 32 * (k & 1) + l] >> (4 * (k >> 1))) & 0xF;
    const int hi = (b.qh[32 * h + l] >> (2 * k)) & 3;
    o->q[e] = static_cast<int8_t>((lo | (hi << 4)) - 32);
  }
}

// sum_g min[g] * (sum of a's levels over group g), from the q8_K group sums.
inline int32_t k_min_sum(const KBlockInts& k, const BlockQ8_K& a) {
  int32_t s = 0;
  if (k.group == 16) {
    for (int g = 0; g < 16; ++g) s += k.min[g] * a.bsums[g];
  } else {
    for (int g = 0; g < 8; ++g) s += k.min[g] * (a.bsums[2 * g] + a.bsums[2 * g + 1]);
  }
  return s;
}

}  // namespace snug::tensor::detail
