// A few tokens of q4_0, q4_1, q5_0, q5_1, q8_0 and the N:M-sparse q8_0 and
// q4_0 on AVX2 without AVX512-VNNI, several rows at a time, in ggml's order:
// the bits of the one-row tile (qdot_avx2-inl.h's TileQ32Avx2) and of
// llama.cpp's AVX2 vec_dot, so the llama.cpp-identity formats keep their
// identity (the sparse types: the dense type's bits). q4_0 always; the
// others with ggml's order asked for (tensor::set_ggml_order), else
// qsum_avx2-inl.h's block-sum kernels.
//
// The tile is bound by its accumulator: one multiply-add per block of a row,
// each waiting for the last (4 cycles on Zen 3), and a row of 64 blocks is
// more than the out-of-order window can overlap with the next. Here kRRows
// rows run side by side, each with its own chain, and share the token's
// block loads. The signed 4- and 5-bit formats also skip ggml's vpsignb pair:
// their stored levels u = q + o are unsigned already, so vpmaddubsw takes
// them as they are and the lane sums are corrected by o x (the token's four
// bytes summed), once per block for all the rows. Every lane sum is the same
// exact integer either way (no pair sum reaches int16: at most 2 x 31 x 128),
// and the float steps are the tile's, one for one.
#if defined(SNUG_TENSOR_QROW_AVX2_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SNUG_TENSOR_QROW_AVX2_INL_H_
#undef SNUG_TENSOR_QROW_AVX2_INL_H_
#else
#define SNUG_TENSOR_QROW_AVX2_INL_H_
#endif

#include <hwy/highway.h>

#include "tensor/simd_x86.h"

// AVX3_DL too: qsum_avx2-inl.h's one-token kernel takes SpreadPrefetch from here.
#if SNUG_X86_AVX2
#include <immintrin.h>

#include "tensor/dtype.h"
#include "tensor/qdot_avx2-inl.h"
#include "tensor/quant_blocks.h"

HWY_BEFORE_NAMESPACE();
#if SNUG_X86_VNNI512
SNUG_BEGIN_VNNI
#endif
namespace snug::tensor::HWY_NAMESPACE {

inline constexpr int kRRows = 4;       // rows side by side
inline constexpr int64_t kRAhead = 2;  // groups of rows ahead that are prefetched
// Most tokens the row kernel takes (the eight-row kernel takes kARowBlockTokens
// and more).
inline constexpr int64_t kRMaxTokens = 7;

// Bytes [p, end) asked for over `steps` steps of a kernel's loop, an equal
// share in whole lines at each Step().
class SpreadPrefetch {
 public:
  SpreadPrefetch(const uint8_t* p, const uint8_t* end, int64_t steps)
      : p_(p), end_(end), share_(((end - p) / steps + 63) & ~int64_t{63}) {}
  HWY_INLINE void Step() {
    for (const uint8_t* e = p_ + share_; p_ < e && p_ < end_; p_ += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(p_), _MM_HINT_T0);
    }
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
  int64_t share_;
};

// Rows [0, R) from w (row_bytes apart) against T tokens' BlockQ8A rows
// (act_bytes apart): y[t * y_stride + r]. Rows follow each other in memory,
// so the one-row tile reads the matrix as one stream, which the hardware
// prefetchers follow; R rows side by side are R short streams, which they
// follow poorly from DRAM (Zen 3, 8192x2048 q4_0: 1.9 ms against the tile's
// 1.4). So the bytes [pf, pf_end) (the rows kRAhead groups on) are asked
// for, a block's share at each block.
template <class F, int R, int T>
HWY_INLINE void RowsQ32(const uint8_t* w, int64_t row_bytes, int64_t nb, const uint8_t* act,
                        int64_t act_bytes, float* y, int64_t y_stride, const uint8_t* pf,
                        const uint8_t* pf_end) {
  // q8_0: stored signed, so ggml's vpsignb pair; the others: stored unsigned.
  constexpr bool kStoredSigned = F::kSigned && F::kOffsetLog2 == 0;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[R][T];
  __m128 bias[R][T];  // lane 1 sums m x s (formats with a minimum)
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      acc[r][t] = _mm256_setzero_ps();
      bias[r][t] = _mm_setzero_ps();
    }
  }
  const BlockQ8A* a[T];
  for (int t = 0; t < T; ++t) a[t] = reinterpret_cast<const BlockQ8A*>(act + t * act_bytes);
  SpreadPrefetch ahead(pf, pf_end, nb);
  for (int64_t b = 0; b < nb; ++b) {
    ahead.Step();
    __m256i av[T], corr[T];
    __m128 as[T];
    for (int t = 0; t < T; ++t) {
      av[t] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[t][b].qs));
      as[t] = ActScaleSum(a[t][b]);
      if constexpr (F::kOffsetLog2 > 0) {
        const __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), av[t]), ones);
        corr[t] = _mm256_slli_epi32(s, F::kOffsetLog2);
      }
    }
    for (int r = 0; r < R; ++r) {
      const __m128 dm = ScaleMinOf(F::ScaleMinBitsAt(w + r * row_bytes, nb, b));
      const __m256i q = F::StoredAt(w + r * row_bytes, nb, b);
      const __m256i u = kStoredSigned ? _mm256_sign_epi8(q, q) : q;
      for (int t = 0; t < T; ++t) {
        __m256i sum;
        if constexpr (kStoredSigned) {
          sum = _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_sign_epi8(av[t], q)), ones);
        } else {
          sum = _mm256_madd_epi16(_mm256_maddubs_epi16(u, av[t]), ones);
          if constexpr (F::kOffsetLog2 > 0) sum = _mm256_sub_epi32(sum, corr[t]);
        }
        const __m128 prod = _mm_mul_ps(dm, as[t]);  // [d x a.d, m x a.s]
        acc[r][t] =
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_broadcastss_ps(prod), acc[r][t]);
        if constexpr (!F::kSigned) bias[r][t] = _mm_add_ps(bias[r][t], prod);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      y[t * y_stride + r] = Hsum(acc[r][t]) + _mm_cvtss_f32(_mm_movehdup_ps(bias[r][t]));
    }
  }
}

