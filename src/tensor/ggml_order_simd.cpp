// Kernels whose rounding must follow llama.cpp's CPU backend operation for
// operation (see "ggml order" in kernels.h): the f16 dot products and
// accumulations of attention, the exp approximation of softmax and SiLU.
// On x86 targets with AVX2 they use the same instructions as ggml, so each
// lane rounds identically; other targets compute the same values with scalar
// std::fma (exact by definition), only slower.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "tensor/ggml_order_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>

#include "tensor/fp16.h"
#include "tensor/kernels.h"
#include "tensor/kernels_ref.h"
#include "tensor/kernels_simd.h"
#include "tensor/quant_blocks.h"
#include "tensor/quant_common.h"

#if HWY_ARCH_X86
#include <immintrin.h>
#endif

HWY_BEFORE_NAMESPACE();
namespace snug::tensor::HWY_NAMESPACE {

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
#define SNUG_GGML_AVX2 1

HWY_INLINE __m256 LoadF16x8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// tinyBLAS's hsum: ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)).
HWY_INLINE float Hsum8(__m256 x) {
  __m128 s = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// ggml_v_expf: Cody-Waite reduction, degree-5 polynomial, two-step scaling for
// |n| > 126 and saturation for |n| > 192.
HWY_INLINE __m256 Exp8(__m256 x) {
  const __m256 r = _mm256_set1_ps(0x1.8p23f);
  const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), r);
  const __m256 n = _mm256_sub_ps(z, r);
  const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                    _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
  const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
  const __m256 k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1))));
  const __m256 abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.f), n);
  const __m256i c = _mm256_castps_si256(_mm256_cmp_ps(abs_n, _mm256_set1_ps(126), _CMP_GT_OQ));
  const __m256 u = _mm256_mul_ps(b, b);
  const __m256 j = _mm256_fmadd_ps(
      _mm256_fmadd_ps(
          _mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
          _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
      u, _mm256_mul_ps(_mm256_set1_ps(0x1.ffffecp-1f), b));
  if (!_mm256_movemask_ps(_mm256_castsi256_ps(c))) return _mm256_fmadd_ps(j, k, k);
  const __m256i g =
      _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
                       _mm256_set1_epi32(static_cast<int>(0x82000000u)));
  const __m256 s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f000000)));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
  const __m256i d = _mm256_castps_si256(_mm256_cmp_ps(abs_n, _mm256_set1_ps(192), _CMP_GT_OQ));
  return _mm256_or_ps(
      _mm256_and_ps(_mm256_castsi256_ps(d), _mm256_mul_ps(s1, s1)),
      _mm256_andnot_ps(
          _mm256_castsi256_ps(d),
          _mm256_or_ps(
              _mm256_and_ps(_mm256_castsi256_ps(c), _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1)),
              _mm256_andnot_ps(_mm256_castsi256_ps(c), _mm256_fmadd_ps(k, j, k)))));
}

