// q4_K and q6_K on AVX2 without AVX512-VNNI (Highway's AVX2 and AVX3 targets)
// in super-block-sum order, the order of qgemm_k_vnni-inl.h: per (row, token)
// and super-block b, the exact integers I_b (and, for q4_K's minimums, M_b)
// go to float once, acc[b % 8] = fma(float(I_b), d_w x d_a, acc[b % 8]),
// then acc[b % 8] = fnma(float(M_b), dmin_w x d_a, acc[b % 8]), and the eight
// accumulators reduce as Hsum does. Integers are exact in any order of
// summation, so every x86 target from AVX2 up gives q4_K and q6_K the same
// bits, alone or in any batch (tests/tensor/simd_test). ggml's AVX2 order,
// which these formats took here before, rounds eight partial sums per
// super-block and the minimum terms apart.
//
// Tiles (one row, up to kTokTile tokens; one token, and the rows past the
// last whole eight): AVX3_DL's tiles with vpmaddubsw and vpmaddwd in place of
// vpdpbusd. vpmaddwd applies a sub-block's scale to its pair sums; the
// minimums are one vpmaddwd against the token's sixteen half-sums.
//
// Eight-row kernel (several tokens): as qgemm_avx2-inl.h's for the
// 32-element formats, eight rows sit in the int32 lanes of a register. Each
// super-block of eight rows is transposed once per pass (register k of a
// sub-block: its levels 4k..4k+3 in every row; scales and minimums decoded as
// int16 lane pairs), and each token then takes, per register, a broadcast of
// four activation bytes and a vpmaddubsw; two (q4_K) or four (q6_K) tokens
// share each load of a weight register. A sub-block's products stay in
// int16 until its scale is applied (q4_K: eight registers, |sum| <= 8 x 2 x
// 15 x 128 = 30720; q6_K: two, <= 2 x 2 x 63 x 128 = 32256), then one
// vpmaddwd per sub-block. The old tiles spent a vpmaddwd per register, decoded
// the weights for every four tokens and summed the minimums in a scalar loop
// per super-block and token.
#if defined(SNUG_TENSOR_QGEMM_K_AVX2_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SNUG_TENSOR_QGEMM_K_AVX2_INL_H_
#undef SNUG_TENSOR_QGEMM_K_AVX2_INL_H_
#else
#define SNUG_TENSOR_QGEMM_K_AVX2_INL_H_
#endif

#include <hwy/highway.h>

#include "tensor/qdot_avx2-inl.h"
#include "tensor/qgemm_avx2-inl.h"
#include "tensor/simd_x86.h"

#if SNUG_X86_AVX2 && !SNUG_X86_VNNI512
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "tensor/dtype.h"
#include "tensor/quant_blocks.h"

HWY_BEFORE_NAMESPACE();
namespace snug::tensor::HWY_NAMESPACE {

inline constexpr int kAKChunk = 2;  // super-blocks of eight rows transposed at a time

// vpshufb mask taking, in every dword, byte b0 of that dword to byte p and
// byte b1 to byte p + 2 (p = 0 or 1), zeroing the others.
HWY_INLINE __m256i DwordPick(int b0, int b1, int p) {
  const auto at = [&](int b, int pos) { return static_cast<uint32_t>(b) << (8 * pos); };
  uint32_t pattern = 0x80808080u;
  pattern &= ~(0xFFu << (8 * p)) & ~(0xFFu << (8 * (p + 2)));
  pattern |= at(b0, p) | at(b1, p + 2);
  // vpshufb indexes within a 128-bit lane: dword d's bytes are 4d..4d+3
  // (zeroing indices keep bit 7 set after the offset).
  return _mm256_add_epi8(_mm256_set1_epi32(static_cast<int32_t>(pattern)),
                         _mm256_setr_epi32(0, 0x04040404, 0x08080808, 0x0C0C0C0C, 0, 0x04040404,
                                           0x08080808, 0x0C0C0C0C));
}

// ---------------------------------------------------------------------------
// Tiles.

// A super-block's 256 levels (lv[k]: elements 32k..32k+31) against a token's
// activations x, each register's pair sums times its int16 scales scv[k]:
// eight int32 lanes summing to the scaled integer dot (before any offset).
HWY_INLINE __m256i ScaledSums(const __m256i lv[8], const __m256i scv[8], const int8_t* x) {
  __m256i s = _mm256_setzero_si256();
  for (int k = 0; k < 8; ++k) {
    const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 32 * k));
    s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(lv[k], av), scv[k]));
  }
  return s;
}

