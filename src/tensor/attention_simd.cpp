// attention_flash_ggml per target: attention over a paged KV cache whose K or
// V is quantized, in the order of llama.cpp's flash-attention CPU kernel (see
// kernels.h). Scores use the integer dot products of the matmul kernels
// (qdot_avx2-inl.h on AVX2 and AVX-512, the same instructions and order as ggml's
// vec_dot_q8_0_q8_0 / vec_dot_q4_0_q8_0; qdot_generic-inl.h elsewhere), so a
// quantized cache costs no more per position than an f16 one. Value rows are
// dequantized to f32 in registers and multiply-added (ggml's to_float then
// ggml_vec_mad_f32: the product level * d is rounded before the fma).
// Compiled once per Highway target; HWY_DYNAMIC_DISPATCH picks one per call.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "tensor/attention_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "base/check.h"
#include "tensor/fp16.h"
#include "tensor/kernels.h"
#include "tensor/kernels_simd.h"
#include "tensor/qdot_avx2-inl.h"
#include "tensor/qdot_generic-inl.h"
#include "tensor/quant_blocks.h"
#include "tensor/simd_x86.h"

#if SNUG_X86_AVX2
#include <immintrin.h>
#endif

HWY_BEFORE_NAMESPACE();
#if SNUG_X86_VNNI512
SNUG_BEGIN_VNNI  // the q8_0/q4_0 key dots are qdot_avx2-inl.h's, with vpdpbusd
#endif
namespace snug::tensor::HWY_NAMESPACE {

// ---- keys: the query in K's dot type, then one score per row -------------

// f16 K: the query rounded to f16 (held as floats), ggml_vec_dot_f16's order.
struct KeyF16 {
  static void Prepare(const float* q, int64_t dk, void* qd) {
    auto* out = static_cast<float*>(qd);
    for (int64_t i = 0; i < dk; ++i) out[i] = detail::f16_to_f32(detail::f32_to_f16(q[i]));
  }
  static float Dot(const uint8_t* row, const void* qd, int64_t dk) {
    return dot_f16_ordered(reinterpret_cast<const uint16_t*>(row), static_cast<const float*>(qd),
                           dk, SumOrder::kVecDot);
  }
};

// q8_0 / q4_0 K: the query as q8_0 activations (BlockQ8A, ggml's x86
// quantize_row_q8_0 values), an integer dot product per block.
template <class Fmt>
struct KeyQ {
  static void Prepare(const float* q, int64_t dk, void* qd) { simd::quantize_row_q8a(q, qd, dk); }
  static float Dot(const uint8_t* row, const void* qd, int64_t dk) {
    const auto* a = static_cast<const uint8_t*>(qd);
    float s;
#if SNUG_X86_AVX2
    TileQ32Avx2<Fmt, 1>(row, dk, &a, &s);
#else
    TileQ32Generic<Fmt, 1>(row, dk, &a, &s);
#endif
    return s;
  }
};
#if SNUG_X86_AVX2
using KeyQ8_0 = KeyQ<Avx2Q8_0>;
using KeyQ4_0 = KeyQ<Avx2Q4_0>;
#else
using KeyQ8_0 = KeyQ<GenQ8_0>;
using KeyQ4_0 = KeyQ<GenQ4_0>;
#endif

// ---- values: acc[i] = fma(value_i, p, acc[i]) over one row ----------------

#if SNUG_X86_AVX2
// 32 int8 levels times scale d, times p, added to acc[0..32).
HWY_INLINE void MadLevels32(__m256i q, __m256 d, __m256 p, float* acc) {
  const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
  const __m128i part[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
  for (int j = 0; j < 4; ++j) {
    const __m256 x = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part[j])), d);
    _mm256_storeu_ps(acc + 8 * j, _mm256_fmadd_ps(x, p, _mm256_loadu_ps(acc + 8 * j)));
  }
}
#endif

struct ValueF16 {
  static void Mad(const uint8_t* row, float p, float* acc, int64_t dv) {
    const auto* x = reinterpret_cast<const uint16_t*>(row);
    int64_t i = 0;
#if SNUG_X86_AVX2
    const __m256 vp = _mm256_set1_ps(p);
    for (; i + 8 <= dv; i += 8) {
      const __m256 v = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
      _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(v, vp, _mm256_loadu_ps(acc + i)));
    }
#endif
    for (; i < dv; ++i) acc[i] = std::fma(detail::f16_to_f32(x[i]), p, acc[i]);
  }
};

struct ValueQ8_0 {
  static void Mad(const uint8_t* row, float p, float* acc, int64_t dv) {
    const auto* b = reinterpret_cast<const BlockQ8_0*>(row);
#if SNUG_X86_AVX2
    const __m256 vp = _mm256_set1_ps(p);
    for (int64_t i = 0; i < dv / kQK; ++i) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs));
      MadLevels32(q, _mm256_set1_ps(detail::f16_to_f32(b[i].d)), vp, acc + i * kQK);
    }
#else
    for (int64_t i = 0; i < dv / kQK; ++i) {
      const float d = detail::f16_to_f32(b[i].d);
      float* a = acc + i * kQK;
      for (int j = 0; j < kQK; ++j) a[j] = std::fma(static_cast<float>(b[i].qs[j]) * d, p, a[j]);
    }
#endif
  }
};

struct ValueQ4_0 {
  static void Mad(const uint8_t* row, float p, float* acc, int64_t dv) {
    const auto* b = reinterpret_cast<const BlockQ4_0*>(row);
#if SNUG_X86_AVX2
    const __m256 vp = _mm256_set1_ps(p);
    for (int64_t i = 0; i < dv / kQK; ++i) {
      const __m256i q = _mm256_sub_epi8(Nibbles32(b[i].qs), _mm256_set1_epi8(8));
      MadLevels32(q, _mm256_set1_ps(detail::f16_to_f32(b[i].d)), vp, acc + i * kQK);
    }
#else
    for (int64_t i = 0; i < dv / kQK; ++i) {
      const float d = detail::f16_to_f32(b[i].d);
      float* a = acc + i * kQK;
      for (int j = 0; j < kQK / 2; ++j) {
        const int lo = (b[i].qs[j] & 0xF) - 8, hi = (b[i].qs[j] >> 4) - 8;
        a[j] = std::fma(static_cast<float>(lo) * d, p, a[j]);
        a[j + kQK / 2] = std::fma(static_cast<float>(hi) * d, p, a[j + kQK / 2]);
      }
    }
#endif
  }
};

