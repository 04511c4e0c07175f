// q4_1, q5_0, q5_1, q8_0 and the N:M-sparse q8_0 on AVX2 without
// AVX512-VNNI in block-sum order, the order qgemm_vnni-inl.h takes on
// AVX3_DL, so every x86 target gives these formats the same bits:
//
//   per (row, token): S_b = the exact int32 sum of block b's 32 products;
//   acc[b % 8] = fma(float(S_b), d_w x d_a, acc[b % 8]), then for the formats
//   with a minimum acc[b % 8] = fma(m_w, s_a, acc[b % 8]); the result is
//   ((acc0+acc4)+(acc2+acc6)) + ((acc1+acc5)+(acc3+acc7)).
//
// ggml's order (qgemm_avx2-inl.h, qrow_avx2-inl.h, and llama.cpp's AVX2
// vec_dot) converts and multiply-adds every group of four products: eight
// conversions and eight multiply-adds per block, row and token where this
// takes one of each. Fewer roundings, so no less accurate (tests/tensor/
// simd_test holds it against the exact product). SNUG_GGML_ORDER=1
// (tensor::set_ggml_order) keeps ggml's order instead, for llama.cpp's bits.
//
// Three kernels, one arithmetic, so which one computes a (row, token) never
// changes it:
// - the tile (qdot_avx2-inl.h's TileQ32Sum): one row, a few tokens; a block's products in
//   eight int32 lanes, eight blocks' reduced into one vector of block sums
//   (lane b % 8) for one conversion and one multiply-add. The rows past the
//   last whole eight, and the tiles behind the N:M rows.
// - the few-token kernel (RowsSum, 1 to 7 tokens; on AVX3_DL, with vpdpbusd,
//   one token of short rows, tensor::one_token_kernel): eight (row, token) pairs
//   side by side, eight rows of a lone token or four rows of two, each
//   block's eight product vectors reduced into one vector of their block
//   sums (lane: the pair), then one conversion and one multiply-add for the
//   eight. q4_1 takes two rows' nibbles to a register (RowPairs). Scales come
//   by scalar loads: Zen 3's vpgatherdd cost more than the eight.
// - the row-block kernel (MatmulSum, 8 tokens and more): eight rows in the
//   eight int32 lanes (qgemm_avx2-inl.h's transposed chunk), a block's eight
//   groups of four levels in eight registers kept across the tokens; per
//   token the four activation bytes of each group broadcast, one vpmaddubsw
//   per group, the int16 pair sums of several groups added before one
//   vpmaddwd (no int16 sum can overflow: SumGroups), then one conversion and
//   one multiply-add for the eight rows. ggml's order there takes eight of
//   each, and eight vpmaddwd. The signed formats (|w| and w: sixteen
//   registers) take groups 0-3 for every token, then 4-7; q4_1 takes
//   sixteen rows per broadcast (MatmulSum16).
#if defined(SNUG_TENSOR_QSUM_AVX2_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SNUG_TENSOR_QSUM_AVX2_INL_H_
#undef SNUG_TENSOR_QSUM_AVX2_INL_H_
#else
#define SNUG_TENSOR_QSUM_AVX2_INL_H_
#endif

#include <hwy/highway.h>

#include "tensor/simd_x86.h"

// AVX3_DL too: RowsSum for one token (tensor::one_token_kernel).
#if SNUG_X86_AVX2
#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "tensor/dtype.h"
#include "tensor/qdot_avx2-inl.h"
#include "tensor/qgemm_avx2-inl.h"
#include "tensor/qrow_avx2-inl.h"
#include "tensor/quant_blocks.h"

