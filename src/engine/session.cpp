#include "engine/session.h"

#include <sched.h>

#include <algorithm>
#include <thread>

namespace snug::engine {

int default_thread_count() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

Result<std::unique_ptr<Session>> Session::create(const model::Model& model,
                                                 const SessionOptions& options,
                                                 memory::Ledger* ledger) {
  const auto& c = model.config();
  if (options.n_ctx < 0) return make_error("context size must be positive, got ", options.n_ctx);
  if (options.n_ctx > c.n_ctx_train)
    return make_error("context of ", options.n_ctx,
                      " tokens exceeds the model's trained context of ", c.n_ctx_train);
  if (options.n_batch <= 0) return make_error("batch size must be positive, got ", options.n_batch);
  std::unique_ptr<Session> s(new Session(model, options));
  if (options.n_ctx == 0) s->options_.n_ctx = std::min(c.n_ctx_train, kDefaultContext);
  const int threads = options.n_threads > 0 ? options.n_threads : default_thread_count();
  s->pool_ = std::make_unique<ThreadPool>(threads);
  const int32_t n_ctx = s->options_.n_ctx;
  s->options_.n_batch = std::min(options.n_batch, n_ctx);
  const kv::KvLayout layout = model.kv_layout(options.kv_type, options.kv_block_tokens);
  const int32_t blocks = (n_ctx + layout.block_tokens - 1) / layout.block_tokens;
  SNUG_ASSIGN_OR_RETURN(s->cache_, kv::KvCache::create(layout, blocks, ledger));
  model::WorkspaceShape shape;
  shape.max_tokens = s->options_.n_batch;
  shape.max_logits = 1;
  shape.max_ctx = n_ctx;
  shape.n_threads = threads;
  auto plan = model::plan_workspace(c, model.matrix_types(), shape);
  SNUG_ASSIGN_OR_RETURN(s->ws_, model::Workspace::create(c, plan, ledger));
  s->seq_ = s->cache_.create_sequence();
  s->history_.reserve(static_cast<size_t>(n_ctx));
  return s;
}

Result<float*> Session::feed(std::span<const int32_t> tokens) {
  if (tokens.empty()) return make_error("nothing to feed");
  const auto total = static_cast<int64_t>(history_.size()) + static_cast<int64_t>(tokens.size());
  if (total > options_.n_ctx)
    return make_error("prompt and history need ", total, " tokens but the context holds ",
                      options_.n_ctx, " (raise --ctx or shorten the prompt)");
  const auto start = static_cast<int32_t>(history_.size());
  for (size_t off = 0; off < tokens.size(); off += static_cast<size_t>(options_.n_batch)) {
    const size_t n = std::min(tokens.size() - off, static_cast<size_t>(options_.n_batch));
    batch_.clear();
    for (size_t i = 0; i < n; ++i) batch_.add(tokens[off + i], seq_, off + i + 1 == tokens.size());
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

void Session::truncate(int32_t n) {
  if (n >= static_cast<int32_t>(history_.size())) return;
  history_.resize(static_cast<size_t>(n));
  cache_.truncate(seq_, n);
}

int32_t Session::common_prefix(std::span<const int32_t> tokens) const {
  size_t n = std::min(tokens.size(), history_.size());
  size_t i = 0;
  while (i < n && tokens[i] == history_[i]) ++i;
  return static_cast<int32_t>(i);
}

}  // namespace snug::engine