#if HWY_TARGET <= HWY_AVX3
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// Exp8's arithmetic on sixteen lanes, its selections by mask: each lane the
// same operations, so the same bits.
HWY_INLINE __m512 Exp16(__m512 x) {
  const __m512 r = _mm512_set1_ps(0x1.8p23f);
  const __m512 z = _mm512_fmadd_ps(x, _mm512_set1_ps(0x1.715476p+0f), r);
  const __m512 n = _mm512_sub_ps(z, r);
  const __m512 b = _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.7f7d1cp-20f),
                                    _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.62e4p-1f), x));
  const __m512i e = _mm512_slli_epi32(_mm512_castps_si512(z), 23);
  const __m512 k = _mm512_castsi512_ps(_mm512_add_epi32(e, _mm512_castps_si512(_mm512_set1_ps(1))));
  const __m512 abs_n = _mm512_abs_ps(n);
  const __mmask16 c = _mm512_cmp_ps_mask(abs_n, _mm512_set1_ps(126), _CMP_GT_OQ);
  const __m512 u = _mm512_mul_ps(b, b);
  const __m512 j = _mm512_fmadd_ps(
      _mm512_fmadd_ps(
          _mm512_fmadd_ps(_mm512_set1_ps(0x1.0e4020p-7f), b, _mm512_set1_ps(0x1.573e2ep-5f)), u,
          _mm512_fmadd_ps(_mm512_set1_ps(0x1.555e66p-3f), b, _mm512_set1_ps(0x1.fffdb6p-2f))),
      u, _mm512_mul_ps(_mm512_set1_ps(0x1.ffffecp-1f), b));
  const __m512 fast = _mm512_fmadd_ps(j, k, k);
  if (c == 0) return fast;
  const __m512i g = _mm512_maskz_set1_epi32(_mm512_cmp_ps_mask(n, _mm512_setzero_ps(), _CMP_LE_OQ),
                                            static_cast<int>(0x82000000u));
  const __m512 s1 = _mm512_castsi512_ps(_mm512_add_epi32(g, _mm512_set1_epi32(0x7f000000)));
  const __m512 s2 = _mm512_castsi512_ps(_mm512_sub_epi32(e, g));
  const __mmask16 d = _mm512_cmp_ps_mask(abs_n, _mm512_set1_ps(192), _CMP_GT_OQ);
  const __m512 out = _mm512_mask_mov_ps(fast, c, _mm512_mul_ps(_mm512_fmadd_ps(s2, j, s2), s1));
  return _mm512_mask_mov_ps(out, d, _mm512_mul_ps(s1, s1));
}
// Hsum8 of each half of v: lanes 0-7's in *lo, 8-15's in *hi.
HWY_INLINE void Hsum8Halves(__m512 v, float* lo, float* hi) {
  *lo = Hsum8(_mm512_castps512_ps256(v));
  *hi = Hsum8(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}
#pragma GCC diagnostic pop
#endif

// One K row's dot products with C f16-rounded queries (qh, dk floats
// apart), up to the horizontal sum: gemm, DotF16Ordered's GEMM order (one
// accumulator); else ggml_vec_dot_f16's (accumulators j = 0..3 over
// 32-element steps, then (a0 + a2) + (a1 + a3); the pairs are added as they
// finish, so two accumulators per head are live).
template <int C>
HWY_INLINE void ScoreLanes(const uint16_t* kr, const float* qh, int64_t dk, bool gemm,
                           __m256* out) {
  if (gemm) {
    for (int h = 0; h < C; ++h) out[h] = _mm256_setzero_ps();
    for (int64_t i = 0; i < dk; i += 8) {
      const __m256 kv = LoadF16x8(kr + i);
      for (int h = 0; h < C; ++h)
        out[h] = _mm256_fmadd_ps(kv, _mm256_loadu_ps(qh + h * dk + i), out[h]);
    }
    return;
  }
  __m256 s02[C], s13[C];
  for (int j0 = 0; j0 < 2; ++j0) {
    for (int j = j0; j < 4; j += 2) {
      __m256 a[C];
      for (__m256& x : a) x = _mm256_setzero_ps();
      for (int64_t i = 8 * j; i < dk; i += 32) {
        const __m256 kv = LoadF16x8(kr + i);
        for (int h = 0; h < C; ++h)
          a[h] = _mm256_fmadd_ps(kv, _mm256_loadu_ps(qh + h * dk + i), a[h]);
      }
      __m256* dst = j0 == 0 ? s02 : s13;
      for (int h = 0; h < C; ++h) dst[h] = j < 2 ? a[h] : _mm256_add_ps(dst[h], a[h]);
    }
  }
  for (int h = 0; h < C; ++h) out[h] = _mm256_add_ps(s02[h], s13[h]);
}

// The horizontal sum that finishes ScoreLanes: both orders first add the
// halves (u = lo + hi); then gemm, tinyBLAS's (u0 + u2) + (u1 + u3); else
// ggml's two horizontal adds, (u0 + u1) + (u2 + u3).
HWY_INLINE float Reduce1(__m256 a, bool gemm) {
  if (gemm) return Hsum8(a);
  const __m128 t0 = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  const __m128 t1 = _mm_hadd_ps(t0, t0);
  return _mm_cvtss_f32(_mm_hadd_ps(t1, t1));
}
#endif

float F16(uint16_t h) {
  return detail::f16_to_f32(h);
}

// ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), scalar.
float Hsum8Scalar(const float* l) {
  const float s0 = l[0] + l[4], s1 = l[1] + l[5], s2 = l[2] + l[6], s3 = l[3] + l[7];
  return (s0 + s2) + (s1 + s3);
}

float DotF16Ordered(const uint16_t* a, const float* b, int64_t n, bool gemm) {
  if (gemm && n % 8 == 0) {
#ifdef SNUG_GGML_AVX2
    __m256 acc;
    ScoreLanes<1>(a, b, n, true, &acc);
    return Reduce1(acc, true);
#else
    float acc[8] = {};
    for (int64_t i = 0; i < n; i += 8) {
      for (int l = 0; l < 8; ++l) acc[l] = std::fma(F16(a[i + l]), b[i + l], acc[l]);
    }
    return Hsum8Scalar(acc);
#endif
  }
  const int64_t np = n - n % 32;
  float r;
#ifdef SNUG_GGML_AVX2
  __m256 acc;
  ScoreLanes<1>(a, b, np, false, &acc);
  r = Reduce1(acc, false);
#else
  float s[32] = {};
  for (int64_t i = 0; i < np; i += 32) {
    for (int l = 0; l < 32; ++l) s[l] = std::fma(F16(a[i + l]), b[i + l], s[l]);
  }
  for (int l = 0; l < 8; ++l) {
    s[l] += s[l + 16];
    s[l + 8] += s[l + 24];
  }
  for (int l = 0; l < 8; ++l) s[l] += s[l + 8];
  const float t0 = s[0] + s[4], t1 = s[1] + s[5], t2 = s[2] + s[6], t3 = s[3] + s[7];
  r = (t0 + t1) + (t2 + t3);
#endif
  double sum = r;
  for (int64_t i = np; i < n; ++i) sum += static_cast<double>(F16(a[i]) * b[i]);
  return static_cast<float>(sum);
}

void FmaF16(float s, const uint16_t* x, float* acc, int64_t n) {
  int64_t i = 0;
#ifdef SNUG_GGML_AVX2
  const __m256 vs = _mm256_set1_ps(s);
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(LoadF16x8(x + i), vs, _mm256_loadu_ps(acc + i)));
  }
#endif
  for (; i < n; ++i) acc[i] = std::fma(F16(x[i]), s, acc[i]);
}

double ExpSumGgml(float* x, int64_t n, float max) {
  double sum = 0;
  int64_t i = 0;
#ifdef SNUG_GGML_AVX2
#if HWY_TARGET <= HWY_AVX3
  for (; i + 16 <= n; i += 16) {  // two chunks of 8, their sums added in turn
    const __m512 v = Exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), _mm512_set1_ps(max)));
    _mm512_storeu_ps(x + i, v);
    float lo, hi;
    Hsum8Halves(v, &lo, &hi);
    sum += static_cast<double>(lo);
    sum += static_cast<double>(hi);
  }
#endif
  for (; i + 8 <= n; i += 8) {
    const __m256 v = Exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(max)));
    _mm256_storeu_ps(x + i, v);
    sum += static_cast<double>(Hsum8(v));
  }
#endif
  // The last, partial chunk (or all chunks without AVX2): lanes past n are
  // the zeros that masked positions contribute in llama.cpp.
  for (; i < n; i += 8) {
    float lanes[8] = {};
    for (int l = 0; l < 8 && i + l < n; ++l) lanes[l] = x[i + l] = exp_ggml(x[i + l] - max);
    sum += static_cast<double>(Hsum8Scalar(lanes));
  }
  return sum;
}