// ---- the online softmax ---------------------------------------------------

int64_t RoundUp8(int64_t n) {
  return (n + 7) / 8 * 8;
}

template <class Key, class Value>
void AttendFlash(const float* q, const PagedKvRows& k, const PagedKvRows& v, int64_t n, int64_t dk,
                 int64_t dv, float scale, float* out, float* scratch) {
  float* acc = scratch;               // [dv] f32 value accumulator (ggml's VKQ32)
  void* qd = scratch + RoundUp8(dv);  // the query in K's dot type
  Key::Prepare(q, dk, qd);
  std::memset(acc, 0, sizeof(float) * static_cast<size_t>(dv));
  float m = -INFINITY;  // largest score so far
  float sum = 0;        // sum of exp(score - m) so far
  const int64_t bt = k.block_tokens;
  for (int64_t t = 0; t < n;) {
    const int64_t at = t + k.first, b = at / bt, j0 = at - b * bt;
    const uint8_t* kr = k.blocks[b] + j0 * k.row_bytes;
    const uint8_t* vr = v.blocks[b] + j0 * v.row_bytes;
    const int64_t end = n - t < bt - j0 ? n - t : bt - j0;
    t += end;
    for (int64_t j = 0; j < end; ++j, kr += k.row_bytes, vr += v.row_bytes) {
      const float s = Key::Dot(kr, qd, dk) * scale;
      float ms = 1.f;  // rescales what was accumulated when s is a new maximum
      float vs = 1.f;  // exp(s - m): this position's weight
      if (s > m) {
        ms = std::exp(m - s);
        m = s;
        for (int64_t i = 0; i < dv; ++i) acc[i] *= ms;
      } else {
        vs = std::exp(s - m);
      }
      Value::Mad(vr, vs, acc, dv);
      sum = std::fma(sum, ms, vs);  // ggml's S = S*ms + vs, which its build contracts to an fma
    }
  }
  const float inv = sum == 0.f ? 0.f : 1.f / sum;
  for (int64_t i = 0; i < dv; ++i) out[i] = acc[i] * inv;
}

template <class Key>
void AttendFlashK(const float* q, const PagedKvRows& k, const PagedKvRows& v, int64_t n, int64_t dk,
                  int64_t dv, float scale, float* out, float* scratch) {
  switch (v.type) {
    case DType::kF16:
      return AttendFlash<Key, ValueF16>(q, k, v, n, dk, dv, scale, out, scratch);
    case DType::kQ8_0:
      return AttendFlash<Key, ValueQ8_0>(q, k, v, n, dk, dv, scale, out, scratch);
    case DType::kQ4_0:
      return AttendFlash<Key, ValueQ4_0>(q, k, v, n, dk, dv, scale, out, scratch);
    default:
      SNUG_CHECK(false && "attention_flash_ggml: V type is not a KV type");
  }
}

void AttentionFlash(const float* q, const PagedKvRows& k, const PagedKvRows& v, int64_t n,
                    int64_t dk, int64_t dv, float scale, float* out, float* scratch) {
  switch (k.type) {
    case DType::kF16:
      return AttendFlashK<KeyF16>(q, k, v, n, dk, dv, scale, out, scratch);
    case DType::kQ8_0:
      return AttendFlashK<KeyQ8_0>(q, k, v, n, dk, dv, scale, out, scratch);
    case DType::kQ4_0:
      return AttendFlashK<KeyQ4_0>(q, k, v, n, dk, dv, scale, out, scratch);
    default:
      SNUG_CHECK(false && "attention_flash_ggml: K type is not a KV type");
  }
}

// ---- all the query heads of one KV head (AVX2 and AVX-512) ---------------

#if SNUG_X86_AVX2
// Positions whose value sums stay in registers before they are added to the
// accumulator rows: bounds how much of V one pass over a column pair reads.
constexpr int64_t kHeadsSpan = 256;
// Positions ahead whose K (score pass) or V (value pass) rows are asked for.
constexpr int64_t kRowsAhead = 32;

// Asks for the n bytes at p, with __builtin_prefetch's locality (3: into L1,
// 2: into L2): every line from p's to p + n - 1's.
template <int kLocality>
HWY_INLINE void PrefetchBytes(const void* p, int64_t n) {
  const char* c = static_cast<const char*>(p);
  for (int64_t i = 0; i < n; i += 64) __builtin_prefetch(c + i, 0, kLocality);
  if (n % 64 != 0) __builtin_prefetch(c + n - 1, 0, kLocality);
}

// One head's rows in elements of E (uint16_t for f16 rows, bytes for the
// quantized ones): row t starts at blocks[(t + first) / bt] +
// ((t + first) % bt) x stride.
template <class E>
struct Rows {
  const E* const* blocks;
  int64_t bt, stride, first;
  int64_t bytes() const { return stride * static_cast<int64_t>(sizeof(E)); }
};
inline Rows<uint16_t> RowsOf(const PagedRows& r) {
  return {r.blocks, r.block_tokens, r.row_elems, r.first};
}
inline Rows<uint8_t> RowsOf(const PagedKvRows& r) {
  return {r.blocks, r.block_tokens, static_cast<int64_t>(r.row_bytes), r.first};
}