HWY_BEFORE_NAMESPACE();
#if SNUG_X86_VNNI512
SNUG_BEGIN_VNNI
#endif
namespace snug::tensor::HWY_NAMESPACE {

// The types that take block-sum order on AVX2 and AVX3 (q4_0 keeps
// llama.cpp's repacked order, or ggml's, qseq_avx2-inl.h).
inline bool Avx2SumType(DType t) {
  return t == DType::kQ4_1 || t == DType::kQ5_0 || t == DType::kQ5_1 || t == DType::kQ8_0 ||
         t == DType::kQ8_0NM;
}

// The largest |level| vpmaddubsw multiplies for a row view F (the signed
// formats' through vpsignb: |q8_0| reaches 128).
template <class F>
constexpr int MaxAbsLevel() {
  if constexpr (std::is_same_v<F, Avx2DenseRow<Avx2Q4_1>>) return 15;
  if constexpr (std::is_same_v<F, Avx2DenseRow<Avx2Q5_0>>) return 16;
  if constexpr (std::is_same_v<F, Avx2DenseRow<Avx2Q5_1>>) return 31;
  if constexpr (std::is_same_v<F, Avx2DenseRow<Avx2Q4_0>> || std::is_same_v<F, Avx2Q4_0Nm>) {
    return 8;
  }
  return 128;  // q8_0, dense or N:M-sparse
}
// Groups of four levels whose vpmaddubsw pair sums (each at most 2 x
// MaxAbsLevel x 127) can be added in int16 before vpmaddwd: 8 for q4_1 and
// q5_0, 4 for q5_1, 1 for q8_0.
template <class F>
constexpr int SumGroups() {
  int g = 8;
  while (g > 1 && g * 2 * MaxAbsLevel<F>() * 127 > 32767) g /= 2;
  return g;
}

// Byte offset in a row of block b's f16 scale (and, after it, the minimum).
template <class F>
HWY_INLINE int64_t ScaleOffset(int64_t b) {
  if constexpr (std::is_same_v<F, Avx2Q8_0Nm> || std::is_same_v<F, Avx2Q4_0Nm>) {
    return 2 * b;  // the N:M rows keep their scales first, 2 bytes each
  } else {
    return b * static_cast<int64_t>(sizeof(typename F::Block));
  }
}

// ---- a few tokens ---------------------------------------------------------

// Whether RowsSum takes q4_1's nibbles two rows to a register: rows r and
// r + 1's block in the two halves, split by one and and one shift for both,
// against the token's elements 0-15 (16-31) in both halves. Three vphaddd
// of the four pair vectors then leave the even (row, token) pairs' sums in
// lanes 0-3 and the odd ones' in lanes 4-7 (kPairLane); the scales are read
// in the same order.
template <class F>
constexpr bool RowPairs() {
  return std::is_same_v<F, Avx2DenseRow<Avx2Q4_1>>;
}
inline constexpr int kPairLane[8] = {0, 2, 4, 6, 1, 3, 5, 7};
// The (row, token) pair c = t x R + r whose sum lane l holds.
template <class F>
constexpr int Pair(int l) {
  return RowPairs<F>() ? kPairLane[l] : l;
}

// Rows [0, R) from w (row_bytes apart, nb blocks) against T tokens (act_bytes
// apart), R x T = 8: y[t * y_stride + r]. Pair c = t x R + r sits in lane c.
// [pf, pf_end) is asked for a block's share at each block (SpreadPrefetch).
template <class F, int R, int T>
HWY_INLINE void RowsSum(const uint8_t* w, int64_t row_bytes, int64_t nb, const uint8_t* act,
                        int64_t act_bytes, float* y, int64_t y_stride, const uint8_t* pf,
                        const uint8_t* pf_end) {
  static_assert(R * T == 8, "eight (row, token) pairs");
  constexpr bool kMin = !F::kSigned;
  constexpr bool kPairs = RowPairs<F>();
  const BlockQ8A* a[T];
  for (int t = 0; t < T; ++t) a[t] = reinterpret_cast<const BlockQ8A*>(act + t * act_bytes);
  __m256 acc[8];
  for (__m256& v : acc) v = _mm256_setzero_ps();
  SpreadPrefetch ahead(pf, pf_end, nb);
  for (int64_t b0 = 0; b0 < nb; b0 += 8) {
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      const int64_t b = b0 + j;
      if (b >= nb) break;
      ahead.Step();
      __m256i av[T];
      if constexpr (!kPairs) {
        for (int t = 0; t < T; ++t) {
          av[t] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[t][b].qs));
        }
      }
      __m256i sums;
      if constexpr (kPairs) {
        // Rows r and r + 1 side by side: [r's elements 0-15 | r+1's] in the
        // low nibbles, 16-31 in the high ones, against the token's halves.
        const __m256i low4 = _mm256_set1_epi8(0x0F);
        const __m256i ones = _mm256_set1_epi16(1);
        __m256i v[4];
        for (int t = 0; t < T; ++t) {
          const auto* x = reinterpret_cast<const __m128i*>(a[t][b].qs);
          const __m256i a_lo = _mm256_broadcastsi128_si256(_mm_loadu_si128(x));
          const __m256i a_hi = _mm256_broadcastsi128_si256(_mm_loadu_si128(x + 1));
          for (int r = 0; r < R; r += 2) {
            const auto qs = [&](int i) {
              return _mm_loadu_si128(reinterpret_cast<const __m128i*>(
                  reinterpret_cast<const BlockQ4_1*>(w + i * row_bytes)[b].qs));
            };
            const __m256i q = _mm256_set_m128i(qs(r + 1), qs(r));
            const __m256i p16 = _mm256_add_epi16(
                _mm256_maddubs_epi16(_mm256_and_si256(q, low4), a_lo),
                _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(q, 4), low4), a_hi));
            v[(t * R + r) / 2] = _mm256_madd_epi16(p16, ones);
          }
        }
        sums = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
      } else {
        __m256i p[8];
        for (int r = 0; r < R; ++r) {
          const __m256i q = F::LevelsAt(w + r * row_bytes, nb, b);
          const __m256i qu = F::kSigned ? _mm256_sign_epi8(q, q) : q;
          for (int t = 0; t < T; ++t) {
            p[t * R + r] = DotU8I8(qu, F::kSigned ? _mm256_sign_epi8(av[t], q) : av[t]);
          }
        }
        sums = Reduce8(p);
      }
      __m256 dwv, mwv;
      const uint8_t* sb = w + ScaleOffset<F>(b);
      ScalesMins8(Dwords8([&](int l) { return sb + (Pair<F>(l) % R) * row_bytes; }, 8), &dwv, &mwv);
      __m256 da, sa;
      if constexpr (T == 1) {
        da = _mm256_broadcast_ss(&a[0][b].d);
        sa = _mm256_broadcast_ss(&a[0][b].s);
      } else {
        static_assert(T == 2 && R == 4, "one or two tokens");
        const float d0 = a[0][b].d, d1 = a[1][b].d, s0 = a[0][b].s, s1 = a[1][b].s;
        // Token of lane l: Pair<F>(l) / 4.
        const __m128 dh = kPairs ? _mm_setr_ps(d0, d0, d1, d1) : _mm_set1_ps(d0);
        const __m128 sh = kPairs ? _mm_setr_ps(s0, s0, s1, s1) : _mm_set1_ps(s0);
        da = kPairs ? _mm256_set_m128(dh, dh) : _mm256_set_m128(_mm_set1_ps(d1), dh);
        sa = kPairs ? _mm256_set_m128(sh, sh) : _mm256_set_m128(_mm_set1_ps(s1), sh);
      }
      acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(dwv, da), acc[j]);
      if constexpr (kMin) acc[j] = _mm256_fmadd_ps(mwv, sa, acc[j]);
    }
  }
  alignas(32) float res[8];
  _mm256_store_ps(res, SumTree8(reinterpret_cast<const __m256*>(acc)));
  for (int l = 0; l < 8; ++l) {
    const int c = Pair<F>(l);
    y[c / R * y_stride + c % R] = res[l];
  }
}