// One q4_K row against T tokens, eight super-blocks at a time: per
// super-block and token a vector of eight int32 lanes summing to I_b and one
// summing to M_b; Reduce8 puts the eight super-blocks' sums in lanes b % 8.
template <int T>
void TileQ4KSumAvx2(const uint8_t* wrow, int64_t n, const uint8_t* const* acts, float* out) {
  const auto* wb = reinterpret_cast<const BlockQ4_K*>(wrow);
  const int64_t nsb = n / kQKK;
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t g0 = 0; g0 < nsb; g0 += 8) {
    const int m = nsb - g0 < 8 ? static_cast<int>(nsb - g0) : 8;
    // Lanes past the last super-block add 0 x 0 to a +0 or nonzero
    // accumulator (never -0): AVX3_DL's masked lanes, bit for bit.
    alignas(32) float dw[8] = {}, dminw[8] = {}, da[T][8] = {};
    __m256i isum[T][8], msum[T][8];
    for (int j = 0; j < 8; ++j) {
      if (j >= m) {
        for (int t = 0; t < T; ++t) isum[t][j] = msum[t][j] = _mm256_setzero_si256();
        continue;
      }
      const BlockQ4_K& w = wb[g0 + j];
      dw[j] = F16(w.d);
      dminw[j] = F16(w.dmin);
      alignas(16) uint8_t sm[16];
      K4ScalesMins(w.scales, sm);
      const __m128i smv = _mm_load_si128(reinterpret_cast<const __m128i*>(sm));
      const __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(smv));
      // (m_0, m_0, m_1, m_1, ...) against the token's 16 half-sub-block sums
      const __m256i mn2 = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(smv, smv));
      __m256i lv[8], scv[8];
      for (int c = 0; c < 4; ++c) {
        const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.qs + 32 * c));
        lv[2 * c] = _mm256_and_si256(bits, low4);
        lv[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low4);
      }
      for (int k = 0; k < 8; ++k) {
        scv[k] =
            _mm256_shuffle_epi8(sc16, _mm256_set1_epi16(static_cast<int16_t>(0x0100 + 0x0202 * k)));
      }
      for (int t = 0; t < T; ++t) {
        const BlockQ8_K& a = reinterpret_cast<const BlockQ8_K*>(acts[t])[g0 + j];
        isum[t][j] = ScaledSums(lv, scv, a.qs);
        msum[t][j] =
            _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.bsums)), mn2);
        da[t][j] = a.d;
      }
    }
    const __m256 dwv = _mm256_load_ps(dw), dminv = _mm256_load_ps(dminw);
    for (int t = 0; t < T; ++t) {
      const __m256 dav = _mm256_load_ps(da[t]);
      acc[t] =
          _mm256_fmadd_ps(_mm256_cvtepi32_ps(Reduce8(isum[t])), _mm256_mul_ps(dwv, dav), acc[t]);
      acc[t] =
          _mm256_fnmadd_ps(_mm256_cvtepi32_ps(Reduce8(msum[t])), _mm256_mul_ps(dminv, dav), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) out[t] = Hsum(acc[t]);
}

