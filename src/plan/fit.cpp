#include "plan/fit.h"

#include <algorithm>
#include <string>

#include "base/bytes.h"

namespace snug::plan {
namespace {

bool fits(const ModelFootprint& fp, const SessionShape& s, uint64_t budget) {
  auto m = plan_memory(fp, s);
  return m.ok() && m->predicted_peak_rss <= budget;
}

std::string kv_hint(tensor::DType t) {
  return "--kv-type " + std::string(tensor::dtype_name(t));
}

// Bytes of one K row plus one V row of 32 elements: orders KV settings by size.
uint64_t kv_row_pair_bytes(tensor::DType k, tensor::DType v) {
  return tensor::row_bytes(k, 32).value_or(0) + tensor::row_bytes(v, 32).value_or(0);
}

// What would fit instead of `want`, as one clause for the refusal.
std::string alternatives(const ModelFootprint& fp, const SessionShape& want, uint64_t budget) {
  std::vector<std::string> out;
  const int32_t shorter = largest_context(fp, want, budget);
  if (shorter > 0) out.push_back("--ctx " + std::to_string(shorter) + " fits");
  for (tensor::DType t : kKvTypes) {  // largest first: the first smaller one that helps
    if (kv_row_pair_bytes(t, t) >= kv_row_pair_bytes(want.k_type, want.v_type)) continue;
    SessionShape s = want;
    s.set_kv_type(t);
    if (fits(fp, s, budget)) {
      out.push_back(kv_hint(t) + " fits --ctx " + std::to_string(want.n_ctx));
      break;
    }
    const int32_t c = largest_context(fp, s, budget);
    if (c > shorter) {
      out.push_back(kv_hint(t) + " fits --ctx " + std::to_string(c));
      break;
    }
  }
  if (want.n_parallel > 1) {
    const int32_t p = largest_parallel(fp, want, budget);
    if (p > 0) out.push_back("--parallel " + std::to_string(p) + " fits");
  }
  if (shorter == 0) {
    SessionShape tiny = want;
    tiny.n_ctx = std::min(fp.config.n_ctx_train, kContextStep);
    auto m = plan_memory(fp, tiny);
    std::string s = "even a context of " + std::to_string(tiny.n_ctx) + " needs " +
                    (m.ok() ? format_bytes(m->predicted_peak_rss) : std::string("more"));
    if (fp.weights_as_q4_0 < fp.weights_mapped)
      s += "; the weights take " + format_bytes(fp.weights_mapped) + ", as q4_0 about " +
           format_bytes(fp.weights_as_q4_0);
    out.push_back(s);
  }
  std::string joined;
  for (const auto& s : out) joined += (joined.empty() ? "" : "; ") + s;
  return joined.empty() ? "nothing smaller fits" : joined;
}

}  // namespace

DefaultBudget default_budget(const MemoryLimits& limits, uint64_t self_rss) {
  DefaultBudget b;
  b.available = limits.available();
  b.self_rss = self_rss;
  const bool cgroup_bound = limits.cgroup_limit && b.available < limits.physical_available;
  b.source = cgroup_bound ? "cgroup v" + std::to_string(limits.cgroup_version) + " limit"
                          : "available RAM";
  const uint64_t room = b.available + self_rss;
  b.headroom = std::clamp<uint64_t>(room / 10, 32 * kMiB, kGiB);
  b.bytes = room > b.headroom ? room - b.headroom : 0;
  return b;
}

int32_t largest_context(const ModelFootprint& fp, SessionShape shape, uint64_t budget) {
  int32_t lo = 0, hi = fp.config.n_ctx_train;  // fits(lo) holds (vacuously for 0)
  while (lo < hi) {
    const int32_t mid = lo + (hi - lo + 1) / 2;
    shape.n_ctx = mid;
    if (fits(fp, shape, budget)) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  if (lo >= kContextStep && lo < fp.config.n_ctx_train) lo = lo / kContextStep * kContextStep;
  return lo;
}

int32_t largest_parallel(const ModelFootprint& fp, SessionShape shape, uint64_t budget,
                         int32_t max_parallel) {
  int32_t lo = 0, hi = max_parallel;
  while (lo < hi) {
    const int32_t mid = lo + (hi - lo + 1) / 2;
    shape.n_parallel = mid;
    if (fits(fp, shape, budget)) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

Result<Fit> fit(const ModelFootprint& fp, const FitRequest& r) {
  const int32_t trained = fp.config.n_ctx_train;
  SessionShape shape = r.shape;
  if (shape.n_ctx > trained)
    return make_error("context of ", shape.n_ctx, " tokens exceeds the model's trained context of ",
                      trained);
  Fit f;
  f.context_reason = "--ctx";
  if (shape.n_ctx == 0) {
    f.auto_context = true;
    shape.n_ctx = largest_context(fp, shape, r.budget);
    f.context_reason = shape.n_ctx == trained
                           ? "largest that fits the budget: the model's trained context"
                           : "largest that fits the budget";
    if (shape.n_ctx < std::min(trained, kContextStep)) {
      SessionShape want = shape;
      want.n_ctx = std::min(trained, kContextStep);
      auto m = plan_memory(fp, want);
      if (!m.ok()) return m.take_error();
      return make_error("'", fp.name, "' needs ", format_bytes(m->predicted_peak_rss),
                        " for a context of ", want.n_ctx, " tokens but the memory budget is ",
                        format_bytes(r.budget), ": ", alternatives(fp, want, r.budget));
    }
  }
  SNUG_ASSIGN_OR_RETURN(f.plan, plan_memory(fp, shape));
  if (f.plan.predicted_peak_rss > r.budget) {
    const MemoryPlan& m = f.plan;
    return make_error("'", fp.name, "' needs ", format_bytes(m.predicted_peak_rss), " (weights ",
                      format_bytes(m.weights), ", KV cache ", format_bytes(m.kv), " for ",
                      shape.n_parallel > 1 ? std::to_string(shape.n_parallel) + " x " : "",
                      shape.n_ctx, " tokens in ", kv_type_label(shape.k_type, shape.v_type),
                      ") but the memory budget is ", format_bytes(r.budget), ": ",
                      alternatives(fp, shape, r.budget));
  }
  return f;
}

ContextChoice one_shot_context(int32_t prompt_tokens, int32_t n_predict, int32_t block_tokens,
                               int32_t trained, int32_t fitted) {
  const int64_t want = int64_t{prompt_tokens} + std::max(n_predict, 1);
  const int64_t rounded = (want + block_tokens - 1) / block_tokens * block_tokens;
  const std::string need = "prompt " + std::to_string(prompt_tokens) + " + -n " +
                           std::to_string(n_predict) + (n_predict < 1 ? " + 1" : "");
  ContextChoice c;
  if (rounded > trained && trained <= fitted) {
    c.n_ctx = trained;
    c.reason = need + " = " + std::to_string(want) + ", capped at the model's trained context";
  } else if (rounded > fitted) {
    c.n_ctx = fitted;
    c.reason = need + " = " + std::to_string(want) + ", capped at the largest that fits the budget";
  } else {
    c.n_ctx = static_cast<int32_t>(rounded);
    c.reason = need + ", rounded to blocks of " + std::to_string(block_tokens);
  }
  return c;
}

}  // namespace snug::plan
