// Llama family: pre-norm decoder blocks with RMSNorm, rotary position
// embeddings (adjacent-pair rotation, as GGUF's llama converters permute Q/K
// for), grouped-query attention and a SwiGLU feed-forward network.
#include <atomic>
#include <cmath>
#include <initializer_list>

#include "base/check.h"
#include "base/thread_pool.h"
#include "kv/attention.h"
#include "model/model.h"
#include "tensor/kernels.h"

namespace snug::model {

namespace {

// f(t) for every token: across the pool when the batch is large enough to pay
// for the extra barrier (a few microseconds), else on this thread. Each
// token's work is the same arithmetic on either path.
constexpr int32_t kParallelTokens = 4;
template <class F>
void per_token(ThreadPool& pool, int32_t T, F&& f) {
  if (T < kParallelTokens) {
    for (int32_t t = 0; t < T; ++t) f(t);
    return;
  }
  pool.run([&](int tid, int nth) {
    for_each_chunk(T, 1, tid, nth, [&](int64_t b, int64_t e) {
      for (auto t = static_cast<int32_t>(b); t < e; ++t) f(t);
    });
  });
}

void add_into(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

struct Projection {
  MatRole role;
  const tensor::MatView& w;
  float* out;
  int64_t stride;
};

void observe(Workspace& ws, int32_t layer, MatRole role, const float* x, int32_t rows,
             int64_t cols) {
  if (ws.observer != nullptr && rows > 0) ws.observer->observe(layer, role, x, rows, cols);
}

// A group of projections as matmul_multi takes them. shared: one activation
// type, so one conversion of the input serves every matrix.
struct ProjectionSet {
  tensor::MatView mats[4];
  float* outs[4];
  int64_t strides[4];
  int n = 0;
  bool shared = true;
  explicit ProjectionSet(std::initializer_list<Projection> ps) {
    SNUG_CHECK(ps.size() <= 4);
    for (const Projection& p : ps) {
      mats[n] = p.w;
      outs[n] = p.out;
      strides[n] = p.stride;
      shared = shared && tensor::activation_type(p.w.type) == tensor::activation_type(mats[0].type);
      ++n;
    }
  }
};

// Products of ws.xb with several matrices: one activation conversion when
// their activation types agree (the usual case), else one matmul each.
void project(ThreadPool& pool, Workspace& ws, int32_t layer, int32_t T,
             std::initializer_list<Projection> ps) {
  for (const Projection& p : ps) observe(ws, layer, p.role, ws.xb, T, p.w.cols);
  const ProjectionSet set(ps);
  if (!set.shared) {
    for (const Projection& p : ps)
      tensor::matmul(p.w, ws.xb, p.w.cols, T, p.out, p.stride, ws.quant, pool);
    return;
  }
  tensor::matmul_multi(set.mats, set.n, ws.xb, set.mats[0].cols, T, set.outs, set.strides, ws.quant,
                       pool);
}

// The norm before a group of projections, each token's row converted to the
// matrices' activations right after its norm, on the same thread (no
// separate conversion pass and barrier); else norm, then project().
void norm_project(ThreadPool& pool, Workspace& ws, int32_t layer, int32_t T, const float* norm_w,
                  float eps, std::initializer_list<Projection> ps) {
  const ProjectionSet set(ps);
  const tensor::DType type = set.mats[0].type;
  const int64_t E = set.mats[0].cols;
  const bool fuse = set.shared && T >= kParallelTokens;
  const size_t act = tensor::matmul_scratch_bytes(type, E, 1);
  per_token(pool, T, [&](int32_t t) {
    tensor::rms_norm(ws.x + t * E, norm_w, ws.xb + t * E, E, eps);
    if (fuse) {
      tensor::quantize_activations(type, ws.xb + t * E, E, E, 1,
                                   static_cast<char*>(ws.quant) + t * act);
    }
  });
  if (!fuse) {
    project(pool, ws, layer, T, ps);
    return;
  }
  for (const Projection& p : ps) observe(ws, layer, p.role, ws.xb, T, p.w.cols);
  tensor::matmul_multi_converted(set.mats, set.n, ws.quant, T, set.outs, set.strides, pool);
}

}  // namespace

void forward_llama(const ModelConfig& c, const Weights& w, const Batch& batch, kv::KvCache& cache,
                   Workspace& ws, ThreadPool& pool) {
  const int32_t T = batch.size();
  const int64_t E = c.n_embd, F = c.n_ff;
  const int64_t QD = int64_t{c.n_heads} * c.head_dim_k;
  const int64_t KD = int64_t{c.n_kv_heads} * c.head_dim_k;
  const int64_t VD = int64_t{c.n_kv_heads} * c.head_dim_v;
  const int64_t AD = int64_t{c.n_heads} * c.head_dim_v;
  const kv::KvLayout& lay = cache.layout();

  per_token(pool, T, [&](int32_t t) {
    const auto* row = static_cast<const uint8_t*>(w.token_embd.data) +
                      static_cast<size_t>(batch.tokens[t]) * w.token_embd.row_bytes;
    tensor::dequantize_row(w.token_embd.type, row, ws.x + t * E, E);
    // Rotation angles per token, shared by every head and layer.
    tensor::rope_cache(ws.pos[t], c.rope_dim, c.rope_base, c.rope_scale,
                       ws.rope + int64_t{t} * c.rope_dim);
  });

  kv::AttentionShape shape;
  shape.n_heads = c.n_heads;
  shape.n_kv_heads = c.n_kv_heads;
  shape.head_dim_k = c.head_dim_k;
  shape.head_dim_v = c.head_dim_v;
  shape.scale = 1.f / std::sqrt(static_cast<float>(c.head_dim_k));

  for (int32_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = w.layers[static_cast<size_t>(l)];
    norm_project(pool, ws, l, T, L.attn_norm, c.rms_eps,
                 {{MatRole::kQ, L.wq, ws.q, QD},
                  {MatRole::kK, L.wk, ws.k, KD},
                  {MatRole::kV, L.wv, ws.v, VD}});

    per_token(pool, T, [&](int32_t t) {
      const int32_t pos = ws.pos[t];
      const float* cs = ws.rope + int64_t{t} * c.rope_dim;
      for (int32_t h = 0; h < c.n_heads; ++h) {
        tensor::rope_apply(ws.q + t * QD + h * c.head_dim_k, c.rope_dim, cs,
                           tensor::RopeMode::kNorm);
      }
      for (int32_t h = 0; h < c.n_kv_heads; ++h) {
        float* k = ws.k + t * KD + h * c.head_dim_k;
        tensor::rope_apply(k, c.rope_dim, cs, tensor::RopeMode::kNorm);
        tensor::quantize_kv_row(lay.k_type, k, cache.k_row(batch.seqs[t], l, h, pos), c.head_dim_k);
        tensor::quantize_kv_row(lay.v_type, ws.v + t * VD + h * c.head_dim_v,
                                cache.v_row(batch.seqs[t], l, h, pos), c.head_dim_v);
      }
    });

    // Each (token, KV head) item attends for the query heads sharing that KV
    // head, over its own sequence up to its position. Items are taken from a
    // shared counter, latest (costliest) tokens first, so threads stay balanced.
    const int32_t group = c.n_heads / c.n_kv_heads;
    const int64_t items = int64_t{T} * c.n_kv_heads;
    std::atomic<int64_t> next{0};
    pool.run([&](int tid, int) {
      float* scores = ws.scores + static_cast<int64_t>(tid) * ws.scores_stride;
      for (int64_t it; (it = next.fetch_add(1, std::memory_order_relaxed)) < items;) {
        const auto t = static_cast<int32_t>(T - 1 - it / c.n_kv_heads);
        const auto g = static_cast<int32_t>(it % c.n_kv_heads);
        kv::AttentionShape st = shape;
        st.batched = batch.decode[t] == 0;
        kv::attend(cache, batch.seqs[t], l, st, ws.q + t * QD, ws.pos[t] + 1, g * group,
                   (g + 1) * group, ws.att + t * AD, scores);
      }
    });

    observe(ws, l, MatRole::kO, ws.att, T, AD);
    tensor::matmul(L.wo, ws.att, AD, T, ws.xb, E, ws.quant, pool);
    add_into(ws.x, ws.xb, T * E);

    norm_project(pool, ws, l, T, L.ffn_norm, c.rms_eps,
                 {{MatRole::kGate, L.gate, ws.gate, F}, {MatRole::kUp, L.up, ws.up, F}});
    // SwiGLU per token (ggml's swiglu is per row), each row converted for
    // the down projection by the thread that made it.
    const bool fuse_down = T >= kParallelTokens;
    const size_t down_act = tensor::matmul_scratch_bytes(L.down.type, F, 1);
    per_token(pool, T, [&](int32_t t) {
      tensor::silu_mul(ws.gate + t * F, ws.up + t * F, F);
      if (fuse_down) {
        tensor::quantize_activations(L.down.type, ws.gate + t * F, F, F, 1,
                                     static_cast<char*>(ws.quant) + t * down_act);
      }
    });
    observe(ws, l, MatRole::kDown, ws.gate, T, F);
    if (fuse_down) {
      float* outs[1] = {ws.xb};
      const int64_t strides[1] = {E};
      tensor::matmul_multi_converted(&L.down, 1, ws.quant, T, outs, strides, pool);
    } else {
      tensor::matmul(L.down, ws.gate, F, T, ws.xb, E, ws.quant, pool);
    }
    add_into(ws.x, ws.xb, T * E);
  }

  int32_t n_out = 0;
  for (int32_t t = 0; t < T; ++t) {
    if (!batch.want_logits[t]) continue;
    tensor::rms_norm(ws.x + t * E, w.output_norm, ws.final_x + n_out * E, E, c.rms_eps);
    ++n_out;
  }
  observe(ws, -1, MatRole::kOutput, ws.final_x, n_out, E);
  if (n_out > 0)
    tensor::matmul(w.output, ws.final_x, E, n_out, ws.logits, c.n_vocab, ws.quant, pool);
}

}  // namespace snug::model
