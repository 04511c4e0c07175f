// The pieces a family's forward pass is built from (internal to model/).
// Each works on the whole batch in the workspace (ws.x the residual stream,
// ws.xb a sub-layer's normalised input or output) and keeps llama.cpp's
// order of operations, so a family file reads like its llama.cpp graph:
// embed, then per layer norm_project / attention / project / add, then logits.
#pragma once

#include <cstdint>
#include <initializer_list>

#include "base/thread_pool.h"
#include "kv/kv_cache.h"
#include "model/config.h"
#include "model/model.h"
#include "model/weights.h"
#include "model/workspace.h"

namespace snug::model::blocks {

// Below this many tokens per-token work stays on the calling thread: a pool
// barrier (a few microseconds) costs more than it saves.
constexpr int32_t kParallelTokens = 4;

// f(b, e) for consecutive token ranges covering the batch: the pool's
// threads one range each for batches of kParallelTokens or more, else one
// range on this thread.
template <class F>
void per_token_range(ThreadPool& pool, int32_t T, F&& f) {
  if (T < kParallelTokens) {
    f(0, T);
    return;
  }
  pool.run([&](int tid, int nth) {
    for_each_chunk(T, 1, tid, nth, [&](int64_t b, int64_t e) {
      f(static_cast<int32_t>(b), static_cast<int32_t>(e));
    });
  });
}

// f(t) for every token of the batch, over per_token_range's ranges. Each
// token's work is the same arithmetic on either path.
template <class F>
void per_token(ThreadPool& pool, int32_t T, F&& f) {
  per_token_range(pool, T, [&](int32_t b, int32_t e) {
    for (int32_t t = b; t < e; ++t) f(t);
  });
}

// One matrix product of a sub-layer: out[t * stride ...] = w . input row t.
struct Projection {
  MatRole role;
  const tensor::MatView& w;
  float* out;
  int64_t stride;
};

// Token embeddings into ws.x (times c.embd_scale where it is not 1; with
// tokens false, ws.x is left as the caller set it) and each token's rope
// angles for every rope set (ws.rope).
void embed(const ModelConfig& c, const Weights& w, const Batch& batch, Workspace& ws,
           ThreadPool& pool, bool tokens = true);

// RMS norm of ws.x into ws.xb with `norm_w`, then the projections of ws.xb
// (each token's row converted for the integer products by the thread that
// normalised it, when the matrices share an activation type). add_pending:
// first ws.x += ws.xb, a row at a time in the same pass (add_residual left
// it pending).
void norm_project(ThreadPool& pool, Workspace& ws, int32_t layer, int32_t T, const float* norm_w,
                  float eps, std::initializer_list<Projection> ps, bool add_pending = false);

// Self-attention of layer `l` from ws.q, ws.k, ws.v to ws.att: the
// projections' biases where the layer has them, per-head q/k norms (c.qk_norm), rope with the
// layer's set, the query scale, this batch's K/V rows into the cache, then attention over each
// token's sequence, or its window for a sliding-window layer.
void attention(const ModelConfig& c, const LayerWeights& L, int32_t l, const Batch& batch,
               kv::KvCache& cache, Workspace& ws, ThreadPool& pool);

// ws.xb = wo . ws.att.
void attention_output(const ModelConfig& c, const LayerWeights& L, int32_t l, int32_t T,
                      Workspace& ws, ThreadPool& pool);

// Gated feed-forward: ws.gate = act(ws.gate) * ws.up (c.ffn_activation), then
// ws.xb = down . ws.gate.
void ffn_down(const ModelConfig& c, const LayerWeights& L, int32_t l, int32_t T, Workspace& ws,
              ThreadPool& pool);

// ws.x += ws.xb (+ `bias`, added to each row first, as ggml adds a
// projection's bias to its output), first normalising ws.xb with `post_norm`
// when it is not null (Gemma's post-attention and post-feed-forward norms).
// The plain sum (neither there) is left pending, and true returned: the next
// norm_project adds it in its parallel pass (add_pending), or
// add_pending_residual does, where no norm follows; the same additions.
[[nodiscard]] bool add_residual(const ModelConfig& c, const float* bias, const float* post_norm,
                                int32_t T, Workspace& ws, ThreadPool& pool);
// ws.x += ws.xb for the T tokens: a sum add_residual left pending.
void add_pending_residual(const ModelConfig& c, int32_t T, Workspace& ws);

// Final norm and output head for the tokens that want logits, into ws.logits.
void logits(const ModelConfig& c, const Weights& w, const Batch& batch, Workspace& ws,
            ThreadPool& pool);

}  // namespace snug::model::blocks