// Rows [r0, r1) rounded down to whole groups of eight against 1..kRMaxTokens
// tokens: a lone token eight rows at a time, pairs four rows at a time, each
// group asking for the group kRAhead on. Returns the first row not computed.
template <class F>
int64_t RowsSumRange(const uint8_t* wd, int64_t row_bytes, int64_t nb, const uint8_t* act,
                     int64_t act_bytes, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                     int64_t y_stride) {
  constexpr int64_t kRows = 8;
  int64_t r = r0;
  for (; r + kRows <= r1; r += kRows) {
    const uint8_t* w = wd + r * row_bytes;
    const int64_t p0 = r + kRAhead * kRows < r1 ? r + kRAhead * kRows : r1;
    const int64_t p1 = p0 + kRows < r1 ? p0 + kRows : r1;
    const uint8_t* pf = wd + p0 * row_bytes;
    const uint8_t* pf_end = wd + p1 * row_bytes;
    int64_t t = 0;
    for (; t + 2 <= n_tok; t += 2) {
      // Each half asks for its half of the group ahead.
      const uint8_t* at = act + t * act_bytes;
      const uint8_t* mid = pf + (pf_end - pf) / 2;
      RowsSum<F, 4, 2>(w, row_bytes, nb, at, act_bytes, y + t * y_stride + r, y_stride, pf, mid);
      RowsSum<F, 4, 2>(w + 4 * row_bytes, row_bytes, nb, at, act_bytes, y + t * y_stride + r + 4,
                       y_stride, mid, pf_end);
      pf = pf_end;
    }
    if (t < n_tok) {
      RowsSum<F, 8, 1>(w, row_bytes, nb, act + t * act_bytes, act_bytes, y + t * y_stride + r,
                       y_stride, pf, pf_end);
    }
  }
  return r;
}

