// q4_K and q6_K on AVX512-VNNI in super-block-sum order: a row-block kernel for
// several tokens and a tile kernel for one token and for the rows past the
// last whole 16, with the same arithmetic, so that which one computes a
// (row, token) never changes it (batch invariance, tests/tensor/simd_test).
//
// Super-block-sum order, per (row, token) and super-block b (256 elements,
// 8 sub-blocks j of 32 with 6-bit scale sc_j and minimum m_j):
//   I_b = sum_j sc_j x (exact int32 sum of sub-block j's 32 products),
//   M_b = sum_j m_j x (the token's sum over sub-block j),
// both exact integers; acc[b % 8] = fma(float(I_b), d_w x d_a, acc[b % 8]),
// then acc[b % 8] = fnma(float(M_b), dmin_w x d_a, acc[b % 8]); the result is
// ((acc0+acc4)+(acc2+acc6)) + ((acc1+acc5)+(acc3+acc7)), as the 32-element
// formats' block-sum order (qgemm_vnni-inl.h). ggml's AVX2 kernel converts
// eight partial integer sums per super-block to float and subtracts the
// minimum terms apart at the end: more roundings. snug's AVX2 and AVX3
// targets take this order too (qgemm_k_avx2-inl.h), with the same bits.
//
// Row-block kernel: as qgemm_vnni-inl.h's, sixteen rows in the int32 lanes of
// a zmm register. Per 16-row group and super-block, the file's bytes of the
// 16 rows are transposed into registers (PackedK4, PackedK6: levels of 4
// elements of all 16 rows per register, scales and minimums as lanes), in as
// many bytes as the file. Up to eight tokens share each record (VStreamK):
// its nibbles are split and its scales decoded in registers once for all of
// them; per token and sub-block, eight vpdpbusd give the 16 rows' exact
// sums, one vpmulld scales them; the minimum terms take four vpdpwssd on
// (m_2i, m_2i+1) pairs against the token's pair of sub-block sums. (Expanding
// the levels into a stack copy and running two tokens over it, as before,
// was 30-50% slower: a load of weights and a broadcast per vpdpbusd.)
//
// Packed matrices (MatView::packed, PackVnniK) keep these records for the
// whole matrix, read in place; the file layout packs four super-blocks of a
// group at a time on the stack. One or two tokens over a packed group ask
// for the group after next into L2.
#if defined(SNUG_TENSOR_QGEMM_K_VNNI_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SNUG_TENSOR_QGEMM_K_VNNI_INL_H_
#undef SNUG_TENSOR_QGEMM_K_VNNI_INL_H_
#else
#define SNUG_TENSOR_QGEMM_K_VNNI_INL_H_
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

inline constexpr int kKChunk = 4;       // super-blocks of the file packed at a time
inline constexpr int kKToks = 64;       // tokens whose accumulators one pass keeps
inline constexpr int kKStreamToks = 8;  // tokens one VStreamK pass takes in registers

// The 8 sub-block sums of one q8_K block as 4 int16 pairs (s_2i, s_2i+1)
// in int32 words (each |s| <= 32 x 128 fits).
HWY_INLINE void PairSums(const BlockQ8_K& a, int32_t out[4]) {
  for (int i = 0; i < 4; ++i) {
    const int s0 = a.bsums[4 * i] + a.bsums[4 * i + 1];
    const int s1 = a.bsums[4 * i + 2] + a.bsums[4 * i + 3];
    out[i] = static_cast<int32_t>((static_cast<uint32_t>(s0) & 0xFFFF) |
                                  (static_cast<uint32_t>(s1) << 16));
  }
}

// A q4_K matrix packed once for the row-block kernel (MatView::packed): per
// group of 16 rows, per super-block, the rows' 144 bytes each transposed into
// 36 registers, in as many bytes as the file. RepackK builds the same record
// on the way from the file layout, so both take one ExpandK.
struct alignas(64) PackedK4 {
  __m512i q[32];  // register 8c + k, lane r: bytes 32c + 4k..32c + 4k + 3 of row r's qs
  __m512i sm[3];  // register i, lane r: bytes 4i..4i + 3 of row r's packed scales and minimums
  __m512i dm;     // lane r: row r's d | dmin << 16 (f16)
};
static_assert(sizeof(PackedK4) == kVRows * sizeof(BlockQ4_K));

HWY_INLINE void PackSuperK(const uint8_t* blk, int64_t stride, PackedK4& p) {
  alignas(64) int32_t dm32[kVRows];
  for (int r = 0; r < kVRows; ++r) std::memcpy(&dm32[r], blk + r * stride, 4);  // d, dmin
  p.dm = _mm512_load_si512(dm32);
  __m512i word[4];  // 16 bytes from the scales: their 12 and 4 of qs
  Transpose16x4(blk + offsetof(BlockQ4_K, scales), stride, word);
  for (int i = 0; i < 3; ++i) p.sm[i] = word[i];
  constexpr int kQs = offsetof(BlockQ4_K, qs);
  for (int c = 0; c < 4; ++c) {
    Transpose16x4(blk + kQs + 32 * c, stride, p.q + 8 * c);
    Transpose16x4(blk + kQs + 32 * c + 16, stride, p.q + 8 * c + 4);
  }
}

