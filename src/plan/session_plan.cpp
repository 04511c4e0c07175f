#include "plan/session_plan.h"

#include <algorithm>
#include <iterator>

#include "base/checked.h"
#include "base/process_image.h"

namespace snug::plan {

std::optional<tensor::DType> parse_kv_type(std::string_view name) {
  for (tensor::DType t : kKvTypes) {
    if (tensor::dtype_name(t) == name) return t;
  }
  return std::nullopt;
}

bool engine_supports_kv_type(tensor::DType t) {
  return std::find(std::begin(kKvTypes), std::end(kKvTypes), t) != std::end(kKvTypes);
}

std::string kv_type_label(tensor::DType k, tensor::DType v) {
  std::string s(tensor::dtype_name(k));
  if (v != k) {
    s += '/';
    s += tensor::dtype_name(v);
  }
  return s;
}

Result<SessionPlan> plan_session(const model::ModelConfig& c,
                                 const std::vector<tensor::DType>& matrix_types,
                                 const SessionShape& shape) {
  if (shape.n_ctx <= 0) return make_error("context size must be positive, got ", shape.n_ctx);
  if (shape.n_ctx > c.n_ctx_train)
    return make_error("context of ", shape.n_ctx, " tokens exceeds the model's trained context of ",
                      c.n_ctx_train);
  if (shape.n_parallel <= 0)
    return make_error("parallel sequences must be positive, got ", shape.n_parallel);
  if (shape.n_batch <= 0) return make_error("batch size must be positive, got ", shape.n_batch);
  if (shape.n_seqs < 0) return make_error("sequence count must be >= 0, got ", shape.n_seqs);
  if (shape.n_threads <= 0)
    return make_error("thread count must be positive, got ", shape.n_threads);
  if (shape.kv_block_tokens <= 0)
    return make_error("KV block size must be positive, got ", shape.kv_block_tokens);
  SessionPlan p;
  p.shape = shape;
  p.shape.n_batch = std::min(shape.n_batch, shape.n_ctx);

  p.kv.n_layers = c.n_layers;
  p.kv.n_kv_heads = c.n_kv_heads;
  p.kv.head_dim_k = c.head_dim_k;
  p.kv.head_dim_v = c.head_dim_v;
  p.kv.block_tokens = shape.kv_block_tokens;
  p.kv.k_type = shape.k_type;
  p.kv.v_type = shape.v_type;
  p.kv.layer_window = model::layer_windows(c);
  p.kv.window_slack = shape.kv_window_slack;
  // The same check KvCache::create makes: a type it stores, whole blocks per head.
  if (Status st = p.kv.check(); !st.ok()) return st.error();
  // bytes_per_token() in 64 bits is safe: layers, heads and head sizes are bounded by
  // read_config; the products with the context and the sequence count are checked.
  const auto per_seq_blocks =
      static_cast<uint64_t>(p.kv.sequence_blocks(shape.n_ctx, p.shape.n_batch));
  auto blocks = checked_mul(per_seq_blocks, static_cast<uint64_t>(shape.n_parallel));
  auto bytes = blocks ? checked_mul(*blocks, p.kv.block_bytes()) : std::nullopt;
  if (!blocks || *blocks > static_cast<uint64_t>(INT32_MAX) || !bytes)
    return make_error("a KV cache of ", shape.n_parallel, " x ", shape.n_ctx,
                      " tokens overflows a 64-bit byte count");
  p.kv_blocks = static_cast<int32_t>(*blocks);
  p.kv_bytes = *bytes;

  model::WorkspaceShape ws;
  const int32_t seqs = shape.n_seqs > 0 ? shape.n_seqs : shape.n_parallel;
  ws.max_tokens = std::max(p.shape.n_batch, std::min(seqs, shape.n_ctx));
  ws.max_logits = std::min(seqs, ws.max_tokens);
  ws.max_ctx = shape.n_ctx;
  ws.n_threads = shape.n_threads;
  p.workspace = model::plan_workspace(c, matrix_types, ws);
  return p;
}

int32_t largest_session_context(const model::ModelConfig& c,
                                const std::vector<tensor::DType>& matrix_types, SessionShape shape,
                                uint64_t bytes) {
  int32_t lo = 0, hi = c.n_ctx_train;
  while (lo < hi) {
    shape.n_ctx = lo + (hi - lo + 1) / 2;
    auto p = plan_session(c, matrix_types, shape);
    if (p.ok() && p->kv_bytes + p->workspace.total() <= bytes) {
      lo = shape.n_ctx;
    } else {
      hi = shape.n_ctx - 1;
    }
  }
  return lo;
}

uint64_t engine_bytes(const model::ModelConfig& c, const SessionShape& s) {
  const uint64_t per_seq =
      static_cast<uint64_t>(s.n_ctx) * sizeof(int32_t) * 2 + static_cast<uint64_t>(c.n_vocab) * 12;
  // A scheduler runs up to n_seqs sequences (short ones share the pool).
  return per_seq * static_cast<uint64_t>(std::max(s.n_parallel, s.n_seqs));
}

Result<MemoryPlan> plan_memory(const ModelFootprint& fp, const SessionShape& shape) {
  MemoryPlan m;
  SNUG_ASSIGN_OR_RETURN(m.session, plan_session(fp.config, fp.matrix_types, shape));
  m.process = process_image_bytes() + kProcessBaseBytes +
              kPerThreadBytes * static_cast<uint64_t>(shape.n_threads);
  m.header = fp.header_bytes + fp.header_index_bytes;
  m.weights = fp.weights_touched + fp.weights_resident;
  m.tokenizer = fp.tokenizer_bytes;
  m.kv = m.session.kv_bytes;
  m.workspace = m.session.workspace.total();
  m.engine = engine_bytes(fp.config, shape);
  uint64_t total = 0;
  for (uint64_t part : {m.process, m.header, m.weights, m.tokenizer, m.kv, m.workspace, m.engine}) {
    auto t = checked_add(total, part);
    if (!t) return make_error("the plan's total overflows a 64-bit byte count");
    total = *t;
  }
  // Repacking at load holds one slice of a matrix twice, before the tokenizer, the KV
  // cache and the workspace exist.
  m.predicted_peak_rss =
      std::max(total, total - m.kv - m.workspace - m.engine - m.tokenizer + fp.repack_transient);
  return m;
}

}  // namespace snug::plan
