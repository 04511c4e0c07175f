// The pre-norm decoder graph every supported family takes (llama.cpp's
// LLM_ARCH_LLAMA, QWEN2, QWEN3 and GEMMA3 graphs): RMS norm, q/k/v
// projections, rotary attention over the paged cache, output projection and
// residual; RMS norm, gated feed-forward network and residual. What differs
// between families is in ModelConfig and the optional weights (read_gemma3,
// read_qwen): Gemma's post-norms are null in the others, so add_residual
// skips them. A family whose graph differs adds its own forward beside this.
#include "model/blocks.h"

namespace snug::model {

void forward_decoder(const ModelConfig& c, const Weights& w, const Batch& batch, kv::KvCache& cache,
                     Workspace& ws, ThreadPool& pool, int32_t first, int32_t last) {
  const int32_t T = batch.size();
  const int64_t F = c.n_ff;
  const int64_t QD = int64_t{c.n_heads} * c.head_dim_k;
  const int64_t KD = int64_t{c.n_kv_heads} * c.head_dim_k;
  const int64_t VD = int64_t{c.n_kv_heads} * c.head_dim_v;
  blocks::embed(c, w, batch, ws, pool, /*tokens=*/first == 0);
  bool pending = false;  // ws.xb still to be added to ws.x (add_residual)
  for (int32_t l = first; l < last; ++l) {
    const LayerWeights& L = w.layers[static_cast<size_t>(l)];
    blocks::norm_project(pool, ws, l, T, L.attn_norm, c.rms_eps,
                         {{MatRole::kQ, L.wq, ws.q, QD},
                          {MatRole::kK, L.wk, ws.k, KD},
                          {MatRole::kV, L.wv, ws.v, VD}},
                         pending);
    blocks::attention(c, L, l, batch, cache, ws, pool);
    blocks::attention_output(c, L, l, T, ws, pool);
    pending = blocks::add_residual(c, L.bo, L.post_attn_norm, T, ws, pool);
    blocks::norm_project(pool, ws, l, T, L.ffn_norm, c.rms_eps,
                         {{MatRole::kGate, L.gate, ws.gate, F}, {MatRole::kUp, L.up, ws.up, F}},
                         pending);
    blocks::ffn_down(c, L, l, T, ws, pool);
    pending = blocks::add_residual(c, L.b_down, L.post_ffn_norm, T, ws, pool);
  }
  if (pending) blocks::add_pending_residual(c, T, ws);
  if (last == c.n_layers) blocks::logits(c, w, batch, ws, pool);
}

}  // namespace snug::model