// The scales, minimums (paired as int16 (m_2i, m_2i+1) for vpdpwssd) and f16
// d, dmin of a packed q4_K record: K4ScalesMins's rearrangement on 16 rows at
// once.
HWY_INLINE void DecodeK4(const PackedK4& src, __m512i sc[8], __m512i mn[4], __m512* d,
                         __m512* dmin) {
  const __m512i low6 = _mm512_set1_epi32(0x3f3f3f3f), nib = _mm512_set1_epi32(0x0f0f0f0f);
  const __m512i low2 = _mm512_set1_epi32(0x03030303);
  const __m512i u0 = src.sm[0], u1 = src.sm[1], u2 = src.sm[2];
  const __m512i sc03 = _mm512_and_si512(u0, low6);
  const __m512i sc47 =
      _mm512_or_si512(_mm512_and_si512(u2, nib),
                      _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u0, 6), low2), 4));
  const __m512i mn03 = _mm512_and_si512(u1, low6);
  const __m512i mn47 =
      _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u2, 4), nib),
                      _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u1, 6), low2), 4));
  const __m512i byte = _mm512_set1_epi32(0xFF), third = _mm512_set1_epi32(0xFF0000);
  for (int j = 0; j < 8; ++j) {
    sc[j] = _mm512_and_si512(_mm512_srli_epi32(j < 4 ? sc03 : sc47, 8 * (j % 4)), byte);
  }
  for (int h = 0; h < 2; ++h) {  // minimums 4h..4h+3 as pairs (m, m') = m | m' << 16
    const __m512i v = h == 0 ? mn03 : mn47;
    mn[2 * h] = _mm512_or_si512(_mm512_and_si512(v, byte),
                                _mm512_and_si512(_mm512_slli_epi32(v, 8), third));
    mn[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(v, 16), byte),
                                    _mm512_and_si512(_mm512_srli_epi32(v, 8), third));
  }
  *d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(src.dm));
  *dmin = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(src.dm, 16)));
}

// Token x's minimum terms against 16 rows of a super-block, then its
// multiply-adds into g from I_b (isum).
HWY_INLINE void FinishK4(__m512i isum, const __m512i mn[4], __m512 d, __m512 dmin,
                         const BlockQ8_K& x, __m512& g) {
  alignas(16) int32_t pairs[4];
  PairSums(x, pairs);
  __m512i msum = _mm512_setzero_si512();
  for (int i = 0; i < 4; ++i) msum = _mm512_dpwssd_epi32(msum, mn[i], _mm512_set1_epi32(pairs[i]));
  const __m512 da = _mm512_set1_ps(x.d);
  g = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(d, da), g);
  g = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(msum), _mm512_mul_ps(dmin, da), g);
}

// T tokens (up to 8, sharing each record's loads, nibble splits and scale
// decoding) against nsb packed q4_K records of 16 rows: record s is the
// rows' super-block b0 + s, a[t][s] token t's activations of it; acc: the
// tokens' eight accumulators. The lines [pf0, pf1) of pf are asked for into
// L2 on the way.
template <int T>
HWY_NOINLINE void VStreamK(const PackedK4* rec, int nsb, const BlockQ8_K* const* a, VAcc* acc,
                           const uint8_t* pf, int64_t pf0, int64_t pf1, int b0) {
  static_assert(T >= 1 && T <= kKStreamToks);
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  for (int s = 0; s < nsb; ++s) {
    const PackedK4& p = rec[s];
    __m512i sc[8], mn[4];
    __m512 d, dmin;
    DecodeK4(p, sc, mn, &d, &dmin);
    __m512i isum[T];
    for (int t = 0; t < T; ++t) isum[t] = _mm512_setzero_si512();
    for (int c = 0; c < 4; ++c) {
      if (pf != nullptr) PrefetchSlice(pf, pf0, pf1, 4 * s + c, 4 * nsb);
      __m512i lo[8], hi[8];
      for (int k = 0; k < 8; ++k) {
        lo[k] = _mm512_and_si512(p.q[8 * c + k], low4);
        hi[k] = _mm512_and_si512(_mm512_srli_epi32(p.q[8 * c + k], 4), low4);
      }
      for (int t = 0; t < T; ++t) {
        const int8_t* x = a[t][s].qs + 64 * c;
        isum[t] =
            _mm512_add_epi32(isum[t], _mm512_mullo_epi32(BlockSum<VQ4_1>(lo, x, 0), sc[2 * c]));
        isum[t] = _mm512_add_epi32(
            isum[t], _mm512_mullo_epi32(BlockSum<VQ4_1>(hi, x + 32, 0), sc[2 * c + 1]));
      }
    }
    for (int t = 0; t < T; ++t) FinishK4(isum[t], mn, d, dmin, a[t][s], acc[t].g[(b0 + s) % 8]);
  }
}

