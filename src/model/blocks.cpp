#include "model/blocks.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include "base/check.h"
#include "kv/attention.h"
#include "tensor/kernels.h"

namespace snug::model::blocks {
namespace {

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
      tensor::matmul(p.w, ws.xb, p.w.cols, T, p.out, p.stride, ws.quant_for(p.w.type, p.w.cols, T),
                     pool);
    return;
  }
  tensor::matmul_multi(set.mats, set.n, ws.xb, set.mats[0].cols, T, set.outs, set.strides,
                       ws.quant_for(set.mats[0].type, set.mats[0].cols, T), pool);
}

}  // namespace

void embed(const ModelConfig& c, const Weights& w, const Batch& batch, Workspace& ws,
           ThreadPool& pool, bool tokens) {
  const int64_t E = c.n_embd;
  const auto n_sets = static_cast<int64_t>(c.rope_sets.size());
  // A tied table packed for the output head (Model::repack) is read from the
  // packed copy: the file's pages of its rows were let go, and looking a row
  // up there would map them (and their neighbours) again.
  const bool packed = w.output.packed != nullptr && w.output.data == w.token_embd.data;
  const int64_t packed_rows = packed ? tensor::matmul_packed_rows(w.output) : 0;
  per_token(pool, batch.size(), [&](int32_t t) {
    if (tokens) {
      const int32_t tok = batch.tokens[t];
      float* x = ws.x + t * E;
      if (tok < packed_rows) {
        tensor::matmul_packed_dequantize_row(w.output, tok, x);
      } else {
        const auto* row = static_cast<const uint8_t*>(w.token_embd.data) +
                          static_cast<size_t>(tok) * w.token_embd.row_bytes;
        tensor::dequantize_row(w.token_embd.type, row, x, E);
      }
      if (c.embd_scale != 1.f) {
        for (int64_t i = 0; i < E; ++i) x[i] *= c.embd_scale;
      }
    }
    // Rotation angles per token and rope set, shared by every head and layer.
    for (int64_t k = 0; k < n_sets; ++k) {
      RopeParams s = c.rope_sets[static_cast<size_t>(k)];
      s.freq_factors = k == 0 ? w.rope_freqs : nullptr;
      tensor::rope_cache_scaled(ws.pos[t], c.rope_dim, s,
                                ws.rope + (int64_t{t} * n_sets + k) * c.rope_dim);
    }
  });
}

void norm_project(ThreadPool& pool, Workspace& ws, int32_t layer, int32_t T, const float* norm_w,
                  float eps, std::initializer_list<Projection> ps, bool add_pending) {
  const ProjectionSet set(ps);
  const tensor::DType type = set.mats[0].type;
  const int64_t E = set.mats[0].cols;
  const bool fuse = set.shared && T >= kParallelTokens;
  const size_t act = tensor::matmul_scratch_bytes(type, E, 1);
  void* quant = fuse ? ws.quant_for(type, E, T) : nullptr;
  per_token_range(pool, T, [&](int32_t b, int32_t e) {
    if (add_pending) {
      for (int64_t i = b * E; i < e * E; ++i) ws.x[i] += ws.xb[i];
    }
    tensor::rms_norm_rows(ws.x + b * E, norm_w, ws.xb + b * E, E, e - b, eps);
    if (fuse) {
      tensor::quantize_activations(type, ws.xb + b * E, E, E, e - b,
                                   static_cast<char*>(quant) + b * act);
    }
  });
  if (!fuse) {
    project(pool, ws, layer, T, ps);
    return;
  }
  for (const Projection& p : ps) observe(ws, layer, p.role, ws.xb, T, p.w.cols);
  tensor::matmul_multi_converted(set.mats, set.n, quant, T, set.outs, set.strides, pool);
}