// One head's rows from position t on, one at a time.
template <class E>
class RowWalk {
 public:
  RowWalk(const Rows<E>& r, int64_t t)
      : blocks_(r.blocks),
        bt_(r.bt),
        re_(r.stride),
        b_((t + r.first) / r.bt),
        j_((t + r.first) % r.bt) {}
  const E* next() {
    const E* row = blocks_[b_] + j_ * re_;
    if (++j_ == bt_) ++b_, j_ = 0;
    return row;
  }

 private:
  const E* const* blocks_;
  int64_t bt_, re_, b_, j_;
};

// The K rows of positions 0, 1, ... in turn (next()), K's rows asked for
// kRowsAhead positions early and, for the positions below v_until, each
// position's V row as its K row is handed out, all into L2: a sequence's
// rows of one KV head are short runs (a block's 16 rows) scattered over the
// pool, which the hardware prefetchers do not follow from one to the next.
template <class KE, class VE>
class KeyRows {
 public:
  KeyRows(const Rows<KE>& k, const Rows<VE>& v, int64_t n, int64_t v_until)
      : keys_(k, 0),
        values_(v, 0),
        ahead_(k, 0),
        k_bytes_(k.bytes()),
        v_bytes_(v.bytes()),
        n_(n),
        v_until_(v_until) {
    for (int64_t t = 0; t < kRowsAhead && t < n; ++t) PrefetchBytes<2>(ahead_.next(), k_bytes_);
  }
  const KE* next() {
    const KE* row = keys_.next();
    if (t_ < v_until_) PrefetchBytes<2>(values_.next(), v_bytes_);
    if (t_ + kRowsAhead < n_) PrefetchBytes<2>(ahead_.next(), k_bytes_);
    ++t_;
    return row;
  }

 private:
  RowWalk<KE> keys_;
  RowWalk<VE> values_;
  RowWalk<KE> ahead_;
  int64_t k_bytes_, v_bytes_, n_, v_until_, t_ = 0;
};

// How the grouped kernels read a row of each KV type: eight elements from
// column c (c % 8 == 0; a 16-column run never crosses a block) as f32, the
// values dequantize_row gives (f16 exactly; q8_0 and q4_0 level x d, the
// product rounded to f32). Scale(row, c) is the scale of c's block, read
// once for the columns of a run that share it.
// f16 rows come as f16 elements (PagedRows) or as bytes (PagedKvRows).
template <class E>
struct RowF16Of {
  using Elem = E;
  struct Scale {};
  static HWY_INLINE Scale ScaleAt(const Elem* /*row*/, int64_t /*c*/) { return {}; }
  static HWY_INLINE __m256 Load8(const Elem* row, int64_t c, Scale /*d*/) {
    const auto* x = reinterpret_cast<const uint16_t*>(row) + c;
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x)));
  }
};
using RowF16 = RowF16Of<uint16_t>;
// The quantized rows: Levels::At(block, j) gives a block's int8 levels
// j..j+7, each value level x the block's scale.
template <class Block, class Levels>
struct RowQuant {
  using Elem = uint8_t;
  using Scale = __m256;
  static HWY_INLINE Scale ScaleAt(const Elem* row, int64_t c) {
    const auto* b = reinterpret_cast<const Block*>(row) + c / kQK;
    return _mm256_cvtph_ps(_mm_set1_epi16(static_cast<int16_t>(b->d)));
  }
  static HWY_INLINE __m256 Load8(const Elem* row, int64_t c, Scale d) {
    const auto* b = reinterpret_cast<const Block*>(row) + c / kQK;
    const __m128i q = Levels::At(*b, c % kQK);
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d);
  }
};
struct LevelsQ8_0 {
  static HWY_INLINE __m128i At(const BlockQ8_0& b, int64_t j) {
    return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b.qs + j));
  }
  // Levels j..j+15 (j = 0 or 16), for the 16-lane kernels.
  static HWY_INLINE __m128i At16(const BlockQ8_0& b, int64_t j) {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs + j));
  }
};
// q4_0: element j < 16 of a block is byte j's low nibble, 16 + j its high one.
struct LevelsQ4_0 {
  static HWY_INLINE __m128i At(const BlockQ4_0& b, int64_t j) {
    __m128i x = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b.qs + j % 16));
    if (j >= 16) x = _mm_srli_epi16(x, 4);
    return _mm_sub_epi8(_mm_and_si128(x, _mm_set1_epi8(0x0F)), _mm_set1_epi8(8));
  }
  static HWY_INLINE __m128i At16(const BlockQ4_0& b, int64_t j) {
    __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
    if (j >= 16) x = _mm_srli_epi16(x, 4);
    return _mm_sub_epi8(_mm_and_si128(x, _mm_set1_epi8(0x0F)), _mm_set1_epi8(8));
  }
};
using RowQ8_0 = RowQuant<BlockQ8_0, LevelsQ8_0>;
using RowQ4_0 = RowQuant<BlockQ4_0, LevelsQ4_0>;

// fn(std::integral_constant<int, DK>()) with the head sizes of common models
// unrolled (DK = dk), others at run time (DK = 0).
template <class Fn>
HWY_INLINE void WithHeadDim(int64_t dk, const Fn& fn) {
  switch (dk) {
    case 64:
      return fn(std::integral_constant<int, 64>());
    case 128:
      return fn(std::integral_constant<int, 128>());
    default:
      return fn(std::integral_constant<int, 0>());
  }
}

// The largest of x[0..n), eight lanes at a time (a NaN is passed over, as
// the comparison x > max passes over it).
HWY_INLINE float MaxScore(const float* x, int64_t n) {
  __m256 m8 = _mm256_set1_ps(-INFINITY);
  int64_t t = 0;
  for (; t + 8 <= n; t += 8) m8 = _mm256_max_ps(_mm256_loadu_ps(x + t), m8);
  const __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
  const __m128 m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  float mx = _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps(m2, m2, 1)));
  for (; t < n; ++t) mx = x[t] > mx ? x[t] : mx;
  return mx;
}

