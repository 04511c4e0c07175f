// A session: one model with its KV cache, workspace and thread pool, running
// one sequence whose token history it remembers so that a later prompt that
// starts the same way (the next chat turn) reuses the cached prefix.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "base/result.h"
#include "base/thread_pool.h"
#include "kv/kv_cache.h"
#include "memory/budget.h"
#include "memory/ledger.h"
#include "model/model.h"
#include "plan/session_plan.h"

namespace snug::engine {

struct SessionOptions {
  // Tokens the sequence may hold. 0: the largest context, up to the model's
  // trained one, whose KV cache and workspace fit the budget's free bytes (the
  // whole trained context without a budget). The CLI passes the context that
  // plan::fit chose for the whole process.
  int32_t n_ctx = 0;
  int32_t n_batch = 256;  // prompt tokens per forward call
  int32_t n_threads = 0;  // 0: all cores the process may use
  // Element types of the KV cache's keys and values: f16, q8_0 or q4_0
  // (quantized types need head sizes that are a multiple of 32).
  tensor::DType k_type = tensor::DType::kF16;
  tensor::DType v_type = tensor::DType::kF16;
  int32_t kv_block_tokens = 16;

  void set_kv_type(tensor::DType t) { k_type = v_type = t; }
};

class Session {
 public:
  // Plans the KV pool and workspace with plan::plan_session (the numbers
  // `snug plan` prints), reserves them from `budget` when given (failing
  // before allocating anything if they do not fit), allocates them, and
  // commits their pages so the memory is really held from the start.
  static Result<std::unique_ptr<Session>> create(const model::Model& model,
                                                 const SessionOptions& options,
                                                 memory::Ledger* ledger,
                                                 memory::Budget* budget = nullptr);

  // Appends tokens to the sequence (in chunks of n_batch) and returns the
  // logits after the last one (n_vocab floats, owned by the session, valid
  // until the next call; the caller may modify them, e.g. to mask tokens).
  // Fails, leaving the sequence as it was, when the context would overflow
  // (when a later chunk fails, as truncate(n) leaves it for the length before).
  // `generated`: the tokens were sampled, not a prompt (model::Batch::decode).
  Result<float*> feed(std::span<const int32_t> tokens, bool generated = false);
  // Keeps the first n tokens of the history and their cache, and returns n;
  // or, where a sliding-window layer already gave back positions that n's
  // window needs (n more than KvLayout::window_slack before the end), keeps
  // nothing and returns 0.
  int32_t truncate(int32_t n);
  // Length of the longest common prefix of the history and `tokens`.
  int32_t common_prefix(std::span<const int32_t> tokens) const;

  const std::vector<int32_t>& history() const { return history_; }
  int32_t n_ctx() const { return options_.n_ctx; }
  int32_t n_threads() const { return pool_->size(); }
  const model::Model& model() const { return model_; }
  const kv::KvCache& cache() const { return cache_; }
  const plan::SessionPlan& plan() const { return plan_; }

 private:
  Session(const model::Model& m, const SessionOptions& o) : model_(m), options_(o) {}
  const model::Model& model_;
  SessionOptions options_;
  plan::SessionPlan plan_;
  memory::Reservation reservation_;  // declared before what it covers, released after it
  std::unique_ptr<ThreadPool> pool_;
  kv::KvCache cache_;
  model::Workspace ws_;
  kv::SeqId seq_ = 0;
  model::Batch batch_;
  std::vector<int32_t> history_;
};

int default_thread_count();

}  // namespace snug::engine