void SiluMulGgml(float* gate, const float* up, int64_t n) {
  int64_t i = 0;
#ifdef SNUG_GGML_AVX2
#if HWY_TARGET <= HWY_AVX3
  for (; i + 16 <= n; i += 16) {
    const __m512 x = _mm512_loadu_ps(gate + i);
    const __m512 silu = _mm512_div_ps(
        x, _mm512_add_ps(_mm512_set1_ps(1.f), Exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
    _mm512_storeu_ps(gate + i, _mm512_mul_ps(silu, _mm512_loadu_ps(up + i)));
  }
#endif
  const __m256 one = _mm256_set1_ps(1.f);
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(gate + i);
    const __m256 silu =
        _mm256_div_ps(x, _mm256_add_ps(one, Exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
    _mm256_storeu_ps(gate + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
  }
#else
  for (const int64_t n8 = n - n % 8; i < n8; ++i)
    gate[i] = (gate[i] / (1.0f + exp_ggml(-gate[i]))) * up[i];
#endif
  // ggml's tail (n % 8 elements) uses libm's expf.
  for (; i < n; ++i) gate[i] = (gate[i] / (1.0f + std::exp(-gate[i]))) * up[i];
}

// ref::rms_norm_rows's bits: each row's squares (float products) summed in
// double one element after another, as ggml's scalar loop does, but eight
// rows at a time in the eight lanes of a register, an 8 x 8 transpose handing
// each lane its row's next eight squares in order; sixteen rows take two such
// sums side by side. The scalar loop, four rows interleaved, was one double
// add a cycle at best (16 streams on Zen 4: 1.8% of a step). The scaling,
// (x * scale) * weight, is the same two roundings per element, 16 at a time.
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// v[k] lane j = v[j] lane k, for eight registers of eight floats.
HWY_INLINE void Transpose8x8(__m256 v[8]) {
  __m256 t[8], u[8];
  for (int h = 0; h < 2; ++h) {
    t[4 * h] = _mm256_unpacklo_ps(v[4 * h], v[4 * h + 1]);
    t[4 * h + 1] = _mm256_unpackhi_ps(v[4 * h], v[4 * h + 1]);
    t[4 * h + 2] = _mm256_unpacklo_ps(v[4 * h + 2], v[4 * h + 3]);
    t[4 * h + 3] = _mm256_unpackhi_ps(v[4 * h + 2], v[4 * h + 3]);
    u[4 * h] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0x44);
    u[4 * h + 1] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0xEE);
    u[4 * h + 2] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0x44);
    u[4 * h + 3] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0xEE);
  }
  for (int k = 0; k < 4; ++k) {
    v[k] = _mm256_permute2f128_ps(u[k], u[4 + k], 0x20);
    v[4 + k] = _mm256_permute2f128_ps(u[k], u[4 + k], 0x31);
  }
}
// acc lane j += the squares of row j's elements [i, i + 8), in order.
HWY_INLINE __m512d AddSquares8(const float* x, int64_t n, int64_t i, __m512d acc) {
  __m256 v[8];
  for (int j = 0; j < 8; ++j) {
    const __m256 e = _mm256_loadu_ps(x + j * n + i);
    v[j] = _mm256_mul_ps(e, e);
  }
  Transpose8x8(v);
  for (int k = 0; k < 8; ++k) acc = _mm512_add_pd(acc, _mm512_cvtps_pd(v[k]));
  return acc;
}
HWY_INLINE void RmsScale(const float* x, double ss, const float* w, float* y, int64_t n,
                         float eps) {
  const auto mean = static_cast<float>(ss / static_cast<double>(n));
  const float scale = 1.0f / std::sqrt(mean + eps);
  const __m512 s = _mm512_set1_ps(scale);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(
        y + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), s), _mm512_loadu_ps(w + i)));
  }
  for (; i < n; ++i) y[i] = (x[i] * scale) * w[i];
}
#pragma GCC diagnostic pop
#endif

void RmsNormRows(const float* x, const float* w, float* y, int64_t n, int64_t rows, float eps) {
  int64_t r = 0;
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  if (n % 8 == 0) {
    alignas(64) double ss[16];
    for (; r + 8 <= rows; r += 8) {
      const float* x0 = x + r * n;
      const bool two = r + 16 <= rows;  // a second group of eight beside the first
      __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
      for (int64_t i = 0; i < n; i += 8) {
        a0 = AddSquares8(x0, n, i, a0);
        if (two) a1 = AddSquares8(x0 + 8 * n, n, i, a1);
      }
      _mm512_store_pd(ss, a0);
      _mm512_store_pd(ss + 8, a1);
      const int g = two ? 16 : 8;
      for (int j = 0; j < g; ++j) RmsScale(x0 + j * n, ss[j], w, y + (r + j) * n, n, eps);
      r += g - 8;
    }
  }
#endif
  if (r < rows) ref::rms_norm_rows(x + r * n, w, y + r * n, n, rows - r, eps);
}

// ref::gelu_mul with ggml's table (ref::gelu_f16_table) at `table`.
void GeluMulGgml(float* gate, const float* up, int64_t n, const uint16_t* table) {
  int64_t i = 0;
#ifdef SNUG_GGML_AVX2
  const __m256 lo = _mm256_set1_ps(-10.f), hi = _mm256_set1_ps(10.f);
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(gate + i);
    alignas(16) uint16_t h[8];
    _mm_store_si128(reinterpret_cast<__m128i*>(h), _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
    for (uint16_t& v : h) v = table[v];
    __m256 g = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(h)));
    g = _mm256_blendv_ps(g, x, _mm256_cmp_ps(x, hi, _CMP_GE_OQ));
    const __m256 y = _mm256_mul_ps(g, _mm256_loadu_ps(up + i));
    // 0 at or below -10, whatever up holds (ggml stores 0.0f there).
    _mm256_storeu_ps(gate + i, _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LE_OQ), y));
  }
#else
  (void)table;
#endif
  ref::gelu_mul(gate + i, up + i, n - i);
}

float RoundF16(float x) {
#ifdef SNUG_GGML_AVX2
  return _cvtsh_ss(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT));
#else
  return detail::f16_to_f32(detail::f32_to_f16(x));
#endif
}

