// One token of q4_0, q4_1, q5_0, q5_1, q8_0 and the N:M-sparse formats on
// AVX512-VNNI: the one-row kernel, in qgemm_vnni-inl.h's block-sum order (the
// same arithmetic as its row-block and tile kernels, so the same bits).
#if defined(SNUG_TENSOR_QROW_VNNI_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SNUG_TENSOR_QROW_VNNI_INL_H_
#undef SNUG_TENSOR_QROW_VNNI_INL_H_
#else
#define SNUG_TENSOR_QROW_VNNI_INL_H_
#endif

#include <hwy/highway.h>

#include "tensor/qdot_avx2-inl.h"
#include "tensor/qgemm_vnni-inl.h"
#include "tensor/simd_x86.h"

#if SNUG_X86_VNNI512
#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "tensor/dtype.h"
#include "tensor/quant_blocks.h"

HWY_BEFORE_NAMESPACE();
SNUG_BEGIN_VNNI
namespace snug::tensor::HWY_NAMESPACE {

// One-row kernel in block-sum order, for a single token: each
// row is read once, in order, as one stream (the row-block kernel's 16
// interleaved rows read slower from DRAM). Eight blocks at a time: their
// bytes come in with three or four 64-byte loads, and vpermt2b picks out the
// f16 scales and 2 x 64 bytes of quants; the token's activations were laid
// out once per call to match (VRowAct), so that one vpdpbusd on the low
// nibbles and one on the high ones leave four partial sums per block, reduced
// to a vector whose lane j is block j's sum. Then the same multiply-adds as
// VTokensSum, lane j of the accumulator being acc[b % 8], and Hsum's tree.
// (q8_0's blocks, VRowGroupQ8, take five loads and a vpermt2b per pair.)
inline constexpr int kVRowMaxBlocks = 512;  // columns / 32 that it takes

// One token's activations for VRowSum; blocks padded with zeros to a multiple
// of 8.
struct alignas(64) VRowAct {
  // Per 4 blocks: 64 bytes of their elements 0-15, then 64 of elements 16-31.
  int8_t q[kVRowMaxBlocks * kQK];
  float d[kVRowMaxBlocks];    // activation scales
  float s[kVRowMaxBlocks];    // scale x sum (q4_1's minimum term)
  int32_t c[kVRowMaxBlocks];  // -offset x sum (q4_0)
};

template <class F>
HWY_INLINE void PrepareRowAct(const BlockQ8A* a, int nb, VRowAct& r) {
  const int padded = (nb + 7) / 8 * 8;
  for (int b = 0; b < padded; ++b) {
    // q4: per 4 blocks, their elements 0-15 then 16-31; q8_0: blocks in order.
    int8_t* lo = r.q + (F::kQ4 ? (b / 4) * 128 + (b % 4) * 16 : b * kQK);
    int8_t* hi = lo + (F::kQ4 ? 64 : 16);
    if (b >= nb) {
      std::memset(lo, 0, 16);
      std::memset(hi, 0, 16);
      r.d[b] = r.s[b] = 0.f;
      r.c[b] = 0;
      continue;
    }
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[b].qs));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(lo), _mm256_castsi256_si128(q));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(hi), _mm256_extracti128_si256(q, 1));
    r.d[b] = a[b].d;
    r.s[b] = a[b].s;
    r.c[b] = 0;
    if constexpr (F::kOffset != 0) {
      r.c[b] = -F::kOffset *
               HsumI32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1), q));
    }
  }
}