void attention(const ModelConfig& c, const LayerWeights& L, int32_t l, const Batch& batch,
               kv::KvCache& cache, Workspace& ws, ThreadPool& pool) {
  const int32_t T = batch.size();
  const int64_t QD = int64_t{c.n_heads} * c.head_dim_k;
  const int64_t KD = int64_t{c.n_kv_heads} * c.head_dim_k;
  const int64_t VD = int64_t{c.n_kv_heads} * c.head_dim_v;
  const int64_t AD = int64_t{c.n_heads} * c.head_dim_v;
  const kv::KvLayout& lay = cache.layout();
  const LayerConfig& lc = c.layers[static_cast<size_t>(l)];
  const auto n_sets = static_cast<int64_t>(c.rope_sets.size());
  const tensor::RopeMode mode = c.rope_neox ? tensor::RopeMode::kNeox : tensor::RopeMode::kNorm;

  // Biases as ggml adds them, to each projection's output row.
  auto add_bias = [](float* x, const float* b, int64_t n) {
    if (b != nullptr)
      for (int64_t i = 0; i < n; ++i) x[i] += b[i];
  };
  per_token(pool, T, [&](int32_t t) {
    const int32_t pos = ws.pos[t];
    const float* cs = ws.rope + (int64_t{t} * n_sets + lc.rope_set) * c.rope_dim;
    add_bias(ws.q + t * QD, L.bq, QD);
    add_bias(ws.k + t * KD, L.bk, KD);
    add_bias(ws.v + t * VD, L.bv, VD);
    for (int32_t h = 0; h < c.n_heads; ++h) {
      float* q = ws.q + t * QD + h * c.head_dim_k;
      if (L.q_norm != nullptr) tensor::rms_norm(q, L.q_norm, q, c.head_dim_k, c.rms_eps);
      tensor::rope_apply(q, c.rope_dim, cs, mode);
      if (c.query_scale > 0.f) {
        for (int32_t i = 0; i < c.head_dim_k; ++i) q[i] *= c.query_scale;
      }
    }
    for (int32_t h = 0; h < c.n_kv_heads; ++h) {
      float* k = ws.k + t * KD + h * c.head_dim_k;
      if (L.k_norm != nullptr) tensor::rms_norm(k, L.k_norm, k, c.head_dim_k, c.rms_eps);
      tensor::rope_apply(k, c.rope_dim, cs, mode);
      tensor::quantize_kv_row(lay.k_type, k, cache.k_row(batch.seqs[t], l, h, pos), c.head_dim_k);
      tensor::quantize_kv_row(lay.v_type, ws.v + t * VD + h * c.head_dim_v,
                              cache.v_row(batch.seqs[t], l, h, pos), c.head_dim_v);
    }
  });

  kv::AttentionShape shape;
  shape.n_heads = c.n_heads;
  shape.n_kv_heads = c.n_kv_heads;
  shape.head_dim_k = c.head_dim_k;
  shape.head_dim_v = c.head_dim_v;
  shape.scale = c.query_scale > 0.f ? 1.f : 1.f / std::sqrt(static_cast<float>(c.head_dim_k));

  // Each (token, KV head) item attends for the query heads sharing that KV
  // head, over its own sequence up to its position (from the window's start
  // on a sliding-window layer: llama.cpp masks positions p0 with
  // pos - p0 >= window). Items are taken from a shared counter, latest
  // (costliest) tokens first, so threads stay balanced.
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
      const int32_t end = ws.pos[t] + 1;
      const int32_t begin = lc.window > 0 ? std::max(0, end - lc.window) : 0;
      kv::attend(cache, batch.seqs[t], l, st, ws.q + t * QD, end, g * group, (g + 1) * group,
                 ws.att + t * AD, scores, begin);
    }
  });
}

void attention_output(const ModelConfig& c, const LayerWeights& L, int32_t l, int32_t T,
                      Workspace& ws, ThreadPool& pool) {
  const int64_t AD = int64_t{c.n_heads} * c.head_dim_v;
  observe(ws, l, MatRole::kO, ws.att, T, AD);
  tensor::matmul(L.wo, ws.att, AD, T, ws.xb, c.n_embd, ws.quant_for(L.wo.type, AD, T), pool);
}

