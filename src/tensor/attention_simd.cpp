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

#include <cmath>
#include <cstring>

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
  for (int64_t b = 0; b * bt < n; ++b) {
    const uint8_t* kr = k.blocks[b];
    const uint8_t* vr = v.blocks[b];
    const int64_t end = n - b * bt < bt ? n - b * bt : bt;
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

const char* AttentionKernel(DType kv) {
  switch (kv) {
    case DType::kF16:
      return "f16-ggml";
    case DType::kQ8_0:
    case DType::kQ4_0:
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

const char* attention_kernel(DType kv) {
  return HWY_DYNAMIC_DISPATCH(AttentionKernel)(kv);
}

int64_t attention_flash_scratch_floats(int64_t dk, int64_t dv) {
  // The accumulator, then the query: dk floats (f16 K) or dk / 32 BlockQ8A.
  return (dv + 7) / 8 * 8 + (dk + 7) / 8 * 8;
}

void attention_flash_ggml(const float* q, const PagedKvRows& k, const PagedKvRows& v, int64_t n,
                          int64_t dk, int64_t dv, float scale, float* out, float* scratch) {
  SNUG_CHECK(dk % info(k.type).block_size == 0 && dv % info(v.type).block_size == 0);
  SNUG_DCHECK(k.row_bytes == *row_bytes(k.type, dk) && v.row_bytes == *row_bytes(v.type, dv));
  HWY_DYNAMIC_DISPATCH(AttentionFlash)(q, k, v, n, dk, dv, scale, out, scratch);
}

}  // namespace snug::tensor
#endif  // HWY_ONCE
