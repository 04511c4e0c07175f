// q4_0 and the N:M-sparse q4_0 on AVX2 without AVX512-VNNI, for matrices whose
// row count is a multiple of eight, in the order llama.cpp multiplies the q4_0
// matrices it repacks at load on an AVX2 CPU (ggml_gemv_q4_0_8x8_q8_0 for one
// token, ggml_gemm_q4_0_8x8_q8_0 for groups of four; both sum alike).
//
// Repack order, per (row, token): one float accumulator from +0, and for
// every block b in turn
//   acc = fma(float(S_b), d_w x d_a, acc),
// S_b the exact int32 sum of the block's 32 products (levels q - 8 against the
// activation's bytes) and d_w x d_a rounded to float. The result is acc.
//
// llama.cpp repacks every q4_0 matrix whose row count is a multiple of eight
// (unless run with --no-repack), so on AVX2 these are the bits of its default
// run; it keeps the plain kernel, ggml's order, for the other q4_0 matrices,
// and so does snug (qrow_avx2-inl.h, qgemm_avx2-inl.h). Which order a matrix
// takes depends on its shape only, never on the batch or the thread's rows, so
// a (row, token) has the same bits in any batch (Avx2RepackOrder).
//
// It is also cheaper than ggml's order: one conversion and multiply-add per
// block instead of eight. Eight-row kernel (8 tokens and more): the rows'
// blocks transposed as qgemm_avx2-inl.h's RepackA does, but as unsigned levels
// (0..15), so no vpsignb: each token's eight vpmaddubsw of a block summed in
// int16 (at most 16 x 15 x 127 = 30480 a lane), one vpmaddwd, less 8 x the sum
// of the token's 32 bytes (a table computed once per call and token), one
// conversion and one multiply-add for eight rows. Tokens go in groups whose
// table fits the stack, each group over every row. Four-row kernel (1 to 7
// tokens): each row's block as ggml's plain kernel reads it, the stored
// nibbles unsigned against the activation bytes and corrected by 8 x the
// token's four-byte sums, the four rows' lane sums folded by vphaddd into one
// vector of four block sums.
#if defined(SNUG_TENSOR_QSEQ_AVX2_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SNUG_TENSOR_QSEQ_AVX2_INL_H_
#undef SNUG_TENSOR_QSEQ_AVX2_INL_H_
#else
#define SNUG_TENSOR_QSEQ_AVX2_INL_H_
#endif

#include <hwy/highway.h>

#include "tensor/simd_x86.h"

#if SNUG_X86_AVX2 && !SNUG_X86_VNNI512
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "tensor/dtype.h"
#include "tensor/qdot_avx2-inl.h"
#include "tensor/qgemm_avx2-inl.h"
#include "tensor/qrow_avx2-inl.h"
#include "tensor/quant_blocks.h"

HWY_BEFORE_NAMESPACE();
namespace snug::tensor::HWY_NAMESPACE {

// Whether a matrix of this type and row count takes the repack order here.
HWY_INLINE bool Avx2RepackOrder(DType type, int64_t rows) {
  return (type == DType::kQ4_0 || type == DType::kQ4_0NM) && rows % 8 == 0;
}

// The int16 entries of the eight-row kernel's table of offset corrections,
// on the stack (64 KiB): tokens per group x blocks per row.
inline constexpr int64_t kSeqTable = 32768;

// A chunk of eight rows: register k of block b holds levels 4k..4k+3 of
// each row, offset to unsigned (q4_0's stored nibbles, 0..15).
struct alignas(32) SeqPack {
  __m256i w[kAChunk * 8];
  __m256 d[kAChunk];  // weight scales, lane r: row r
};

// The unsigned levels of a block: dense q4_0 stores them; the sparse rows give
// signed levels, 8 added.
template <class F>
HWY_INLINE __m256i UnsignedLevelsAt(const uint8_t* row, int64_t nb, int64_t b) {
  if constexpr (F::kOffsetLog2 == 3) {
    return F::StoredAt(row, nb, b);
  } else {
    return _mm256_add_epi8(F::LevelsAt(row, nb, b), _mm256_set1_epi8(8));
  }
}

// Blocks [c0, c0 + nb) of eight rows of nblocks blocks (w: row 0) into p.
template <class F>
HWY_INLINE void RepackSeq(const uint8_t* w, int64_t row_bytes, int64_t nblocks, int64_t c0, int nb,
                          SeqPack& p) {
  for (int b = 0; b < nb; ++b) {
    __m256i r[kARows];
    alignas(16) uint16_t dh[kARows];
    for (int i = 0; i < kARows; ++i) {
      const uint8_t* row = w + i * row_bytes;
      r[i] = UnsignedLevelsAt<F>(row, nblocks, c0 + b);
      dh[i] = static_cast<uint16_t>(F::ScaleMinBitsAt(row, nblocks, c0 + b));
    }
    Transpose8x8(r);
    for (int k = 0; k < 8; ++k) p.w[b * 8 + k] = r[k];
    p.d[b] = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(dh)));
  }
}