void ffn_down(const ModelConfig& c, const LayerWeights& L, int32_t l, int32_t T, Workspace& ws,
              ThreadPool& pool) {
  const int64_t E = c.n_embd, F = c.n_ff;
  // The activation per token (ggml's swiglu and geglu are per row), each row
  // converted for the down projection by the thread that made it.
  const bool fuse_down = T >= kParallelTokens;
  const size_t down_act = tensor::matmul_scratch_bytes(L.down.type, F, 1);
  void* quant = fuse_down ? ws.quant_for(L.down.type, F, T) : nullptr;
  per_token_range(pool, T, [&](int32_t b, int32_t e) {
    for (int32_t t = b; t < e; ++t) {
      if (c.ffn_activation == FfnActivation::kGeluTanh) {
        tensor::gelu_mul(ws.gate + t * F, ws.up + t * F, F);
      } else {
        tensor::silu_mul(ws.gate + t * F, ws.up + t * F, F);
      }
    }
    if (fuse_down) {  // the range's rows together (their conversions overlap)
      tensor::quantize_activations(L.down.type, ws.gate + b * F, F, F, e - b,
                                   static_cast<char*>(quant) + b * down_act);
    }
  });
  observe(ws, l, MatRole::kDown, ws.gate, T, F);
  if (fuse_down) {
    float* outs[1] = {ws.xb};
    const int64_t strides[1] = {E};
    tensor::matmul_multi_converted(&L.down, 1, quant, T, outs, strides, pool);
  } else {
    tensor::matmul(L.down, ws.gate, F, T, ws.xb, E, ws.quant_for(L.down.type, F, T), pool);
  }
}

bool add_residual(const ModelConfig& c, const float* bias, const float* post_norm, int32_t T,
                  Workspace& ws, ThreadPool& pool) {
  const int64_t E = c.n_embd;
  if (post_norm == nullptr) {
    if (bias == nullptr) return true;  // pending: added in the next norm's pass
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < E; ++i) ws.x[t * E + i] += ws.xb[t * E + i] + bias[i];
    return false;
  }
  per_token(pool, T, [&](int32_t t) {
    float* y = ws.xb + t * E;
    float* x = ws.x + t * E;
    if (bias != nullptr)
      for (int64_t i = 0; i < E; ++i) y[i] += bias[i];
    tensor::rms_norm(y, post_norm, y, E, c.rms_eps);
    for (int64_t i = 0; i < E; ++i) x[i] += y[i];
  });
  return false;
}

void add_pending_residual(const ModelConfig& c, int32_t T, Workspace& ws) {
  for (int64_t i = 0; i < T * int64_t{c.n_embd}; ++i) ws.x[i] += ws.xb[i];
}

void logits(const ModelConfig& c, const Weights& w, const Batch& batch, Workspace& ws,
            ThreadPool& pool) {
  const int64_t E = c.n_embd;
  int32_t n_out = 0;
  for (int32_t t = 0; t < batch.size(); ++t) {
    if (!batch.want_logits[t]) continue;
    tensor::rms_norm(ws.x + t * E, w.output_norm, ws.final_x + n_out * E, E, c.rms_eps);
    ++n_out;
  }
  observe(ws, -1, MatRole::kOutput, ws.final_x, n_out, E);
  if (n_out > 0)
    tensor::matmul(w.output, ws.final_x, E, n_out, ws.logits, c.n_vocab,
                   ws.quant_for(w.output.type, E, n_out), pool);
  if (c.final_softcap > 0.f) {
    // ggml: scale by 1/cap, tanh, scale by cap.
    const float inv = 1.f / c.final_softcap;
    for (int64_t i = 0; i < int64_t{n_out} * c.n_vocab; ++i)
      ws.logits[i] = std::tanh(ws.logits[i] * inv) * c.final_softcap;
  }
}

}  // namespace snug::model::blocks
