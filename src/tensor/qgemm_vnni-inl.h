// Row-block matrix product for q4_0, q4_1 and q8_0 on AVX512-VNNI: sixteen
// weight rows sit in the sixteen int32 lanes of a zmm register, so one
// vpdpbusd does four multiply-adds for each of 16 rows against one token's
// broadcast activation bytes. qdot_avx2-inl.h's tile kernel spends ~6 vector
// operations per (row, token, block); this one ~2.2 at two tokens a pass.
//
// Same arithmetic as TileQ32Avx2, bit for bit: for each (row, token) it keeps
// ggml's eight float accumulators, one per group of 4 elements of a block,
// each adding (exact int32 sum of the group's 4 products) x (weight scale x
// activation scale) by one FMA per block; the final sum
// ((g0+g4)+(g2+g6))+((g1+g5)+(g3+g7)) + (sum of min x activation sum) is Hsum's
// tree. So which kernel handles a row or a token never changes a result, and
// batch invariance and the identity with llama.cpp hold as before.
//
// A weight block of 16 rows is repacked once per pass (unpacked to unsigned
// int8 and transposed so that group k of all 16 rows is one register) into a
// chunk on the stack; the tokens then read it from L1. Offset formats (q4_0
// levels q - 8; q8_0, stored here as level + 128) start each group's sum at
// -offset x (the sum of the token's 4 activations), which keeps it exact and
// leaves the activations as vpdpbusd's broadcast operand.
#if defined(SNUG_TENSOR_QGEMM_VNNI_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SNUG_TENSOR_QGEMM_VNNI_INL_H_
#undef SNUG_TENSOR_QGEMM_VNNI_INL_H_
#else
#define SNUG_TENSOR_QGEMM_VNNI_INL_H_
#endif

#include <hwy/highway.h>

#include "tensor/simd_x86.h"

#if SNUG_X86_VNNI512
#include <immintrin.h>

#include <cstddef>
#include <cstring>
#include <type_traits>

#include "tensor/dtype.h"
#include "tensor/quant_blocks.h"

HWY_BEFORE_NAMESPACE();
SNUG_BEGIN_VNNI
namespace snug::tensor::HWY_NAMESPACE {

inline constexpr int kVRows = 16;   // weight rows per register (int32 lanes)
inline constexpr int kVChunk = 16;  // weight blocks repacked at a time
inline constexpr int kVToks = 16;   // tokens whose accumulators one pass keeps

// One repacked chunk of 16 rows x kVChunk blocks.
struct alignas(64) VPack {
  __m512i w[kVChunk][8];  // lane r: unsigned levels 4k..4k+3 of row r's block (k = index)
  __m512 d[kVChunk];      // weight scales
  __m512 m[kVChunk];      // weight minimums (q4_1)
};

// A (row, token) pair's state between chunks: the eight group accumulators and
// the sum of min x activation sum, for 16 rows.
struct alignas(64) VAcc {
  __m512 g[8];
  __m512 bias;
};

// out[k] lane r = 32-bit word k of the 16 bytes at base + r * stride.
HWY_INLINE void Transpose16x4(const uint8_t* base, int64_t stride, __m512i out[4]) {
  __m512i z[4];  // z[g], 128-bit lane L: row 4L + g
  for (int g = 0; g < 4; ++g) {
    const auto row = [&](int r) {
      return _mm_loadu_si128(reinterpret_cast<const __m128i*>(base + r * stride));
    };
    __m512i v = _mm512_castsi128_si512(row(g));
    v = _mm512_inserti32x4(v, row(4 + g), 1);
    v = _mm512_inserti32x4(v, row(8 + g), 2);
    z[g] = _mm512_inserti32x4(v, row(12 + g), 3);
  }
  const __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]);
  const __m512i t1 = _mm512_unpackhi_epi32(z[0], z[1]);
  const __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]);
  const __m512i t3 = _mm512_unpackhi_epi32(z[2], z[3]);
  out[0] = _mm512_unpacklo_epi64(t0, t2);
  out[1] = _mm512_unpackhi_epi64(t0, t2);
  out[2] = _mm512_unpacklo_epi64(t1, t3);
  out[3] = _mm512_unpackhi_epi64(t1, t3);
}