// 8 x the sum of each block's 32 activation bytes, for blocks [0, nb) of a.
HWY_INLINE void OffsetSums(const BlockQ8A* a, int64_t nb, int16_t* out) {
  const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < nb; ++b) {
    const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[b].qs));
    const __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, av), ones16);
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    h = _mm_hadd_epi32(h, h);
    h = _mm_hadd_epi32(h, h);
    out[b] = static_cast<int16_t>(8 * _mm_cvtsi128_si32(h));  // |8 x 32 x 127| < 2^15
  }
}

// One token over blocks [0, nb) of a chunk: acc, lane r = row r, updated.
// corr: the token's OffsetSums for the chunk's blocks. Each register's
// vpmaddubsw (unsigned levels against the activation bytes) is summed in
// int16: at most 16 x 15 x 127 = 30480 a lane.
HWY_INLINE void TokenSeq(const SeqPack& p, int nb, const BlockQ8A* a, const int16_t* corr,
                         __m256* acc) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 s = *acc;
  for (int b = 0; b < nb; ++b) {
    const __m256 sc = _mm256_mul_ps(p.d[b], _mm256_broadcast_ss(&a[b].d));
    const __m256i* w = p.w + b * 8;
    __m256i lo = _mm256_maddubs_epi16(w[0], Bcast4(a[b].qs));
    __m256i hi = _mm256_maddubs_epi16(w[1], Bcast4(a[b].qs + 4));
    for (int k = 2; k < 8; k += 2) {
      lo = _mm256_add_epi16(lo, _mm256_maddubs_epi16(w[k], Bcast4(a[b].qs + 4 * k)));
      hi = _mm256_add_epi16(hi, _mm256_maddubs_epi16(w[k + 1], Bcast4(a[b].qs + 4 * k + 4)));
    }
    const __m256i sum = _mm256_sub_epi32(_mm256_madd_epi16(_mm256_add_epi16(lo, hi), ones),
                                         _mm256_set1_epi32(corr[b]));
    s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), sc, s);
  }
  *acc = s;
}