// Byte layout of 8 consecutive blocks, as vpermt2b indices over two 64-byte
// tables: L0, L1, L2 at byte 0, 64, 128 of the group; S1 at kS1.
template <class F>
struct VRowLayout {
  static constexpr int kB = sizeof(typename F::Block);
  // Scales of blocks 4-7 (q4_1: up to byte 143) lie in S1 with those of 0-3 in L0.
  static constexpr int kS1 = F::kMin ? 80 : 64;
  static_assert(8 * kB <= 192 && 4 * kB + F::kQs <= 128 && 4 * kB >= kS1 &&
                7 * kB + (F::kMin ? 4 : 2) <= kS1 + 64);
  struct Idx {
    uint8_t lo[64], hi[64], dm[64];
  };
  static constexpr Idx Make() {
    Idx x{};
    for (int i = 0; i < 64; ++i) {
      x.lo[i] = static_cast<uint8_t>(kB * (i / 16) + F::kQs + i % 16);           // L0:L1
      x.hi[i] = static_cast<uint8_t>(kB * (4 + i / 16) + F::kQs + i % 16 - 64);  // L1:L2
    }
    for (int k = 0; k < 8; ++k) {
      for (int e = 0; e < 2; ++e) {  // d of block k at bytes 2k, 2k+1; q4_1's m 16 later
        const int at = k < 4 ? kB * k + e : 64 + kB * k + e - kS1;  // L0:S1
        x.dm[2 * k + e] = static_cast<uint8_t>(at);
        x.dm[16 + 2 * k + e] = static_cast<uint8_t>(F::kMin ? at + 2 : at);
      }
    }
    return x;
  }
  alignas(64) static constexpr Idx kIdx = Make();
};

// Mask of a 64-byte load at byte `at` of a span of `bytes` (0 to 64 bytes of it).
HWY_INLINE __mmask64 SpanMask(int bytes, int at) {
  const int n = bytes - at < 0 ? 0 : (bytes - at > 64 ? 64 : bytes - at);
  return static_cast<__mmask64>(_bzhi_u64(~0ull, static_cast<unsigned>(n)));
}

// The three 64-byte loads that hold eight blocks of kB <= 24 bytes (m of
// them when kTail; zeros past them).
template <int kB, bool kTail>
HWY_INLINE void LoadGroup(const uint8_t* p, int m, __m512i& l0, __m512i& l1, __m512i& l2) {
  static_assert(8 * kB <= 192);
  const int bytes = kTail ? m * kB : 8 * kB;
  l0 = kTail ? _mm512_maskz_loadu_epi8(SpanMask(bytes, 0), p) : _mm512_loadu_si512(p);
  l1 = kTail ? _mm512_maskz_loadu_epi8(SpanMask(bytes, 64), p + 64) : _mm512_loadu_si512(p + 64);
  l2 = _mm512_maskz_loadu_epi8(SpanMask(bytes, 128), p + 128);
}

// The block sums and multiply-adds of VRowGroup and VRowGroupQ5: the
// unsigned levels of blocks 0-3's elements 0-15 (lo0) and 16-31 (hi0) and of
// blocks 4-7's (lo1, hi1) against the token's activations laid out to match;
// dw: the eight weight scales, mw: the minimums (q4_1, q5_1).
template <class F, bool kTail>
HWY_INLINE __m256 VRowBlockSums(__m512i lo0, __m512i hi0, __m512i lo1, __m512i hi1, __m256 dw,
                                __m256 mw, int m, const VRowAct& x, int b0, __m256 acc) {
  const int8_t* q = x.q + b0 * kQK;
  const auto act = [&](int at) { return _mm512_load_si512(q + at); };
  // 128-bit lane k of v0 (v1): the four partial sums of block k (k + 4).
  __m512i v0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo0, act(0));
  v0 = _mm512_dpbusd_epi32(v0, hi0, act(64));
  __m512i v1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo1, act(128));
  v1 = _mm512_dpbusd_epi32(v1, hi1, act(192));
  // Lane k: [a0+a2, a1+a3, b0+b2, b1+b3], then [A, A, B, B]; pick A0-3, B0-3.
  const __m512i u = _mm512_add_epi32(_mm512_unpacklo_epi64(v0, v1), _mm512_unpackhi_epi64(v0, v1));
  const __m512i w = _mm512_add_epi32(u, _mm512_shuffle_epi32(u, _MM_PERM_CDAB));
  const __m512i pick = _mm512_setr_epi32(0, 4, 8, 12, 2, 6, 10, 14, 0, 0, 0, 0, 0, 0, 0, 0);
  __m256i sums = _mm512_castsi512_si256(_mm512_permutexvar_epi32(pick, w));
  if constexpr (F::kOffset != 0) {
    sums = _mm256_add_epi32(sums, _mm256_load_si256(reinterpret_cast<const __m256i*>(x.c + b0)));
  }
  const __m256 dd = _mm256_mul_ps(dw, _mm256_load_ps(x.d + b0));
  const __mmask8 lanes = kTail ? static_cast<__mmask8>((1u << m) - 1) : 0xFF;
  acc = _mm256_mask3_fmadd_ps(_mm256_cvtepi32_ps(sums), dd, acc, lanes);
  if constexpr (F::kMin) acc = _mm256_mask3_fmadd_ps(mw, _mm256_load_ps(x.s + b0), acc, lanes);
  return acc;
}