// One q4_K row against T tokens in super-block-sum order, eight super-blocks
// at a time: per super-block and token, eight vpdpbusd give each sub-block's
// partial sums, reduced to a vector of the 8 exact sums and scaled (vpmulld);
// the minimums against the token's sub-block sums likewise; the eight
// super-blocks' vectors reduce to I_b and M_b in lane b, lane j of the
// accumulator being acc[b % 8].
template <int T>
void TileQ4KSum(const uint8_t* wrow, int64_t n, const uint8_t* const* acts, float* out) {
  const auto* wb = reinterpret_cast<const BlockQ4_K*>(wrow);
  const int64_t nsb = n / kQKK;
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i ones16 = _mm256_set1_epi16(1);
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t g0 = 0; g0 < nsb; g0 += 8) {
    const int m = nsb - g0 < 8 ? static_cast<int>(nsb - g0) : 8;
    const auto lanes = static_cast<__mmask8>((1u << m) - 1);
    alignas(32) float dw[8] = {}, dminw[8] = {}, da[T][8] = {};
    __m256i scaled[T][8], mins[T][8];  // per token and super-block: 8 lanes to sum
    for (int j = 0; j < 8; ++j) {
      if (j >= m) {
        for (int t = 0; t < T; ++t) scaled[t][j] = mins[t][j] = _mm256_setzero_si256();
        continue;
      }
      const BlockQ4_K& w = wb[g0 + j];
      __m256i sc, mn;
      K4ScalesMins(w.scales, &sc, &mn);
      dw[j] = F16(w.d);
      dminw[j] = F16(w.dmin);
      __m256i lv[8];  // sub-block k's 32 levels
      for (int c = 0; c < 4; ++c) {
        const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.qs + 32 * c));
        lv[2 * c] = _mm256_and_si256(bits, low4);
        lv[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low4);
      }
      for (int t = 0; t < T; ++t) {
        const BlockQ8_K& a = reinterpret_cast<const BlockQ8_K*>(acts[t])[g0 + j];
        __m256i p[8];
        for (int k = 0; k < 8; ++k) {
          p[k] = _mm256_dpbusd_epi32(
              _mm256_setzero_si256(), lv[k],
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.qs + 32 * k)));
        }
        scaled[t][j] = _mm256_mullo_epi32(Reduce8(p), sc);
        const __m256i sums = _mm256_madd_epi16(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.bsums)), ones16);
        mins[t][j] = _mm256_mullo_epi32(sums, mn);
        da[t][j] = a.d;
      }
    }
    const __m256 dwv = _mm256_load_ps(dw), dminv = _mm256_load_ps(dminw);
    for (int t = 0; t < T; ++t) {
      const __m256 dav = _mm256_load_ps(da[t]);
      const __m256 iv = _mm256_cvtepi32_ps(Reduce8(scaled[t]));
      const __m256 mv = _mm256_cvtepi32_ps(Reduce8(mins[t]));
      acc[t] = _mm256_mask3_fmadd_ps(iv, _mm256_mul_ps(dwv, dav), acc[t], lanes);
      acc[t] = _mm256_mask3_fnmadd_ps(mv, _mm256_mul_ps(dminv, dav), acc[t], lanes);
    }
  }
  for (int t = 0; t < T; ++t) out[t] = Hsum(acc[t]);
}

// One-row q4_K kernel for a single token: each row read once, in order, as
// one stream. Per super-block two 64-byte loads hold its 128 bytes of
// nibbles; four vpdpbusd against the token's activations laid out to match
// (VRowActK) leave, in 16 lanes each, partial sums of 4 products (|p| <=
// 7680: exact in int16), packed to int16 and multiplied by each lane's scale
// with two vpdpwssd: 16 int32 lanes summing to I_b. The minimums take one
// 128-bit vpdpwssd against the token's sub-block sums. Eight super-blocks'
// sums then reduce to lanes as in TileQ4KSum, with its multiply-adds.
inline constexpr int kVRowMaxSuper = 64;  // super-blocks per row that VRowActK holds

struct alignas(64) VRowActK {
  // Per super-block, sub-blocks in the order 0 2 1 3 4 6 5 7 (32 bytes each):
  // what the low and high nibbles of its two 64-byte halves meet.
  int8_t q[kVRowMaxSuper][kQKK];
  int16_t sums[kVRowMaxSuper][8];  // the token's sum over each sub-block
  float d[kVRowMaxSuper];
};

HWY_INLINE void PrepareRowActK(const BlockQ8_K* a, int nsb, VRowActK& x) {
  constexpr int kOrder[8] = {0, 2, 1, 3, 4, 6, 5, 7};
  for (int b = 0; b < nsb; ++b) {
    for (int i = 0; i < 8; ++i) std::memcpy(x.q[b] + 32 * i, a[b].qs + 32 * kOrder[i], 32);
    for (int j = 0; j < 8; ++j) {
      x.sums[b][j] = static_cast<int16_t>(a[b].bsums[2 * j] + a[b].bsums[2 * j + 1]);
    }
    x.d[b] = a[b].d;
  }
}

// Byte indices (into a 16-byte table of scales 0-7 and minimums 0-7
// broadcast to 64) of the int16 scale vectors for the packed pairs: for the
// sub-blocks (0, 1, 2, 3) and (4, 5, 6, 7); odd bytes are masked to zero.
struct alignas(64) K4ScaleIdx {
  uint8_t first[64], second[64];
};
inline constexpr K4ScaleIdx kK4ScaleIdx = [] {
  K4ScaleIdx x{};
  for (int i = 0; i < 32; ++i) {  // int16 lane i: 128-bit lane L = i / 8, half (i % 8) / 4
    const int lane = i / 8, half = (i % 8) / 4;
    const int sub = 2 * (lane / 2) + half;  // packs_epi32(v0, v1): v0 first in each 128-bit lane
    x.first[2 * i] = static_cast<uint8_t>(sub);
    x.second[2 * i] = static_cast<uint8_t>(4 + sub);
  }
  return x;
}();