// Slot rows acc[0..slots) of dv floats folded to out in ggml's order: tinyBLAS's
// hsum for 8 slots, GGML_F32x8_REDUCE for 32. Element-wise across d, so the
// vector loop rounds exactly like the scalar one.
void FoldSlots(float* acc, int slots, int64_t dv, float* out) {
  auto row = [&](int l) { return acc + static_cast<int64_t>(l) * dv; };
  auto add_rows = [&](float* dst, const float* src) {
    int64_t d = 0;
#ifdef SNUG_GGML_AVX2
    for (; d + 8 <= dv; d += 8)
      _mm256_storeu_ps(dst + d, _mm256_add_ps(_mm256_loadu_ps(dst + d), _mm256_loadu_ps(src + d)));
#endif
    for (; d < dv; ++d) dst[d] += src[d];
  };
  if (slots == 32) {
    for (int l = 0; l < 8; ++l) {
      add_rows(row(l), row(l + 16));
      add_rows(row(l + 8), row(l + 24));
    }
    for (int l = 0; l < 8; ++l) add_rows(row(l), row(l + 8));
    // t_i = l_i + l_{i+4}; (t0 + t1) + (t2 + t3)
    for (int l = 0; l < 4; ++l) add_rows(row(l), row(l + 4));
    add_rows(row(0), row(1));
    add_rows(row(2), row(3));
    add_rows(row(0), row(2));
  } else {
    // s_i = l_i + l_{i+4}; (s0 + s2) + (s1 + s3)
    for (int l = 0; l < 4; ++l) add_rows(row(l), row(l + 4));
    add_rows(row(0), row(2));
    add_rows(row(1), row(3));
    add_rows(row(0), row(1));
  }
  std::memcpy(out, row(0), sizeof(float) * static_cast<size_t>(dv));
}

void AttentionF16Ggml(const float* q, const PagedRows& k, const PagedRows& v, int64_t n, int64_t dk,
                      int64_t dv, float scale, bool gemm, float* out, float* scratch) {
  const int slots = gemm ? 8 : 32;
  float* p = scratch;                  // [n rounded up to 8]
  float* qh = p + (n + 7) / 8 * 8;     // [dk]
  float* acc = qh + (dk + 7) / 8 * 8;  // [slots][dv]
  for (int64_t i = 0; i < dk; ++i) qh[i] = RoundF16(q[i]);
  const int64_t bt = k.block_tokens;
  float mx = -INFINITY;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t at = t + k.first;
    const uint16_t* kr = k.blocks[at / bt] + (at % bt) * k.row_elems;
    const float s = DotF16Ordered(kr, qh, dk, gemm) * scale;
    p[t] = s;
    mx = s > mx ? s : mx;
  }
  const auto inv = static_cast<float>(1.0 / ExpSumGgml(p, n, mx));
  std::memset(acc, 0, sizeof(float) * static_cast<size_t>(slots) * static_cast<size_t>(dv));
  for (int64_t t = 0; t < n; ++t) {
    const int64_t at = t + v.first;
    const uint16_t* vr = v.blocks[at / bt] + (at % bt) * v.row_elems;
    FmaF16(RoundF16(p[t] * inv), vr, acc + (t % slots) * dv, dv);
  }
  FoldSlots(acc, slots, dv, out);
}

#ifdef SNUG_GGML_AVX2
// Asks for an f16 row of `elems` elements into L2.
HWY_INLINE void PrefetchRow(const uint16_t* row, int64_t elems) {
  for (int64_t i = 0; i < 2 * elems; i += 64)
    __builtin_prefetch(reinterpret_cast<const char*>(row) + i, 0, 2);
}

