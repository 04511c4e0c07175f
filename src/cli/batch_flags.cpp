#include "cli/batch_flags.h"

#include <memory>

#include "cli/serve_flags.h"

namespace snug::cli {

CLI::App* add_batch_flags(CLI::App& app, BatchFlags* f) {
  CLI::App* sub = app.add_subcommand(
      "batch", "offline jobs: OpenAI batch-request lines in, results keyed by custom_id out");
  add_engine_flags(*sub, &f->engine);
  sub->add_option("--in", f->in, "requests, one JSON object per line")->required();
  sub->add_option("--out", f->out,
                  "results, one JSON object per line; a rerun skips ids already there")
      ->required();
  sub->add_option("--model-alias", f->alias, "the model's name in requests and results");
  sub->add_flag("-q,--quiet", f->quiet, "no progress bar");
  sub->add_flag("-v,--verbose", f->verbose, "log the plan and the kernels");
  return sub;
}

Action add_batch(CLI::App& app, int argc, char** argv) {
  auto f = std::make_shared<BatchFlags>();
  CLI::App* sub = add_batch_flags(app, f.get());
  return exec_serve_action(sub, f, argc, argv);
}

}  // namespace snug::cli
