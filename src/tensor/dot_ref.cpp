// Scalar dot products of one weight row with one activation row, and the
// reference matmul built from them. Integer sums are exact; the float
// combination per block is the reference the SIMD paths are measured against.
#include <cstring>
#include <vector>

#include "base/check.h"
#include "tensor/fp16.h"
#include "tensor/k_unpack.h"
#include "tensor/kernels_ref.h"
#include "tensor/nm_sparse.h"
#include "tensor/quant_blocks.h"
#include "tensor/quant_common.h"

namespace snug::tensor {
namespace {

using detail::f16_to_f32;

// Unsigned level of element j of a 4-bit block (j < 32).
inline int nibble(const uint8_t* qs, int j) {
  return j < 16 ? qs[j] & 0xF : qs[j - 16] >> 4;
}
inline int bit5(const uint8_t* qh, int j) {
  uint32_t h;
  std::memcpy(&h, qh, 4);
  return static_cast<int>((h >> j) & 1u) << 4;
}

template <typename Block, typename LevelFn, typename CombineFn>
float dot_q32(const void* w, const void* a, int64_t n, LevelFn level, CombineFn combine) {
  const auto* wb = static_cast<const Block*>(w);
  const auto* ab = static_cast<const BlockQ8A*>(a);
  float sum = 0;
  for (int64_t i = 0; i < n / kQK; ++i) {
    int32_t isum = 0;
    for (int j = 0; j < kQK; ++j) isum += level(wb[i], j) * ab[i].qs[j];
    sum += combine(wb[i], ab[i], isum);
  }
  return sum;
}

template <typename Block>
float dot_k(const void* w, const void* a, int64_t n) {
  const auto* wb = static_cast<const Block*>(w);
  const auto* ab = static_cast<const BlockQ8_K*>(a);
  detail::KBlockInts k;
  float sum = 0;
  for (int64_t i = 0; i < n / kQKK; ++i) {
    detail::unpack_k(wb[i], &k);
    int32_t isum = 0;
    for (int g = 0; g < kQKK / k.group; ++g) {
      int32_t gs = 0;
      for (int l = 0; l < k.group; ++l) gs += k.q[g * k.group + l] * ab[i].qs[g * k.group + l];
      isum += k.scale[g] * gs;
    }
    const int32_t msum = detail::k_min_sum(k, ab[i]);
    sum += k.d * ab[i].d * static_cast<float>(isum) - k.dmin * ab[i].d * static_cast<float>(msum);
  }
  return sum;
}

}  // namespace

namespace ref {

size_t activation_row_bytes(DType w, int64_t cols) {
  switch (activation_type(w)) {
    case DType::kF32:
      return static_cast<size_t>(cols) * sizeof(float);
    case DType::kQ8_0:
      return static_cast<size_t>(cols / kQK) * sizeof(BlockQ8A);
    case DType::kQ8_K:
      return static_cast<size_t>(cols / kQKK) * sizeof(BlockQ8_K);
    default:
      SNUG_CHECK(false && "activation_row_bytes: unsupported type");
  }
  return 0;
}

void quantize_activation_row(DType w, const float* x, void* dst, int64_t cols) {
  switch (activation_type(w)) {
    case DType::kF32:
      std::memcpy(dst, x, static_cast<size_t>(cols) * 4);
      return;
    case DType::kQ8_0:
      detail::quantize_row_q8a(x, dst, cols);
      return;
    case DType::kQ8_K:
      detail::quantize_row_q8_K(x, dst, cols);
      return;
    default:
      SNUG_CHECK(false && "quantize_activation_row: unsupported type");
  }
}

float vec_dot(DType type, const void* w, const void* a, int64_t n) {
  const auto* af = static_cast<const float*>(a);
  switch (type) {
    case DType::kF32: {
      const auto* wf = static_cast<const float*>(w);
      float s = 0;
      for (int64_t i = 0; i < n; ++i) s += wf[i] * af[i];
      return s;
    }
    case DType::kF16: {
      const auto* wh = static_cast<const uint16_t*>(w);
      float s = 0;
      for (int64_t i = 0; i < n; ++i) s += f16_to_f32(wh[i]) * af[i];
      return s;
    }
    case DType::kBF16: {
      const auto* wh = static_cast<const uint16_t*>(w);
      float s = 0;
      for (int64_t i = 0; i < n; ++i) s += detail::bf16_to_f32(wh[i]) * af[i];
      return s;
    }
    case DType::kQ4_0:
      return dot_q32<BlockQ4_0>(
          w, a, n, [](const BlockQ4_0& b, int j) { return nibble(b.qs, j) - 8; },
          [](const BlockQ4_0& b, const BlockQ8A& x, int32_t is) {
            return f16_to_f32(b.d) * x.d * static_cast<float>(is);
          });
    case DType::kQ4_1:
      return dot_q32<BlockQ4_1>(
          w, a, n, [](const BlockQ4_1& b, int j) { return nibble(b.qs, j); },
          [](const BlockQ4_1& b, const BlockQ8A& x, int32_t is) {
            return f16_to_f32(b.d) * x.d * static_cast<float>(is) + f16_to_f32(b.m) * x.s;
          });
    case DType::kQ5_0:
      return dot_q32<BlockQ5_0>(
          w, a, n, [](const BlockQ5_0& b, int j) { return (nibble(b.qs, j) | bit5(b.qh, j)) - 16; },
          [](const BlockQ5_0& b, const BlockQ8A& x, int32_t is) {
            return f16_to_f32(b.d) * x.d * static_cast<float>(is);
          });
    case DType::kQ5_1:
      return dot_q32<BlockQ5_1>(
          w, a, n, [](const BlockQ5_1& b, int j) { return nibble(b.qs, j) | bit5(b.qh, j); },
          [](const BlockQ5_1& b, const BlockQ8A& x, int32_t is) {
            return f16_to_f32(b.d) * x.d * static_cast<float>(is) + f16_to_f32(b.m) * x.s;
          });
    case DType::kQ8_0:
      return dot_q32<BlockQ8_0>(
          w, a, n, [](const BlockQ8_0& b, int j) { return static_cast<int>(b.qs[j]); },
          [](const BlockQ8_0& b, const BlockQ8A& x, int32_t is) {
            return f16_to_f32(b.d) * x.d * static_cast<float>(is);
          });
    case DType::kQ8_0NM:
    case DType::kQ4_0NM: {
      // The dense blocks they expand to, exactly.
      const DType dense = *nm_dense_type(type);
      const int64_t nb = n / kQK;
      const size_t bytes = static_cast<size_t>(info(dense).block_bytes);
      std::vector<uint8_t> row(static_cast<size_t>(nb) * bytes);
      if (type == DType::kQ8_0NM) {
        detail::nm_expand_row<BlockQ8_0NM, BlockQ8_0>(w, row.data(), nb);
      } else {
        detail::nm_expand_row<BlockQ4_0NM, BlockQ4_0>(w, row.data(), nb);
      }
      return vec_dot(dense, row.data(), a, n);
    }
    case DType::kQ2_K:
      return dot_k<BlockQ2_K>(w, a, n);
    case DType::kQ3_K:
      return dot_k<BlockQ3_K>(w, a, n);
    case DType::kQ4_K:
      return dot_k<BlockQ4_K>(w, a, n);
    case DType::kQ5_K:
      return dot_k<BlockQ5_K>(w, a, n);
    case DType::kQ6_K:
      return dot_k<BlockQ6_K>(w, a, n);
    default:
      SNUG_CHECK(false && "vec_dot: unsupported type");
  }
  return 0;
}

void quantize_activations(DType w, const float* x, int64_t x_stride, int64_t cols, int64_t n_tok,
                          void* scratch) {
  const size_t rb = activation_row_bytes(w, cols);
  for (int64_t t = 0; t < n_tok; ++t) {
    quantize_activation_row(w, x + t * x_stride, static_cast<char*>(scratch) + t * rb, cols);
  }
}

void matmul_rows(const MatView& w, const void* qx, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                 int64_t y_stride) {
  const size_t rb = activation_row_bytes(w.type, w.cols);
  for (int64_t r = r0; r < r1; ++r) {
    const void* wr = static_cast<const char*>(w.data) + r * w.row_bytes;
    for (int64_t t = 0; t < n_tok; ++t) {
      y[t * y_stride + r] = vec_dot(w.type, wr, static_cast<const char*>(qx) + t * rb, w.cols);
    }
  }
}

}  // namespace ref
}  // namespace snug::tensor