// Reduce1 of eight vectors at once, lane i for a[i]: the same additions of
// the same operands, done on two positions per register (u of positions
// 2i, 2i + 1 in one), then three horizontal adds for all eight.
HWY_INLINE __m256 Reduce8(const __m256* a, bool gemm) {
  __m256 u[4];
  for (int i = 0; i < 4; ++i) {
    u[i] = _mm256_add_ps(_mm256_permute2f128_ps(a[2 * i], a[2 * i + 1], 0x20),
                         _mm256_permute2f128_ps(a[2 * i], a[2 * i + 1], 0x31));
    if (gemm) u[i] = _mm256_permute_ps(u[i], _MM_SHUFFLE(3, 1, 2, 0));  // u0 u2 u1 u3
  }
  const __m256 r = _mm256_hadd_ps(_mm256_hadd_ps(u[0], u[1]), _mm256_hadd_ps(u[2], u[3]));
  return _mm256_permutevar8x32_ps(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// AttentionF16Ggml for C query heads that share one K and V head, with the
// same bits head by head: each K row and each V row is loaded and widened
// once for all C heads, and the value sums of a slot are carried in
// registers over its positions (t, t + slots, ...) instead of read and
// written back at every position. Every dot product and every slot sum
// takes the same operations in the same order as AttentionF16Ggml.
// Needs dk % 32 == 0 and dv % 16 == 0; scratch as attention_f16_ggml_heads.
template <int C>
void AttentionF16GgmlHeadsAvx2(const float* q, const PagedRows& k, const PagedRows& v, int64_t n,
                               int64_t dk, int64_t dv, float scale, bool gemm, float* out,
                               float* scratch) {
  const int slots = gemm ? 8 : 32;
  const int64_t pn = (n + 7) / 8 * 8;
  float* p = scratch;        // [C][pn]
  float* qh = p + C * pn;    // [C][dk]
  float* acc = qh + C * dk;  // [C][slots][dv]
  // [pn] V row pointers, found once (the value pass visits each row dv / 16 times).
  auto** vrows = reinterpret_cast<const uint16_t**>(acc + static_cast<int64_t>(C) * slots * dv);
  for (int h = 0; h < C; ++h) {
    for (int64_t i = 0; i < dk; ++i) qh[h * dk + i] = RoundF16(q[h * dk + i]);
  }
  const int64_t bt = k.block_tokens;
  float mx[C];
  for (float& m : mx) m = -INFINITY;
  // (block, row) cursors over K, V and the K rows asked for ahead: a
  // sequence's rows of one head are short runs (a block's rows) scattered
  // over the pool, which the hardware prefetchers do not follow from one to
  // the next. K is asked for kAhead positions early, each V row as its K row
  // is scored (the value pass reads it next), both into L2.
  struct Cursor {
    int64_t b, j;
    void step(int64_t rows) {
      if (++j == rows) ++b, j = 0;
    }
  };
  constexpr int64_t kAhead = 32;
  Cursor kc{k.first / bt, k.first % bt}, vc{v.first / bt, v.first % bt}, ahead = kc;
  for (int64_t t = 0; t < kAhead && t < n; ++t, ahead.step(bt)) {
    PrefetchRow(k.blocks[ahead.b] + ahead.j * k.row_elems, k.row_elems);
  }
  auto rows = [&](int64_t t) {  // t: the position kc and vc point at
    const uint16_t* vr = v.blocks[vc.b] + vc.j * v.row_elems;
    const uint16_t* kr = k.blocks[kc.b] + kc.j * k.row_elems;
    vrows[t] = vr;
    PrefetchRow(vr, v.row_elems);
    if (t + kAhead < n) {  // ahead points at t + kAhead
      PrefetchRow(k.blocks[ahead.b] + ahead.j * k.row_elems, k.row_elems);
      ahead.step(bt);
    }
    kc.step(bt);
    vc.step(bt);
    return kr;
  };
  // Eight positions at a time, their sums finished together (Reduce8).
  int64_t pos = 0;
  for (; pos + 8 <= n; pos += 8) {
    __m256 lanes[C][8];
    for (int i = 0; i < 8; ++i) {
      __m256 a[C];
      ScoreLanes<C>(rows(pos + i), qh, dk, gemm, a);
      for (int h = 0; h < C; ++h) lanes[h][i] = a[h];
    }
    for (int h = 0; h < C; ++h) {
      float* ph = p + h * pn + pos;
      _mm256_storeu_ps(ph, _mm256_mul_ps(Reduce8(lanes[h], gemm), _mm256_set1_ps(scale)));
      for (int i = 0; i < 8; ++i) mx[h] = ph[i] > mx[h] ? ph[i] : mx[h];
    }
  }
  for (; pos < n; ++pos) {
    __m256 a[C];
    ScoreLanes<C>(rows(pos), qh, dk, gemm, a);
    for (int h = 0; h < C; ++h) {
      const float x = Reduce1(a[h], gemm) * scale;
      p[h * pn + pos] = x;
      mx[h] = x > mx[h] ? x : mx[h];
    }
  }
  for (int h = 0; h < C; ++h) {
    float* ph = p + h * pn;
    const auto inv = static_cast<float>(1.0 / ExpSumGgml(ph, n, mx[h]));
    int64_t t = 0;
    for (; t + 8 <= n; t += 8) {  // RoundF16(ph[t] * inv), eight at a time
      const __m256 w = _mm256_mul_ps(_mm256_loadu_ps(ph + t), _mm256_set1_ps(inv));
      _mm256_storeu_ps(ph + t, _mm256_cvtph_ps(_mm256_cvtps_ph(w, _MM_FROUND_TO_NEAREST_INT)));
    }
    for (; t < n; ++t) ph[t] = RoundF16(ph[t] * inv);
  }
  // Slot sl's sums over its positions, 16 columns at a time, in registers.
  for (int64_t c = 0; c < dv; c += 16) {
    for (int sl = 0; sl < slots; ++sl) {
      __m256 a[C][2];
      for (auto& x : a) x[0] = x[1] = _mm256_setzero_ps();
      for (int64_t t = sl; t < n; t += slots) {
        const uint16_t* vr = vrows[t] + c;
        const __m256 v0 = LoadF16x8(vr), v1 = LoadF16x8(vr + 8);
        for (int h = 0; h < C; ++h) {
          const __m256 w = _mm256_broadcast_ss(p + h * pn + t);
          a[h][0] = _mm256_fmadd_ps(v0, w, a[h][0]);
          a[h][1] = _mm256_fmadd_ps(v1, w, a[h][1]);
        }
      }
      for (int h = 0; h < C; ++h) {
        float* row = acc + (static_cast<int64_t>(h) * slots + sl) * dv + c;
        _mm256_storeu_ps(row, a[h][0]);
        _mm256_storeu_ps(row + 8, a[h][1]);
      }
    }
  }
  for (int h = 0; h < C; ++h) {
    FoldSlots(acc + static_cast<int64_t>(h) * slots * dv, slots, dv, out + h * dv);
  }
}
#endif

void AttentionF16GgmlHeads(const float* q, int64_t nh, const PagedRows& k, const PagedRows& v,
                           int64_t n, int64_t dk, int64_t dv, float scale, bool gemm, float* out,
                           float* scratch) {
#ifdef SNUG_GGML_AVX2
  if (dk % 32 == 0 && dv % 16 == 0) {
    for (int64_t h = 0; h < nh;) {
      const int64_t c = std::min<int64_t>(nh - h, 4);
      const float* qh = q + h * dk;
      float* oh = out + h * dv;
      switch (c) {
        case 1:
          AttentionF16GgmlHeadsAvx2<1>(qh, k, v, n, dk, dv, scale, gemm, oh, scratch);
          break;
        case 2:
          AttentionF16GgmlHeadsAvx2<2>(qh, k, v, n, dk, dv, scale, gemm, oh, scratch);
          break;
        case 3:
          AttentionF16GgmlHeadsAvx2<3>(qh, k, v, n, dk, dv, scale, gemm, oh, scratch);
          break;
        default:
          AttentionF16GgmlHeadsAvx2<4>(qh, k, v, n, dk, dv, scale, gemm, oh, scratch);
      }
      h += c;
    }
    return;
  }
#endif
  for (int64_t h = 0; h < nh; ++h)
    AttentionF16Ggml(q + h * dk, k, v, n, dk, dv, scale, gemm, out + h * dv, scratch);
}

// ref::rope_apply's arithmetic lane by lane: x0' = fma(x0, c, -(x1 * s)),
// x1' = fma(x0, s, x1 * c), so the same bits on every target.
void RopeApply(float* x, int64_t rot_dim, const float* cs, bool neox) {
  const int64_t half = rot_dim / 2;
  int64_t i = 0;
#ifdef SNUG_GGML_AVX2
  if (!neox) {
    // Four pairs at a time; cs holds (c, s) pairs in the same places.
    const __m256 even_sign = _mm256_setr_ps(-0.f, 0.f, -0.f, 0.f, -0.f, 0.f, -0.f, 0.f);
    for (; i + 4 <= half; i += 4) {
      const __m256 v = _mm256_loadu_ps(x + 2 * i);
      const __m256 c = _mm256_loadu_ps(cs + 2 * i);  // c s c s ...
      const __m256 p = _mm256_mul_ps(_mm256_movehdup_ps(v), _mm256_permute_ps(c, 0xB1));
      _mm256_storeu_ps(x + 2 * i,
                       _mm256_fmadd_ps(_mm256_moveldup_ps(v), c, _mm256_xor_ps(p, even_sign)));
    }
  } else {
    // Eight rotations at a time: x0 from the first half, x1 from the second.
    for (; i + 8 <= half; i += 8) {
      const __m256 a = _mm256_loadu_ps(cs + 2 * i), b = _mm256_loadu_ps(cs + 2 * i + 8);
      // (c0 c1 c4 c5 | c2 c3 c6 c7) in 64-bit pieces, put back in order.
      const __m256 c = _mm256_castpd_ps(
          _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
      const __m256 s = _mm256_castpd_ps(
          _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
      const __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + half);
      const __m256 neg = _mm256_xor_ps(_mm256_mul_ps(x1, s), _mm256_set1_ps(-0.f));
      _mm256_storeu_ps(x + i, _mm256_fmadd_ps(x0, c, neg));
      _mm256_storeu_ps(x + i + half, _mm256_fmadd_ps(x0, s, _mm256_mul_ps(x1, c)));
    }
  }
#endif
  for (; i < half; ++i) {
    const float c = cs[2 * i], s = cs[2 * i + 1];
    const int64_t i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
    const float x0 = x[i0], x1 = x[i1];
    x[i0] = std::fma(x0, c, -(x1 * s));
    x[i1] = std::fma(x0, s, x1 * c);
  }
}

// f32 -> f16 (round to nearest even), as detail::f32_to_f16 element by
// element: vcvtps2ph rounds the same way; a chunk holding a NaN takes the
// scalar path, which writes the canonical quiet NaN.
void RowF32ToF16(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
#ifdef SNUG_GGML_AVX2
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)) != 0) {
      for (int l = 0; l < 8; ++l) y[i + l] = detail::f32_to_f16(x[i + l]);
      continue;
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i),
                     _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
#endif
  for (; i < n; ++i) y[i] = detail::f32_to_f16(x[i]);
}

