// Scalar dequantizers, bit-identical to ggml's dequantize_row_* (each output is
// computed with the same float operations in the same order).
#include <cstring>
#include <vector>

#include "base/check.h"
#include "tensor/fp16.h"
#include "tensor/kernels_ref.h"
#include "tensor/nm_sparse.h"
#include "tensor/quant_blocks.h"

namespace snug::tensor {
namespace {

using detail::f16_to_f32;

void dq_q4_0(const BlockQ4_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = f16_to_f32(x[i].d);
    for (int j = 0; j < 16; ++j) {
      y[j] = static_cast<float>((x[i].qs[j] & 0xF) - 8) * d;
      y[j + 16] = static_cast<float>((x[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void dq_q4_1(const BlockQ4_1* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = f16_to_f32(x[i].d), m = f16_to_f32(x[i].m);
    for (int j = 0; j < 16; ++j) {
      y[j] = static_cast<float>(x[i].qs[j] & 0xF) * d + m;
      y[j + 16] = static_cast<float>(x[i].qs[j] >> 4) * d + m;
    }
  }
}

void dq_q5_0(const BlockQ5_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = f16_to_f32(x[i].d);
    uint32_t qh;
    std::memcpy(&qh, x[i].qh, 4);
    for (int j = 0; j < 16; ++j) {
      const int lo = (x[i].qs[j] & 0xF) | static_cast<int>(((qh >> j) & 1u) << 4);
      const int hi = (x[i].qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
      y[j] = static_cast<float>(lo - 16) * d;
      y[j + 16] = static_cast<float>(hi - 16) * d;
    }
  }
}

void dq_q5_1(const BlockQ5_1* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = f16_to_f32(x[i].d), m = f16_to_f32(x[i].m);
    uint32_t qh;
    std::memcpy(&qh, x[i].qh, 4);
    for (int j = 0; j < 16; ++j) {
      const int lo = (x[i].qs[j] & 0xF) | static_cast<int>(((qh >> j) & 1u) << 4);
      const int hi = (x[i].qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
      y[j] = static_cast<float>(lo) * d + m;
      y[j + 16] = static_cast<float>(hi) * d + m;
    }
  }
}

void dq_q8_0(const BlockQ8_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = f16_to_f32(x[i].d);
    for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(x[i].qs[j]) * d;
  }
}

void dq_q2_K(const BlockQ2_K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = f16_to_f32(x[i].d), dmin = f16_to_f32(x[i].dmin);
    for (int e = 0; e < kQKK; e += 16, y += 16) {
      const int h = e / 128, k = (e % 128) / 32, l0 = e % 32;
      const uint8_t sc = x[i].scales[e / 16];
      const float dl = d * static_cast<float>(sc & 0xF), ml = dmin * static_cast<float>(sc >> 4);
      for (int l = 0; l < 16; ++l) {
        const int q = (x[i].qs[32 * h + l0 + l] >> (2 * k)) & 3;
        y[l] = dl * static_cast<float>(q) - ml;
      }
    }
  }
}

void dq_q3_K(const BlockQ3_K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d_all = f16_to_f32(x[i].d);
    int8_t sc[16];
    q3k_scales(x[i].scales, sc);
    for (int e = 0; e < kQKK; e += 16, y += 16) {
      const int h = e / 128, k = (e % 128) / 32, l0 = e % 32;
      const float dl = d_all * static_cast<float>(sc[e / 16]);
      for (int l = 0; l < 16; ++l) {
        const int low = (x[i].qs[32 * h + l0 + l] >> (2 * k)) & 3;
        const bool high = x[i].hmask[l0 + l] & (1u << (e / 32));
        y[l] = dl * static_cast<float>(low - (high ? 0 : 4));
      }
    }
  }
}

void dq_q4_K(const BlockQ4_K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = f16_to_f32(x[i].d), dmin = f16_to_f32(x[i].dmin);
    for (int g = 0; g < 8; ++g, y += 32) {
      uint8_t sc, m;
      k4_scale_min(g, x[i].scales, &sc, &m);
      const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
      const uint8_t* q = x[i].qs + 32 * (g / 2);
      const int shift = 4 * (g % 2);
      for (int l = 0; l < 32; ++l) y[l] = d1 * static_cast<float>((q[l] >> shift) & 0xF) - m1;
    }
  }
}

void dq_q5_K(const BlockQ5_K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = f16_to_f32(x[i].d), dmin = f16_to_f32(x[i].dmin);
    for (int g = 0; g < 8; ++g, y += 32) {
      uint8_t sc, m;
      k4_scale_min(g, x[i].scales, &sc, &m);
      const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
      const uint8_t* q = x[i].qs + 32 * (g / 2);
      const int shift = 4 * (g % 2);
      for (int l = 0; l < 32; ++l) {
        const int v = ((q[l] >> shift) & 0xF) + ((x[i].qh[l] >> g) & 1 ? 16 : 0);
        y[l] = d1 * static_cast<float>(v) - m1;
      }
    }
  }
}

void dq_q6_K(const BlockQ6_K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = f16_to_f32(x[i].d);
    for (int e = 0; e < kQKK; e += 16, y += 16) {
      const int h = e / 128, k = (e % 128) / 32, l0 = e % 32;
      const uint8_t* ql = x[i].ql + 64 * h + 32 * (k & 1);
      const uint8_t* qh = x[i].qh + 32 * h;
      const float ds = d * static_cast<float>(x[i].scales[e / 16]);
      for (int l = l0; l < l0 + 16; ++l) {
        const int q = (((ql[l] >> (4 * (k >> 1))) & 0xF) | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
        y[l - l0] = ds * static_cast<float>(q);
      }
    }
  }
}

void dq_q8_K(const BlockQ8_K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQKK) {
    for (int j = 0; j < kQKK; ++j) y[j] = x[i].d * static_cast<float>(x[i].qs[j]);
  }
}

}  // namespace