// The grouped kernels' softmax for HC heads over n positions, around a score
// pass, scores(p, stride): p[h * stride + t] = scale x (q_h . k_t), and a
// value pass, values(t0, t1, p, stride): out[h * dv + i] += sum over [t0, t1)
// of p[h * stride + t] v_t[i]. The exponentials (exp_sum_ggml) replace the
// scores in scratch; out is divided by each head's sum at the end.
template <int HC, class Scores, class Values>
HWY_INLINE void HeadsSoftmax(int64_t n, int64_t dv, float* out, float* scratch,
                             const Scores& scores, const Values& values) {
  const int64_t stride = (n + 15) / 16 * 16;
  float* p = scratch;  // [HC][stride] scores, then their exponentials
  scores(p, stride);
  float inv[HC];
  for (int h = 0; h < HC; ++h) {
    float* ph = p + h * stride;
    const float mx = MaxScore(ph, n);
    const double sum = exp_sum_ggml(ph, n, mx);
    inv[h] = static_cast<float>(1.0 / sum);
  }
  std::memset(out, 0, sizeof(float) * static_cast<size_t>(HC * dv));
  for (int64_t t0 = 0; t0 < n; t0 += kHeadsSpan) {
    values(t0, t0 + kHeadsSpan < n ? t0 + kHeadsSpan : n, p, stride);
  }
  for (int h = 0; h < HC; ++h) {
    for (int64_t i = 0; i < dv; ++i) out[h * dv + i] *= inv[h];
  }
}
#endif

// AVX-512: 16-lane sums, the pieces of HeadsGrouped below, for every KV type.
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
// How the 16-lane kernels read a row of format F (RowF16Of, RowQuant):
// sixteen elements from column c (c % 16 == 0, so one quantized block) as
// f32, the values of two of F's Load8: the same bits on every target.
template <class F>
struct Row16;
template <class E>
struct Row16<RowF16Of<E>> {
  static HWY_INLINE __m512 Load(const E* row, int64_t c) {
    const auto* x = reinterpret_cast<const uint16_t*>(row) + c;
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
  }
};
template <class Block, class Levels>
struct Row16<RowQuant<Block, Levels>> {
  static HWY_INLINE __m512 Load(const uint8_t* row, int64_t c) {
    const auto* b = reinterpret_cast<const Block*>(row) + c / kQK;
    const __m512 d = _mm512_cvtph_ps(_mm256_set1_epi16(static_cast<int16_t>(b->d)));
    const __m512i q = _mm512_cvtepi8_epi32(Levels::At16(*b, c % kQK));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(q), d);
  }
};
// Two rows' dot products with HC heads (lane-wise, the 16-column chunks
// fused in order), as the first step of _mm512_reduce_add_ps on both at once:
// lanes 0-7 of w[h] are a's lanes i + (i + 8), lanes 8-15 are b's.
template <class F, int HC, int DK>
HWY_INLINE void ScorePair(const typename F::Elem* ra, const typename F::Elem* rb, const float* q,
                          int64_t dk_run, __m512* w) {
  const int64_t dk = DK > 0 ? DK : dk_run;
  __m512 a[HC], b[HC];
  for (int h = 0; h < HC; ++h) a[h] = b[h] = _mm512_setzero_ps();
  for (int64_t c = 0; c < dk; c += 16) {
    const __m512 ka = Row16<F>::Load(ra, c);
    const __m512 kb = Row16<F>::Load(rb, c);
    for (int h = 0; h < HC; ++h) {
      const __m512 qh = _mm512_loadu_ps(q + h * dk + c);
      a[h] = _mm512_fmadd_ps(ka, qh, a[h]);
      b[h] = _mm512_fmadd_ps(kb, qh, b[h]);
    }
  }
  for (int h = 0; h < HC; ++h) {
    w[h] = _mm512_add_ps(_mm512_shuffle_f32x4(a[h], b[h], 0x44),
                         _mm512_shuffle_f32x4(a[h], b[h], 0xEE));
  }
}

// Four rows: 128-bit lane r holds row r's four partial sums, the pairs
// (j, j + 4) of ScorePair's lanes added (reduce_add's second step).
template <class F, int HC, int DK>
HWY_INLINE void ScoreQuad(const typename F::Elem* const* rows, const float* q, int64_t dk,
                          __m512* x) {
  __m512 w0[HC], w1[HC];
  ScorePair<F, HC, DK>(rows[0], rows[1], q, dk, w0);
  ScorePair<F, HC, DK>(rows[2], rows[3], q, dk, w1);
  for (int h = 0; h < HC; ++h) {
    x[h] = _mm512_add_ps(_mm512_shuffle_f32x4(w0[h], w1[h], 0x88),
                         _mm512_shuffle_f32x4(w0[h], w1[h], 0xDD));
  }
}

// Eight rows: element 2i + e of 128-bit lane r is row 4i + r's pair sum
// (e, e + 2) of its quad lane (reduce_add's third step).
template <class F, int HC, int DK>
HWY_INLINE void ScoreOctet(const typename F::Elem* const* rows, const float* q, int64_t dk,
                           __m512* u) {
  __m512 x0[HC], x1[HC];
  ScoreQuad<F, HC, DK>(rows, q, dk, x0);
  ScoreQuad<F, HC, DK>(rows + 4, q, dk, x1);
  for (int h = 0; h < HC; ++h) {
    u[h] =
        _mm512_add_ps(_mm512_shuffle_ps(x0[h], x1[h], 0x44), _mm512_shuffle_ps(x0[h], x1[h], 0xEE));
  }
}

// Lane l of the result is the row whose sum ScoreRows leaves in element
// 4 (l % 4) + l / 4.
inline constexpr int32_t kScoreOrder[16] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};