// Activations for the 32-element formats (BlockQ8A), as ggml's x86
// quantize_row_q8_1: max |x| per block, q = round-to-even(x * 127 / amax),
// d and s = d * sum(q) stored rounded to f16. Same values as the scalar
// detail::quantize_row_q8a (max is exact; each lane rounds alike).
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() values, which
// -Wmaybe-uninitialized reports as read uninitialised once inlined here.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// Lane k of the result: v[k]'s sixteen lanes reduced by op (exact in any
// order: max, or int32 adds on float bits' registers), for sixteen registers
// at once: four levels of pairing, each halving the registers and the lanes a
// register's reduction spans (46 shuffles and ops where a reduction per
// register took 16 x 7), then a permutation into block order.
template <class Op>
HWY_INLINE __m512 ReduceEach16(__m512 v[16], Op op) {
  for (int i = 0; i < 8; ++i) {  // 128-bit lanes 0-1: register 2i's, 2-3: 2i + 1's
    v[i] = op(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
              _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  for (int i = 0; i < 4; ++i) {  // 128-bit lane L: register 4i + L's
    v[i] = op(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
              _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  }
  for (int i = 0; i < 2; ++i) {  // lane L, elements 0-1: register 8i + L's, 2-3: 8i + 4 + L's
    v[i] = op(_mm512_shuffle_ps(v[2 * i], v[2 * i + 1], 0x44),
              _mm512_shuffle_ps(v[2 * i], v[2 * i + 1], 0xEE));
  }
  // Lane L, element e: register 4e + L's.
  const __m512 r = op(_mm512_shuffle_ps(v[0], v[1], 0x88), _mm512_shuffle_ps(v[0], v[1], 0xDD));
  return _mm512_permutexvar_ps(
      _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), r);
}
// Up to sixteen blocks at once (nb of them), the same values as the loop
// below: one block at a time, its two divisions and two f16 roundings were
// one serial chain through scalar registers (16 streams on Zen 4: 4% of a
// step's time). Here each block's max and sum land in lane k of a register
// (ReduceEach16), and the divisions and roundings are done for all the lanes
// together; a row's last few blocks (a 576-wide row's 17th and 18th) take the
// same path with the lanes past nb left at zero. Two blocks' levels are
// narrowed together (saturating packs, one permutation back into order).
// In two halves, so that rows can overlap (QuantizeQ8ARows): Q8APrep, the
// maxima and the divisions; Q8AFinish, the levels, sums and scales.
struct Q8AGroup {
  const float* x;
  BlockQ8A* y;
  int nb;
  __m512 d, id;  // lane k: block k's scale (amax / 127) and 127 / amax (0 for amax 0)
};
// kNb: nb when known at compile time (16), else 0 (nb read at run time).
template <int kNb>
HWY_INLINE void Q8APrep(Q8AGroup& g) {
  const int nb = kNb != 0 ? kNb : g.nb;
  const __m512 sign = _mm512_set1_ps(-0.0f);
  __m512 v[16];
  for (int k = 0; k < 16; ++k) {
    v[k] = k < nb ? _mm512_max_ps(_mm512_andnot_ps(sign, _mm512_loadu_ps(g.x + 32 * k)),
                                  _mm512_andnot_ps(sign, _mm512_loadu_ps(g.x + 32 * k + 16)))
                  : _mm512_setzero_ps();
  }
  const __m512 amax = ReduceEach16(v, [](__m512 a, __m512 b) { return _mm512_max_ps(a, b); });
  const __m512 k127 = _mm512_set1_ps(127.f);
  g.d = _mm512_div_ps(amax, k127);
  g.id =
      _mm512_maskz_div_ps(_mm512_cmp_ps_mask(amax, _mm512_setzero_ps(), _CMP_NEQ_UQ), k127, amax);
}
template <int kNb>
HWY_INLINE void Q8AFinish(const Q8AGroup& g) {
  const int nb = kNb != 0 ? kNb : g.nb;
  const float* x = g.x;
  BlockQ8A* y = g.y;
  __m512 v[16];
  alignas(64) float ids[16];
  _mm512_store_ps(ids, g.id);
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  for (int k = 0; k < 16; k += 2) {
    __m512i q[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                    _mm512_setzero_si512()};
    for (int j = 0; j < 2 && k + j < nb; ++j) {
      const __m512 s = _mm512_set1_ps(ids[k + j]);
      q[2 * j] =
          _mm512_cvt_roundps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + 32 * (k + j)), s), kRne);
      q[2 * j + 1] =
          _mm512_cvt_roundps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + 32 * (k + j) + 16), s), kRne);
    }
    v[k] = _mm512_castsi512_ps(_mm512_add_epi32(q[0], q[1]));
    v[k + 1] = _mm512_castsi512_ps(_mm512_add_epi32(q[2], q[3]));
    if (k >= nb) continue;
    // 128-bit lane L: dwords block k's levels 4L.., 16 + 4L.., block k + 1's 4L.., 16 + 4L..
    const __m512i both = _mm512_permutexvar_epi32(
        order, _mm512_packs_epi16(_mm512_packs_epi32(q[0], q[1]), _mm512_packs_epi32(q[2], q[3])));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[k].qs), _mm512_castsi512_si256(both));
    if (k + 1 < nb) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[k + 1].qs),
                          _mm512_extracti64x4_epi64(both, 1));
    }
  }
  const __m512i sums = _mm512_castps_si512(ReduceEach16(v, [](__m512 a, __m512 b) {
    return _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(a), _mm512_castps_si512(b)));
  }));
  const auto round_f16 = [](__m512 v) {
    return _mm512_cvtph_ps(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  };
  // Each block's (d, s), adjacent in BlockQ8A, as one 8-byte pair.
  const __m512 dr = round_f16(g.d), sr = round_f16(_mm512_mul_ps(g.d, _mm512_cvtepi32_ps(sums)));
  alignas(64) uint64_t pairs[16];
  _mm512_store_ps(
      pairs,
      _mm512_permutex2var_ps(
          dr, _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23), sr));
  _mm512_store_ps(
      pairs + 8,
      _mm512_permutex2var_ps(
          dr, _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31), sr));
  static_assert(offsetof(BlockQ8A, s) == offsetof(BlockQ8A, d) + 4);
  for (int k = 0; k < nb; ++k) std::memcpy(&y[k].d, &pairs[k], 8);
}
HWY_INLINE void Q8APrepAny(Q8AGroup& g) {
  if (g.nb == 16) {
    Q8APrep<16>(g);
  } else {
    Q8APrep<0>(g);
  }
}
HWY_INLINE void Q8AFinishAny(const Q8AGroup& g) {
  if (g.nb == 16) {
    Q8AFinish<16>(g);
  } else {
    Q8AFinish<0>(g);
  }
}
// rows rows of n values at x + r * x_stride into BlockQ8A rows at dst + r *
// dst_stride bytes, the groups of sixteen blocks (a row's, then the next
// row's) pipelined: a group's maxima and divisions (Q8APrep) are started
// before the previous group's levels and scales (Q8AFinish), so the
// dependent chain each group is (maxima, two divisions, levels, sums, f16
// roundings) overlaps the next one's, where a group at a time each waited on
// its own divisions (kernels_bench, 16 rows on Zen 4: 576 wide 1.92 -> 1.41
// us, 1536 wide 3.45 -> 3.0).
HWY_INLINE void Q8APipeline(const float* x, int64_t x_stride, void* dst, int64_t dst_stride,
                            int64_t n, int64_t rows) {
  const int64_t nblk = n / 32, per_row = (nblk + 15) / 16, total = rows * per_row;
  if (total == 0) return;
  const auto group = [&](int64_t i) {
    const int64_t r = i / per_row, j = i % per_row;
    auto* y = reinterpret_cast<BlockQ8A*>(static_cast<char*>(dst) + r * dst_stride) + 16 * j;
    const int nb = static_cast<int>(nblk - 16 * j < 16 ? nblk - 16 * j : 16);
    return Q8AGroup{x + r * x_stride + 512 * j, y, nb, {}, {}};
  };
  Q8AGroup cur = group(0);
  Q8APrepAny(cur);
  for (int64_t i = 1; i < total; ++i) {
    Q8AGroup next = group(i);
    Q8APrepAny(next);
    Q8AFinishAny(cur);
    cur = next;
  }
  Q8AFinishAny(cur);
}
#pragma GCC diagnostic pop
#endif

