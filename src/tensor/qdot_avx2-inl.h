// AVX2 quantized dot products with the int8 instructions Highway 1.0 does not
// expose (vpmaddubsw / vpmaddwd), as ggml's x86 kernels do. Compiled for every
// x86 target with at least AVX2 (AVX2, AVX3, AVX3_DL: all guarantee AVX2, FMA
// and F16C), so AVX-512 CPUs run the same arithmetic; targets below use
// qdot_generic-inl.h. On AVX3_DL (GCC) the 32-element formats' byte products
// take one vpdpbusd instead (DotU8I8), with the same integer sums.
//
// Each kernel takes one weight row and T activation rows; every (row, token)
// result has its own accumulators and the same operation sequence for any T,
// so results do not depend on how rows and tokens are tiled or threaded.
#if defined(SNUG_TENSOR_QDOT_AVX2_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SNUG_TENSOR_QDOT_AVX2_INL_H_
#undef SNUG_TENSOR_QDOT_AVX2_INL_H_
#else
#define SNUG_TENSOR_QDOT_AVX2_INL_H_
#endif

#include <hwy/highway.h>

#include "tensor/nm_expand-inl.h"  // every target: it toggles with HWY_TARGET_TOGGLE
#include "tensor/simd_x86.h"

#if SNUG_X86_AVX2
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "tensor/dtype.h"
#include "tensor/quant_blocks.h"

HWY_BEFORE_NAMESPACE();
#if SNUG_X86_VNNI512
SNUG_BEGIN_VNNI
#endif
namespace snug::tensor::HWY_NAMESPACE {

HWY_INLINE float Hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

HWY_INLINE float F16(uint16_t h) {
  return _cvtsh_ss(h);
}

// 32 nibbles -> 32 bytes: element j < 16 from the low nibble of qs[j],
// element j + 16 from its high nibble.
HWY_INLINE __m256i Nibbles32(const uint8_t* qs) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m256i v = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
  return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

// Byte j = 0x10 where bit j of the 32-bit qh is set, else 0.
HWY_INLINE __m256i FifthBits(const uint8_t* qh) {
  uint32_t bits;
  std::memcpy(&bits, qh, 4);
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int32_t>(bits)),
      _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303));
  const __m256i mask = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, mask), mask);
  return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

// Lane j = the sum of p[j]'s 8 lanes (exact).
HWY_INLINE __m256i Reduce8(const __m256i* p) {
  const __m256i h01 = _mm256_hadd_epi32(p[0], p[1]);
  const __m256i h23 = _mm256_hadd_epi32(p[2], p[3]);
  const __m256i h45 = _mm256_hadd_epi32(p[4], p[5]);
  const __m256i h67 = _mm256_hadd_epi32(p[6], p[7]);
  const __m256i k0 = _mm256_hadd_epi32(h01, h23);  // p0..p3: lanes 0-3 | lanes 4-7
  const __m256i k1 = _mm256_hadd_epi32(h45, h67);  // p4..p7
  return _mm256_add_epi32(_mm256_permute2x128_si256(k0, k1, 0x20),
                          _mm256_permute2x128_si256(k0, k1, 0x31));
}

// The 8 scales and then the 8 minimums of a q4_K block's 12 packed bytes
// (the words rearranged as ggml's kernels do; k4_scale_min's values).
HWY_INLINE void K4ScalesMins(const uint8_t* packed, uint8_t out[16]) {
  uint32_t u[4];
  std::memcpy(u, packed, 12);
  constexpr uint32_t kLow6 = 0x3f3f3f3f, kLow4 = 0x0f0f0f0f, kLow2 = 0x03030303;
  u[3] = ((u[2] >> 4) & kLow4) | (((u[1] >> 6) & kLow2) << 4);
  const uint32_t mins03 = u[1] & kLow6;
  u[1] = (u[2] & kLow4) | (((u[0] >> 6) & kLow2) << 4);
  u[2] = mins03;
  u[0] &= kLow6;
  std::memcpy(out, u, 16);
}