// Eight blocks of one row (m of them when kTail) into acc; b0: their first block.
template <class F, bool kTail>
HWY_INLINE __m256 VRowGroup(const uint8_t* p, int m, const VRowAct& x, int b0, __m256 acc) {
  using L = VRowLayout<F>;
  __m512i l0, l1, l2;
  LoadGroup<L::kB, kTail>(p, m, l0, l1, l2);
  const __m512i s1 = L::kS1 == 64 ? l1
                     : kTail      ? _mm512_maskz_loadu_epi8(SpanMask(m * L::kB, L::kS1), p + L::kS1)
                                  : _mm512_loadu_si512(p + L::kS1);
  const __m512i wlo = _mm512_permutex2var_epi8(l0, _mm512_load_si512(L::kIdx.lo), l1);
  const __m512i whi = _mm512_permutex2var_epi8(l1, _mm512_load_si512(L::kIdx.hi), l2);
  const __m512i dm = _mm512_permutex2var_epi8(l0, _mm512_load_si512(L::kIdx.dm), s1);
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const auto nib = [&](__m512i v, int shift) {
    return _mm512_and_si512(_mm512_srli_epi16(v, shift), low4);
  };
  const __m512 dmf = _mm512_cvtph_ps(_mm512_castsi512_si256(dm));
  return VRowBlockSums<F, kTail>(nib(wlo, 0), nib(wlo, 4), nib(whi, 0), nib(whi, 4),
                                 _mm512_castps512_ps256(dmf), _mm512_extractf32x8_ps(dmf, 1), m, x,
                                 b0, acc);
}

// q5_0/q5_1: eight blocks of one row (m of them when kTail) into acc, as
// VRowGroup: three loads; two vpermt2b pick the nibbles, one vpermt2b and
// one vpermb (blocks 6 and 7 lie past byte 128) the headers: scales, the
// fifth-bit words' low halves (elements 0-15) and high halves (16-31), q5_1's
// minimums. The halves become byte masks that set bit 4 of the levels.
template <class F>
struct VRowLayoutQ5 {
  static constexpr int kB = sizeof(typename F::Block);
  static constexpr int kDm = F::kMin ? 2 : 0;  // q5_1's minimum, after d
  // nibbles of blocks 0-3 in L0:L1, 4-7 in L1:L2; headers of 0-5 in L0:L1, 6-7 in L2
  static_assert(3 * kB + F::kQs + 16 <= 128 && 4 * kB + F::kQs >= 64 &&
                7 * kB + F::kQs + 16 <= 192 && 5 * kB + F::kQh + 4 <= 128 && 6 * kB >= 128);
  struct Idx {
    uint8_t lo[64], hi[64], head[64];
    uint64_t from_l2;  // header bytes of blocks 6 and 7 (past byte 128)
  };
  static constexpr Idx Make() {
    Idx x{};
    for (int i = 0; i < 64; ++i) {
      x.lo[i] = static_cast<uint8_t>(kB * (i / 16) + F::kQs + i % 16);           // L0:L1
      x.hi[i] = static_cast<uint8_t>(kB * (4 + i / 16) + F::kQs + i % 16 - 64);  // L1:L2
      // bytes 0-15: d; 16-31: qh bytes 0-1; 32-47: qh bytes 2-3; 48-63: m
      const int part = i / 16, k = (i % 16) / 2, e = i % 2;
      const int off = part == 0 ? 0 : part == 1 ? F::kQh + e : part == 2 ? F::kQh + 2 + e : kDm;
      const int at = kB * k + (part == 0 || part == 3 ? off + e : off);
      x.head[i] = static_cast<uint8_t>(at < 128 ? at : at - 128);
      if (at >= 128) x.from_l2 |= uint64_t{1} << i;
    }
    return x;
  }
  alignas(64) static constexpr Idx kIdx = Make();
};

