#include "kv/attention.h"

#include <cmath>
#include <cstring>

#include "base/check.h"
#include "tensor/kernels.h"

namespace snug::kv {
namespace {
void round_f16(const float* x, float* y, int32_t n) {
  for (int32_t i = 0; i < n; ++i) y[i] = tensor::fp16_to_fp32(tensor::fp32_to_fp16(x[i]));
}
}  // namespace

void attend(const KvCache& cache, SeqId seq, int32_t layer, const AttentionShape& shape,
            const float* q, int32_t begin, int32_t end, int32_t h0, int32_t h1, float* out,
            float* scores) {
  const KvLayout& lay = cache.layout();
  SNUG_CHECK(lay.type == tensor::DType::kF16);
  SNUG_CHECK(shape.head_dim_k <= kMaxHeadDim);
  const int32_t bt = lay.block_tokens;
  const int32_t group = shape.n_heads / shape.n_kv_heads;
  const auto& table = cache.block_table(seq);
  const int32_t n = end - begin;
  for (int32_t h = h0; h < h1; ++h) {
    const int32_t kvh = h / group;
    // llama.cpp multiplies f16 keys with the query rounded to f16, and f16
    // values with probabilities rounded to f16; doing the same keeps greedy
    // decoding token-for-token identical on sensitive models.
    float qh[kMaxHeadDim];
    round_f16(q + static_cast<int64_t>(h) * shape.head_dim_k, qh, shape.head_dim_k);
    const uint64_t koff = cache.k_offset(layer, kvh), voff = cache.v_offset(layer, kvh);
    float mx = -INFINITY;
    for (int32_t t = begin; t < end; ++t) {
      const uint8_t* blk = cache.block_data(table[static_cast<size_t>(t / bt)]);
      const auto* k = reinterpret_cast<const uint16_t*>(blk + koff) + static_cast<int64_t>(t % bt) * shape.head_dim_k;
      float s = tensor::dot_f16_f32(k, qh, shape.head_dim_k) * shape.scale;
      if (shape.softcap > 0.f) s = shape.softcap * std::tanh(s / shape.softcap);
      scores[t - begin] = s;
      mx = s > mx ? s : mx;
    }
    float sum = 0.f;
    for (int32_t i = 0; i < n; ++i) {
      scores[i] = std::exp(scores[i] - mx);
      sum += scores[i];
    }
    const float inv = 1.f / sum;
    float* oh = out + static_cast<int64_t>(h) * shape.head_dim_v;
    std::memset(oh, 0, sizeof(float) * static_cast<size_t>(shape.head_dim_v));
    for (int32_t t = begin; t < end; ++t) {
      const uint8_t* blk = cache.block_data(table[static_cast<size_t>(t / bt)]);
      const auto* v = reinterpret_cast<const uint16_t*>(blk + voff) + static_cast<int64_t>(t % bt) * shape.head_dim_v;
      tensor::axpy_f16(tensor::fp16_to_fp32(tensor::fp32_to_fp16(scores[t - begin] * inv)), v, oh, shape.head_dim_v);
    }
  }
}

}  // namespace snug::kv