// ---- eight tokens and more ------------------------------------------------

// Registers per block of a chunk: q4_1's nibbles stay packed (four: lane r of
// register k holds row r's bytes 4k..4k+3, levels 4k..4k+3 in the low
// nibbles and 16+4k..16+4k+3 in the high ones), split once per block for all
// the tokens; the other formats take qgemm_avx2-inl.h's chunk (ARegs).
template <class F>
constexpr int SumRegs() {
  return RowPairs<F>() ? 4 : ARegs<F>();
}

// Blocks [c0, c0 + nb) of eight rows into p, as RepackA does, but q4_1's
// nibbles packed: rows i and i + 4 in the halves of register i, then a 4 x 4
// dword transpose in both halves at once (eight unpacks, where RepackA widens
// the nibbles and transposes eight registers in 24 shuffles); the scales by
// scalar loads rather than stores and a reload.
template <class F>
HWY_INLINE void RepackSum(const uint8_t* w, int64_t row_bytes, int64_t nblocks, int c0, int nb,
                          APack& p) {
  if constexpr (!RowPairs<F>()) {
    RepackA<F>(w, row_bytes, nblocks, c0, nb, p);
  } else {
    for (int b = 0; b < nb; ++b) {
      const auto at = [&](int i) {
        return reinterpret_cast<const BlockQ4_1*>(w + i * row_bytes) + c0 + b;
      };
      __m256i r[4];
      for (int i = 0; i < 4; ++i) {
        r[i] = _mm256_set_m128i(_mm_loadu_si128(reinterpret_cast<const __m128i*>(at(i + 4)->qs)),
                                _mm_loadu_si128(reinterpret_cast<const __m128i*>(at(i)->qs)));
      }
      const __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
      const __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
      __m256i* out = p.w + b * 4;
      out[0] = _mm256_unpacklo_epi64(t0, t2);  // dword 0 of rows 0-3 | of rows 4-7
      out[1] = _mm256_unpackhi_epi64(t0, t2);
      out[2] = _mm256_unpacklo_epi64(t1, t3);
      out[3] = _mm256_unpackhi_epi64(t1, t3);
      ScalesMins8(Dwords8([&](int l) { return at(l); }, 8), &p.d[b], &p.m[b]);
    }
  }
}