template <class F, bool kTail>
HWY_INLINE __m256 VRowGroupQ5(const uint8_t* p, int m, const VRowAct& x, int b0, __m256 acc) {
  using L = VRowLayoutQ5<F>;
  __m512i l0, l1, l2;
  LoadGroup<L::kB, kTail>(p, m, l0, l1, l2);
  const __m512i head = _mm512_mask_permutexvar_epi8(
      _mm512_permutex2var_epi8(l0, _mm512_load_si512(L::kIdx.head), l1), L::kIdx.from_l2,
      _mm512_load_si512(L::kIdx.head), l2);
  const __m128i e0 = _mm512_extracti32x4_epi32(head, 1), e1 = _mm512_extracti32x4_epi32(head, 2);
  const __m512i bit4 = _mm512_set1_epi8(0x10), low4 = _mm512_set1_epi8(0x0F);
  const auto level = [&](__m512i v, int shift, long long fifth) {
    return _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(v, shift), low4),
                           _mm512_maskz_mov_epi8(static_cast<__mmask64>(fifth), bit4));
  };
  const __m512i wlo = _mm512_permutex2var_epi8(l0, _mm512_load_si512(L::kIdx.lo), l1);
  const __m512i whi = _mm512_permutex2var_epi8(l1, _mm512_load_si512(L::kIdx.hi), l2);
  return VRowBlockSums<F, kTail>(
      level(wlo, 0, _mm_cvtsi128_si64(e0)), level(wlo, 4, _mm_cvtsi128_si64(e1)),
      level(whi, 0, _mm_extract_epi64(e0, 1)), level(whi, 4, _mm_extract_epi64(e1, 1)),
      _mm256_cvtph_ps(_mm512_castsi512_si128(head)),
      _mm256_cvtph_ps(_mm512_extracti32x4_epi32(head, 3)), m, x, b0, acc);
}