// y[t * y_stride + r] for the whole groups of eight rows from r0 on, below r1,
// and all n_tok tokens: tokens in groups whose offset corrections fit the
// table, each group over every row (so each token's sums are computed once a
// call), the rows' blocks repacked a chunk at a time. Returns the first row
// not computed (r0 for rows too long for the table).
template <class F>
int64_t MatmulSeq8(const uint8_t* wd, int64_t row_bytes, int64_t cols, const uint8_t* act,
                   int64_t act_bytes, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                   int64_t y_stride) {
  const int64_t nblocks = cols / kQK;
  if (nblocks > kSeqTable) return r0;
  const int64_t block_bytes = row_bytes / nblocks;
  const int64_t group = std::min<int64_t>(kAToks, kSeqTable / nblocks);
  const int64_t r_end = r0 + (r1 - r0) / kARows * kARows;
  SeqPack pack;
  int16_t corr[kSeqTable];
  __m256 acc[kAToks];
  for (int64_t t0 = 0; t0 < n_tok; t0 += group) {
    const int nt = static_cast<int>(std::min(group, n_tok - t0));
    for (int t = 0; t < nt; ++t) {
      OffsetSums(reinterpret_cast<const BlockQ8A*>(act + (t0 + t) * act_bytes), nblocks,
                 corr + t * nblocks);
    }
    for (int64_t rb = r0; rb < r_end; rb += kARows) {
      const uint8_t* w = wd + rb * row_bytes;
      for (int t = 0; t < nt; ++t) acc[t] = _mm256_setzero_ps();
      for (int64_t c0 = 0; c0 < nblocks; c0 += kAChunk) {
        const int nb = static_cast<int>(std::min<int64_t>(kAChunk, nblocks - c0));
        if (rb + (1 + kAAhead) * kARows <= r_end) {
          // All at once: spread over the tokens, the rows came later than
          // the products needed them (8 to 128 tokens: 0.91-0.95x).
          RowsAhead(w + kAAhead * kARows * row_bytes, row_bytes, kARows, c0 * block_bytes,
                    nb * block_bytes, 1)
              .Rest();
        }
        RepackSeq<F>(w, row_bytes, nblocks, c0, nb, pack);
        for (int t = 0; t < nt; ++t) {
          const auto* a = reinterpret_cast<const BlockQ8A*>(act + (t0 + t) * act_bytes) + c0;
          TokenSeq(pack, nb, a, corr + t * nblocks + c0, &acc[t]);
        }
      }
      for (int t = 0; t < nt; ++t) _mm256_storeu_ps(y + (t0 + t) * y_stride + rb, acc[t]);
    }
  }
  return r_end;
}

// Rows [0, R) (R = 4 or 1) from w against T tokens: y[t * y_stride + r].
// [pf, pf_end) is asked for, a block's share at each block (RowsQ32's reason).
template <class F, int R, int T>
HWY_INLINE void RowsSeq(const uint8_t* w, int64_t row_bytes, int64_t nb, const uint8_t* act,
                        int64_t act_bytes, float* y, int64_t y_stride, const uint8_t* pf,
                        const uint8_t* pf_end) {
  static_assert(R == 4 || R == 1, "four rows or one");
  // Dense q4_0: the stored nibbles, unsigned, and the offset subtracted from
  // the lane sums; the sparse rows: signed levels and ggml's vpsignb pair.
  constexpr bool kUnsigned = F::kOffsetLog2 > 0;
  const __m256i ones = _mm256_set1_epi16(1);
  __m128 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm_setzero_ps();
  const BlockQ8A* a[T];
  for (int t = 0; t < T; ++t) a[t] = reinterpret_cast<const BlockQ8A*>(act + t * act_bytes);
  SpreadPrefetch ahead(pf, pf_end, nb);
  for (int64_t b = 0; b < nb; ++b) {
    ahead.Step();
    __m256i av[T], corr[T];
    for (int t = 0; t < T; ++t) {
      av[t] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[t][b].qs));
      if constexpr (kUnsigned) {
        const __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), av[t]), ones);
        corr[t] = _mm256_slli_epi32(s, F::kOffsetLog2);
      }
    }
    // The rows' f16 scales, lane r: row r.
    uint64_t dbits = 0;
    for (int r = 0; r < R; ++r) {
      dbits |= uint64_t{F::ScaleMinBitsAt(w + r * row_bytes, nb, b) & 0xFFFFu} << (16 * r);
    }
    const __m128 dw = _mm_cvtph_ps(_mm_cvtsi64_si128(static_cast<long long>(dbits)));
    __m256i q[R], u[R];
    for (int r = 0; r < R; ++r) {
      q[r] =
          kUnsigned ? F::StoredAt(w + r * row_bytes, nb, b) : F::LevelsAt(w + r * row_bytes, nb, b);
      u[r] = kUnsigned ? q[r] : _mm256_sign_epi8(q[r], q[r]);
    }
    for (int t = 0; t < T; ++t) {
      __m256i v[R];
      for (int r = 0; r < R; ++r) {
        const __m256i x = kUnsigned ? av[t] : _mm256_sign_epi8(av[t], q[r]);
        v[r] = _mm256_madd_epi16(_mm256_maddubs_epi16(u[r], x), ones);
        if constexpr (kUnsigned) v[r] = _mm256_sub_epi32(v[r], corr[t]);
      }
      __m128i s;
      if constexpr (R == 4) {
        const __m256i h =
            _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
        s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
      } else {
        s = _mm_add_epi32(_mm256_castsi256_si128(v[0]), _mm256_extracti128_si256(v[0], 1));
        s = _mm_hadd_epi32(s, s);
        s = _mm_hadd_epi32(s, s);
      }
      const __m128 sc = _mm_mul_ps(dw, _mm_set1_ps(a[t][b].d));
      acc[t] = R == 4 ? _mm_fmadd_ps(_mm_cvtepi32_ps(s), sc, acc[t])
                      : _mm_fmadd_ss(_mm_cvtepi32_ps(s), sc, acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) {
    if constexpr (R == 4) {
      _mm_storeu_ps(y + t * y_stride, acc[t]);
    } else {
      y[t * y_stride] = _mm_cvtss_f32(acc[t]);
    }
  }
}