// Where a format keeps its parts, and how its levels are made.
struct VQ4_0 {
  using Block = BlockQ4_0;
  static constexpr int kOffset = 8;  // levels q - 8
  static constexpr bool kMin = false;
  static constexpr int kQs = offsetof(BlockQ4_0, qs);
};
struct VQ4_1 {
  using Block = BlockQ4_1;
  static constexpr int kOffset = 0;
  static constexpr bool kMin = true;
  static constexpr int kQs = offsetof(BlockQ4_1, qs);
};
struct VQ8_0 {
  using Block = BlockQ8_0;
  static constexpr int kOffset = 128;  // int8 levels, stored here as level + 128
  static constexpr bool kMin = false;
  static constexpr int kQs = offsetof(BlockQ8_0, qs);
};

// Repacks blocks [0, nb) of 16 rows starting at w (row stride `stride`).
template <class F>
HWY_INLINE void Repack(const uint8_t* w, int64_t stride, int nb, VPack& p) {
  constexpr int64_t kBytes = sizeof(typename F::Block);
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  for (int b = 0; b < nb; ++b) {
    const uint8_t* blk = w + b * kBytes;
    // Every block starts with its f16 scale; q4_1's f16 minimum follows it.
    // (Scalar loads: on Zen 4 they beat vpgatherdd.)
    alignas(64) int32_t dm32[kVRows];
    for (int r = 0; r < kVRows; ++r) std::memcpy(&dm32[r], blk + r * stride, 4);
    const __m512i dm = _mm512_load_si512(dm32);
    p.d[b] = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dm));
    if constexpr (F::kMin)
      p.m[b] = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dm, 16)));
    __m512i* g = p.w[b];
    if constexpr (std::is_same_v<F, VQ8_0>) {
      Transpose16x4(blk + F::kQs, stride, g);
      Transpose16x4(blk + F::kQs + 16, stride, g + 4);
      const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
      for (int k = 0; k < 8; ++k) g[k] = _mm512_xor_si512(g[k], flip);
    } else {
      // Element j < 16 is the low nibble of qs[j], element j + 16 its high one.
      __m512i q[4];
      Transpose16x4(blk + F::kQs, stride, q);
      for (int k = 0; k < 4; ++k) {
        g[k] = _mm512_and_si512(q[k], low4);
        g[k + 4] = _mm512_and_si512(_mm512_srli_epi32(q[k], 4), low4);
      }
    }
  }
}

// One group's exact int32 sums for 16 rows: w from the pack, x4 the token's
// 4 activation bytes, c4 (offset formats) -offset x their sum.
template <class F>
HWY_INLINE __m512i GroupSum(__m512i w, const uint8_t* x4, const int32_t* c4) {
  int32_t v;
  std::memcpy(&v, x4, 4);
  const __m512i x = _mm512_set1_epi32(v);
  const __m512i init = F::kOffset ? _mm512_set1_epi32(*c4) : _mm512_setzero_si512();
  return _mm512_dpbusd_epi32(init, w, x);
}