// Block b of a chunk against nt tokens (a: the first token's block, act_bytes
// apart): acc[t][j] (lane r: row r's acc[b % 8], j = b % 8) updated.
template <class F>
HWY_INLINE void BlockTokensSum(const APack& p, int b, int j, const uint8_t* a0, int64_t act_bytes,
                               int nt, __m256 (*acc)[8]) {
  constexpr int kG = SumGroups<F>();
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i* w = p.w + b * SumRegs<F>();
  __m256i wu[8];
  if constexpr (RowPairs<F>()) {  // packed nibbles: group k low, k + 4 high
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    for (int k = 0; k < 4; ++k) {
      wu[k] = _mm256_and_si256(w[k], low4);
      wu[k + 4] = _mm256_and_si256(_mm256_srli_epi16(w[k], 4), low4);
    }
  } else {
    for (int k = 0; k < 8; ++k) wu[k] = F::kSigned ? w[2 * k] : w[k];
  }
  const __m256 d = p.d[b];
  const __m256 m = p.m[b];
  // Block b's exact sums for the eight rows against token a.
  const auto sums = [&](const BlockQ8A* a) {
    __m256i s32 = _mm256_setzero_si256();
    for (int g = 0; g < 8; g += kG) {
      __m256i s16 = _mm256_setzero_si256();
      for (int k = g; k < g + kG; ++k) {
        __m256i av = Bcast4(a->qs + 4 * k);
        if constexpr (F::kSigned) av = _mm256_sign_epi8(av, w[2 * k + 1]);
        s16 = k == g ? _mm256_maddubs_epi16(wu[k], av)
                     : _mm256_add_epi16(s16, _mm256_maddubs_epi16(wu[k], av));
      }
      const __m256i s = _mm256_madd_epi16(s16, ones);
      s32 = g == 0 ? s : _mm256_add_epi32(s32, s);
    }
    return s32;
  };
  const auto update = [&](const BlockQ8A* a, __m256i s32, __m256& acc_tj) {
    const __m256 sc = _mm256_mul_ps(d, _mm256_broadcast_ss(&a->d));
    __m256 v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32), sc, acc_tj);
    if constexpr (!F::kSigned) v = _mm256_fmadd_ps(m, _mm256_broadcast_ss(&a->s), v);
    acc_tj = v;
  };
  if constexpr (F::kSigned) {
    // The signed formats keep |w| and w for each group: sixteen registers,
    // all there are, so they would be reloaded for every token (three loads
    // a group with the broadcast). Groups 0-3 go first for every token, their
    // exact partial sums kept (int16 where all eight groups may share one
    // int16 sum, SumGroups, else int32), then groups 4-7 finish them: the
    // same integers, so the same bits.
    constexpr bool k16 = kG == 8;
    alignas(32) __m256i part[kAToks];
    for (int h = 0; h < 2; ++h) {
      __m256i u[4], sg[4];
      for (int k = 0; k < 4; ++k) {
        u[k] = w[2 * (4 * h + k)];
        sg[k] = w[2 * (4 * h + k) + 1];
      }
      for (int t = 0; t < nt; ++t) {
        const auto* x = reinterpret_cast<const BlockQ8A*>(a0 + t * act_bytes);
        __m256i s32 = _mm256_setzero_si256();
        __m256i s16 = _mm256_setzero_si256();
        for (int k = 0; k < 4; ++k) {
          const __m256i av = _mm256_sign_epi8(Bcast4(x->qs + 4 * (4 * h + k)), sg[k]);
          s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(u[k], av));
          if (!k16 && (k + 1) % kG == 0) {  // kG groups in int16, then int32
            s32 = _mm256_add_epi32(s32, _mm256_madd_epi16(s16, ones));
            s16 = _mm256_setzero_si256();
          }
        }
        if (h == 0) {
          part[t] = k16 ? s16 : s32;
        } else if (k16) {
          update(x, _mm256_madd_epi16(_mm256_add_epi16(part[t], s16), ones), acc[t][j]);
        } else {
          update(x, _mm256_add_epi32(part[t], s32), acc[t][j]);
        }
      }
    }
  } else {
    for (int t = 0; t < nt; ++t) {
      const auto* x = reinterpret_cast<const BlockQ8A*>(a0 + t * act_bytes);
      update(x, sums(x), acc[t][j]);
    }
  }
}

