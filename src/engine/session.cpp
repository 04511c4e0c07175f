#include "engine/session.h"

#include <sched.h>

#include <algorithm>
#include <thread>

#include "base/bytes.h"
#include "plan/footprint.h"

namespace snug::engine {

int default_thread_count() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

Result<std::unique_ptr<Session>> Session::create(const model::Model& model,
                                                 const SessionOptions& options,
                                                 memory::Ledger* ledger, memory::Budget* budget) {
  const auto& c = model.config();
  if (options.n_ctx < 0) return make_error("context size must be positive, got ", options.n_ctx);
  kv::KvLayout types_only;  // refuses an unsupported type before a context is fitted
  types_only.head_dim_k = c.head_dim_k;
  types_only.head_dim_v = c.head_dim_v;
  types_only.k_type = options.k_type;
  types_only.v_type = options.v_type;
  if (Status st = types_only.check(); !st.ok()) return st.error();
  std::unique_ptr<Session> s(new Session(model, options));
  const int threads = options.n_threads > 0 ? options.n_threads : default_thread_count();
  plan::SessionShape shape;
  shape.n_ctx = options.n_ctx;
  shape.n_parallel = 1;
  shape.n_batch = options.n_batch;
  shape.n_threads = threads;
  shape.k_type = options.k_type;
  shape.v_type = options.v_type;
  shape.kv_block_tokens = options.kv_block_tokens;
  const std::vector<tensor::DType> types = plan::matrix_types(model.file(), c);
  if (shape.n_ctx == 0) {
    if (budget == nullptr) {
      shape.n_ctx = c.n_ctx_train;
    } else {
      shape.n_ctx = plan::largest_session_context(c, types, shape, budget->available());
      if (shape.n_ctx == 0)
        return make_error("no context fits the ", format_bytes(budget->available()),
                          " left in the memory budget");
    }
  }
  SNUG_ASSIGN_OR_RETURN(s->plan_, plan::plan_session(c, types, shape));
  const plan::SessionPlan& p = s->plan_;
  if (budget) {
    SNUG_ASSIGN_OR_RETURN(s->reservation_,
                          budget->reserve(p.kv_bytes + p.workspace.total(),
                                          "the KV cache and workspace for " +
                                              std::to_string(shape.n_ctx) + " tokens"));
  }
  s->options_.n_ctx = p.shape.n_ctx;
  s->options_.n_batch = p.shape.n_batch;
  s->pool_ = std::make_unique<ThreadPool>(threads);
  SNUG_ASSIGN_OR_RETURN(s->cache_, kv::KvCache::create(p.kv, p.kv_blocks, ledger));
  SNUG_ASSIGN_OR_RETURN(s->ws_, model::Workspace::create(c, p.workspace, ledger));
  // Commit now: an allocation the machine cannot back fails here, not mid-generation.
  if (Status st = s->cache_.commit(); !st.ok()) return make_error("KV cache: ", st.error().message);
  if (Status st = s->ws_.buffer.commit(); !st.ok())
    return make_error("workspace: ", st.error().message);
  s->seq_ = s->cache_.create_sequence();
  s->history_.reserve(static_cast<size_t>(p.shape.n_ctx));
  return s;
}

Result<float*> Session::feed(std::span<const int32_t> tokens, bool generated) {
  if (tokens.empty()) return make_error("nothing to feed");
  const auto total = static_cast<int64_t>(history_.size()) + static_cast<int64_t>(tokens.size());
  if (total > options_.n_ctx)
    return make_error("prompt and history need ", total, " tokens but the context holds ",
                      options_.n_ctx, " (raise --ctx or shorten the prompt)");
  const auto start = static_cast<int32_t>(history_.size());
  for (size_t off = 0; off < tokens.size(); off += static_cast<size_t>(options_.n_batch)) {
    const size_t n = std::min(tokens.size() - off, static_cast<size_t>(options_.n_batch));
    batch_.clear();
    for (size_t i = 0; i < n; ++i)
      batch_.add(tokens[off + i], seq_, off + i + 1 == tokens.size(), generated);
    Status st = model_.forward(batch_, cache_, ws_, *pool_);
    if (!st.ok()) {
      truncate(start);
      return st.take_error();
    }
    history_.insert(history_.end(), tokens.begin() + static_cast<ptrdiff_t>(off),
                    tokens.begin() + static_cast<ptrdiff_t>(off + n));
  }
  return ws_.logits;
}

int32_t Session::truncate(int32_t n) {
  if (n >= static_cast<int32_t>(history_.size())) return static_cast<int32_t>(history_.size());
  if (!cache_.can_truncate(seq_, n)) n = 0;
  history_.resize(static_cast<size_t>(n));
  cache_.truncate(seq_, n);
  return n;
}

int32_t Session::common_prefix(std::span<const int32_t> tokens) const {
  size_t n = std::min(tokens.size(), history_.size());
  size_t i = 0;
  while (i < n && tokens[i] == history_[i]) ++i;
  return static_cast<int32_t>(i);
}

}  // namespace snug::engine