// One q6_K row against T tokens, eight super-blocks at a time.
template <int T>
void TileQ6KSumAvx2(const uint8_t* wrow, int64_t n, const uint8_t* const* acts, float* out) {
  const auto* wb = reinterpret_cast<const BlockQ6_K*>(wrow);
  const int64_t nsb = n / kQKK;
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t g0 = 0; g0 < nsb; g0 += 8) {
    const int m = nsb - g0 < 8 ? static_cast<int>(nsb - g0) : 8;
    alignas(32) float dw[8] = {}, da[T][8] = {};
    __m256i sums[T][8];
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
      const __m256i sc16 =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.scales)));
      // scv[k]: int16 lanes 0-7 the scale of group 2k, lanes 8-15 of group 2k + 1
      const __m256i s07 = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sc16));
      const __m256i s8f = _mm256_broadcastsi128_si256(_mm256_extracti128_si256(sc16, 1));
      __m256i scv[8];
      for (int k = 0; k < 8; ++k) {
        const int g = 2 * (k % 4);
        scv[k] = _mm256_shuffle_epi8(
            k < 4 ? s07 : s8f,
            _mm256_set_m128i(_mm_set1_epi16(static_cast<int16_t>(0x0100 + 0x0202 * (g + 1))),
                             _mm_set1_epi16(static_cast<int16_t>(0x0100 + 0x0202 * g))));
      }
      for (int t = 0; t < T; ++t) {
        const BlockQ8_K& a = reinterpret_cast<const BlockQ8_K*>(acts[t])[g0 + j];
        const __m256i v = ScaledSums(lv, scv, a.qs);
        // - 32 x sum_g sc_g x (the token's group sum)
        const __m256i off =
            _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.bsums)), sc16);
        sums[t][j] = _mm256_sub_epi32(v, _mm256_slli_epi32(off, 5));
        da[t][j] = a.d;
      }
    }
    const __m256 dwv = _mm256_load_ps(dw);
    for (int t = 0; t < T; ++t) {
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(Reduce8(sums[t])),
                               _mm256_mul_ps(dwv, _mm256_load_ps(da[t])), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) out[t] = Hsum(acc[t]);
}

// ---------------------------------------------------------------------------
// Eight-row kernel.

// q4_K: eight rows' super-blocks [0, kAKChunk) of a chunk.
struct AK4 {
  using Block = BlockQ4_K;
  static constexpr int kTokens = 2;  // tokens that share each load of a weight register
  // Fewest tokens that take the eight-row kernel (Zen 3, 640x2048, 2 tokens:
  // 64 us against the tiles' 95-131).
  static constexpr int64_t kMinTokens = 2;
  struct alignas(32) Pack {
    __m256i q[kAKChunk][64];  // [8j + k] lane r: levels 4k..4k+3 of sub-block j of row r
    __m256i sc[kAKChunk][8];  // [j] lane r: row r's scale of sub-block j, twice as int16
    __m256i mn[kAKChunk][4];  // [i] lane r: row r's minimums (m_2i, m_2i+1) as int16
    __m256 d[kAKChunk], dmin[kAKChunk];
  };

