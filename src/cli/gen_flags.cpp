#include "cli/gen_flags.h"

namespace snug::cli {

void GenFlags::add_to(CLI::App& app) {
  app.add_option("model", model, "GGUF file or known model name (default: smollm2)");
  app.add_option("-n,--n-predict", n_predict,
                 "maximum tokens to generate (-1: until end or full context)");
  app.add_option("-c,--ctx", ctx, "context size in tokens (default: the model's, at most 4096)")
      ->check(CLI::PositiveNumber);
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

engine::SessionOptions GenFlags::session_options() const {
  engine::SessionOptions o;
  o.n_ctx = ctx;
  o.n_batch = batch;
  o.n_threads = threads;
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