// The same as int32 lanes.
HWY_INLINE void K4ScalesMins(const uint8_t* packed, __m256i* sc, __m256i* mn) {
  alignas(16) uint8_t b[16];
  K4ScalesMins(packed, b);
  const __m128i v = _mm_load_si128(reinterpret_cast<const __m128i*>(b));
  *sc = _mm256_cvtepu8_epi32(v);
  *mn = _mm256_cvtepu8_epi32(_mm_srli_si128(v, 8));
}

// Asks for the q6_K super-block eight on from w (past the row's end: the
// next row's): the hardware prefetchers keep poorly ahead of a stream of
// 210-byte blocks (one token: the AVX2 tile 8192x2048 2.1 -> 1.0 ms on Zen 3,
// the AVX3_DL tile 2048x8192 842 -> 669 us on Zen 4; q4_K's 144-byte blocks
// measured no faster). An address, not a pointer: it may lie past the matrix.
HWY_INLINE void PrefetchQ6KAhead(const BlockQ6_K& w) {
  const uintptr_t ahead = reinterpret_cast<uintptr_t>(&w) + 8 * sizeof(BlockQ6_K);
  for (size_t o = 0; o < sizeof(BlockQ6_K); o += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(ahead + o), _MM_HINT_T0);
  }
}

// The 256 stored levels (0..63) of a q6_K block in element order, as eight
// vectors of 32 (ggml's layout: element 128h + 32k + l from ql, qh of h).
HWY_INLINE void Q6Levels(const BlockQ6_K& w, __m256i lv[8]) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), low2 = _mm256_set1_epi8(0x03);
  for (int h = 0; h < 2; ++h) {
    const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.ql + 64 * h));
    const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.ql + 64 * h + 32));
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.qh + 32 * h));
    const auto high = [&](int shift) {
      return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, shift), low2), 4);
    };
    lv[4 * h] = _mm256_or_si256(_mm256_and_si256(ql0, low4), high(0));
    lv[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(ql1, low4), high(2));
    lv[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4), high(4));
    lv[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4), high(6));
  }
}

// Weight rules of the 32-element formats: the stored levels (unsigned, or
// signed for q8_0), log2 of the offset o that the signed 4- and 5-bit formats
// subtract from them (0: none), the levels multiplied (stored - o), the scale,
// and the coefficient of the activation's scaled sum s.
struct Avx2Q4_0 {
  using Block = BlockQ4_0;
  // Signed levels q - 8, as ggml's q4_0 x q8_0 kernel: no activation sum needed.
  static constexpr bool kSigned = true;
  static constexpr int kOffsetLog2 = 3;
  static __m256i Stored(const Block& b) { return Nibbles32(b.qs); }
  static __m256i Levels(const Block& b) { return _mm256_sub_epi8(Stored(b), _mm256_set1_epi8(8)); }
};
struct Avx2Q4_1 {
  using Block = BlockQ4_1;
  static constexpr bool kSigned = false;
  static constexpr int kOffsetLog2 = 0;
  static __m256i Stored(const Block& b) { return Nibbles32(b.qs); }
  static __m256i Levels(const Block& b) { return Stored(b); }
};
struct Avx2Q5_0 {
  using Block = BlockQ5_0;
  // Signed levels q - 16, as ggml's q5_0 x q8_0 kernel.
  static constexpr bool kSigned = true;
  static constexpr int kOffsetLog2 = 4;
  static __m256i Stored(const Block& b) {
    return _mm256_or_si256(Nibbles32(b.qs), FifthBits(b.qh));
  }
  static __m256i Levels(const Block& b) { return _mm256_sub_epi8(Stored(b), _mm256_set1_epi8(16)); }
};
struct Avx2Q5_1 {
  using Block = BlockQ5_1;
  static constexpr bool kSigned = false;
  static constexpr int kOffsetLog2 = 0;
  static __m256i Stored(const Block& b) {
    return _mm256_or_si256(Nibbles32(b.qs), FifthBits(b.qh));
  }
  static __m256i Levels(const Block& b) { return Stored(b); }
};
struct Avx2Q8_0 {
  using Block = BlockQ8_0;
  static constexpr bool kSigned = true;
  static constexpr int kOffsetLog2 = 0;
  static __m256i Stored(const Block& b) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
  }
  static __m256i Levels(const Block& b) { return Stored(b); }
};

