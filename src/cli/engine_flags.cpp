#include "cli/engine_flags.h"

#include <algorithm>
#include <filesystem>

namespace snug::cli {

int32_t EngineFlags::resolved_max_seqs() const {
  const int32_t m = max_seqs > 0 ? max_seqs : 4 * parallel;
  return std::max(1, std::min(m, batch_tokens));
}

PlanFlags EngineFlags::plan_flags() const {
  PlanFlags pf;
  pf.model = model;
  pf.memory = memory;
  pf.memory_given = memory_option != nullptr && memory_option->count() > 0;
  pf.ctx = ctx;
  pf.parallel = parallel;
  pf.seqs = resolved_max_seqs();
  pf.batch = batch_tokens;
  pf.threads = threads;
  pf.kv_type = kv_type;
  pf.k_type = k_type;
  pf.v_type = v_type;
  pf.repack = repack;
  return pf;
}

std::string EngineFlags::served_name(const std::string& alias) const {
  if (!alias.empty()) return alias;
  const std::filesystem::path p(model);
  if (!p.has_parent_path() && p.extension() != ".gguf") return model;
  return p.stem().string();
}

engine::SchedulerOptions EngineFlags::scheduler_options(const plan::SessionShape& shape) const {
  engine::SchedulerOptions so;
  so.n_ctx = shape.n_ctx;
  so.n_parallel = shape.n_parallel;
  so.max_seqs = resolved_max_seqs();
  so.batch_tokens = batch_tokens;
  so.prefill_chunk = prefill_chunk;
  so.max_queue = queue;
  so.n_threads = shape.n_threads;
  so.k_type = shape.k_type;
  so.v_type = shape.v_type;
  so.kv_block_tokens = shape.kv_block_tokens;
  so.prefix_cache = !no_prefix_cache;
  so.admission = admission == "prompt" ? engine::SchedulerOptions::Admission::kPromptOnly
                                       : engine::SchedulerOptions::Admission::kReserve;
  return so;
}

void add_engine_flags(CLI::App& sub, EngineFlags* f) {
  sub.add_option("model", f->model, "GGUF file or known model name (default: smollm2)");
  f->memory_option = sub.add_option("--memory", f->memory,
                                    "memory budget (default: what the machine or its cgroup "
                                    "allows, minus 10% headroom)")
                         ->check(memory_size_validator());
  sub.add_option("-c,--ctx", f->ctx,
                 "tokens per sequence (default: the largest that fits --parallel sequences)")
      ->check(CLI::PositiveNumber);
  sub.add_option("--parallel", f->parallel,
                 "full-context sequences the KV pool holds (as snug plan --parallel)")
      ->check(CLI::PositiveNumber);
  sub.add_option("--batch-tokens", f->batch_tokens, "tokens per forward pass")
      ->check(CLI::PositiveNumber);
  sub.add_option("--prefill-chunk", f->prefill_chunk,
                 "prompt tokens a step takes while other sequences decode (default 0: what "
                 "--batch-tokens leaves); smaller keeps their inter-token gaps short")
      ->check(CLI::NonNegativeNumber);
  sub.add_option("--max-seqs", f->max_seqs,
                 "sequences running at once (default: 4 x --parallel, at most --batch-tokens)")
      ->check(CLI::NonNegativeNumber);
  sub.add_option("--queue", f->queue, "waiting requests beyond which requests are refused")
      ->check(CLI::NonNegativeNumber);
  sub.add_option("-t,--threads", f->threads, "threads (0: all available cores)")
      ->check(CLI::NonNegativeNumber);
  add_kv_type_options(sub, &f->kv_type, &f->k_type, &f->v_type);
  add_repack_options(sub, &f->repack);
  sub.add_flag("--no-prefix-cache", f->no_prefix_cache, "do not reuse cached prompt blocks");
  sub.add_option("--admission", f->admission,
                 "reserve: admit a request when what it and the running ones may grow to "
                 "(prompt + max_tokens) fits, so none is preempted; prompt: admit on the "
                 "prompt alone and preempt when the KV pool runs out (default: reserve)")
      ->check(CLI::IsMember({"reserve", "prompt"}));
}

}  // namespace snug::cli