// y[t * y_stride + r] for the whole groups of eight rows from r0 on, below
// r1, and all n_tok tokens. Returns the first row not computed.
template <class F>
int64_t MatmulSum(const uint8_t* wd, int64_t row_bytes, int64_t cols, const uint8_t* act,
                  int64_t act_bytes, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                  int64_t y_stride) {
  static_assert(kAChunk % 8 == 0, "a chunk starts at a block whose index is a multiple of 8");
  const int nblocks = static_cast<int>(cols / kQK);
  APack pack;
  const auto pass = [&](const uint8_t* w, int c0, int nb, int64_t t0, int nt, __m256(*acc)[8],
                        RowsAhead& ahead) {
    RepackSum<F>(w, row_bytes, nblocks, c0, nb, pack);
    const uint8_t* a0 = act + t0 * act_bytes + c0 * static_cast<int64_t>(sizeof(BlockQ8A));
    for (int b = 0; b < nb; ++b) {
      ahead.Step();
      BlockTokensSum<F>(pack, b, b % 8, a0 + b * static_cast<int64_t>(sizeof(BlockQ8A)), act_bytes,
                        nt, acc);
    }
  };
  return EightRowPasses(wd, row_bytes, nblocks, kAChunk, row_bytes / nblocks, n_tok, r0, r1, y,
                        y_stride, pass, [](int, __m256 sum) { return sum; });
}

// ---- sixteen rows of q4_1 -------------------------------------------------

// Block b of two chunks (rows 0-7 in p[0], 8-15 in p[1]) against nt tokens:
// each activation broadcast feeds both sets' vpmaddubsw, so a token's block
// takes eight broadcasts for sixteen rows, where BlockTokensSum takes eight
// for eight (two 256-bit loads a cycle bound that kernel on Zen 3). The
// block's eight packed registers do not fit beside the sixteen rows' sums,
// so the low nibbles (groups 0-3) go first for every token, their int16 sums
// kept in part[t], and the high ones (4-7) finish them. The sums are the
// same exact integers in the same int16 bounds (SumGroups: eight groups of
// q4_1), and the scaling is BlockTokensSum's, so the bits are too.
template <class F>
HWY_INLINE void BlockTokensSum16(const APack* p, int b, int j, const uint8_t* a0, int64_t act_bytes,
                                 int nt, __m256 (*acc0)[8], __m256 (*acc1)[8], __m256i (*part)[2]) {
  static_assert(RowPairs<F>(), "packed nibbles: q4_1");
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i* w0 = p[0].w + b * 4;
  const __m256i* w1 = p[1].w + b * 4;
  const auto act_at = [&](int t) { return reinterpret_cast<const BlockQ8A*>(a0 + t * act_bytes); };
  {
    __m256i u0[4], u1[4];
    for (int k = 0; k < 4; ++k) {
      u0[k] = _mm256_and_si256(w0[k], low4);
      u1[k] = _mm256_and_si256(w1[k], low4);
    }
    for (int t = 0; t < nt; ++t) {
      const BlockQ8A* x = act_at(t);
      __m256i av = Bcast4(x->qs);
      __m256i s0 = _mm256_maddubs_epi16(u0[0], av);
      __m256i s1 = _mm256_maddubs_epi16(u1[0], av);
      for (int k = 1; k < 4; ++k) {
        av = Bcast4(x->qs + 4 * k);
        s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(u0[k], av));
        s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(u1[k], av));
      }
      part[t][0] = s0;
      part[t][1] = s1;
    }
  }
  __m256i u0[4], u1[4];
  for (int k = 0; k < 4; ++k) {
    u0[k] = _mm256_and_si256(_mm256_srli_epi16(w0[k], 4), low4);
    u1[k] = _mm256_and_si256(_mm256_srli_epi16(w1[k], 4), low4);
  }
  const __m256i ones = _mm256_set1_epi16(1);
  for (int t = 0; t < nt; ++t) {
    const BlockQ8A* x = act_at(t);
    __m256i av = Bcast4(x->qs + 16);
    __m256i s0 = _mm256_add_epi16(part[t][0], _mm256_maddubs_epi16(u0[0], av));
    __m256i s1 = _mm256_add_epi16(part[t][1], _mm256_maddubs_epi16(u1[0], av));
    for (int k = 1; k < 4; ++k) {
      av = Bcast4(x->qs + 16 + 4 * k);
      s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(u0[k], av));
      s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(u1[k], av));
    }
    const __m256 ad = _mm256_broadcast_ss(&x->d);
    const __m256 as = _mm256_broadcast_ss(&x->s);
    const __m256 v0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(s0, ones)),
                                      _mm256_mul_ps(p[0].d[b], ad), acc0[t][j]);
    const __m256 v1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(s1, ones)),
                                      _mm256_mul_ps(p[1].d[b], ad), acc1[t][j]);
    acc0[t][j] = _mm256_fmadd_ps(p[0].m[b], as, v0);
    acc1[t][j] = _mm256_fmadd_ps(p[1].m[b], as, v1);
  }
}