// fn(F{}) with the format struct of a 32-element weight type; false (and no
// call) for the other types.
template <class Fn>
HWY_INLINE bool WithQ32Format(DType type, const Fn& fn) {
  switch (type) {
    case DType::kQ4_0:
      fn(Avx2Q4_0{});
      return true;
    case DType::kQ4_1:
      fn(Avx2Q4_1{});
      return true;
    case DType::kQ5_0:
      fn(Avx2Q5_0{});
      return true;
    case DType::kQ5_1:
      fn(Avx2Q5_1{});
      return true;
    case DType::kQ8_0:
      fn(Avx2Q8_0{});
      return true;
    default:
      return false;
  }
}

// [d, m] of a weight block as floats in lanes 0 and 1 (every 32-element block
// starts with its f16 scale; the formats with a min store it next, for the
// others lane 1 is unused).
HWY_INLINE __m128 ScaleMinOf(uint32_t dm) {
  return _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(dm)));
}
HWY_INLINE __m128 ScaleMin(const void* block) {
  uint32_t dm;
  std::memcpy(&dm, block, 4);
  return ScaleMinOf(dm);
}

// The multi-row kernels (qrow_avx2-inl.h, qgemm_avx2-inl.h, qsum_avx2-inl.h)
// read block b of a row of nb blocks through its format's row view: the f16
// scale and min bits (low and high half; ScaleMinOf makes floats of them), the
// stored levels and the levels. A dense row is an array of the format's blocks.
// (AVX3_DL takes the dense views too: qsum_avx2-inl.h's eight-row kernel for
// one token.)
template <class F>
struct Avx2DenseRow : F {
  using Block = typename F::Block;
  static const Block& At(const uint8_t* row, int64_t b) {
    return reinterpret_cast<const Block*>(row)[b];
  }
  static uint32_t ScaleMinBitsAt(const uint8_t* row, int64_t /*nb*/, int64_t b) {
    uint32_t dm;
    std::memcpy(&dm, &At(row, b), 4);
    return dm;
  }
  static __m256i StoredAt(const uint8_t* row, int64_t /*nb*/, int64_t b) {
    return F::Stored(At(row, b));
  }
  static __m256i LevelsAt(const uint8_t* row, int64_t /*nb*/, int64_t b) {
    return F::Levels(At(row, b));
  }
};

// The N:M-sparse q8_0 and q4_0 (quant_blocks.h: a row holds its nb scales,
// then its nb masks, then the kept levels): each block is expanded in
// registers (nm_expand-inl.h) to the dense block's levels, which the dense
// format's arithmetic then takes, so the results are the dense type's bits
// and half the level bytes are read.
template <class Self>
struct Avx2NmRow {
  // Both take the signed levels (dropped: 0) as q8_0 does, so the stored
  // levels are the levels; q4_0's lane sums are the same integers however
  // its levels are offset.
  static constexpr bool kSigned = true;
  static constexpr int kOffsetLog2 = 0;
  static uint32_t ScaleMinBitsAt(const uint8_t* row, int64_t /*nb*/, int64_t b) {
    uint16_t d;
    std::memcpy(&d, row + 2 * b, 2);
    return d;
  }
  static __m256i StoredAt(const uint8_t* row, int64_t nb, int64_t b) {
    return Self::LevelsAt(row, nb, b);
  }
};
struct Avx2Q8_0Nm : Avx2NmRow<Avx2Q8_0Nm> {
  template <int = 0>  // compiled only where called: not on AVX3_DL (WithQ32RowFormat)
  static __m256i LevelsAt(const uint8_t* row, int64_t nb, int64_t b) {
    return NmExpandBytes(row + 2 * nb + 4 * b, NmKeptQ8(row + 6 * nb + 16 * b));
  }
};
struct Avx2Q4_0Nm : Avx2NmRow<Avx2Q4_0Nm> {
  // Levels - 8 in [-8, 7]; a dropped element is 0.
  template <int = 0>  // compiled only where called: not on AVX3_DL (WithQ32RowFormat)
  static __m256i LevelsAt(const uint8_t* row, int64_t nb, int64_t b) {
    return NmExpandBytes(row + 2 * nb + 4 * b, NmKeptQ4(row + 6 * nb + 8 * b));
  }
};