// q8_0: eight blocks of one row (m of them when kTail) into acc, as
// VRowGroup: five loads, a pair of blocks' quants per vpermt2b, flipped to
// unsigned (level + 128, the activations' -128 x sum added back).
template <bool kTail>
HWY_INLINE __m256 VRowGroupQ8(const uint8_t* p, int m, const VRowAct& x, int b0, __m256 acc) {
  constexpr int kB = sizeof(BlockQ8_0);
  static_assert(8 * kB <= 320 && kB == 34);
  struct Idx {
    uint8_t q[4][64], d[64];
  };
  // Pair j (blocks 2j, 2j+1) from tables L_j:L_j+1 (bytes 64 j ...); the
  // scales of blocks 0-3 from L0:L1, of 4-7 from L2:L3 (bytes 8-15 of that).
  alignas(64) static constexpr Idx kIdx = [] {
    Idx x{};
    for (int j = 0; j < 4; ++j) {
      for (int i = 0; i < 64; ++i) {
        x.q[j][i] = static_cast<uint8_t>(kB * (2 * j + i / 32) + 2 + i % 32 - 64 * j);
      }
    }
    for (int k = 0; k < 8; ++k) {
      for (int e = 0; e < 2; ++e)
        x.d[2 * k + e] = static_cast<uint8_t>(kB * k + e - (k < 4 ? 0 : 128));
    }
    return x;
  }();
  __m512i l[5];
  if constexpr (kTail) {
    const int bytes = m * kB;
    for (int i = 0; i < 5; ++i) {
      const int n = bytes - 64 * i < 0 ? 0 : (bytes - 64 * i > 64 ? 64 : bytes - 64 * i);
      l[i] = _mm512_maskz_loadu_epi8(_bzhi_u64(~0ull, static_cast<unsigned>(n)), p + 64 * i);
    }
  } else {
    for (int i = 0; i < 4; ++i) l[i] = _mm512_loadu_si512(p + 64 * i);
    l[4] = _mm512_maskz_loadu_epi8(_bzhi_u64(~0ull, 8 * kB - 256), p + 256);
  }
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  const int8_t* q = x.q + b0 * kQK;
  // v[j]: lanes 0-7 the partial sums of block 2j, lanes 8-15 of block 2j+1.
  __m512i v[4];
  for (int j = 0; j < 4; ++j) {
    const __m512i w = _mm512_xor_si512(
        _mm512_permutex2var_epi8(l[j], _mm512_load_si512(kIdx.q[j]), l[j + 1]), flip);
    v[j] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, _mm512_load_si512(q + 64 * j));
  }
  // 128-bit lane L of c, element j: a quarter of block 2j + (L >= 2)'s sum.
  const __m512i a =
      _mm512_add_epi32(_mm512_unpacklo_epi32(v[0], v[1]), _mm512_unpackhi_epi32(v[0], v[1]));
  const __m512i b =
      _mm512_add_epi32(_mm512_unpacklo_epi32(v[2], v[3]), _mm512_unpackhi_epi32(v[2], v[3]));
  const __m512i c = _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
  const __m512i dsum = _mm512_add_epi32(c, _mm512_shuffle_i32x4(c, c, _MM_SHUFFLE(2, 3, 0, 1)));
  const __m512i pick = _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 0, 0, 0, 0, 0, 0, 0, 0);
  __m256i sums = _mm512_castsi512_si256(_mm512_permutexvar_epi32(pick, dsum));
  sums = _mm256_add_epi32(sums, _mm256_load_si256(reinterpret_cast<const __m256i*>(x.c + b0)));
  const __m512i didx = _mm512_load_si512(kIdx.d);
  const __m512i dlo = _mm512_permutex2var_epi8(l[0], didx, l[1]);
  const __m512i dhi = _mm512_permutex2var_epi8(l[2], didx, l[3]);
  const __m128i d16 = _mm512_castsi512_si128(_mm512_mask_blend_epi8(0xFF00, dlo, dhi));
  const __m256 dd = _mm256_mul_ps(_mm256_cvtph_ps(d16), _mm256_load_ps(x.d + b0));
  const __mmask8 lanes = kTail ? static_cast<__mmask8>((1u << m) - 1) : 0xFF;
  return _mm256_mask3_fmadd_ps(_mm256_cvtepi32_ps(sums), dd, acc, lanes);
}

