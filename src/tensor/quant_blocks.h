// Block layouts of the quantized formats, byte-for-byte those of ggml/GGUF so
// that weights are read straight from a mapped GGUF file. Each block stores
// block_size elements in block_bytes bytes (see dtype.cpp); f16 fields hold
// IEEE half bits. Element order inside a block is described per struct because
// the SIMD kernels rely on it.
//
// BlockQ8A is snug's own activation block for the 32-element formats (never
// stored in a file): an f32 scale and a precomputed scaled sum let q4_1/q5_1
// fold the weight minimum, and q4_0/q5_0 their offset, into one multiply-add.
#pragma once

#include <cstdint>

namespace snug::tensor {

inline constexpr int kQK = 32;    // elements per block of the 32-element formats
inline constexpr int kQKK = 256;  // elements per super-block of the K formats

// x[j] = d * ((qs[j % 16] >> (4 * (j / 16))) & 15) - 8)
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK / 2];
};
// x[j] = d * nibble(j) + m, nibble as in q4_0
struct BlockQ4_1 {
  uint16_t d, m;
  uint8_t qs[kQK / 2];
};
// x[j] = d * ((nibble(j) | bit j of qh << 4) - 16)
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
// x[j] = d * (nibble(j) | bit j of qh << 4) + m
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
// x[j] = d * qs[j]
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK];
};
// Activation block: x[j] ~= d * qs[j]; s = d * sum(qs).
struct BlockQ8A {
  float d;
  float s;
  int8_t qs[kQK];
};

// 16 groups of 16; group g: x = d * (scales[g] & 15) * q - dmin * (scales[g] >> 4),
// q (2 bits) of element 128*h + 32*k + l (l < 32) is (qs[32*h + l] >> 2k) & 3.
struct BlockQ2_K {
  uint8_t scales[kQKK / 16];
  uint8_t qs[kQKK / 4];
  uint16_t d, dmin;
};
// 16 groups of 16 with 6-bit signed scales (packed, offset 32); q in [-4, 3]:
// low 2 bits as q2_K, minus 4 where the element's hmask bit is clear;
// element i's hmask bit is bit (i / 32) of hmask[i % 32].
struct BlockQ3_K {
  uint8_t hmask[kQKK / 8];
  uint8_t qs[kQKK / 4];
  uint8_t scales[12];
  uint16_t d;
};
// 8 groups of 32 with 6-bit scales and mins packed in `scales` (get_scale_min);
// group g = 2c + h (c < 4) takes nibble h of qs[32c + l].
struct BlockQ4_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qs[kQKK / 2];
};
// q4_K plus a fifth bit: element 32g + l has bit g of qh[l].
struct BlockQ5_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qh[kQKK / 8];
  uint8_t qs[kQKK / 2];
};
// 16 groups of 16 with int8 scales; q in [-32, 31]. Element 128h + 32k + l:
// low nibble of ql[64h + 32(k&1) + l] (>> 4 when k >= 2), high 2 bits
// (qh[32h + l] >> 2k) & 3.
struct BlockQ6_K {
  uint8_t ql[kQKK / 2];
  uint8_t qh[kQKK / 4];
  int8_t scales[kQKK / 16];
  uint16_t d;
};
// Activation block for the K formats: x[j] ~= d * qs[j]; bsums[g] = sum of qs
// over group g of 16.
struct BlockQ8_K {
  float d;
  int8_t qs[kQKK];
  int16_t bsums[kQKK / 16];
};

// snug's own N:M-sparse formats (dtype.h's kQ8_0NM, kQ4_0NM; llama.cpp cannot
// read them): of every 8 consecutive elements exactly 4 are kept, which 2:4
// and 4:8 patterns both satisfy, so a block of 32 keeps 16. Bit j of a
// block's little-endian 32-bit `mask` is set where element j is kept (each
// mask byte has exactly 4 bits set), the kept elements are stored in order,
// and a dropped element is 0. Expanded (nm_sparse.h) a block is exactly the
// dense block of the same scale: q8_0's level 0, q4_0's level 8 where dropped.
//
// These structs hold one block's parts; a row is not an array of them. A
// row of nb blocks stores its parts by kind, so that a kernel reads each with
// plain loads: the nb f16 scales, then the nb masks, then the kept levels
// (nm_sparse.h's NmRow). Rows are therefore quantized and dequantized whole.
// Kept element k: x = d * (qs[k] - 128); a row keeps these 16 bytes per
// block (stored offset, as the int8 kernels take them: vpdpbusd multiplies
// unsigned by signed bytes).
struct BlockQ8_0NM {
  uint16_t d;
  uint8_t mask[4];
  uint8_t qs[kQK / 2];
};
// Kept element k: x = d * (((k < 8 ? qs[k] : qs[k - 8] >> 4) & 15) - 8); a
// row keeps these 8 bytes per block.
struct BlockQ4_0NM {
  uint16_t d;
  uint8_t mask[4];
  uint8_t qs[kQK / 4];
};

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ8_0NM) == 22);
static_assert(sizeof(BlockQ4_0NM) == 14);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ8A) == 40);
static_assert(sizeof(BlockQ2_K) == 84);
static_assert(sizeof(BlockQ3_K) == 110);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockQ8_K) == 292);

// The 6-bit scale and min of group j (< 8) of a q4_K/q5_K block.
inline void k4_scale_min(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// The 16 signed 6-bit scales of a q3_K block, in group order.
inline void q3k_scales(const uint8_t* s, int8_t out[16]) {
  for (int j = 0; j < 16; ++j) {
    const int lo = j < 8 ? (s[j] & 0xF) : (s[j - 8] >> 4);
    const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    out[j] = static_cast<int8_t>((lo | (hi << 4)) - 32);
  }
}

}  // namespace snug::tensor
