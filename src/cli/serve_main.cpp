// snug-serve: the program `snug serve` runs (see cli/serve_flags.h for why
// it is a program of its own). Takes the same arguments: `snug-serve serve ...`.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "base/process_image.h"
#include "cli/batch_flags.h"
#include "cli/common.h"
#include "cli/serve_flags.h"

int main(int argc, char** argv) {
  // Resident in full, so the plan counts it exactly (base/process_image.h).
  snug::populate_process_image();
  try {
    if (int rc = snug::cli::apply_kernel_env(); rc != 0) return rc;
    CLI::App app{"snug-serve: the OpenAI-compatible server of `snug serve`, and `snug batch`"};
    app.require_subcommand(1);
    snug::cli::ServeFlags flags;
    CLI::App* serve = snug::cli::add_serve_flags(app, &flags);
    snug::cli::BatchFlags batch;
    CLI::App* batch_cmd = snug::cli::add_batch_flags(app, &batch);
    try {
      app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
      return app.exit(e);
    } catch (const CLI::ParseError& e) {
      std::fprintf(stderr, "snug: error: %s (see 'snug serve --help' or 'snug batch --help')\n",
                   e.what());
      return snug::cli::kExitUsage;
    }
    if (*batch_cmd) return snug::cli::batch_main(batch);
    if (*serve) return snug::cli::serve_main(flags);
    return snug::cli::kExitUsage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "snug: error: %s\n", e.what());
    return snug::cli::kExitFailure;
  }
}
