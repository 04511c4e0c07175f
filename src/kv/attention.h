// Attention of one query token over a sequence's paged keys and values.
//
// Every query head of a KV head is computed in one pass over its rows
// (grouped-query attention), in f32 on the rows as stored:
// tensor::attention_f16_heads for f16 K and V, tensor::attention_kv_heads
// when K or V is quantized (q8_0, q4_0), the same arithmetic on the
// dequantized rows. On AVX2 with ggml's order asked for (SNUG_GGML_ORDER=1),
// the arithmetic follows llama.cpp's CPU path operation for operation instead,
// because SmolLM2-class models quantize activations to 8 bits between layers:
// a one-ulp difference can flip a rounding and, tokens later, the greedy
// choice. With f16 keys and values that is llama.cpp's default (non-flash)
// attention (tensor::attention_f16_ggml); with a quantized K or V it is
// llama.cpp's flash-attention kernel (tensor::attention_flash_ggml), the only
// one llama.cpp has for quantized V.
#pragma once

#include <cstdint>

#include "kv/kv_cache.h"

namespace snug::kv {

// Largest head size attend() supports (model configs are validated against it).
constexpr int32_t kMaxHeadDim = 512;

struct AttentionShape {
  int32_t n_heads = 0;     // query heads
  int32_t n_kv_heads = 0;  // key/value heads (grouped-query attention: n_heads % n_kv_heads == 0)
  int32_t head_dim_k = 0;
  int32_t head_dim_v = 0;
  float scale = 1.f;  // applied to q.k
  // Summation order of the dot products: llama.cpp uses its GEMM kernel when a
  // forward pass holds two or more tokens (a prompt) and its vector kernel for
  // one (a generated token). The model sets it per token from Batch::decode.
  bool batched = false;
};

// Scratch attend() needs for sequences of up to max_ctx positions, in floats
// (for any K and V types), with `group` query heads per KV head.
int64_t attention_scratch_floats(int32_t max_ctx, int32_t group, int32_t head_dim_k,
                                 int32_t head_dim_v);

// out[h * head_dim_v ...] = softmax_t(scale * q_h . k_t) v_t over positions
// t in [begin, end) of `seq` for query heads h in [h0, h1): begin > 0 for a
// sliding window. `scratch` holds attention_scratch_floats(>= end, ...) floats.
void attend(const KvCache& cache, SeqId seq, int32_t layer, const AttentionShape& shape,
            const float* q, int32_t end, int32_t h0, int32_t h1, float* out, float* scratch,
            int32_t begin = 0);

}  // namespace snug::kv