HWY_INLINE void VRowSuperK4(const BlockQ4_K& w, const VRowActK& x, int b, __m256i* isum,
                            __m128i* msum) {
  alignas(16) uint8_t scmn[16];
  K4ScalesMins(w.scales, scmn);
  const __m512i table =
      _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(scmn)));
  constexpr __mmask64 kEven = 0x5555555555555555ull;
  const __m512i s01 =
      _mm512_maskz_permutexvar_epi8(kEven, _mm512_load_si512(kK4ScaleIdx.first), table);
  const __m512i s23 =
      _mm512_maskz_permutexvar_epi8(kEven, _mm512_load_si512(kK4ScaleIdx.second), table);
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const __m512i q0 = _mm512_loadu_si512(w.qs), q1 = _mm512_loadu_si512(w.qs + 64);
  const int8_t* a = x.q[b];
  const auto dot = [&](__m512i lv, int at) {
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), lv, _mm512_load_si512(a + at));
  };
  const __m512i v0 = dot(_mm512_and_si512(q0, low4), 0);
  const __m512i v1 = dot(_mm512_and_si512(_mm512_srli_epi16(q0, 4), low4), 64);
  const __m512i v2 = dot(_mm512_and_si512(q1, low4), 128);
  const __m512i v3 = dot(_mm512_and_si512(_mm512_srli_epi16(q1, 4), low4), 192);
  __m512i i32 = _mm512_dpwssd_epi32(_mm512_setzero_si512(), _mm512_packs_epi32(v0, v1), s01);
  i32 = _mm512_dpwssd_epi32(i32, _mm512_packs_epi32(v2, v3), s23);
  *isum = _mm256_add_epi32(_mm512_castsi512_si256(i32), _mm512_extracti64x4_epi64(i32, 1));
  const __m128i mins = _mm_cvtepu8_epi16(_mm_srli_si128(_mm512_castsi512_si128(table), 8));
  *msum = _mm_dpwssd_epi32(_mm_setzero_si128(), mins,
                           _mm_load_si128(reinterpret_cast<const __m128i*>(x.sums[b])));
}

// y[r] for rows [r0, r1), one token, by VRowSuperK4.
HWY_NOINLINE inline void VRowSumK4(const uint8_t* wd, int64_t row_bytes, int nsb, const VRowActK& x,
                                   int64_t r0, int64_t r1, float* y) {
  for (int64_t r = r0; r < r1; ++r) {
    const auto* wb = reinterpret_cast<const BlockQ4_K*>(wd + r * row_bytes);
    __m256 acc = _mm256_setzero_ps();
    for (int g0 = 0; g0 < nsb; g0 += 8) {
      const int m = nsb - g0 < 8 ? nsb - g0 : 8;
      const auto lanes = static_cast<__mmask8>((1u << m) - 1);
      __m256i is[8], ms[8];
      alignas(32) float dw[8] = {}, dminw[8] = {}, da[8] = {};
      for (int j = 0; j < 8; ++j) {
        if (j >= m) {
          is[j] = ms[j] = _mm256_setzero_si256();
          continue;
        }
        __m128i mx;
        VRowSuperK4(wb[g0 + j], x, g0 + j, &is[j], &mx);
        ms[j] = _mm256_zextsi128_si256(mx);
        dw[j] = F16(wb[g0 + j].d);
        dminw[j] = F16(wb[g0 + j].dmin);
        da[j] = x.d[g0 + j];
      }
      const __m256 dav = _mm256_load_ps(da);
      const __m256 iv = _mm256_cvtepi32_ps(Reduce8(is));
      const __m256 mv = _mm256_cvtepi32_ps(Reduce8(ms));
      acc = _mm256_mask3_fmadd_ps(iv, _mm256_mul_ps(_mm256_load_ps(dw), dav), acc, lanes);
      acc = _mm256_mask3_fnmadd_ps(mv, _mm256_mul_ps(_mm256_load_ps(dminw), dav), acc, lanes);
    }
    y[r] = Hsum(acc);
  }
}

// One token's rows [r0, r1) of q4_K by VRowSumK4; returns r1, or r0 when it
// does not take the product (another type, or a row longer than VRowActK).
HWY_NOINLINE inline int64_t MatmulVnniKRowSum(DType type, const uint8_t* wd, int64_t row_bytes,
                                              int64_t cols, const uint8_t* act, int64_t r0,
                                              int64_t r1, float* y) {
  const int64_t nsb = cols / kQKK;
  if (type != DType::kQ4_K || nsb == 0 || nsb > kVRowMaxSuper || r0 == r1) return r0;
  VRowActK x;
  PrepareRowActK(reinterpret_cast<const BlockQ8_K*>(act), static_cast<int>(nsb), x);
  VRowSumK4(wd, row_bytes, static_cast<int>(nsb), x, r0, r1, y);
  return r1;
}

// q6_K, the same order without minimums: per super-block b and (row, token)
// I_b = sum_g sc_g x (exact sum of group g's 16 products of stored levels
// 0..63 - 32 x the token's group sum), acc[b % 8] = fma(float(I_b), d_w x
// d_a, acc[b % 8]) (|I_b| < 2^31: 16 x 127 x (16 x 63 x 128 + 32 x 2048)).