// The dot products of 16 rows with HC heads, lane l of f[h] for rows[l]: each
// the sum _mm512_reduce_add_ps gives, its four steps taken on 16 rows at once
// (the same pairs in the same order, so the same bits) instead of 60
// shuffles and adds per row.
template <class F, int HC, int DK>
HWY_INLINE void ScoreRows(const typename F::Elem* const* rows, const float* q, int64_t dk,
                          __m512* f) {
  __m512 u0[HC], u1[HC];
  ScoreOctet<F, HC, DK>(rows, q, dk, u0);
  ScoreOctet<F, HC, DK>(rows + 8, q, dk, u1);
  const __m512i order = _mm512_loadu_si512(kScoreOrder);
  for (int h = 0; h < HC; ++h) {
    const __m512 t =
        _mm512_add_ps(_mm512_shuffle_ps(u0[h], u1[h], 0x88), _mm512_shuffle_ps(u0[h], u1[h], 0xDD));
    f[h] = _mm512_permutexvar_ps(order, t);
  }
}

// p[h * stride + t] = scale x (q_h . k_t) for HC heads, positions [0, n),
// 16 positions at a time (the last chunk's missing rows repeat its last
// row and are not stored).
template <class F, int HC, int DK, class VE>
void HeadScoresDk(const float* q, int64_t dk, const Rows<typename F::Elem>& k, const Rows<VE>& v,
                  int64_t n, float scale, float* p, int64_t stride) {
  using E = typename F::Elem;
  KeyRows<E, VE> keys(k, v, n, n);  // every V row: read next
  const __m512 sc = _mm512_set1_ps(scale);
  for (int64_t t0 = 0; t0 < n; t0 += 16) {
    const int64_t m = n - t0 < 16 ? n - t0 : 16;
    const E* rows[16];
    for (int64_t i = 0; i < m; ++i) rows[i] = keys.next();
    for (int64_t i = m; i < 16; ++i) rows[i] = rows[m - 1];
    __m512 f[HC];
    ScoreRows<F, HC, DK>(rows, q, dk, f);
    const auto mask = static_cast<__mmask16>((1u << m) - 1);
    for (int h = 0; h < HC; ++h) {
      _mm512_mask_storeu_ps(p + h * stride + t0, mask, _mm512_mul_ps(f[h], sc));
    }
  }
}

// acc[h * dv + c + i] += sum_t w[h * stride + t] v_t[c + i] for i < 16 NC,
// positions [t0, t1), with HC x NC accumulators in registers.
template <class F, int HC, int NC>
void HeadValueCols(const Rows<typename F::Elem>& v, int64_t t0, int64_t t1, int64_t c, int64_t dv,
                   const float* w, int64_t stride, float* acc) {
  __m512 a[HC][NC];
  for (int h = 0; h < HC; ++h) {
    for (int i = 0; i < NC; ++i) a[h][i] = _mm512_loadu_ps(acc + h * dv + c + 16 * i);
  }
  const int64_t bt = v.bt;
  for (int64_t t = t0; t < t1;) {
    // Block b holds positions [b bt - first, (b + 1) bt - first).
    const int64_t b = (t + v.first) / bt;
    const int64_t end = (b + 1) * bt - v.first < t1 ? (b + 1) * bt - v.first : t1;
    const typename F::Elem* vr = v.blocks[b] + (t + v.first - b * bt) * v.stride;
    for (; t < end; ++t, vr += v.stride) {
      __m512 x[NC];
      for (int i = 0; i < NC; ++i) x[i] = Row16<F>::Load(vr, c + 16 * i);
      for (int h = 0; h < HC; ++h) {
        const __m512 wt = _mm512_set1_ps(w[h * stride + t]);
        for (int i = 0; i < NC; ++i) a[h][i] = _mm512_fmadd_ps(x[i], wt, a[h][i]);
      }
    }
  }
  for (int h = 0; h < HC; ++h) {
    for (int i = 0; i < NC; ++i) _mm512_storeu_ps(acc + h * dv + c + 16 * i, a[h][i]);
  }
}

// acc[h * dv + i] += sum_t w[h * stride + t] v_t[i] over positions [t0, t1),
// 64 columns at a time.
template <class F, int HC>
void HeadValues(const Rows<typename F::Elem>& v, int64_t t0, int64_t t1, int64_t dv, const float* w,
                int64_t stride, float* acc) {
  for (int64_t c = 0; c < dv; c += 64) {
    switch (dv - c >= 64 ? 4 : (dv - c) / 16) {
      case 1:
        HeadValueCols<F, HC, 1>(v, t0, t1, c, dv, w, stride, acc);
        break;
      case 2:
        HeadValueCols<F, HC, 2>(v, t0, t1, c, dv, w, stride, acc);
        break;
      case 3:
        HeadValueCols<F, HC, 3>(v, t0, t1, c, dv, w, stride, acc);
        break;
      default:
        HeadValueCols<F, HC, 4>(v, t0, t1, c, dv, w, stride, acc);
    }
  }
}
#endif

// The grouped kernels in 256-bit registers: AVX2's f16 attention in
// block-sum order (with ggml's order asked for, AVX2 keeps
// attention_f16_ggml_heads, llama.cpp's bits), and AVX2's grouped attention
// over quantized K or V (attention_kv_heads), reading each row through its
// format (RowF16, RowQ8_0, RowQ4_0; AVX-512 reads them sixteen elements at a
// time, Row16). Every score and value sum takes the operations of the
// AVX-512 kernel in its order: a score's 16 partial sums are two registers of
// eight fused over the same 16-column chunks, then reduced by the same tree
// (s_i = a_i + a_(i+8), t_j = s_j + s_(j+4), u_k = t_k + t_(k+2), u_0 +
// u_1); the value sums are element-wise, whatever the register width.
#if SNUG_X86_AVX2
// s[h] lane i = a_i + a_(i+8) of row's 16-lane dot product with head h.
template <class F, int HC, int DK>
HWY_INLINE void ScoreRowAvx2(const typename F::Elem* row, const float* q, int64_t dk_run,
                             __m256* s) {
  const int64_t dk = DK > 0 ? DK : dk_run;
  __m256 lo[HC], hi[HC];
  for (int h = 0; h < HC; ++h) lo[h] = hi[h] = _mm256_setzero_ps();
  for (int64_t c = 0; c < dk; c += 16) {
    const auto d = F::ScaleAt(row, c);
    const __m256 kl = F::Load8(row, c, d);
    const __m256 kh = F::Load8(row, c + 8, d);
    for (int h = 0; h < HC; ++h) {
      lo[h] = _mm256_fmadd_ps(kl, _mm256_loadu_ps(q + h * dk + c), lo[h]);
      hi[h] = _mm256_fmadd_ps(kh, _mm256_loadu_ps(q + h * dk + c + 8), hi[h]);
    }
  }
  for (int h = 0; h < HC; ++h) s[h] = _mm256_add_ps(lo[h], hi[h]);
}