// fn(F{}) with the row view of a 32-element weight type, dense or N:M-sparse;
// false (and no call) for the other types.
template <class Fn>
HWY_INLINE bool WithQ32RowFormat(DType type, const Fn& fn) {
  switch (type) {
#if SNUG_X86_VNNI512
    // NmExpandBytes is compiled for Highway's target string, which cannot be
    // inlined under SNUG_BEGIN_VNNI; AVX3_DL runs N:M rows by VRowGroupNM.
    case DType::kQ8_0NM:
    case DType::kQ4_0NM:
      return false;
#else
    case DType::kQ8_0NM:
      fn(Avx2Q8_0Nm{});
      return true;
    case DType::kQ4_0NM:
      fn(Avx2Q4_0Nm{});
      return true;
#endif
    default:
      return WithQ32Format(type, [&](auto f) { fn(Avx2DenseRow<decltype(f)>{}); });
  }
}

// [d, s] of an activation block in lanes 0 and 1.
HWY_INLINE __m128 ActScaleSum(const BlockQ8A& a) {
  return _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(&a.d)));
}

// sum of u[i] * v[i] over each group of 4 bytes (u unsigned, v signed), as
// eight int32: one vpdpbusd with AVX512-VNNI, vpmaddubsw + vpmaddwd without.
// The results are equal: no pair sum of these formats reaches vpmaddubsw's
// int16 saturation (at most 2 * 127 * 127).
HWY_INLINE __m256i DotU8I8(__m256i u, __m256i v) {
#if SNUG_X86_VNNI512
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, v);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, v), _mm256_set1_epi16(1));
#endif
}

// Lanes of the dwords v holds (low 16 bits: d; high: m, for the formats with
// a minimum) as floats: *d and *m.
HWY_INLINE void ScalesMins8(__m256i v, __m256* d, __m256* m) {
  const __m256i lo = _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF));
  const __m256i hi = _mm256_srli_epi32(v, 16);
  // [d0..d3 m0..m3 | d4..d7 m4..m7] -> [d0..d7 | m0..m7]
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xD8);
  *d = _mm256_cvtph_ps(_mm256_castsi256_si128(packed));
  *m = _mm256_cvtph_ps(_mm256_extracti128_si256(packed, 1));
}

// Eight dwords, lane L from at(L) for L < m, 0 for the others: scalar loads,
// as Zen 3's vpgatherdd costs more than the eight (RowSum1 20-40% slower with
// it).
template <class At>
HWY_INLINE __m256i Dwords8(const At& at, int m) {
  uint32_t v[8];
  for (int l = 0; l < 8; ++l) {
    v[l] = 0;
    if (l < m) std::memcpy(&v[l], at(l), 4);
  }
  return _mm256_setr_epi32(static_cast<int>(v[0]), static_cast<int>(v[1]), static_cast<int>(v[2]),
                           static_cast<int>(v[3]), static_cast<int>(v[4]), static_cast<int>(v[5]),
                           static_cast<int>(v[6]), static_cast<int>(v[7]));
}