// The row kernel RowsQ32<F, R, T> as RowsTokens and RowsRange take one: a
// type whose Rows<R, T> computes rows [0, R) against T tokens.
template <class F>
struct Q32Rows {
  template <int R, int T>
  static HWY_INLINE void Rows(const uint8_t* w, int64_t row_bytes, int64_t nb, const uint8_t* act,
                              int64_t act_bytes, float* y, int64_t y_stride, const uint8_t* pf,
                              const uint8_t* pf_end) {
    RowsQ32<F, R, T>(w, row_bytes, nb, act, act_bytes, y, y_stride, pf, pf_end);
  }
};

// Rows [0, R) from w against n_tok tokens through the row kernel K, in pairs;
// [pf, pf_end) asked for during the first pair (the later pairs find the rows
// in L1).
template <class K, int R>
HWY_INLINE void RowsTokens(const uint8_t* w, int64_t row_bytes, int64_t nb, const uint8_t* act,
                           int64_t act_bytes, int64_t n_tok, float* y, int64_t y_stride,
                           const uint8_t* pf, const uint8_t* pf_end) {
  int64_t t = 0;
  for (; t + 2 <= n_tok; t += 2) {
    K::template Rows<R, 2>(w, row_bytes, nb, act + t * act_bytes, act_bytes, y + t * y_stride,
                           y_stride, pf, pf_end);
    pf = pf_end;
  }
  if (t < n_tok) {
    K::template Rows<R, 1>(w, row_bytes, nb, act + t * act_bytes, act_bytes, y + t * y_stride,
                           y_stride, pf, pf_end);
  }
}

// Rows [r0, r1) against n_tok tokens through the row kernel K: kRRows rows at
// a time, each group asking for the group kRAhead on (or what is left of the
// range before r1), the last rows one at a time.
template <class K>
int64_t RowsRange(const uint8_t* wd, int64_t row_bytes, int64_t nb, const uint8_t* act,
                  int64_t act_bytes, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                  int64_t y_stride) {
  int64_t r = r0;
  for (; r + kRRows <= r1; r += kRRows) {
    const int64_t p0 = r + kRAhead * kRRows < r1 ? r + kRAhead * kRRows : r1;
    const int64_t p1 = p0 + kRRows < r1 ? p0 + kRRows : r1;
    RowsTokens<K, kRRows>(wd + r * row_bytes, row_bytes, nb, act, act_bytes, n_tok, y + r, y_stride,
                          wd + p0 * row_bytes, wd + p1 * row_bytes);
  }
  for (; r < r1; ++r) {
    RowsTokens<K, 1>(wd + r * row_bytes, row_bytes, nb, act, act_bytes, n_tok, y + r, y_stride,
                     nullptr, nullptr);
  }
  return r1;
}

// Rows [r0, r1) for 1..kRMaxTokens tokens of the formats above; other
// formats and larger batches compute nothing (returns r0).
inline int64_t MatmulAvx2FewRows(DType type, const uint8_t* wd, int64_t row_bytes, int64_t cols,
                                 const uint8_t* act, int64_t act_bytes, int64_t n_tok, int64_t r0,
                                 int64_t r1, float* y, int64_t y_stride) {
  if (n_tok < 1 || n_tok > kRMaxTokens) return r0;
  int64_t done = r0;
  WithQ32RowFormat(type, [&](auto f) {
    done = RowsRange<Q32Rows<decltype(f)>>(wd, row_bytes, cols / kQK, act, act_bytes, n_tok, r0, r1,
                                           y, y_stride);
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