namespace ref {

void dequantize_row(DType type, const void* src, float* dst, int64_t n) {
  const DTypeInfo& ti = info(type);
  SNUG_CHECK(n >= 0 && n % ti.block_size == 0);
  const int64_t nb = n / ti.block_size;
  switch (type) {
    case DType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(static_cast<const uint16_t*>(src)[i]);
      return;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        dst[i] = detail::bf16_to_f32(static_cast<const uint16_t*>(src)[i]);
      }
      return;
    case DType::kQ4_0:
      return dq_q4_0(static_cast<const BlockQ4_0*>(src), dst, nb);
    case DType::kQ4_1:
      return dq_q4_1(static_cast<const BlockQ4_1*>(src), dst, nb);
    case DType::kQ5_0:
      return dq_q5_0(static_cast<const BlockQ5_0*>(src), dst, nb);
    case DType::kQ5_1:
      return dq_q5_1(static_cast<const BlockQ5_1*>(src), dst, nb);
    case DType::kQ8_0:
      return dq_q8_0(static_cast<const BlockQ8_0*>(src), dst, nb);
    case DType::kQ2_K:
      return dq_q2_K(static_cast<const BlockQ2_K*>(src), dst, nb);
    case DType::kQ3_K:
      return dq_q3_K(static_cast<const BlockQ3_K*>(src), dst, nb);
    case DType::kQ4_K:
      return dq_q4_K(static_cast<const BlockQ4_K*>(src), dst, nb);
    case DType::kQ5_K:
      return dq_q5_K(static_cast<const BlockQ5_K*>(src), dst, nb);
    case DType::kQ6_K:
      return dq_q6_K(static_cast<const BlockQ6_K*>(src), dst, nb);
    case DType::kQ8_K:
      return dq_q8_K(static_cast<const BlockQ8_K*>(src), dst, nb);
    case DType::kQ8_0NM: {
      std::vector<BlockQ8_0> b(static_cast<size_t>(nb));
      detail::nm_expand_row<BlockQ8_0NM, BlockQ8_0>(src, b.data(), nb);
      return dq_q8_0(b.data(), dst, nb);
    }
    case DType::kQ4_0NM: {
      std::vector<BlockQ4_0> b(static_cast<size_t>(nb));
      detail::nm_expand_row<BlockQ4_0NM, BlockQ4_0>(src, b.data(), nb);
      return dq_q4_0(b.data(), dst, nb);
    }
    default:
      SNUG_CHECK(false && "dequantize_row: unsupported type");
  }
}

}  // namespace ref
}  // namespace snug::tensor