// RowsSeq as the row kernel qrow_avx2-inl.h's RowsRange takes.
template <class F>
struct SeqRows {
  template <int R, int T>
  static HWY_INLINE void Rows(const uint8_t* w, int64_t row_bytes, int64_t nb, const uint8_t* act,
                              int64_t act_bytes, float* y, int64_t y_stride, const uint8_t* pf,
                              const uint8_t* pf_end) {
    RowsSeq<F, R, T>(w, row_bytes, nb, act, act_bytes, y, y_stride, pf, pf_end);
  }
};

// Dense q4_0, one to seven tokens, eight rows at a time and two blocks per
// register (block b in the low 128 bits, b + 1 in the high). A row's two
// blocks come from one 16-byte load and one insert; their low nibbles
// (elements 0..15 of each) and high nibbles (16..31) each meet the token's
// bytes laid out the same way (PairedAct), so no nibble is moved across
// lanes. Each row's two vpmaddubsw add up in int16 (four products a lane,
// at most 4 x 15 x 128), and three levels of vphaddw and a vpmaddwd fold
// eight rows into two registers of exact block sums (16 products a lane at
// the last int16 level: at most 30720), where the four-row kernel spends a
// vpmaddwd, a subtraction and a quarter of three vphaddd on every row. The
// offset, 8 x the block's byte sum, is subtracted once per eight rows; then
// one conversion and one multiply-add per block for the eight rows, block b
// before b + 1: the repack order's float steps, so its bits.

// Most (token, block pair) entries of the offset table (on the stack, 56 KiB).
inline constexpr int64_t kPairTable = 1792;

// A token's bytes of blocks b and b + 1 (b for both past the row's end):
// elements 0..15 of each (lo) and 16..31 (hi), block b in the low half.
struct PairedAct {
  __m256i lo, hi;
};
HWY_INLINE PairedAct PairAct(const BlockQ8A* a, int64_t b, int64_t b1) {
  const auto* q0 = reinterpret_cast<const __m128i*>(a[b].qs);
  const auto* q1 = reinterpret_cast<const __m128i*>(a[b1].qs);
  return {_mm256_loadu2_m128i(q1, q0), _mm256_loadu2_m128i(q1 + 1, q0 + 1)};
}

// Offsets of a token's block pairs: lanes 0-3 8 x the byte sum of block 2p,
// lanes 4-7 that of block 2p + 1 (2p for both past the end).
HWY_INLINE void PairOffsets(const BlockQ8A* a, int64_t nb, __m256i* out) {
  const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < nb; b += 2) {
    const PairedAct p = PairAct(a, b, b + 1 < nb ? b + 1 : b);
    const __m256i s16 =
        _mm256_add_epi16(_mm256_maddubs_epi16(ones8, p.lo), _mm256_maddubs_epi16(ones8, p.hi));
    __m256i s = _mm256_madd_epi16(s16, ones16);  // four partial sums a half
    s = _mm256_hadd_epi32(s, s);
    s = _mm256_hadd_epi32(s, s);  // every lane of a half: the half's block sum
    out[b / 2] = _mm256_slli_epi32(s, 3);
  }
}