// T tokens (1 or 2) against one repacked chunk of nb blocks. a[t]: token t's
// activation blocks of the chunk; co[t]: for offset formats, -offset x the sum
// of each group of 4 activations, 8 per block. first: the chunk is the row's
// first. The accumulators are named variables: as arrays, GCC 12 kept some in memory.
template <class F, int T>
HWY_NOINLINE void VTokens(const VPack& p, int nb, const BlockQ8A* const* a,
                          const int32_t* const* co, bool first, VAcc* acc) {
  static_assert(T == 1 || T == 2);
  constexpr int t1 = T - 1;  // the second token, or the first again when T = 1
  __m512 s0_0, s0_1, s0_2, s0_3, s0_4, s0_5, s0_6, s0_7, bias0;
  __m512 s1_0, s1_1, s1_2, s1_3, s1_4, s1_5, s1_6, s1_7, bias1;
#define SNUG_VLOAD(t, k)                                               \
  do {                                                                 \
    s##t##_##k = first ? _mm512_setzero_ps() : acc[(t) ? t1 : 0].g[k]; \
  } while (0)
  SNUG_VLOAD(0, 0);
  SNUG_VLOAD(0, 1);
  SNUG_VLOAD(0, 2);
  SNUG_VLOAD(0, 3);
  SNUG_VLOAD(0, 4);
  SNUG_VLOAD(0, 5);
  SNUG_VLOAD(0, 6);
  SNUG_VLOAD(0, 7);
  SNUG_VLOAD(1, 0);
  SNUG_VLOAD(1, 1);
  SNUG_VLOAD(1, 2);
  SNUG_VLOAD(1, 3);
  SNUG_VLOAD(1, 4);
  SNUG_VLOAD(1, 5);
  SNUG_VLOAD(1, 6);
  SNUG_VLOAD(1, 7);
#undef SNUG_VLOAD
  bias0 = first ? _mm512_setzero_ps() : acc[0].bias;
  bias1 = first ? _mm512_setzero_ps() : acc[t1].bias;
  for (int b = 0; b < nb; ++b) {
    const BlockQ8A& a0 = a[0][b];
    const BlockQ8A& a1 = a[t1][b];
    const __m512 dd0 = _mm512_mul_ps(p.d[b], _mm512_set1_ps(a0.d));
    const __m512 dd1 = _mm512_mul_ps(p.d[b], _mm512_set1_ps(a1.d));
    if constexpr (F::kMin) {
      bias0 = _mm512_add_ps(bias0, _mm512_mul_ps(p.m[b], _mm512_set1_ps(a0.s)));
      if constexpr (T == 2)
        bias1 = _mm512_add_ps(bias1, _mm512_mul_ps(p.m[b], _mm512_set1_ps(a1.s)));
    }
    const auto* x0 = reinterpret_cast<const uint8_t*>(a0.qs);
    const auto* x1 = reinterpret_cast<const uint8_t*>(a1.qs);
    const int32_t* c0 = F::kOffset ? co[0] + 8 * b : nullptr;
    const int32_t* c1 = F::kOffset ? co[t1] + 8 * b : nullptr;
    const __m512i* w = p.w[b];
#define SNUG_VGROUP(k)                                                                             \
  do {                                                                                             \
    const __m512i wk = w[k];                                                                       \
    s0_##k =                                                                                       \
        _mm512_fmadd_ps(_mm512_cvtepi32_ps(GroupSum<F>(wk, x0 + 4 * (k), c0 + (k))), dd0, s0_##k); \
    if constexpr (T == 2) {                                                                        \
      s1_##k = _mm512_fmadd_ps(_mm512_cvtepi32_ps(GroupSum<F>(wk, x1 + 4 * (k), c1 + (k))), dd1,   \
                               s1_##k);                                                            \
    }                                                                                              \
  } while (0)
    SNUG_VGROUP(0);
    SNUG_VGROUP(1);
    SNUG_VGROUP(2);
    SNUG_VGROUP(3);
    SNUG_VGROUP(4);
    SNUG_VGROUP(5);
    SNUG_VGROUP(6);
    SNUG_VGROUP(7);
#undef SNUG_VGROUP
  }
#define SNUG_VSTORE(t, k)     \
  do {                        \
    acc[t].g[k] = s##t##_##k; \
  } while (0)
  SNUG_VSTORE(0, 0);
  SNUG_VSTORE(0, 1);
  SNUG_VSTORE(0, 2);
  SNUG_VSTORE(0, 3);
  SNUG_VSTORE(0, 4);
  SNUG_VSTORE(0, 5);
  SNUG_VSTORE(0, 6);
  SNUG_VSTORE(0, 7);
  acc[0].bias = bias0;
  if constexpr (T == 2) {
    SNUG_VSTORE(1, 0);
    SNUG_VSTORE(1, 1);
    SNUG_VSTORE(1, 2);
    SNUG_VSTORE(1, 3);
    SNUG_VSTORE(1, 4);
    SNUG_VSTORE(1, 5);
    SNUG_VSTORE(1, 6);
    SNUG_VSTORE(1, 7);
    acc[1].bias = bias1;
  }
#undef SNUG_VSTORE
}

// y[t * y_stride + r] for rows [r0, r1) (a multiple of 16 apart) and all
// n_tok tokens; act: BlockQ8A rows of act_bytes each.
template <class F>
void MatmulVnni(const uint8_t* wd, int64_t row_bytes, int64_t cols, const uint8_t* act,
                int64_t act_bytes, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                int64_t y_stride) {
  const int nblocks = static_cast<int>(cols / kQK);
  VPack pack;
  VAcc acc[kVToks];
  alignas(64) int32_t corr[F::kOffset ? kVToks : 1][kVChunk * 8];
  for (int64_t rb = r0; rb + kVRows <= r1; rb += kVRows) {
    // The next 16 rows are one contiguous span that this pass reads in 16
    // interleaved streams, which the hardware prefetchers follow poorly; the
    // first token group's repacking asks for it, a slice per block (at once,
    // the prefetches would stall on full miss buffers).
    const bool ahead = rb + 2 * kVRows <= r1;
    const uint8_t* next = wd + (rb + kVRows) * row_bytes;
    const int64_t lines = kVRows * row_bytes / 64;
    for (int64_t t0 = 0; t0 < n_tok; t0 += kVToks) {
      const int nt = static_cast<int>(n_tok - t0 < kVToks ? n_tok - t0 : kVToks);
      for (int c0 = 0; c0 < nblocks; c0 += kVChunk) {
        const int nb = nblocks - c0 < kVChunk ? nblocks - c0 : kVChunk;
        Repack<F>(wd + rb * row_bytes + c0 * static_cast<int64_t>(sizeof(typename F::Block)),
                  row_bytes, nb, pack);
        const BlockQ8A* a[kVToks];
        const int32_t* co[kVToks];
        for (int t = 0; t < nt; ++t) {
          a[t] = reinterpret_cast<const BlockQ8A*>(act + (t0 + t) * act_bytes) + c0;
          co[t] = corr[F::kOffset ? t : 0];
          if constexpr (F::kOffset != 0) {
            // -offset x (sum of each group of 4 activation bytes), exact.
            constexpr int kShift = F::kOffset == 8 ? 3 : 7;
            static_assert(F::kOffset == 1 << kShift);
            const __m256i ones = _mm256_set1_epi8(1);
            for (int b = 0; b < nb; ++b) {
              const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[t][b].qs));
              const __m256i sum4 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, q);
              _mm256_store_si256(
                  reinterpret_cast<__m256i*>(corr[t] + 8 * b),
                  _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sum4, kShift)));
            }
          }
        }
        // Each pass over the chunk asks for its share of the next row block.
        const int passes = (nt + 1) / 2;
        for (int i = 0, t = 0; i < passes; ++i, t += 2) {
          if (t + 2 <= nt) {
            VTokens<F, 2>(pack, nb, a + t, co + t, c0 == 0, acc + t);
          } else {
            VTokens<F, 1>(pack, nb, a + t, co + t, c0 == 0, acc + t);
          }
          if (ahead && t0 == 0) {
            const int64_t l0 = lines * (c0 * passes + i * nb) / (nblocks * passes);
            const int64_t l1 = lines * (c0 * passes + (i + 1) * nb) / (nblocks * passes);
            for (int64_t l = l0; l < l1; ++l) {
              _mm_prefetch(reinterpret_cast<const char*>(next + 64 * l), _MM_HINT_T0);
            }
          }
        }
      }
      for (int t = 0; t < nt; ++t) {
        const __m512* g = acc[t].g;
        const __m512 even = _mm512_add_ps(_mm512_add_ps(g[0], g[4]), _mm512_add_ps(g[2], g[6]));
        const __m512 odd = _mm512_add_ps(_mm512_add_ps(g[1], g[5]), _mm512_add_ps(g[3], g[7]));
        _mm512_storeu_ps(y + (t0 + t) * y_stride + rb,
                         _mm512_add_ps(_mm512_add_ps(even, odd), acc[t].bias));
      }
    }
  }
}