// The rest of the tree for eight rows at once, lane r for row r.
HWY_INLINE __m256 FinishScores8(const __m256* s) {
  __m256 u[4];
  for (int i = 0; i < 4; ++i) {
    // [t of row 2i | t of row 2i + 1], each half reordered to t0 t2 t1 t3.
    const __m256 t = _mm256_add_ps(_mm256_permute2f128_ps(s[2 * i], s[2 * i + 1], 0x20),
                                   _mm256_permute2f128_ps(s[2 * i], s[2 * i + 1], 0x31));
    u[i] = _mm256_permute_ps(t, _MM_SHUFFLE(3, 1, 2, 0));
  }
  // hadd: (t0 + t2, t1 + t3) per row, then their sum: rows 0 2 4 6 | 1 3 5 7.
  const __m256 f = _mm256_hadd_ps(_mm256_hadd_ps(u[0], u[1]), _mm256_hadd_ps(u[2], u[3]));
  return _mm256_permutevar8x32_ps(f, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// The same sums for rows a and b at once: each query load feeds both rows'
// multiply-adds (twelve sums in registers for three heads, where one row at
// a time loads the query once per row).
template <class F, int HC, int DK>
HWY_INLINE void ScoreTwoRowsAvx2(const typename F::Elem* ra, const typename F::Elem* rb,
                                 const float* q, int64_t dk_run, __m256* sa, __m256* sb) {
  const int64_t dk = DK > 0 ? DK : dk_run;
  __m256 la[HC], ha[HC], lb[HC], hb[HC];
  for (int h = 0; h < HC; ++h) la[h] = ha[h] = lb[h] = hb[h] = _mm256_setzero_ps();
  for (int64_t c = 0; c < dk; c += 16) {
    const auto da = F::ScaleAt(ra, c);
    const auto db = F::ScaleAt(rb, c);
    for (int half = 0; half < 2; ++half) {
      const int64_t o = c + 8 * half;
      const __m256 ka = F::Load8(ra, o, da);
      const __m256 kb = F::Load8(rb, o, db);
      __m256* xa = half == 0 ? la : ha;
      __m256* xb = half == 0 ? lb : hb;
      for (int h = 0; h < HC; ++h) {
        const __m256 qh = _mm256_loadu_ps(q + h * dk + o);
        xa[h] = _mm256_fmadd_ps(ka, qh, xa[h]);
        xb[h] = _mm256_fmadd_ps(kb, qh, xb[h]);
      }
    }
  }
  for (int h = 0; h < HC; ++h) {
    sa[h] = _mm256_add_ps(la[h], ha[h]);
    sb[h] = _mm256_add_ps(lb[h], hb[h]);
  }
}

// p[h * stride + t] = scale x (q_h . k_t), positions [0, n), eight at a time
// (a last short group repeats its last row; all eight are stored, which the
// stride, a multiple of 16, leaves room for). Up to three heads take the rows
// two at a time (ScoreTwoRowsAvx2), four one at a time (their sixteen sums
// fill the registers). KeyRows asks for K's rows ahead and for V's rows of
// the first kRowsAhead positions only: the value pass asks for the rest as it
// goes (HeadValueColsAvx2), so that each pass brings one row's bytes per
// position from memory, not the score pass two and the value pass none.
template <class F, int HC, int DK, class VE>
void HeadScoresAvx2(const float* q, int64_t dk, const Rows<typename F::Elem>& k, const Rows<VE>& v,
                    int64_t n, float scale, float* p, int64_t stride) {
  using E = typename F::Elem;
  KeyRows<E, VE> keys(k, v, n, kRowsAhead);
  const __m256 sc = _mm256_set1_ps(scale);
  for (int64_t t0 = 0; t0 < n; t0 += 8) {
    const int64_t m = n - t0 < 8 ? n - t0 : 8;
    const E* rows[8];
    for (int64_t i = 0; i < m; ++i) rows[i] = keys.next();
    for (int64_t i = m; i < 8; ++i) rows[i] = rows[m - 1];
    __m256 s[HC][8];
    for (int i = 0; i < 8; i += 2) {
      __m256 a[HC], b[HC];
      if constexpr (HC <= 3) {
        ScoreTwoRowsAvx2<F, HC, DK>(rows[i], rows[i + 1], q, dk, a, b);
      } else {
        ScoreRowAvx2<F, HC, DK>(rows[i], q, dk, a);
        ScoreRowAvx2<F, HC, DK>(rows[i + 1], q, dk, b);
      }
      for (int h = 0; h < HC; ++h) {
        s[h][i] = a[h];
        s[h][i + 1] = b[h];
      }
    }
    for (int h = 0; h < HC; ++h) {
      _mm256_storeu_ps(p + h * stride + t0, _mm256_mul_ps(FinishScores8(s[h]), sc));
    }
  }
}

// acc[h * dv + c + i] += sum_t w[h * stride + t] v_t[c + i], i < 8 NC,
// positions [t0, t1), the HC x NC sums in registers (NC even). With
// ask_until > 0, each position's row asks for the whole V row kRowsAhead
// positions on, below ask_until (the first column pass over a span).
template <class F, int HC, int NC>
void HeadValueColsAvx2(const Rows<typename F::Elem>& v, int64_t t0, int64_t t1, int64_t c,
                       int64_t dv, const float* w, int64_t stride, float* acc, int64_t ask_until) {
  static_assert(NC % 2 == 0 && HC * NC <= 12, "sums, two rows' halves and a weight in registers");
  using E = typename F::Elem;
  const int64_t bt = v.bt, re = v.stride;
  int64_t asked = t0 + kRowsAhead;  // the next position whose row is asked for
  RowWalk<E> ahead(v, asked < ask_until ? asked : 0);
  for (int64_t t = t0; t < t1;) {
    const int64_t b = (t + v.first) / bt;  // holds positions [b bt - first, (b + 1) bt - first)
    const int64_t end = (b + 1) * bt - v.first < t1 ? (b + 1) * bt - v.first : t1;
    const E* vr = v.blocks[b] + (t + v.first - b * bt) * re;
    const float* wt0 = w + t;
    const int64_t rows = end - t;
    t = end;
    // The sums live in registers for a block's rows: kept across blocks,
    // GCC stores every one to the stack on every row.
    __m256 a[HC][NC];
    for (int h = 0; h < HC; ++h) {
      for (int i = 0; i < NC; ++i) a[h][i] = _mm256_loadu_ps(acc + h * dv + c + 8 * i);
    }
    for (int64_t j = 0; j < rows; ++j) {
      if (asked < ask_until) {
        PrefetchBytes<2>(ahead.next(), v.bytes());
        ++asked;
      }
      const E* row = vr + j * re;
      const auto d = F::ScaleAt(row, c);
      for (int i = 0; i < NC; i += 2) {
        const __m256 x0 = F::Load8(row, c + 8 * i, d);
        const __m256 x1 = F::Load8(row, c + 8 * i + 8, d);
        for (int h = 0; h < HC; ++h) {
          const __m256 wt = _mm256_broadcast_ss(wt0 + h * stride + j);
          a[h][i] = _mm256_fmadd_ps(x0, wt, a[h][i]);
          a[h][i + 1] = _mm256_fmadd_ps(x1, wt, a[h][i + 1]);
        }
      }
    }
    for (int h = 0; h < HC; ++h) {
      for (int i = 0; i < NC; ++i) _mm256_storeu_ps(acc + h * dv + c + 8 * i, a[h][i]);
    }
  }
}

// acc[h * dv + i] += sum_t w[h * stride + t] v_t[i] over positions [t0, t1):
// 32 columns at a time for up to three heads (twelve sums: enough chains
// that the multiply-adds, not their latency, set the pace), then 16 (so a
// run of columns lies in one quantized block). The first column pass asks
// for the rows ahead, up to position n.
template <class F, int HC>
void HeadValuesAvx2(const Rows<typename F::Elem>& v, int64_t t0, int64_t t1, int64_t dv,
                    const float* w, int64_t stride, float* acc, int64_t n) {
  int64_t c = 0;
  if constexpr (HC <= 3) {
    for (; c + 32 <= dv; c += 32) {
      HeadValueColsAvx2<F, HC, 4>(v, t0, t1, c, dv, w, stride, acc, c == 0 ? n : 0);
    }
  }
  for (; c < dv; c += 16) {
    HeadValueColsAvx2<F, HC, 2>(v, t0, t1, c, dv, w, stride, acc, c == 0 ? n : 0);
  }
}

// HC heads of q (dk apart) against K rows read as KF and V rows as VF, into
// out[h * dv ...]; head sizes of multiples of 16 (32 for a quantized row).
// AVX-512 takes the 16-lane pieces (Row16), AVX2 the 8-lane ones: the same
// bits.
template <class KF, class VF, int HC>
void HeadsGrouped(const float* q, const Rows<typename KF::Elem>& k,
                  const Rows<typename VF::Elem>& v, int64_t n, int64_t dk, int64_t dv, float scale,
                  float* out, float* scratch) {
  HeadsSoftmax<HC>(
      n, dv, out, scratch,
      [&](float* p, int64_t stride) {
        WithHeadDim(dk, [&](auto d) {
#if HWY_TARGET <= HWY_AVX3
          HeadScoresDk<KF, HC, decltype(d)::value>(q, dk, k, v, n, scale, p, stride);
#else
          HeadScoresAvx2<KF, HC, decltype(d)::value>(q, dk, k, v, n, scale, p, stride);
#endif
        });
      },
      [&](int64_t t0, int64_t t1, const float* p, int64_t stride) {
#if HWY_TARGET <= HWY_AVX3
        HeadValues<VF, HC>(v, t0, t1, dv, p, stride, out);
#else
        HeadValuesAvx2<VF, HC>(v, t0, t1, dv, p, stride, out, n);
#endif
      });
}

template <int HC>
void HeadsF16(const float* q, const PagedRows& k, const PagedRows& v, int64_t n, int64_t dk,
              int64_t dv, float scale, float* out, float* scratch) {
  HeadsGrouped<RowF16, RowF16, HC>(q, RowsOf(k), RowsOf(v), n, dk, dv, scale, out, scratch);
}
#endif

// fn(std::integral_constant<int, HC>, h) for the groups of up to four heads
// [h, h + HC) of nh.
template <class Fn>
HWY_INLINE void ForHeadGroups(int64_t nh, const Fn& fn) {
  for (int64_t h = 0; h < nh; h += 4) {
    switch (nh - h < 4 ? nh - h : 4) {
      case 1:
        fn(std::integral_constant<int, 1>(), h);
        break;
      case 2:
        fn(std::integral_constant<int, 2>(), h);
        break;
      case 3:
        fn(std::integral_constant<int, 3>(), h);
        break;
      default:
        fn(std::integral_constant<int, 4>(), h);
    }
  }
}

void AttentionF16Heads(const float* q, int64_t nh, const PagedRows& k, const PagedRows& v,
                       int64_t n, int64_t dk, int64_t dv, float scale, bool gemm, float* out,
                       float* scratch) {
#if SNUG_X86_AVX2
  // AVX2 keeps llama.cpp's order when ggml's is asked for (ggml_order()).
  const bool grouped = HWY_TARGET <= HWY_AVX3 || !ggml_order();
  if (grouped && dk % 16 == 0 && dv % 16 == 0) {
    ForHeadGroups(nh, [&](auto hc, int64_t h) {
      HeadsF16<decltype(hc)::value>(q + h * dk, k, v, n, dk, dv, scale, out + h * dv, scratch);
    });
    return;
  }
#endif
  attention_f16_ggml_heads(q, nh, k, v, n, dk, dv, scale,
                           gemm ? SumOrder::kGemm : SumOrder::kVecDot, out, scratch);
}

#if SNUG_X86_AVX2
// fn(Row...()) for the row format of KV type t.
template <class Fn>
HWY_INLINE void WithRowFormat(DType t, const Fn& fn) {
  switch (t) {
    case DType::kF16:
      return fn(RowF16Of<uint8_t>());
    case DType::kQ8_0:
      return fn(RowQ8_0());
    case DType::kQ4_0:
      return fn(RowQ4_0());
    default:
      SNUG_CHECK(false && "attention_kv_heads: not a KV type");
  }
}
#endif

void AttentionKvHeads(const float* q, int64_t nh, const PagedKvRows& k, const PagedKvRows& v,
                      int64_t n, int64_t dk, int64_t dv, float scale, float* out, float* scratch) {
#if SNUG_X86_AVX2
  if (!ggml_order() && dk % 16 == 0 && dv % 16 == 0) {
    ForHeadGroups(nh, [&](auto hc, int64_t h) {
      WithRowFormat(k.type, [&](auto kf) {
        WithRowFormat(v.type, [&](auto vf) {
          HeadsGrouped<decltype(kf), decltype(vf), decltype(hc)::value>(
              q + h * dk, RowsOf(k), RowsOf(v), n, dk, dv, scale, out + h * dv, scratch);
        });
      });
    });
    return;
  }
#endif
  for (int64_t h = 0; h < nh; ++h) {
    AttentionFlash(q + h * dk, k, v, n, dk, dv, scale, out + h * dv, scratch);
  }
}

const char* AttentionKernel(DType kv) {
  switch (kv) {
    case DType::kF16:
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
      return "avx512-f16-heads";
#elif SNUG_X86_AVX2
      return ggml_order() ? "f16-ggml" : "avx2-f16-heads";
#else
      return "f16-ggml";
#endif
    case DType::kQ8_0:
    case DType::kQ4_0:
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
      if (!ggml_order()) return "avx512-dequant-heads";
#endif
      if (SNUG_X86_AVX2 && !ggml_order()) return "avx2-dequant-heads";
      return SNUG_X86_VNNI512 ? "avx512vnni-int8" : SNUG_X86_AVX2 ? "avx2-int8" : "generic";
    default:
      return nullptr;
  }
}

}  // namespace snug::tensor::HWY_NAMESPACE
#if SNUG_X86_VNNI512
SNUG_END_VNNI
#endif
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace snug::tensor {

HWY_EXPORT(AttentionFlash);
HWY_EXPORT(AttentionKernel);
HWY_EXPORT(AttentionF16Heads);
HWY_EXPORT(AttentionKvHeads);

const char* attention_kernel(DType kv) {
  return HWY_DYNAMIC_DISPATCH(AttentionKernel)(kv);
}

int64_t attention_heads_scratch_floats(int64_t n, int64_t nh, int64_t dk, int64_t dv) {
  return std::max(attention_ggml_heads_scratch_floats(n, nh, dk, dv),
                  std::min<int64_t>(nh, 4) * ((n + 15) / 16 * 16));
}

void attention_f16_heads(const float* q, int64_t nh, const PagedRows& k, const PagedRows& v,
                         int64_t n, int64_t dk, int64_t dv, float scale, SumOrder order, float* out,
                         float* scratch) {
  HWY_DYNAMIC_DISPATCH(AttentionF16Heads)
  (q, nh, k, v, n, dk, dv, scale, order == SumOrder::kGemm, out, scratch);
}

int64_t attention_flash_scratch_floats(int64_t dk, int64_t dv) {
  // The accumulator, then the query: dk floats (f16 K) or dk / 32 BlockQ8A.
  return (dv + 7) / 8 * 8 + (dk + 7) / 8 * 8;
}

int64_t attention_kv_heads_scratch_floats(int64_t n, int64_t nh, int64_t dk, int64_t dv) {
  return std::max(attention_flash_scratch_floats(dk, dv),
                  std::min<int64_t>(nh, 4) * ((n + 15) / 16 * 16));
}

void attention_kv_heads(const float* q, int64_t nh, const PagedKvRows& k, const PagedKvRows& v,
                        int64_t n, int64_t dk, int64_t dv, float scale, float* out,
                        float* scratch) {
  SNUG_CHECK(dk % info(k.type).block_size == 0 && dv % info(v.type).block_size == 0);
  SNUG_DCHECK(k.row_bytes == *row_bytes(k.type, dk) && v.row_bytes == *row_bytes(v.type, dv));
  HWY_DYNAMIC_DISPATCH(AttentionKvHeads)(q, nh, k, v, n, dk, dv, scale, out, scratch);
}

void attention_flash_ggml(const float* q, const PagedKvRows& k, const PagedKvRows& v, int64_t n,
                          int64_t dk, int64_t dv, float scale, float* out, float* scratch) {
  SNUG_CHECK(dk % info(k.type).block_size == 0 && dv % info(v.type).block_size == 0);
  SNUG_DCHECK(k.row_bytes == *row_bytes(k.type, dk) && v.row_bytes == *row_bytes(v.type, dv));
  HWY_DYNAMIC_DISPATCH(AttentionFlash)(q, k, v, n, dk, dv, scale, out, scratch);
}

}  // namespace snug::tensor
#endif  // HWY_ONCE