// One q6_K row against T tokens in super-block-sum order, eight super-blocks
// at a time (lane j of the accumulator being acc[b % 8]).
template <int T>
void TileQ6KSum(const uint8_t* wrow, int64_t n, const uint8_t* const* acts, float* out) {
  const auto* wb = reinterpret_cast<const BlockQ6_K*>(wrow);
  const int64_t nsb = n / kQKK;
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t g0 = 0; g0 < nsb; g0 += 8) {
    const int m = nsb - g0 < 8 ? static_cast<int>(nsb - g0) : 8;
    const auto lanes = static_cast<__mmask8>((1u << m) - 1);
    alignas(32) float dw[8] = {}, da[T][8] = {};
    __m256i sums[T][8];  // per token and super-block: 8 lanes summing to I_b
    for (int j = 0; j < 8; ++j) {
      if (j >= m) {
        for (int t = 0; t < T; ++t) sums[t][j] = _mm256_setzero_si256();
        continue;
      }
      const BlockQ6_K& w = wb[g0 + j];
      PrefetchQ6KAhead(w);
      dw[j] = F16(w.d);
      __m256i lv[8];
      Q6Levels(w, lv);
      const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w.scales));
      const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
      // scv[k]: lanes 0-3 the scale of group 2k, lanes 4-7 of group 2k + 1
      __m256i scv[8];
      const __m256i s_lo = _mm256_cvtepi8_epi32(sc8);
      const __m256i s_hi = _mm256_cvtepi8_epi32(_mm_srli_si128(sc8, 8));
      for (int k = 0; k < 8; ++k) {
        const int g = 2 * (k % 4);
        scv[k] = _mm256_permutevar8x32_epi32(
            k < 4 ? s_lo : s_hi, _mm256_setr_epi32(g, g, g, g, g + 1, g + 1, g + 1, g + 1));
      }
      for (int t = 0; t < T; ++t) {
        const BlockQ8_K& a = reinterpret_cast<const BlockQ8_K*>(acts[t])[g0 + j];
        __m256i v = _mm256_setzero_si256();
        for (int k = 0; k < 8; ++k) {
          const __m256i p = _mm256_dpbusd_epi32(
              _mm256_setzero_si256(), lv[k],
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.qs + 32 * k)));
          v = _mm256_add_epi32(v, _mm256_mullo_epi32(p, scv[k]));
        }
        // - 32 x sum_g sc_g x (the token's group sum)
        const __m256i off =
            _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.bsums)), sc16);
        sums[t][j] = _mm256_sub_epi32(v, _mm256_slli_epi32(off, 5));
        da[t][j] = a.d;
      }
    }
    const __m256 dwv = _mm256_load_ps(dw);
    for (int t = 0; t < T; ++t) {
      const __m256 iv = _mm256_cvtepi32_ps(Reduce8(sums[t]));
      acc[t] = _mm256_mask3_fmadd_ps(iv, _mm256_mul_ps(dwv, _mm256_load_ps(da[t])), acc[t], lanes);
    }
  }
  for (int t = 0; t < T; ++t) out[t] = Hsum(acc[t]);
}

// A q6_K super-block of 16 rows packed (MatView::packed): the ql, qh and
// scale bytes transposed, 52 registers; a group's f16 scales d follow its
// last super-block, one 256-bit vector each (lane r: row r), and the group is
// padded to 64 bytes.
struct alignas(64) PackedK6 {
  __m512i ql[2][2][8];  // [h][half][q], lane r: bytes 64h + 32 half + 4q..+3 of row r's ql
  __m512i qh[2][8];     // [h][q], lane r: bytes 32h + 4q..+3 of row r's qh
  __m512i sc[4];        // register i, lane r: row r's scales 4i..4i + 3 (int8)
};

HWY_INLINE void PackSuperK(const uint8_t* blk, int64_t stride, PackedK6& p, __m256i* d) {
  alignas(64) int32_t d32[kVRows];
  for (int r = 0; r < kVRows; ++r) {
    uint16_t v;
    std::memcpy(&v, blk + r * stride + offsetof(BlockQ6_K, d), 2);
    d32[r] = v;
  }
  *d = _mm512_cvtepi32_epi16(_mm512_load_si512(d32));
  const uint8_t* ql = blk + offsetof(BlockQ6_K, ql);
  const uint8_t* qh = blk + offsetof(BlockQ6_K, qh);
  for (int h = 0; h < 2; ++h) {
    for (int half = 0; half < 2; ++half) {
      Transpose16x4(ql + 64 * h + 32 * half, stride, p.ql[h][half]);
      Transpose16x4(ql + 64 * h + 32 * half + 16, stride, p.ql[h][half] + 4);
    }
    Transpose16x4(qh + 32 * h, stride, p.qh[h]);
    Transpose16x4(qh + 32 * h + 16, stride, p.qh[h] + 4);
  }
  Transpose16x4(blk + offsetof(BlockQ6_K, scales), stride, p.sc);
}

