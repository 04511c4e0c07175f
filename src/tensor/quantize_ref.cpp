// Scalar quantizers for the float and 32-element formats, bit-identical to
// ggml's quantize_row_*_ref; the K formats are in quantize_k_ref.cpp.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "base/check.h"
#include "tensor/fp16.h"
#include "tensor/kernels_ref.h"
#include "tensor/nm_sparse.h"
#include "tensor/quant_blocks.h"
#include "tensor/quant_common.h"

namespace snug::tensor {
namespace {

using detail::f32_to_f16;

// Index and value of the element of largest magnitude (first one on ties).
float signed_absmax(const float* x, int n) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < n; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

void min_max(const float* x, int n, float* mn, float* mx) {
  float lo = FLT_MAX, hi = -FLT_MAX;
  for (int j = 0; j < n; ++j) {
    if (x[j] < lo) lo = x[j];
    if (x[j] > hi) hi = x[j];
  }
  *mn = lo;
  *mx = hi;
}

void quantize_q4_0(const float* x, BlockQ4_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    const float d = signed_absmax(x, kQK) / -8;
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    for (int j = 0; j < kQK / 2; ++j) {
      const int lo = std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * id + 8.5f)));
      const int hi = std::min(15, static_cast<int>(static_cast<int8_t>(x[j + 16] * id + 8.5f)));
      y[i].qs[j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

void quantize_q4_1(const float* x, BlockQ4_1* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float mn, mx;
    min_max(x, kQK, &mn, &mx);
    const float d = (mx - mn) / 15;
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    y[i].m = f32_to_f16(mn);
    for (int j = 0; j < kQK / 2; ++j) {
      const int lo = std::min(15, static_cast<int>(static_cast<int8_t>((x[j] - mn) * id + 0.5f)));
      const int hi =
          std::min(15, static_cast<int>(static_cast<int8_t>((x[j + 16] - mn) * id + 0.5f)));
      y[i].qs[j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

void quantize_q5_0(const float* x, BlockQ5_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    const float d = signed_absmax(x, kQK) / -16;
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    uint32_t qh = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      const uint32_t lo = std::min(31, static_cast<int>(static_cast<int8_t>(x[j] * id + 16.5f)));
      const uint32_t hi =
          std::min(31, static_cast<int>(static_cast<int8_t>(x[j + 16] * id + 16.5f)));
      y[i].qs[j] = static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
      qh |= ((lo >> 4) & 1u) << j;
      qh |= ((hi >> 4) & 1u) << (j + 16);
    }
    std::memcpy(y[i].qh, &qh, 4);
  }
}

void quantize_q5_1(const float* x, BlockQ5_1* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float mn, mx;
    min_max(x, kQK, &mn, &mx);
    const float d = (mx - mn) / 31;
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    y[i].m = f32_to_f16(mn);
    uint32_t qh = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      const uint32_t lo = static_cast<uint8_t>((x[j] - mn) * id + 0.5f);
      const uint32_t hi = static_cast<uint8_t>((x[j + 16] - mn) * id + 0.5f);
      y[i].qs[j] = static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
      qh |= ((lo >> 4) & 1u) << j;
      qh |= ((hi >> 4) & 1u) << (j + 16);
    }
    std::memcpy(y[i].qh, &qh, 4);
  }
}

float absmax(const float* x, int n) {
  float amax = 0.0f;
  for (int j = 0; j < n; ++j) amax = std::max(amax, std::fabs(x[j]));
  return amax;
}

void quantize_q8_0(const float* x, BlockQ8_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    const float d = absmax(x, kQK) / 127;
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    for (int j = 0; j < kQK; ++j) y[i].qs[j] = static_cast<int8_t>(std::round(x[j] * id));
  }
}

// A sparse row: per block, the 4 values of largest magnitude of each 8 kept
// (the rest taken as 0), quantized as the dense type, the kept levels stored.
template <class D, class S, class Q>
void quantize_nm(const float* x, void* dst, int64_t nb, Q dense) {
  const detail::NmRow<S> row(dst, nb);
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float v[kQK], mag[kQK];
    for (int j = 0; j < kQK; ++j) mag[j] = std::fabs(x[j]);
    const uint32_t mask = detail::nm_choose(mag);
    for (int j = 0; j < kQK; ++j) v[j] = (mask >> j & 1u) ? x[j] : 0.f;
    D b;
    dense(v, &b, 1);
    S s;
    detail::nm_pack(b, mask, &s);
    row.put(i, s);
  }
}

}  // namespace

namespace detail {

void quantize_row_q8a(const float* x, void* dst, int64_t n) {
  // Exactly what ggml's x86 quantize_row_q8_1 computes for llama.cpp: the scale
  // is stored as f16 while the values are rounded with the unrounded 127/amax,
  // ties to even, and the block sum s = d * sum(q) is stored as f16 too. Matching
  // it keeps greedy decoding token-for-token identical on sensitive models.
  auto* y = static_cast<BlockQ8A*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    const float amax = absmax(x, kQK);
    const float d = amax / 127.f;
    const float id = amax != 0.f ? 127.f / amax : 0.f;
    int sum = 0;
    for (int j = 0; j < kQK; ++j) {
      y[i].qs[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));
      sum += y[i].qs[j];
    }
    y[i].d = fp16_to_fp32(fp32_to_fp16(d));
    y[i].s = fp16_to_fp32(fp32_to_fp16(d * static_cast<float>(sum)));
  }
}

}  // namespace detail

namespace ref {

void quantize_row(DType type, const float* x, void* dst, int64_t n) {
  const DTypeInfo& ti = info(type);
  SNUG_CHECK(n >= 0 && n % ti.block_size == 0);
  const int64_t nb = n / ti.block_size;
  switch (type) {
    case DType::kF32:
      std::memcpy(dst, x, static_cast<size_t>(n) * 4);
      return;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = f32_to_f16(x[i]);
      return;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = detail::f32_to_bf16(x[i]);
      return;
    case DType::kQ4_0:
      return quantize_q4_0(x, static_cast<BlockQ4_0*>(dst), nb);
    case DType::kQ4_1:
      return quantize_q4_1(x, static_cast<BlockQ4_1*>(dst), nb);
    case DType::kQ5_0:
      return quantize_q5_0(x, static_cast<BlockQ5_0*>(dst), nb);
    case DType::kQ5_1:
      return quantize_q5_1(x, static_cast<BlockQ5_1*>(dst), nb);
    case DType::kQ8_0:
      return quantize_q8_0(x, static_cast<BlockQ8_0*>(dst), nb);
    case DType::kQ2_K:
      return detail::quantize_row_q2_K(x, dst, n);
    case DType::kQ3_K:
      return detail::quantize_row_q3_K(x, dst, n);
    case DType::kQ4_K:
      return detail::quantize_row_q4_K(x, dst, n);
    case DType::kQ5_K:
      return detail::quantize_row_q5_K(x, dst, n);
    case DType::kQ6_K:
      return detail::quantize_row_q6_K(x, dst, n);
    case DType::kQ8_K:
      return detail::quantize_row_q8_K(x, dst, n);
    case DType::kQ8_0NM:
      return quantize_nm<BlockQ8_0, BlockQ8_0NM>(x, dst, nb, quantize_q8_0);
    case DType::kQ4_0NM:
      return quantize_nm<BlockQ4_0, BlockQ4_0NM>(x, dst, nb, quantize_q4_0);
    default:
      SNUG_CHECK(false && "quantize_row: unsupported type");
  }
}

}  // namespace ref
}  // namespace snug::tensor