// N:M-sparse q8_0/q4_0, one token: blocks [b0, b0 + 8) of one row of nb
// (m of them when kTail), as VRowGroupQ8 takes the dense blocks. The row
// keeps scales, masks and kept levels apart (quant_blocks.h), so each is a
// plain load: per pair of blocks one 64-bit mask and 32 kept bytes (q4_0:
// 16, split into nibbles), expanded to the pair's 64 unsigned levels by one
// vpexpandb (level zero where dropped). Returns VRowGroupQ8's c: 128-bit
// lane L, element j, a quarter of block 2j + (L >= 2)'s integer sum.
template <class F, bool kTail>
HWY_INLINE __m512i NmQuarterSums(const uint8_t* row, int64_t nb, int m, const int8_t* q, int b0) {
  constexpr bool kQ8 = std::is_same_v<F, VQ8_0NM>;
  constexpr int kKept = sizeof(F::Block::qs);  // bytes per block
  const uint8_t* mp = row + 2 * nb + 4 * b0;
  const uint8_t* qp = row + 6 * nb + kKept * b0;
  __m512i v[4];
  for (int j = 0; j < 4; ++j) {
    const int have = kTail ? (m - 2 * j >= 2 ? 2 : m - 2 * j) : 2;  // blocks of this pair
    if (have <= 0) {
      v[j] = _mm512_setzero_si512();
      continue;
    }
    uint64_t k = 0;
    std::memcpy(&k, mp + 8 * j, have == 2 ? 8 : 4);
    __m512i w;
    if constexpr (kQ8) {
      const __m256i kept =
          have == 2 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qp + 32 * j))
                    : _mm256_zextsi128_si256(
                          _mm_loadu_si128(reinterpret_cast<const __m128i*>(qp + 32 * j)));
      w = _mm512_mask_expand_epi8(_mm512_set1_epi8(static_cast<char>(0x80)), k,
                                  _mm512_zextsi256_si512(kept));  // stored + 128
    } else {
      // [b0, b1, b0 >> 4, b1 >> 4] (qwords: each block's 8 bytes), then
      // [lo 0, hi 0, lo 1, hi 1]: each block's 16 kept levels in order.
      const __m128i b = have == 2 ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(qp + 16 * j))
                                  : _mm_loadl_epi64(reinterpret_cast<const __m128i*>(qp + 16 * j));
      const __m256i two =
          _mm256_srlv_epi64(_mm256_broadcastsi128_si256(b), _mm256_setr_epi64x(0, 0, 4, 4));
      const __m256i lv = _mm256_permute4x64_epi64(_mm256_and_si256(two, _mm256_set1_epi8(0x0F)),
                                                  _MM_SHUFFLE(3, 1, 2, 0));
      w = _mm512_mask_expand_epi8(_mm512_set1_epi8(8), k, _mm512_zextsi256_si512(lv));
    }
    v[j] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, _mm512_load_si512(q + 64 * j));
  }
  const __m512i a =
      _mm512_add_epi32(_mm512_unpacklo_epi32(v[0], v[1]), _mm512_unpackhi_epi32(v[0], v[1]));
  const __m512i b =
      _mm512_add_epi32(_mm512_unpacklo_epi32(v[2], v[3]), _mm512_unpackhi_epi32(v[2], v[3]));
  return _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
}

// The eight f16 scales of blocks [b0, b0 + m) of a sparse row (0 past m).
template <bool kTail>
HWY_INLINE __m128i NmScales(const uint8_t* row, int m, int b0) {
  return kTail ? _mm_maskz_loadu_epi16(static_cast<__mmask8>((1u << m) - 1), row + 2 * b0)
               : _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * b0));
}

// One row: VRowGroupQ8's block sums and multiply-adds on NmQuarterSums.
template <class F, bool kTail>
HWY_INLINE __m256 VRowGroupNM(const uint8_t* row, int64_t nb, int m, const VRowAct& x, int b0,
                              __m256 acc) {
  const __m512i c = NmQuarterSums<F, kTail>(row, nb, m, x.q + b0 * kQK, b0);
  const __m512i dsum = _mm512_add_epi32(c, _mm512_shuffle_i32x4(c, c, _MM_SHUFFLE(2, 3, 0, 1)));
  const __m512i pick = _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 0, 0, 0, 0, 0, 0, 0, 0);
  __m256i sums = _mm512_castsi512_si256(_mm512_permutexvar_epi32(pick, dsum));
  sums = _mm256_add_epi32(sums, _mm256_load_si256(reinterpret_cast<const __m256i*>(x.c + b0)));
  const __m256 dd =
      _mm256_mul_ps(_mm256_cvtph_ps(NmScales<kTail>(row, m, b0)), _mm256_load_ps(x.d + b0));
  const __mmask8 lanes = kTail ? static_cast<__mmask8>((1u << m) - 1) : 0xFF;
  return _mm256_mask3_fmadd_ps(_mm256_cvtepi32_ps(sums), dd, acc, lanes);
}