// Sub-block 4h + k's levels (0..63) of a packed q6_K record, lane r of
// register q holding row r's levels 4q..4q+3: element 128h + 32k + l is
// ql[64h + 32(k & 1) + l]'s nibble k / 2 with bits 2k, 2k + 1 of
// qh[32h + l] above it (Q6Levels's rule, on 16 rows at once).
HWY_INLINE void K6Levels(const PackedK6& src, int h, int k, __m512i out[8]) {
  const __m512i low4 = _mm512_set1_epi8(0x0F), high2 = _mm512_set1_epi8(0x30);
  for (int q = 0; q < 8; ++q) {
    const __m512i ql = src.ql[h][k & 1][q], qh = src.qh[h][q];
    __m512i hi = qh;  // bits 2k, 2k + 1 to bits 4, 5
    if (k == 0) hi = _mm512_slli_epi32(qh, 4);
    if (k == 1) hi = _mm512_slli_epi32(qh, 2);
    if (k == 3) hi = _mm512_srli_epi32(qh, 2);
    // (nibble & 0x0F) | (hi & 0x30), the first in one vpternlogd (0xEC: a & c | b)
    out[q] = _mm512_ternarylogic_epi32(k < 2 ? ql : _mm512_srli_epi32(ql, 4),
                                       _mm512_and_si512(hi, high2), low4, 0xEC);
  }
}

// The 16 group scales of a packed q6_K record, sign-extended to int32 lanes.
HWY_INLINE void K6Scales(const PackedK6& src, __m512i sc[16]) {
  for (int g = 0; g < 16; ++g) {
    sc[g] = _mm512_srai_epi32(_mm512_slli_epi32(src.sc[g / 4], 24 - 8 * (g % 4)), 24);
  }
}

// Bytes of one packed 16-row group of nsb super-blocks.
template <class B>
constexpr int64_t PackedGroupBytesK(int64_t nsb) {
  if constexpr (std::is_same_v<B, BlockQ4_K>) {
    return nsb * static_cast<int64_t>(sizeof(PackedK4));
  } else {
    return (nsb * static_cast<int64_t>(sizeof(PackedK6) + sizeof(__m256i)) + 63) / 64 * 64;
  }
}

// Packs the whole 16-row groups of a q4_K or q6_K matrix into out (64-byte
// aligned).
template <class B>
void PackVnniK(const uint8_t* wd, int64_t row_bytes, int64_t cols, int64_t rows, uint8_t* out) {
  const int64_t nsb = cols / kQKK;
  for (int64_t g = 0; g < rows / kVRows; ++g) {
    uint8_t* grp = out + g * PackedGroupBytesK<B>(nsb);
    const uint8_t* w = wd + g * kVRows * row_bytes;
    for (int64_t s = 0; s < nsb; ++s) {
      const uint8_t* blk = w + s * static_cast<int64_t>(sizeof(B));
      if constexpr (std::is_same_v<B, BlockQ4_K>) {
        PackSuperK(blk, row_bytes, reinterpret_cast<PackedK4*>(grp)[s]);
      } else {
        auto* d = reinterpret_cast<__m256i*>(grp + nsb * sizeof(PackedK6));
        PackSuperK(blk, row_bytes, reinterpret_cast<PackedK6*>(grp)[s], &d[s]);
      }
    }
    if constexpr (std::is_same_v<B, BlockQ6_K>) {
      const int64_t used = nsb * static_cast<int64_t>(sizeof(PackedK6) + sizeof(__m256i));
      std::memset(grp + used, 0, static_cast<size_t>(PackedGroupBytesK<B>(nsb) - used));
    }
  }
}

// The exact sum of a 16-element group's products for 16 rows, from
// -32 x the token's group sum: four vpdpbusd.
HWY_INLINE __m512i GroupSum16(const __m512i* w, const int8_t* x, int32_t init) {
  __m512i acc = _mm512_set1_epi32(init);
  for (int k = 0; k < 4; ++k) {
    int32_t v;
    std::memcpy(&v, x + 4 * k, 4);
    acc = _mm512_dpbusd_epi32(acc, w[k], _mm512_set1_epi32(v));
  }
  return acc;
}

// VStreamK for q6_K records and their f16 scales d: per group of 16
// elements, four vpdpbusd from -32 x the token's group sum, scaled by
// vpmulld.
template <int T>
HWY_NOINLINE void VStreamK(const PackedK6* rec, const __m256i* d, int nsb,
                           const BlockQ8_K* const* a, VAcc* acc, const uint8_t* pf, int64_t pf0,
                           int64_t pf1, int b0) {
  static_assert(T >= 1 && T <= kKStreamToks);
  for (int s = 0; s < nsb; ++s) {
    __m512i sc[16];
    K6Scales(rec[s], sc);
    __m512i isum[T];
    for (int t = 0; t < T; ++t) isum[t] = _mm512_setzero_si512();
    for (int j = 0; j < 8; ++j) {
      if (pf != nullptr) PrefetchSlice(pf, pf0, pf1, 8 * s + j, 8 * nsb);
      __m512i lv[8];
      K6Levels(rec[s], j / 4, j % 4, lv);
      for (int t = 0; t < T; ++t) {
        const BlockQ8_K& x = a[t][s];
        const __m512i lo = GroupSum16(lv, x.qs + 32 * j, -32 * x.bsums[2 * j]);
        const __m512i hi = GroupSum16(lv + 4, x.qs + 32 * j + 16, -32 * x.bsums[2 * j + 1]);
        isum[t] =
            _mm512_add_epi32(isum[t], _mm512_add_epi32(_mm512_mullo_epi32(lo, sc[2 * j]),
                                                       _mm512_mullo_epi32(hi, sc[2 * j + 1])));
      }
    }
    const __m512 dw = _mm512_cvtph_ps(_mm256_load_si256(d + s));
    for (int t = 0; t < T; ++t) {
      __m512& g = acc[t].g[(b0 + s) % 8];
      g = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(dw, _mm512_set1_ps(a[t][s].d)),
                          g);
    }
  }
}

