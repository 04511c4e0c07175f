#include "kv/attention.h"

#include <cmath>
#include <cstring>

#include "base/check.h"
#include "tensor/kernels.h"

namespace snug::kv {
namespace {

constexpr int kSlotsVec = 32;  // ggml_vec_dot_f16: 4 accumulators x 8 lanes
constexpr int kSlotsGemm = 8;  // tinyBLAS (llamafile sgemm): one 8-lane accumulator

float f16_round(float x) {
  return tensor::fp16_to_fp32(tensor::fp32_to_fp16(x));
}

// One 8-lane register summed as tinyBLAS's hsum does:
// ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)).
float hsum8(const float* l) {
  const float s0 = l[0] + l[4], s1 = l[1] + l[5], s2 = l[2] + l[6], s3 = l[3] + l[7];
  return (s0 + s2) + (s1 + s3);
}

// GGML_F32x8_REDUCE over ggml_vec_dot_f16's 32 slots (modifies s).
float reduce32(float* s) {
  for (int i = 0; i < 8; ++i) {
    s[i] += s[i + 16];
    s[i + 8] += s[i + 24];
  }
  for (int i = 0; i < 8; ++i) s[i] += s[i + 8];
  const float t0 = s[0] + s[4], t1 = s[1] + s[5], t2 = s[2] + s[6], t3 = s[3] + s[7];
  return (t0 + t1) + (t2 + t3);
}

}  // namespace

int64_t attention_scratch_floats(int32_t max_ctx, int32_t head_dim_v) {
  const int64_t padded = (int64_t{max_ctx} + kSlotsVec - 1) / kSlotsVec * kSlotsVec;
  return padded + int64_t{kMaxHeadDim} + int64_t{kSlotsVec} * head_dim_v;
}

void attend(const KvCache& cache, SeqId seq, int32_t layer, const AttentionShape& shape,
            const float* q, int32_t begin, int32_t end, int32_t h0, int32_t h1, float* out,
            float* scratch) {
  const KvLayout& lay = cache.layout();
  SNUG_CHECK(lay.type == tensor::DType::kF16);
  SNUG_CHECK(shape.head_dim_k <= kMaxHeadDim && shape.head_dim_v <= kMaxHeadDim);
  const int32_t bt = lay.block_tokens;
  const int32_t group = shape.n_heads / shape.n_kv_heads;
  const auto& table = cache.block_table(seq);
  const int32_t n = end - begin;
  const int32_t dv = shape.head_dim_v;
  const int slots = shape.batched ? kSlotsGemm : kSlotsVec;
  const tensor::SumOrder order =
      shape.batched ? tensor::SumOrder::kGemm : tensor::SumOrder::kVecDot;
  float* p = scratch;                                                          // [n, padded]
  float* qh = scratch + (int64_t{n} + kSlotsVec - 1) / kSlotsVec * kSlotsVec;  // [head_dim_k]
  float* acc = qh + kMaxHeadDim;                                               // [slots][dv]

  for (int32_t h = h0; h < h1; ++h) {
    const int32_t kvh = h / group;
    const uint64_t koff = cache.k_offset(layer, kvh), voff = cache.v_offset(layer, kvh);
    const float* qsrc = q + static_cast<int64_t>(h) * shape.head_dim_k;
    for (int32_t i = 0; i < shape.head_dim_k; ++i) qh[i] = f16_round(qsrc[i]);

    // Scores, scaled after the dot product as ggml_soft_max_ext does.
    float mx = -INFINITY;
    for (int32_t t = begin; t < end; ++t) {
      const uint8_t* blk = cache.block_data(table[static_cast<size_t>(t / bt)]);
      const auto* k = reinterpret_cast<const uint16_t*>(blk + koff) +
                      static_cast<int64_t>(t % bt) * shape.head_dim_k;
      float s = tensor::dot_f16_ordered(k, qh, shape.head_dim_k, order);
      if (shape.softcap > 0.f) s = shape.softcap * std::tanh(s / shape.softcap);
      s *= shape.scale;
      p[t - begin] = s;
      mx = s > mx ? s : mx;
    }
    const double sum = tensor::exp_sum_ggml(p, n, mx);
    const auto inv = static_cast<float>(1.0 / sum);
    // Probabilities rounded to f16, each position accumulated into slot t % slots.
    std::memset(acc, 0, sizeof(float) * static_cast<size_t>(slots) * static_cast<size_t>(dv));
    for (int32_t t = begin; t < end; ++t) {
      const float pt = f16_round(p[t - begin] * inv);
      const uint8_t* blk = cache.block_data(table[static_cast<size_t>(t / bt)]);
      const auto* v =
          reinterpret_cast<const uint16_t*>(blk + voff) + static_cast<int64_t>(t % bt) * dv;
      float* a = acc + static_cast<int64_t>((t - begin) % slots) * dv;
      tensor::fma_f16(pt, v, a, dv);
    }
    float* oh = out + static_cast<int64_t>(h) * dv;
    float lanes[kSlotsVec];
    for (int32_t d = 0; d < dv; ++d) {
      for (int l = 0; l < slots; ++l) lanes[l] = acc[static_cast<int64_t>(l) * dv + d];
      oh[d] = shape.batched ? hsum8(lanes) : reduce32(lanes);
    }
  }
}

}  // namespace snug::kv