// One weight row against T tokens in block-sum order (qgemm_vnni-inl.h,
// qsum_avx2-inl.h); F: the q4_0, q4_1, q5_0, q5_1 or q8_0 rules above. A
// block's products in eight int32 lanes, eight blocks' reduced into one
// vector of block sums (lane b % 8), one conversion and one multiply-add per
// eight blocks and token. The rows past the other kernels' last whole group,
// and the tiles behind the N:M rows.
template <class F, int T>
void TileQ32Sum(const uint8_t* wrow, int64_t n, const uint8_t* const* acts, float* out) {
  constexpr bool kMin = !F::kSigned;
  constexpr int kBytes = sizeof(typename F::Block);
  constexpr int kA = sizeof(BlockQ8A);
  const auto* wb = reinterpret_cast<const typename F::Block*>(wrow);
  const int64_t nb = n / kQK;
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t g = 0; g < nb; g += 8) {
    const int m = nb - g < 8 ? static_cast<int>(nb - g) : 8;
    __m256i q[8];
    for (int j = 0; j < m; ++j) q[j] = F::Levels(wb[g + j]);
    __m256 dwv, mwv;
    ScalesMins8(Dwords8([&](int l) { return &wb[g + l]; }, m), &dwv, &mwv);
    for (int t = 0; t < T; ++t) {
      const BlockQ8A* ab = reinterpret_cast<const BlockQ8A*>(acts[t]) + g;
      __m256i p[8];
      for (int j = 0; j < 8; ++j) {
        if (j < m) {
          __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ab[j].qs));
          __m256i qu = q[j];
          if constexpr (F::kSigned) {
            av = _mm256_sign_epi8(av, q[j]);
            qu = _mm256_sign_epi8(q[j], q[j]);
          }
          p[j] = DotU8I8(qu, av);
        } else {
          p[j] = _mm256_setzero_si256();
        }
      }
      const __m256 da = _mm256_castsi256_ps(Dwords8([&](int l) { return &ab[l].d; }, m));
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(Reduce8(p)), _mm256_mul_ps(dwv, da), acc[t]);
      if constexpr (kMin) {
        const __m256 sa = _mm256_castsi256_ps(Dwords8([&](int l) { return &ab[l].s; }, m));
        acc[t] = _mm256_fmadd_ps(mwv, sa, acc[t]);
      }
    }
  }
  for (int t = 0; t < T; ++t) out[t] = Hsum(acc[t]);
}

template <class F, int T>
void TileQ32Avx2(const uint8_t* wrow, int64_t n, const uint8_t* const* acts, float* out) {
  const auto* wb = reinterpret_cast<const typename F::Block*>(wrow);
  __m256 acc[T];
  __m128 bias[T];  // lane 1 sums m * s (formats with a min)
  for (int t = 0; t < T; ++t) {
    acc[t] = _mm256_setzero_ps();
    bias[t] = _mm_setzero_ps();
  }
  for (int64_t b = 0; b < n / kQK; ++b) {
    const __m256i q = F::Levels(wb[b]);
    const __m256i qu = F::kSigned ? _mm256_sign_epi8(q, q) : q;
    const __m128 dm = ScaleMin(&wb[b]);
    for (int t = 0; t < T; ++t) {
      const BlockQ8A& a = reinterpret_cast<const BlockQ8A*>(acts[t])[b];
      __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.qs));
      if (F::kSigned) av = _mm256_sign_epi8(av, q);
      const __m128 prod = _mm_mul_ps(dm, ActScaleSum(a));  // [d * a.d, m * a.s]
      acc[t] =
          _mm256_fmadd_ps(_mm256_cvtepi32_ps(DotU8I8(qu, av)), _mm256_broadcastss_ps(prod), acc[t]);
      if (!F::kSigned) bias[t] = _mm_add_ps(bias[t], prod);
    }
  }
  for (int t = 0; t < T; ++t) {
    out[t] = Hsum(acc[t]) + _mm_cvtss_f32(_mm_movehdup_ps(bias[t]));
  }
}