// VStreamK over records [at, at + nb) of a packed group of nsb records, the
// rows' super-blocks [b0, b0 + nb).
template <int T>
HWY_INLINE void StreamGroup(const BlockQ4_K*, const uint8_t* group, int nsb, int at, int nb, int b0,
                            const BlockQ8_K* const* a, VAcc* acc, const uint8_t* pf, int64_t pf0,
                            int64_t pf1) {
  (void)nsb;
  VStreamK<T>(reinterpret_cast<const PackedK4*>(group) + at, nb, a, acc, pf, pf0, pf1, b0);
}
template <int T>
HWY_INLINE void StreamGroup(const BlockQ6_K*, const uint8_t* group, int nsb, int at, int nb, int b0,
                            const BlockQ8_K* const* a, VAcc* acc, const uint8_t* pf, int64_t pf0,
                            int64_t pf1) {
  VStreamK<T>(reinterpret_cast<const PackedK6*>(group) + at,
              reinterpret_cast<const __m256i*>(group + nsb * sizeof(PackedK6)) + at, nb, a, acc, pf,
              pf0, pf1, b0);
}

// y[t * y_stride + r] for rows [r0, r1) (a multiple of 16 apart) and all
// n_tok tokens; act: BlockQ8_K rows of act_bytes each. B: BlockQ4_K or
// BlockQ6_K. Per 16-row group, tokens kKToks at a time, four at a time in
// registers (VStreamK) over the group's packed records: packed, the
// matrix's PackVnniK form, read in place when r0 starts a group; otherwise
// kKChunk super-blocks of the file's rows packed on the stack at a time.
// One pass over a packed group (one or two tokens) asks for the group after
// next into L2, as MatmulVnni does; the others, for the next group.
template <class B>
void MatmulVnniK(const uint8_t* wd, int64_t row_bytes, int64_t cols, const uint8_t* act,
                 int64_t act_bytes, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                 int64_t y_stride, const uint8_t* packed) {
  const int nsb = static_cast<int>(cols / kQKK);
  if (r0 % kVRows != 0) packed = nullptr;
  alignas(64) uint8_t chunk[PackedGroupBytesK<B>(kKChunk)];
  VAcc acc[kKToks];
  const bool stream = packed != nullptr && n_tok <= 2;
  const int64_t ahead_groups = stream ? kPackedAhead : 1;
  const int64_t group_bytes = PackedGroupBytesK<B>(nsb);
  const int64_t lines = (packed != nullptr ? group_bytes : kVRows * row_bytes) / 64;
  const int step = packed != nullptr ? nsb : kKChunk;
  for (int64_t rb = r0; rb + kVRows <= r1; rb += kVRows) {
    const bool ahead = rb + (1 + ahead_groups) * kVRows <= r1;
    const uint8_t* next = packed != nullptr ? packed + (rb / kVRows + ahead_groups) * group_bytes
                                            : wd + (rb + kVRows) * row_bytes;
    for (int64_t t0 = 0; t0 < n_tok; t0 += kKToks) {
      const int nt = static_cast<int>(n_tok - t0 < kKToks ? n_tok - t0 : kKToks);
      for (int t = 0; t < nt; ++t) {
        for (__m512& g : acc[t].g) g = _mm512_setzero_ps();
      }
      for (int c0 = 0; c0 < nsb; c0 += step) {
        const int nb = nsb - c0 < step ? nsb - c0 : step;
        // The next group's share of this chunk, asked for with the first
        // token group.
        const int64_t share0 = lines * c0 / nsb;
        const int64_t share1 = ahead && t0 == 0 ? lines * (c0 + nb) / nsb : share0;
        const uint8_t* group = packed + rb / kVRows * group_bytes;
        int group_nsb = nsb, at = c0;
        if (packed == nullptr) {
          PrefetchSlice(next, share0, share1, 0, 1);
          PackVnniK<B>(wd + rb * row_bytes + c0 * static_cast<int64_t>(sizeof(B)), row_bytes,
                       nb * kQKK, kVRows, chunk);
          group = chunk, group_nsb = nb, at = 0;
        }
        const BlockQ8_K* a[kKToks];
        for (int t = 0; t < nt; ++t) {
          a[t] = reinterpret_cast<const BlockQ8_K*>(act + (t0 + t) * act_bytes) + c0;
        }
        for (int t = 0; t < nt; t += kKStreamToks) {
          const uint8_t* pf = packed != nullptr && t == 0 ? next : nullptr;
          const B* tag = nullptr;
          const auto pass = [&]<int T>() {
            StreamGroup<T>(tag, group, group_nsb, at, nb, c0, a + t, acc + t, pf, share0, share1);
          };
          switch (nt - t < kKStreamToks ? nt - t : kKStreamToks) {
            case 1:
              pass.template operator()<1>();
              break;
            case 2:
              pass.template operator()<2>();
              break;
            case 3:
              pass.template operator()<3>();
              break;
            case 4:
              pass.template operator()<4>();
              break;
            case 5:
              pass.template operator()<5>();
              break;
            case 6:
              pass.template operator()<6>();
              break;
            case 7:
              pass.template operator()<7>();
              break;
            default:
              pass.template operator()<8>();
          }
        }
      }
      for (int t = 0; t < nt; ++t) _mm512_storeu_ps(y + (t0 + t) * y_stride + rb, VAccSum(acc[t]));
    }
  }
}