  // Super-block s of the chunk from eight rows' blocks at blk (row stride).
  static HWY_INLINE void Repack(const uint8_t* blk, int64_t stride, Pack& p, int s) {
    // d | dmin << 16, then the 12 scale bytes as three words u0..u2 (and four
    // words of qs that the loop below takes again)
    __m256i h[8];
    for (int i = 0; i < kARows; ++i) {
      h[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + i * stride));
    }
    Transpose8x8(h);
    // K4ScalesMins's rearrangement, on eight rows at once
    const __m256i low6 = _mm256_set1_epi32(0x3f3f3f3f), nib = _mm256_set1_epi32(0x0f0f0f0f);
    const __m256i low2 = _mm256_set1_epi32(0x03030303);
    const __m256i u0 = h[1], u1 = h[2], u2 = h[3];
    const __m256i sc03 = _mm256_and_si256(u0, low6);
    const __m256i sc47 =
        _mm256_or_si256(_mm256_and_si256(u2, nib),
                        _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(u0, 6), low2), 4));
    const __m256i mn03 = _mm256_and_si256(u1, low6);
    const __m256i mn47 =
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(u2, 4), nib),
                        _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(u1, 6), low2), 4));
    for (int j = 0; j < 8; ++j) {
      p.sc[s][j] = _mm256_shuffle_epi8(j < 4 ? sc03 : sc47, DwordPick(j % 4, j % 4, 0));
    }
    for (int i = 0; i < 4; ++i) {
      const int b = 2 * (i % 2);
      p.mn[s][i] = _mm256_shuffle_epi8(i < 2 ? mn03 : mn47, DwordPick(b, b + 1, 0));
    }
    const __m256i dm = _mm256_permute4x64_epi64(
        _mm256_packus_epi32(_mm256_and_si256(h[0], _mm256_set1_epi32(0xFFFF)),
                            _mm256_srli_epi32(h[0], 16)),
        0xD8);
    p.d[s] = _mm256_cvtph_ps(_mm256_castsi256_si128(dm));
    p.dmin[s] = _mm256_cvtph_ps(_mm256_extracti128_si256(dm, 1));
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    for (int c = 0; c < 4; ++c) {
      __m256i r[8];
      for (int i = 0; i < kARows; ++i) {
        r[i] = _mm256_loadu_si256(
            reinterpret_cast<const __m256i*>(blk + i * stride + offsetof(BlockQ4_K, qs) + 32 * c));
      }
      Transpose8x8(r);
      for (int k = 0; k < 8; ++k) {
        p.q[s][8 * (2 * c) + k] = _mm256_and_si256(r[k], low4);
        p.q[s][8 * (2 * c + 1) + k] = _mm256_and_si256(_mm256_srli_epi16(r[k], 4), low4);
      }
    }
  }

  // N tokens a[0..N) against super-block s of the chunk: *acc[n] (lane r:
  // row r's acc[b % 8] for token n) updated. Each weight register is loaded
  // once for the N tokens.
  template <int N>
  static HWY_INLINE void Tokens(const Pack& p, int s, const BlockQ8_K* const* a, __m256** acc) {
    const __m256i* q = p.q[s];
    __m256i isum[N];
    for (int n = 0; n < N; ++n) isum[n] = _mm256_setzero_si256();
    for (int j = 0; j < 8; ++j) {
      __m256i s16[N];
      for (int n = 0; n < N; ++n)
        s16[n] = _mm256_maddubs_epi16(q[8 * j], Bcast4(a[n]->qs + 32 * j));
      for (int k = 1; k < 8; ++k) {
        const __m256i w = q[8 * j + k];
        for (int n = 0; n < N; ++n) {
          s16[n] =
              _mm256_add_epi16(s16[n], _mm256_maddubs_epi16(w, Bcast4(a[n]->qs + 32 * j + 4 * k)));
        }
      }
      for (int n = 0; n < N; ++n) {
        isum[n] = _mm256_add_epi32(isum[n], _mm256_madd_epi16(s16[n], p.sc[s][j]));
      }
    }
    for (int n = 0; n < N; ++n) {
      // The token's sub-block sums as int16 pairs: dword 0 (s_0, s_1), 1
      // (s_2, s_3), 4 (s_4, s_5), 5 (s_6, s_7) (each |s| <= 32 x 128).
      const __m256i subs = _mm256_madd_epi16(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[n]->bsums)), _mm256_set1_epi16(1));
      const __m256i pairs = _mm256_packs_epi32(subs, subs);
      __m256i msum = _mm256_setzero_si256();
      for (int i = 0; i < 4; ++i) {
        const __m256i pair =
            _mm256_permutevar8x32_epi32(pairs, _mm256_set1_epi32(i % 2 + 4 * (i / 2)));
        msum = _mm256_add_epi32(msum, _mm256_madd_epi16(p.mn[s][i], pair));
      }
      const __m256 da = _mm256_set1_ps(a[n]->d);
      const __m256 v =
          _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[n]), _mm256_mul_ps(p.d[s], da), *acc[n]);
      *acc[n] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_mul_ps(p.dmin[s], da), v);
    }
  }
};

