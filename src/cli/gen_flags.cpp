#include "cli/gen_flags.h"

namespace snug::cli {

void GenFlags::add_to(CLI::App& app) {
  app.add_option("model", model, "GGUF file or known model name (default: smollm2)");
  app.add_option("-n,--n-predict", n_predict,
                 "maximum tokens to generate (-1: until end or full context)");
  app.add_option("-c,--ctx", ctx,
                 "context size in tokens (default: for run with -n, prompt + n in blocks of 16; "
                 "else the largest, up to the model's trained context, that fits the budget)")
      ->check(CLI::PositiveNumber);
  memory_option = app.add_option("--memory", memory,
                                 "memory budget: 512MiB, 1.5GiB, 2G or bytes (default: what the "
                                 "machine or its cgroup allows, minus 10% headroom)")
                      ->check(memory_size_validator());
  add_kv_type_options(app, &kv_type, &k_type, &v_type);
  add_repack_options(app, &repack);
  app.add_option("-b,--batch", batch, "prompt tokens per forward pass")->check(CLI::PositiveNumber);
  app.add_option("-t,--threads", threads, "threads (0: all available cores)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--temp", sampler.temperature, "temperature (0: greedy)");
  app.add_option("--top-k", sampler.top_k, "top-k (0: off)");
  app.add_option("--top-p", sampler.top_p, "top-p (1: off)");
  app.add_option("--min-p", sampler.min_p, "min-p (0: off)");
  app.add_option("--repeat-penalty", sampler.repeat_penalty, "repetition penalty (1: off)");
  app.add_option("--repeat-last-n", sampler.repeat_last_n,
                 "tokens the repetition penalty looks back");
  app.add_option("-s,--seed", sampler.seed, "random seed");
  app.add_option("--stop", stop, "stop string (repeatable)");
  app.add_option("--system", system, "system message for the chat template");
  app.add_flag("--ignore-eos", ignore_eos,
               "keep generating past end-of-generation tokens (benchmarks)");
  app.add_flag("--memory-report", memory_report,
               "print where memory went, and peak RSS, to stderr");
  app.add_flag("-v,--verbose", verbose, "log progress and timings to stderr");
}

PlanFlags GenFlags::plan_flags() const {
  PlanFlags p;
  p.model = model;
  p.memory = memory;
  p.memory_given = memory_option && memory_option->count() > 0;
  p.ctx = ctx;
  p.batch = batch;
  p.threads = threads;
  p.kv_type = kv_type;
  p.k_type = k_type;
  p.v_type = v_type;
  p.repack = repack;
  return p;
}

engine::SessionOptions GenFlags::session_options(const PlannedModel& pm) const {
  const plan::SessionShape& s = pm.fit.plan.session.shape;
  engine::SessionOptions o;
  o.n_ctx = s.n_ctx;
  o.n_batch = batch;
  o.n_threads = s.n_threads;
  o.k_type = s.k_type;
  o.v_type = s.v_type;
  o.kv_block_tokens = s.kv_block_tokens;
  return o;
}

engine::GenerateOptions GenFlags::generate_options() const {
  engine::GenerateOptions o;
  o.max_tokens = n_predict;
  o.sampler = sampler;
  o.stop = stop;
  o.ignore_eos = ignore_eos;
  return o;
}

}  // namespace snug::cli