// 0x10 in byte l where bit `bit` of qh[l] is set (q5_K's fifth bit).
HWY_INLINE __m256i HighBit(__m256i qh, int bit) {
  const __m256i m = _mm256_set1_epi8(static_cast<char>(1 << bit));
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, m), m);
  return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

// q5_K (kFive = true; q4_K with kFive = false, which snug now runs in
// super-block-sum order, qgemm_k_avx2-inl.h): 8 groups of 32 with 6-bit
// scales and mins, in ggml's order.
template <class Block, bool kFive, int T>
void TileQ45KAvx2(const uint8_t* wrow, int64_t n, const uint8_t* const* acts, float* out) {
  const auto* wb = reinterpret_cast<const Block*>(wrow);
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  __m256 acc[T];
  float bias[T];
  for (int t = 0; t < T; ++t) {
    acc[t] = _mm256_setzero_ps();
    bias[t] = 0;
  }
  for (int64_t b = 0; b < n / kQKK; ++b) {
    const Block& w = wb[b];
    uint8_t sc[8], mn[8];
    for (int g = 0; g < 8; ++g) k4_scale_min(g, w.scales, &sc[g], &mn[g]);
    const float d = F16(w.d), dmin = F16(w.dmin);
    __m256i isum[T];
    for (int t = 0; t < T; ++t) isum[t] = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.qs + 32 * c));
      __m256i lo = _mm256_and_si256(bits, low4);
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low4);
      if constexpr (kFive) {
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.qh));
        lo = _mm256_or_si256(lo, HighBit(qh, 2 * c));
        hi = _mm256_or_si256(hi, HighBit(qh, 2 * c + 1));
      }
      const __m256i s_lo = _mm256_set1_epi16(sc[2 * c]);
      const __m256i s_hi = _mm256_set1_epi16(sc[2 * c + 1]);
      for (int t = 0; t < T; ++t) {
        const int8_t* aq = reinterpret_cast<const BlockQ8_K*>(acts[t])[b].qs + 64 * c;
        const __m256i a0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq));
        const __m256i a1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq + 32));
        const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, a0), s_lo);
        const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, a1), s_hi);
        isum[t] = _mm256_add_epi32(isum[t], _mm256_add_epi32(p0, p1));
      }
    }
    for (int t = 0; t < T; ++t) {
      const BlockQ8_K& a = reinterpret_cast<const BlockQ8_K*>(acts[t])[b];
      int32_t msum = 0;
      for (int g = 0; g < 8; ++g) msum += mn[g] * (a.bsums[2 * g] + a.bsums[2 * g + 1]);
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_set1_ps(d * a.d), acc[t]);
      bias[t] += dmin * a.d * static_cast<float>(msum);
    }
  }
  for (int t = 0; t < T; ++t) out[t] = Hsum(acc[t]) - bias[t];
}

// Scale of group g in the low 128-bit lane and of group g + 1 in the high
// one, as int16 (the multiplier of a 16-element group's pair sums).
HWY_INLINE __m256i GroupScales(int g_lo, int g_hi) {
  return _mm256_set_m128i(_mm_set1_epi16(static_cast<int16_t>(g_hi)),
                          _mm_set1_epi16(static_cast<int16_t>(g_lo)));
}

