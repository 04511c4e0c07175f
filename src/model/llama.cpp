// Llama family (llama.cpp's LLM_ARCH_LLAMA): pre-norm decoder blocks with
// RMSNorm, rotary position embeddings (adjacent-pair rotation, as GGUF's
// llama converters permute Q/K for), grouped-query attention and a SwiGLU
// feed-forward network.
#include "model/blocks.h"

namespace snug::model {

void forward_llama(const ModelConfig& c, const Weights& w, const Batch& batch, kv::KvCache& cache,
                   Workspace& ws, ThreadPool& pool) {
  const int32_t T = batch.size();
  const int64_t F = c.n_ff;
  const int64_t QD = int64_t{c.n_heads} * c.head_dim_k;
  const int64_t KD = int64_t{c.n_kv_heads} * c.head_dim_k;
  const int64_t VD = int64_t{c.n_kv_heads} * c.head_dim_v;
  blocks::embed(c, w, batch, ws, pool);
  for (int32_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = w.layers[static_cast<size_t>(l)];
    blocks::norm_project(pool, ws, l, T, L.attn_norm, c.rms_eps,
                         {{MatRole::kQ, L.wq, ws.q, QD},
                          {MatRole::kK, L.wk, ws.k, KD},
                          {MatRole::kV, L.wv, ws.v, VD}});
    blocks::attention(c, L, l, batch, cache, ws, pool);
    blocks::attention_output(c, L, l, T, ws, pool);
    blocks::add_residual(c, nullptr, T, ws, pool);
    blocks::norm_project(pool, ws, l, T, L.ffn_norm, c.rms_eps,
                         {{MatRole::kGate, L.gate, ws.gate, F}, {MatRole::kUp, L.up, ws.up, F}});
    blocks::ffn_down(c, L, l, T, ws, pool);
    blocks::add_residual(c, nullptr, T, ws, pool);
  }
  blocks::logits(c, w, batch, ws, pool);
}

}  // namespace snug::model