void QuantizeQ8A(const float* x, void* dst, int64_t n) {
#if defined(SNUG_GGML_AVX2) && HWY_TARGET <= HWY_AVX3
  Q8APipeline(x, 0, dst, 0, n, 1);
#elif defined(SNUG_GGML_AVX2)
  auto* y = static_cast<BlockQ8A*>(dst);
  int64_t i = 0;
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (; i < n / 32; ++i, x += 32) {
    __m256 v[4];
    __m256 m = _mm256_setzero_ps();
    for (int j = 0; j < 4; ++j) {
      v[j] = _mm256_loadu_ps(x + 8 * j);
      m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[j]));
    }
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    const float d = amax / 127.f;
    const __m256 mul = _mm256_set1_ps(amax != 0.f ? 127.f / amax : 0.f);
    __m256i q[4];
    for (int j = 0; j < 4; ++j) {
      q[j] = _mm256_cvtps_epi32(
          _mm256_round_ps(_mm256_mul_ps(v[j], mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    const __m256i sum4 =
        _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    __m128i s4 = _mm_add_epi32(_mm256_extracti128_si256(sum4, 1), _mm256_castsi256_si128(sum4));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(1, 0, 3, 2)));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(2, 3, 0, 1)));
    const int sum = _mm_cvtsi128_si32(s4);
    // Pack 32 int32 -> 32 int8 in order (packs interleave 128-bit lanes; permute fixes it).
    const __m256i p16a = _mm256_packs_epi32(q[0], q[1]);
    const __m256i p16b = _mm256_packs_epi32(q[2], q[3]);
    __m256i p8 = _mm256_packs_epi16(p16a, p16b);
    p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[i].qs), p8);
    y[i].d = RoundF16(d);
    y[i].s = RoundF16(d * static_cast<float>(sum));
  }