// MatmulSum for q4_1 sixteen rows at a time (BlockTokensSum16, two sets of
// EightRowPasses); a last group of eight rows goes to MatmulSum. Returns the
// first row not computed.
template <class F>
int64_t MatmulSum16(const uint8_t* wd, int64_t row_bytes, int64_t cols, const uint8_t* act,
                    int64_t act_bytes, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                    int64_t y_stride) {
  const int nblocks = static_cast<int>(cols / kQK);
  APack pack[2];
  alignas(32) __m256i part[kAToks][2];
  const auto pass = [&](const uint8_t* w, int c0, int nb, int64_t t0, int nt, __m256(*acc)[8],
                        RowsAhead& ahead) {
    RepackSum<F>(w, row_bytes, nblocks, c0, nb, pack[0]);
    RepackSum<F>(w + kARows * row_bytes, row_bytes, nblocks, c0, nb, pack[1]);
    const uint8_t* a0 = act + t0 * act_bytes + c0 * static_cast<int64_t>(sizeof(BlockQ8A));
    for (int b = 0; b < nb; ++b) {
      ahead.Step();
      BlockTokensSum16<F>(pack, b, b % 8, a0 + b * static_cast<int64_t>(sizeof(BlockQ8A)),
                          act_bytes, nt, acc, acc + kAToks, part);
    }
  };
  const int64_t rb =
      EightRowPasses<2>(wd, row_bytes, nblocks, kAChunk, row_bytes / nblocks, n_tok, r0, r1, y,
                        y_stride, pass, [](int, __m256 sum) { return sum; });
  return MatmulSum<F>(wd, row_bytes, cols, act, act_bytes, n_tok, rb, r1, y, y_stride);
}

// The block-sum kernels for rows [r0, r1) of the types Avx2SumType names:
// eight tokens and more by MatmulSum, fewer by RowsSumRange, whole groups of
// eight rows either way. Returns the first row not computed (r0 for the other
// types); the tiles (TileQ32Sum) take the rest.
inline int64_t MatmulAvx2SumRows(DType type, const uint8_t* wd, int64_t row_bytes, int64_t cols,
                                 const uint8_t* act, int64_t act_bytes, int64_t n_tok, int64_t r0,
                                 int64_t r1, float* y, int64_t y_stride) {
  if (!Avx2SumType(type) || n_tok < 1) return r0;
  int64_t done = r0;
  WithQ32RowFormat(type, [&](auto f) {
    using F = decltype(f);
    if constexpr (MaxAbsLevel<F>() == 8) {
      return;  // q4_0 (Avx2SumType said no): not compiled
    } else if (n_tok >= kARowBlockTokens) {
      if constexpr (RowPairs<F>()) {
        done = MatmulSum16<F>(wd, row_bytes, cols, act, act_bytes, n_tok, r0, r1, y, y_stride);
      } else {
        done = MatmulSum<F>(wd, row_bytes, cols, act, act_bytes, n_tok, r0, r1, y, y_stride);
      }
    } else {
      done = RowsSumRange<F>(wd, row_bytes, cols / kQK, act, act_bytes, n_tok, r0, r1, y, y_stride);
    }
  });
  return done;
}

}  // namespace snug::tensor::HWY_NAMESPACE
#if SNUG_X86_VNNI512
SNUG_END_VNNI
#endif
HWY_AFTER_NAMESPACE();

#endif  // SNUG_X86_AVX2
#endif  // include guard toggle
