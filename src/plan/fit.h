// The fit: the largest context, KV type and number of parallel sequences that
// keep the predicted peak under a budget, or a refusal that says what the
// model needs, what the budget is and what would fit instead.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/sysmem.h"
#include "plan/footprint.h"
#include "plan/session_plan.h"

namespace snug::plan {

// The default budget: what the machine or its container really allows now
// (MemoryLimits::available(): MemAvailable, or the cgroup limit minus usage
// with inactive page cache counted as free, whichever is smaller), plus what
// this process already holds (the plan counts it), minus a headroom of 10%
// kept between 32 MiB and 1 GiB for the kernel, other processes and error.
struct DefaultBudget {
  uint64_t available = 0;
  uint64_t self_rss = 0;
  uint64_t headroom = 0;
  uint64_t bytes = 0;  // available + self_rss - headroom (0 when that is negative)
  std::string source;  // "RAM", "cgroup v2 limit"...
};
DefaultBudget default_budget(const MemoryLimits& limits, uint64_t self_rss);

// Contexts the fit considers are multiples of this (or the trained context itself).
constexpr int32_t kContextStep = 256;

// Largest n_ctx in [1, n_ctx_train] whose plan for `shape` (n_ctx ignored)
// stays within `budget`, rounded down to kContextStep when above it; 0 if none.
int32_t largest_context(const ModelFootprint& fp, SessionShape shape, uint64_t budget);
// Largest n_parallel (up to `max_parallel`) at shape.n_ctx within budget; 0 if none.
int32_t largest_parallel(const ModelFootprint& fp, SessionShape shape, uint64_t budget,
                         int32_t max_parallel = 256);

struct FitRequest {
  SessionShape shape;  // n_ctx 0: the largest that fits, up to the trained context
  uint64_t budget = 0;
};

struct Fit {
  MemoryPlan plan;
  bool auto_context = false;   // n_ctx was chosen by the fit
  std::string context_reason;  // why n_ctx is what it is, for reports: "--ctx", "largest that..."
};

// The plan for the request, or an Error (one line) saying what it needs, what
// the budget is, and what would fit: a shorter context, a smaller KV type, or
// a smaller weight type when even the weights do not fit. Also refuses a
// context beyond the trained one.
Result<Fit> fit(const ModelFootprint& fp, const FitRequest& request);

// The context of a run that generates at most `n_predict` (>= 0) tokens after
// a prompt of `prompt_tokens`: prompt + n_predict (at least prompt + 1, so the
// prompt is evaluated), rounded up to whole KV blocks of `block_tokens`, never
// above the model's trained context `trained` nor `fitted`, the largest
// context that fits the budget. A one-shot run holds no more than it can use.
struct ContextChoice {
  int32_t n_ctx = 0;
  std::string reason;  // "prompt 39 + -n 96, rounded to blocks of 16", or what capped it
};
ContextChoice one_shot_context(int32_t prompt_tokens, int32_t n_predict, int32_t block_tokens,
                               int32_t trained, int32_t fitted);

}  // namespace snug::plan