#else
  detail::quantize_row_q8a(x, dst, n);
#endif
}

// rows rows of n values at x + r * x_stride into BlockQ8A rows at dst + r *
// dst_stride bytes: QuantizeQ8A's bytes, pipelined across rows on AVX-512.
void QuantizeQ8ARows(const float* x, int64_t x_stride, void* dst, int64_t dst_stride, int64_t n,
                     int64_t rows) {
#if defined(SNUG_GGML_AVX2) && HWY_TARGET <= HWY_AVX3
  Q8APipeline(x, x_stride, dst, dst_stride, n, rows);
#else
  for (int64_t r = 0; r < rows; ++r) {
    QuantizeQ8A(x + r * x_stride, static_cast<char*>(dst) + r * dst_stride, n);
  }
#endif
}

#undef SNUG_GGML_AVX2

}  // namespace snug::tensor::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace snug::tensor {

HWY_EXPORT(DotF16Ordered);
HWY_EXPORT(FmaF16);
HWY_EXPORT(ExpSumGgml);
HWY_EXPORT(SiluMulGgml);
HWY_EXPORT(GeluMulGgml);
HWY_EXPORT(AttentionF16Ggml);
HWY_EXPORT(AttentionF16GgmlHeads);
HWY_EXPORT(QuantizeQ8A);
HWY_EXPORT(QuantizeQ8ARows);
HWY_EXPORT(RowF32ToF16);
HWY_EXPORT(RopeApply);
HWY_EXPORT(RmsNormRows);

namespace simd {
void rope_apply(float* x, int64_t rot_dim, const float* cs, RopeMode mode) {
  HWY_DYNAMIC_DISPATCH(RopeApply)(x, rot_dim, cs, mode == RopeMode::kNeox);
}
void row_f32_to_f16(const float* x, uint16_t* y, int64_t n) {
  HWY_DYNAMIC_DISPATCH(RowF32ToF16)(x, y, n);
}
void quantize_row_q8a(const float* x, void* dst, int64_t n) {
  HWY_DYNAMIC_DISPATCH(QuantizeQ8A)(x, dst, n);
}
void quantize_rows_q8a(const float* x, int64_t x_stride, void* dst, int64_t dst_stride, int64_t n,
                       int64_t rows) {
  HWY_DYNAMIC_DISPATCH(QuantizeQ8ARows)(x, x_stride, dst, dst_stride, n, rows);
}
}  // namespace simd

int64_t attention_scratch_floats(int64_t n, int64_t dk, int64_t dv) {
  return (n + 7) / 8 * 8 + (dk + 7) / 8 * 8 + 32 * dv;
}

void attention_f16_ggml(const float* q, const PagedRows& k, const PagedRows& v, int64_t n,
                        int64_t dk, int64_t dv, float scale, SumOrder order, float* out,
                        float* scratch) {
  HWY_DYNAMIC_DISPATCH(AttentionF16Ggml)
  (q, k, v, n, dk, dv, scale, order == SumOrder::kGemm, out, scratch);
}

int64_t attention_ggml_heads_scratch_floats(int64_t n, int64_t nh, int64_t dk, int64_t dv) {
  const int64_t c = std::min<int64_t>(nh, 4);
  const int64_t pn = (n + 7) / 8 * 8;
  return std::max(
      attention_scratch_floats(n, dk, dv),
      c * (pn + dk + 32 * dv) + pn * static_cast<int64_t>(sizeof(void*) / sizeof(float)));
}

void attention_f16_ggml_heads(const float* q, int64_t nh, const PagedRows& k, const PagedRows& v,
                              int64_t n, int64_t dk, int64_t dv, float scale, SumOrder order,
                              float* out, float* scratch) {
  HWY_DYNAMIC_DISPATCH(AttentionF16GgmlHeads)
  (q, nh, k, v, n, dk, dv, scale, order == SumOrder::kGemm, out, scratch);
}

float dot_f16_ordered(const uint16_t* a, const float* b, int64_t n, SumOrder order) {
  return HWY_DYNAMIC_DISPATCH(DotF16Ordered)(a, b, n, order == SumOrder::kGemm);
}
void fma_f16(float s, const uint16_t* x, float* acc, int64_t n) {
  HWY_DYNAMIC_DISPATCH(FmaF16)(s, x, acc, n);
}
double exp_sum_ggml(float* x, int64_t n, float max) {
  return HWY_DYNAMIC_DISPATCH(ExpSumGgml)(x, n, max);
}

namespace simd {
void rms_norm_rows(const float* x, const float* weight, float* y, int64_t n, int64_t rows,
                   float eps) {
  HWY_DYNAMIC_DISPATCH(RmsNormRows)(x, weight, y, n, rows, eps);
}
void silu_mul(float* gate, const float* up, int64_t n) {
  HWY_DYNAMIC_DISPATCH(SiluMulGgml)(gate, up, n);
}
void gelu_mul(float* gate, const float* up, int64_t n) {
  HWY_DYNAMIC_DISPATCH(GeluMulGgml)(gate, up, n, ref::gelu_f16_table());
}
}  // namespace simd

}  // namespace snug::tensor
#endif  // HWY_ONCE