// Rows [r0, r1) of q4_K or q6_K rounded down to whole 16-row blocks by
// MatmulVnniK; returns the first row it did not do (r0 for other types).
inline int64_t MatmulVnniKRows(DType type, const uint8_t* wd, int64_t row_bytes, int64_t cols,
                               const uint8_t* act, int64_t act_bytes, int64_t n_tok, int64_t r0,
                               int64_t r1, float* y, int64_t y_stride, const uint8_t* packed) {
  const int64_t end = r0 + (r1 - r0) / kVRows * kVRows;
  if (end == r0 || cols < kQKK) return r0;
  if (type == DType::kQ4_K) {
    MatmulVnniK<BlockQ4_K>(wd, row_bytes, cols, act, act_bytes, n_tok, r0, end, y, y_stride,
                           packed);
  } else if (type == DType::kQ6_K) {
    MatmulVnniK<BlockQ6_K>(wd, row_bytes, cols, act, act_bytes, n_tok, r0, end, y, y_stride,
                           packed);
  } else {
    return r0;
  }
  return end;
}

// Bytes PackVnniK writes for a rows x cols q4_K or q6_K matrix (0 for other
// types, or a row shorter than a super-block); *packed_rows: the rows covered.
inline int64_t VnniKPackedBytes(DType type, int64_t rows, int64_t cols, int64_t* packed_rows) {
  const int64_t groups = rows / kVRows, nsb = cols / kQKK;
  int64_t bytes = 0;
  if (type == DType::kQ4_K) bytes = groups * PackedGroupBytesK<BlockQ4_K>(nsb);
  if (type == DType::kQ6_K) bytes = groups * PackedGroupBytesK<BlockQ6_K>(nsb);
  *packed_rows = bytes > 0 ? groups * kVRows : 0;
  return bytes;
}
// Super-blocks [b0, b1) of row r of a packed q4_K or q6_K matrix back in the
// file's layout, at out: byte i of lane r % 16 of each register.
template <class B>
void UnpackVnniK(const uint8_t* packed, int64_t nsb, int64_t r, int64_t b0, int64_t b1,
                 uint8_t* out) {
  const uint8_t* grp = packed + r / kVRows * PackedGroupBytesK<B>(nsb);
  const int lane = static_cast<int>(r % kVRows);
  // Bytes 4i..4i+3 of the row's part from `regs` registers of 64 bytes.
  const auto gather = [&](const void* regs, int n_bytes, uint8_t* to) {
    const auto* src = static_cast<const uint8_t*>(regs);
    for (int j = 0; j < n_bytes; ++j) to[j] = src[64 * (j / 4) + 4 * lane + j % 4];
  };
  for (int64_t s = b0; s < b1; ++s) {
    auto& blk = *reinterpret_cast<B*>(out + (s - b0) * static_cast<int64_t>(sizeof(B)));
    if constexpr (std::is_same_v<B, BlockQ4_K>) {
      const PackedK4& p = reinterpret_cast<const PackedK4*>(grp)[s];
      std::memcpy(&blk.d, reinterpret_cast<const uint8_t*>(&p.dm) + 4 * lane, 2);
      std::memcpy(&blk.dmin, reinterpret_cast<const uint8_t*>(&p.dm) + 4 * lane + 2, 2);
      gather(p.sm, 12, blk.scales);
      for (int c = 0; c < 4; ++c) gather(p.q + 8 * c, 32, blk.qs + 32 * c);
    } else {
      const PackedK6& p = reinterpret_cast<const PackedK6*>(grp)[s];
      for (int h = 0; h < 2; ++h) {
        for (int half = 0; half < 2; ++half) gather(p.ql[h][half], 32, blk.ql + 64 * h + 32 * half);
        gather(p.qh[h], 32, blk.qh + 32 * h);
      }
      gather(p.sc, 16, reinterpret_cast<uint8_t*>(blk.scales));
      std::memcpy(&blk.d, grp + nsb * sizeof(PackedK6) + s * 32 + 2 * lane, 2);
    }
  }
}
inline void UnpackVnniKRow(DType type, const uint8_t* packed, int64_t cols, int64_t r, int64_t b0,
                           int64_t b1, uint8_t* out) {
  if (type == DType::kQ4_K) UnpackVnniK<BlockQ4_K>(packed, cols / kQKK, r, b0, b1, out);
  if (type == DType::kQ6_K) UnpackVnniK<BlockQ6_K>(packed, cols / kQKK, r, b0, b1, out);
}
inline void PackVnniKRows(DType type, const uint8_t* wd, int64_t row_bytes, int64_t cols,
                          int64_t rows, uint8_t* out) {
  if (type == DType::kQ4_K) PackVnniK<BlockQ4_K>(wd, row_bytes, cols, rows, out);
  if (type == DType::kQ6_K) PackVnniK<BlockQ6_K>(wd, row_bytes, cols, rows, out);
}

}  // namespace snug::tensor::HWY_NAMESPACE
SNUG_END_VNNI
HWY_AFTER_NAMESPACE();

#endif  // SNUG_X86_VNNI512
#endif  // include guard