// q6_K: eight rows' super-blocks [0, kAKChunk) of a chunk.
struct AK6 {
  using Block = BlockQ6_K;
  static constexpr int kTokens = 4;
  // (2 tokens: 131 us against the tiles' 104-129; 8192x2048 streamed from
  // DRAM, 2 tokens 2.9 ms against 1.8.)
  static constexpr int64_t kMinTokens = 4;
  struct alignas(32) Pack {
    __m256i q[kAKChunk][64];   // [8k + m] lane r: levels 32k + 4m..32k + 4m + 3 of row r
    __m256i sc[kAKChunk][16];  // [g] lane r: row r's scale of group g, twice as int16
    __m256i sp[kAKChunk][8];   // [i] lane r: row r's scales (sc_2i, sc_2i+1) as int16
    __m256 d[kAKChunk];
  };

  static HWY_INLINE void Repack(const uint8_t* blk, int64_t stride, Pack& p, int s) {
    __m256i lv[kARows][8];
    for (int i = 0; i < kARows; ++i) {
      Q6Levels(*reinterpret_cast<const BlockQ6_K*>(blk + i * stride), lv[i]);
    }
    for (int k = 0; k < 8; ++k) {
      __m256i r[8];
      for (int i = 0; i < kARows; ++i) r[i] = lv[i][k];
      Transpose8x8(r);
      for (int m = 0; m < 8; ++m) p.q[s][8 * k + m] = r[m];
    }
    // The 16 scale bytes of rows i (low 128-bit lane) and i + 4 (high), then
    // a 4x4 dword transpose per lane: u[d] lane r = row r's scale word d.
    constexpr int kSc = offsetof(BlockQ6_K, scales);
    __m256i x[4];
    for (int i = 0; i < 4; ++i) {
      x[i] = _mm256_set_m128i(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + (i + 4) * stride + kSc)),
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + i * stride + kSc)));
    }
    const __m256i t0 = _mm256_unpacklo_epi32(x[0], x[1]), t1 = _mm256_unpackhi_epi32(x[0], x[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(x[2], x[3]), t3 = _mm256_unpackhi_epi32(x[2], x[3]);
    const __m256i u[4] = {_mm256_unpacklo_epi64(t0, t2), _mm256_unpackhi_epi64(t0, t2),
                          _mm256_unpacklo_epi64(t1, t3), _mm256_unpackhi_epi64(t1, t3)};
    // The signed bytes go to the high byte of each int16, then an
    // arithmetic shift extends their sign.
    for (int g = 0; g < 16; ++g) {
      p.sc[s][g] = _mm256_srai_epi16(_mm256_shuffle_epi8(u[g / 4], DwordPick(g % 4, g % 4, 1)), 8);
    }
    for (int i = 0; i < 8; ++i) {
      const int b = 2 * (i % 2);
      p.sp[s][i] = _mm256_srai_epi16(_mm256_shuffle_epi8(u[i / 2], DwordPick(b, b + 1, 1)), 8);
    }
    alignas(16) uint16_t dh[kARows];
    for (int i = 0; i < kARows; ++i) {
      std::memcpy(&dh[i], blk + i * stride + offsetof(BlockQ6_K, d), 2);
    }
    p.d[s] = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(dh)));
  }

  template <int N>
  static HWY_INLINE void Tokens(const Pack& p, int s, const BlockQ8_K* const* a, __m256** acc) {
    const __m256i* q = p.q[s];
    __m256i isum[N];
    for (int n = 0; n < N; ++n) isum[n] = _mm256_setzero_si256();
    for (int g = 0; g < 16; ++g) {
      const __m256i* w = q + 8 * (g / 2) + 4 * (g % 2);
      for (int h = 0; h < 2; ++h) {  // two registers' sums in int16, then the scale
        for (int n = 0; n < N; ++n) {
          const int8_t* x = a[n]->qs + 16 * g + 8 * h;
          const __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(w[2 * h], Bcast4(x)),
                                               _mm256_maddubs_epi16(w[2 * h + 1], Bcast4(x + 4)));
          isum[n] = _mm256_add_epi32(isum[n], _mm256_madd_epi16(s16, p.sc[s][g]));
        }
      }
    }
    for (int n = 0; n < N; ++n) {
      // - 32 x sum_g sc_g x (the token's group sum): dword i of bsums is the
      // pair (bsum_2i, bsum_2i+1)
      __m256i off = _mm256_setzero_si256();
      for (int i = 0; i < 8; ++i) {
        int32_t pair;
        std::memcpy(&pair, a[n]->bsums + 2 * i, 4);
        off = _mm256_add_epi32(off, _mm256_madd_epi16(p.sp[s][i], _mm256_set1_epi32(pair)));
      }
      const __m256i iv = _mm256_sub_epi32(isum[n], _mm256_slli_epi32(off, 5));
      *acc[n] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iv),
                                _mm256_mul_ps(p.d[s], _mm256_set1_ps(a[n]->d)), *acc[n]);
    }
  }
};