// f16 scales of blocks b and b1 of eight rows as floats, lane r: row r.
HWY_INLINE void Q4_0Scales8(const uint8_t* w, int64_t row_bytes, int64_t b, int64_t b1, __m256* d0,
                            __m256* d1) {
  uint64_t s0[2] = {0, 0}, s1[2] = {0, 0};
  for (int r = 0; r < kARows; ++r) {
    const auto* blk = reinterpret_cast<const BlockQ4_0*>(w + r * row_bytes);
    s0[r / 4] |= uint64_t{blk[b].d} << (16 * (r % 4));
    s1[r / 4] |= uint64_t{blk[b1].d} << (16 * (r % 4));
  }
  *d0 = _mm256_cvtph_ps(_mm_set_epi64x(static_cast<int64_t>(s0[1]), static_cast<int64_t>(s0[0])));
  *d1 = _mm256_cvtph_ps(_mm_set_epi64x(static_cast<int64_t>(s1[1]), static_cast<int64_t>(s1[0])));
}

// Eight rows from w against T tokens (a[t], their offsets off[t]):
// y[t * y_stride + r]. [pf, pf_end) asked for, a block pair's share at each.
template <int T>
HWY_INLINE void Q4_0Rows8(const uint8_t* w, int64_t row_bytes, int64_t nb, const BlockQ8A* const* a,
                          const __m256i* const* off, float* y, int64_t y_stride, const uint8_t* pf,
                          const uint8_t* pf_end) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  SpreadPrefetch ahead(pf, pf_end, (nb + 1) / 2);
  for (int64_t b = 0; b < nb; b += 2) {
    ahead.Step();
    const bool pair = b + 1 < nb;
    const int64_t b1 = pair ? b + 1 : b;
    PairedAct x[T];
    for (int t = 0; t < T; ++t) x[t] = PairAct(a[t], b, b1);
    __m256i half[2][T];  // rows 4h..4h+3: [block b's sums | block b1's]
    for (int h = 0; h < 2; ++h) {
      __m256i quad[2][T];
      for (int j = 0; j < 2; ++j) {
        __m256i v[2][T];
        for (int i = 0; i < 2; ++i) {
          const auto* blk = reinterpret_cast<const BlockQ4_0*>(w + (4 * h + 2 * j + i) * row_bytes);
          const __m256i q = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(blk[b1].qs),
                                                reinterpret_cast<const __m128i*>(blk[b].qs));
          const __m256i lo = _mm256_and_si256(q, low4);
          const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
          for (int t = 0; t < T; ++t) {
            v[i][t] = _mm256_add_epi16(_mm256_maddubs_epi16(lo, x[t].lo),
                                       _mm256_maddubs_epi16(hi, x[t].hi));
          }
        }
        for (int t = 0; t < T; ++t) quad[j][t] = _mm256_hadd_epi16(v[0][t], v[1][t]);
      }
      for (int t = 0; t < T; ++t) {
        half[h][t] = _mm256_sub_epi32(
            _mm256_madd_epi16(_mm256_hadd_epi16(quad[0][t], quad[1][t]), ones), off[t][b / 2]);
      }
    }
    __m256 d0, d1;
    Q4_0Scales8(w, row_bytes, b, b1, &d0, &d1);
    for (int t = 0; t < T; ++t) {
      const __m256 s0 = _mm256_cvtepi32_ps(_mm256_permute2x128_si256(half[0][t], half[1][t], 0x20));
      acc[t] = _mm256_fmadd_ps(s0, _mm256_mul_ps(d0, _mm256_set1_ps(a[t][b].d)), acc[t]);
      if (pair) {
        const __m256 s1 =
            _mm256_cvtepi32_ps(_mm256_permute2x128_si256(half[0][t], half[1][t], 0x31));
        acc[t] = _mm256_fmadd_ps(s1, _mm256_mul_ps(d1, _mm256_set1_ps(a[t][b1].d)), acc[t]);
      }
    }
  }
  for (int t = 0; t < T; ++t) _mm256_storeu_ps(y + t * y_stride, acc[t]);
}