// Rows [r0, r1) rounded down to whole 16-row blocks by MatmulVnni for the
// formats it has; returns the first row it did not do (r0 when none).
HWY_NOINLINE inline int64_t MatmulVnniRows(DType type, const uint8_t* wd, int64_t row_bytes,
                                           int64_t cols, const uint8_t* act, int64_t act_bytes,
                                           int64_t n_tok, int64_t r0, int64_t r1, float* y,
                                           int64_t y_stride) {
  const int64_t end = r0 + (r1 - r0) / kVRows * kVRows;
  if (end == r0 || cols < kQK) return r0;
  switch (type) {
    case DType::kQ4_0:
      MatmulVnni<VQ4_0>(wd, row_bytes, cols, act, act_bytes, n_tok, r0, end, y, y_stride);
      return end;
    case DType::kQ4_1:
      MatmulVnni<VQ4_1>(wd, row_bytes, cols, act, act_bytes, n_tok, r0, end, y, y_stride);
      return end;
    case DType::kQ8_0:
      MatmulVnni<VQ8_0>(wd, row_bytes, cols, act, act_bytes, n_tok, r0, end, y, y_stride);
      return end;
    default:
      return r0;
  }
}

}  // namespace snug::tensor::HWY_NAMESPACE
SNUG_END_VNNI
HWY_AFTER_NAMESPACE();

#endif  // SNUG_X86_VNNI512
#endif  // include guard