// y[t * y_stride + r] for the whole groups of eight rows from r0 on, below
// r1, and all n_tok tokens; act: BlockQ8_K rows of act_bytes each. Returns
// the first row not computed.
template <class K>
int64_t MatmulAK(const uint8_t* wd, int64_t row_bytes, int64_t cols, const uint8_t* act,
                 int64_t act_bytes, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                 int64_t y_stride) {
  const int nsb = static_cast<int>(cols / kQKK);
  constexpr int64_t kBlockBytes = sizeof(typename K::Block);
  typename K::Pack pack;
  const auto pass = [&](const uint8_t* w, int c0, int nb, int64_t t0, int nt, __m256(*acc)[8],
                        RowsAhead& ahead) {
    for (int s = 0; s < nb; ++s) K::Repack(w + (c0 + s) * kBlockBytes, row_bytes, pack, s);
    const auto token = [&](int t, int s) {
      return reinterpret_cast<const BlockQ8_K*>(act + (t0 + t) * act_bytes) + c0 + s;
    };
    for (int s = 0; s < nb; ++s) {
      ahead.Step();
      const int b8 = (c0 + s) % 8;
      int t = 0;
      for (; t + K::kTokens <= nt; t += K::kTokens) {
        const BlockQ8_K* a[K::kTokens];
        __m256* o[K::kTokens];
        for (int n = 0; n < K::kTokens; ++n) {
          a[n] = token(t + n, s);
          o[n] = &acc[t + n][b8];
        }
        K::template Tokens<K::kTokens>(pack, s, a, o);
      }
      for (; t < nt; ++t) {
        const BlockQ8_K* a[1] = {token(t, s)};
        __m256* o[1] = {&acc[t][b8]};
        K::template Tokens<1>(pack, s, a, o);
      }
    }
  };
  // acc[t][b % 8], lane r: row r's acc[b % 8]
  return EightRowPasses(wd, row_bytes, nsb, kAKChunk, kBlockBytes, n_tok, r0, r1, y, y_stride, pass,
                        [](int, __m256 sum) { return sum; });
}

// MatmulAK for q4_K and q6_K from K::kMinTokens tokens on; other formats
// and fewer tokens compute nothing (r0).
inline int64_t MatmulAvx2KRows(DType type, const uint8_t* wd, int64_t row_bytes, int64_t cols,
                               const uint8_t* act, int64_t act_bytes, int64_t n_tok, int64_t r0,
                               int64_t r1, float* y, int64_t y_stride) {
  switch (type) {
    case DType::kQ4_K:
      if (n_tok < AK4::kMinTokens) return r0;
      return MatmulAK<AK4>(wd, row_bytes, cols, act, act_bytes, n_tok, r0, r1, y, y_stride);
    case DType::kQ6_K:
      if (n_tok < AK6::kMinTokens) return r0;
      return MatmulAK<AK6>(wd, row_bytes, cols, act, act_bytes, n_tok, r0, r1, y, y_stride);
    default:
      return r0;
  }
}

}  // namespace snug::tensor::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // SNUG_X86_AVX2 && !SNUG_X86_VNNI512
#endif  // include guard toggle