// Whole groups of eight rows from r0 on, below r1, of a dense q4_0 matrix
// against 1..7 tokens (Q4_0Rows8, tokens in pairs); each group asks for the
// one kAAhead groups on. Returns the first row not computed (r0 where the
// offset table would not fit).
inline int64_t MatmulQ4_0Few8(const uint8_t* wd, int64_t row_bytes, int64_t cols,
                              const uint8_t* act, int64_t act_bytes, int64_t n_tok, int64_t r0,
                              int64_t r1, float* y, int64_t y_stride) {
  const int64_t nb = cols / kQK, pairs = (nb + 1) / 2;
  if (n_tok > kRMaxTokens || n_tok * pairs > kPairTable) return r0;
  __m256i table[kPairTable];
  const BlockQ8A* a[kRMaxTokens];
  const __m256i* off[kRMaxTokens];
  for (int64_t t = 0; t < n_tok; ++t) {
    a[t] = reinterpret_cast<const BlockQ8A*>(act + t * act_bytes);
    __m256i* o = table + t * pairs;
    PairOffsets(a[t], nb, o);
    off[t] = o;
  }
  const int64_t r_end = r0 + (r1 - r0) / kARows * kARows;
  for (int64_t r = r0; r < r_end; r += kARows) {
    const uint8_t* w = wd + r * row_bytes;
    const int64_t p0 = std::min(r + kAAhead * kARows, r_end);
    const uint8_t* pf = wd + p0 * row_bytes;
    const uint8_t* pf_end = wd + std::min(p0 + kARows, r_end) * row_bytes;
    int64_t t = 0;
    for (; t + 2 <= n_tok; t += 2) {
      Q4_0Rows8<2>(w, row_bytes, nb, a + t, off + t, y + t * y_stride + r, y_stride, pf, pf_end);
      pf = pf_end;
    }
    if (t < n_tok) {
      Q4_0Rows8<1>(w, row_bytes, nb, a + t, off + t, y + t * y_stride + r, y_stride, pf, pf_end);
    }
  }
  return r_end;
}

// Rows [r0, r1) of a repack-order matrix against n_tok tokens: the eight-row
// kernel from kARowBlockTokens tokens on, below that the paired-block kernel
// for dense q4_0's whole groups of eight; four rows at a time for the rest,
// one at a time for the last few (RowsRange's passes).
template <class F>
void MatmulSeqRange(const uint8_t* wd, int64_t row_bytes, int64_t cols, const uint8_t* act,
                    int64_t act_bytes, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                    int64_t y_stride) {
  int64_t r = r0;
  if (n_tok >= kARowBlockTokens) {
    r = MatmulSeq8<F>(wd, row_bytes, cols, act, act_bytes, n_tok, r0, r1, y, y_stride);
  } else if constexpr (F::kOffsetLog2 == 3) {
    r = MatmulQ4_0Few8(wd, row_bytes, cols, act, act_bytes, n_tok, r0, r1, y, y_stride);
  }
  RowsRange<SeqRows<F>>(wd, row_bytes, cols / kQK, act, act_bytes, n_tok, r, r1, y, y_stride);
}

// Rows [r0, r1) of a matrix that takes the repack order (Avx2RepackOrder),
// all of them; false (nothing computed) for the others.
inline bool MatmulAvx2Repack(DType type, int64_t rows, const uint8_t* wd, int64_t row_bytes,
                             int64_t cols, const uint8_t* act, int64_t act_bytes, int64_t n_tok,
                             int64_t r0, int64_t r1, float* y, int64_t y_stride) {
  if (!Avx2RepackOrder(type, rows)) return false;
  if (type == DType::kQ4_0) {
    MatmulSeqRange<Avx2DenseRow<Avx2Q4_0>>(wd, row_bytes, cols, act, act_bytes, n_tok, r0, r1, y,
                                           y_stride);
  } else {
    MatmulSeqRange<Avx2Q4_0Nm>(wd, row_bytes, cols, act, act_bytes, n_tok, r0, r1, y, y_stride);
  }
  return true;
}

}  // namespace snug::tensor::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // SNUG_X86_AVX2 && !SNUG_X86_VNNI512
#endif  // include guard toggle