// q2_K: 16 groups of 16 with 4-bit scales and mins; levels 0..3 stored 4 per
// byte (element 128h + 32k + l in bits 2k of qs[32h + l]).
template <int T>
void TileQ2KAvx2(const uint8_t* wrow, int64_t n, const uint8_t* const* acts, float* out) {
  const auto* wb = reinterpret_cast<const BlockQ2_K*>(wrow);
  const __m256i low2 = _mm256_set1_epi8(0x03);
  __m256 acc[T];
  float bias[T];
  for (int t = 0; t < T; ++t) {
    acc[t] = _mm256_setzero_ps();
    bias[t] = 0;
  }
  for (int64_t b = 0; b < n / kQKK; ++b) {
    const BlockQ2_K& w = wb[b];
    __m256i isum[T];
    for (int t = 0; t < T; ++t) isum[t] = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.qs + 32 * h));
      for (int k = 0; k < 4; ++k) {
        const __m256i q = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * k), low2);
        const int g = 8 * h + 2 * k;  // groups g (l < 16) and g + 1
        const __m256i s = GroupScales(w.scales[g] & 0xF, w.scales[g + 1] & 0xF);
        for (int t = 0; t < T; ++t) {
          const int8_t* aq = reinterpret_cast<const BlockQ8_K*>(acts[t])[b].qs + 128 * h + 32 * k;
          const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq));
          isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(q, av), s));
        }
      }
    }
    const float d = F16(w.d), dmin = F16(w.dmin);
    for (int t = 0; t < T; ++t) {
      const BlockQ8_K& a = reinterpret_cast<const BlockQ8_K*>(acts[t])[b];
      int32_t msum = 0;
      for (int g = 0; g < 16; ++g) msum += (w.scales[g] >> 4) * a.bsums[g];
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_set1_ps(d * a.d), acc[t]);
      bias[t] += dmin * a.d * static_cast<float>(msum);
    }
  }
  for (int t = 0; t < T; ++t) out[t] = Hsum(acc[t]) - bias[t];
}

// q3_K: q2_K's low bits minus 4 where the element's hmask bit is clear
// (element 128h + 32k + l: bit 4h + k of hmask[l]), 6-bit signed scales.
// The signed level is split into two unsigned products, low * a - 4clear * a.
template <int T>
void TileQ3KAvx2(const uint8_t* wrow, int64_t n, const uint8_t* const* acts, float* out) {
  const auto* wb = reinterpret_cast<const BlockQ3_K*>(wrow);
  const __m256i low2 = _mm256_set1_epi8(0x03), four = _mm256_set1_epi8(4);
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < n / kQKK; ++b) {
    const BlockQ3_K& w = wb[b];
    int8_t sc[16];
    q3k_scales(w.scales, sc);
    const __m256i hm = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.hmask));
    __m256i isum[T];
    for (int t = 0; t < T; ++t) isum[t] = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.qs + 32 * h));
      for (int k = 0; k < 4; ++k) {
        const __m256i q = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * k), low2);
        const __m256i m = _mm256_set1_epi8(static_cast<char>(1 << (4 * h + k)));
        const __m256i clear4 = _mm256_andnot_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hm, m), m),
                                                   four);  // 4 where the bit is clear
        const int g = 8 * h + 2 * k;
        const __m256i s = GroupScales(sc[g], sc[g + 1]);
        for (int t = 0; t < T; ++t) {
          const int8_t* aq = reinterpret_cast<const BlockQ8_K*>(acts[t])[b].qs + 128 * h + 32 * k;
          const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq));
          const __m256i p =
              _mm256_sub_epi16(_mm256_maddubs_epi16(q, av), _mm256_maddubs_epi16(clear4, av));
          isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(p, s));
        }
      }
    }
    const float d = F16(w.d);
    for (int t = 0; t < T; ++t) {
      const BlockQ8_K& a = reinterpret_cast<const BlockQ8_K*>(acts[t])[b];
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_set1_ps(d * a.d), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) out[t] = Hsum(acc[t]);
}

}  // namespace snug::tensor::HWY_NAMESPACE
#if SNUG_X86_VNNI512
SNUG_END_VNNI
#endif
HWY_AFTER_NAMESPACE();

#endif  // SNUG_X86_AVX2
#endif  // include guard toggle