// y[r] for rows [r0, r1), one token.
template <class F>
HWY_NOINLINE void VRowSum(const uint8_t* wd, int64_t row_bytes, int nb, const VRowAct& x,
                          int64_t r0, int64_t r1, float* y) {
  constexpr int kGroup = 8 * static_cast<int>(sizeof(typename F::Block));
  const int full = nb / 8, tail = nb % 8;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* p = wd + r * row_bytes;
    __m256 acc = _mm256_setzero_ps();
    if constexpr (F::kSparse) {
      for (int g = 0; g < full; ++g) acc = VRowGroupNM<F, false>(p, nb, 8, x, 8 * g, acc);
      if (tail) acc = VRowGroupNM<F, true>(p, nb, tail, x, 8 * full, acc);
    } else if constexpr (F::kQh >= 0) {
      for (int g = 0; g < full; ++g) acc = VRowGroupQ5<F, false>(p + g * kGroup, 8, x, 8 * g, acc);
      if (tail) acc = VRowGroupQ5<F, true>(p + full * kGroup, tail, x, 8 * full, acc);
    } else if constexpr (F::kQ4) {
      for (int g = 0; g < full; ++g) acc = VRowGroup<F, false>(p + g * kGroup, 8, x, 8 * g, acc);
      if (tail) acc = VRowGroup<F, true>(p + full * kGroup, tail, x, 8 * full, acc);
    } else {
      for (int g = 0; g < full; ++g) acc = VRowGroupQ8<false>(p + g * kGroup, 8, x, 8 * g, acc);
      if (tail) acc = VRowGroupQ8<true>(p + full * kGroup, tail, x, 8 * full, acc);
    }
    y[r] = Hsum(acc);
  }
}

// VRowSum of format F over rows [r0, r1), its activations laid out first.
template <class F>
HWY_INLINE void RowSumAs(const uint8_t* wd, int64_t row_bytes, int nb, const BlockQ8A* a,
                         int64_t r0, int64_t r1, float* y) {
  VRowAct x;
  PrepareRowAct<F>(a, nb, x);
  VRowSum<F>(wd, row_bytes, nb, x, r0, r1, y);
}

// One token's rows [r0, r1) of q4_0/q4_1/q8_0 (and their N:M-sparse forms)
// by VRowSum; returns r1, or r0 when it does not take the product (another
// format, or more columns than VRowAct holds: the row-block kernel then does
// them, in the same order).
HWY_NOINLINE inline int64_t MatmulVnniRowSum(DType type, const uint8_t* wd, int64_t row_bytes,
                                             int64_t cols, const uint8_t* act, int64_t r0,
                                             int64_t r1, float* y) {
  const int64_t nb = cols / kQK;
  if (nb == 0 || nb > kVRowMaxBlocks || r0 == r1) return r0;
  const auto* a = reinterpret_cast<const BlockQ8A*>(act);
  const int n = static_cast<int>(nb);
  switch (type) {
    case DType::kQ4_0:
      RowSumAs<VQ4_0>(wd, row_bytes, n, a, r0, r1, y);
      return r1;
    case DType::kQ4_1:
      RowSumAs<VQ4_1>(wd, row_bytes, n, a, r0, r1, y);
      return r1;
    case DType::kQ8_0:
      RowSumAs<VQ8_0>(wd, row_bytes, n, a, r0, r1, y);
      return r1;
    case DType::kQ5_0:
      RowSumAs<VQ5_0>(wd, row_bytes, n, a, r0, r1, y);
      return r1;
    case DType::kQ5_1:
      RowSumAs<VQ5_1>(wd, row_bytes, n, a, r0, r1, y);
      return r1;
    case DType::kQ8_0NM:
      RowSumAs<VQ8_0NM>(wd, row_bytes, n, a, r0, r1, y);
      return r1;
    case DType::kQ4_0NM:
      RowSumAs<VQ4_0NM>(wd, row_bytes, n, a, r0, r1, y);
      return r1;
    default:
      return r0;
  }
}

}  // namespace snug::tensor::HWY_NAMESPACE
SNUG_END_VNNI
HWY_AFTER_NAMESPACE();

#endif  // SNUG_X86_VNNI512
#endif  // include guard
