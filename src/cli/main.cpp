// snug: run language models inside the memory the machine really has.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "base/process_image.h"
#include "cli/commands.h"
#include "cli/common.h"

namespace {

int run_cli(int argc, char** argv) {
  if (int rc = snug::cli::apply_kernel_env(); rc != 0) return rc;
  CLI::App app{"snug: run language models inside the memory you have"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "help for every subcommand");
  std::vector<snug::cli::Action> actions = {
      snug::cli::add_run(app),  snug::cli::add_chat(app),     snug::cli::add_inspect(app),
      snug::cli::add_plan(app), snug::cli::add_quantize(app), snug::cli::add_perplexity(app)};
  actions.push_back(snug::cli::add_imatrix(app));
  actions.push_back(snug::cli::add_prune(app));
  actions.push_back(snug::cli::add_serve(app, argc, argv));
  actions.push_back(snug::cli::add_batch(app, argc, argv));
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    std::string names;
    for (const CLI::App* sub : app.get_subcommands({})) {
      known = known || sub->get_name() == argv[1];
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      std::fprintf(stderr, "snug: error: unknown command '%s' (commands: %s)\n", argv[1],
                   names.c_str());
      return snug::cli::kExitUsage;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "snug: error: %s (see 'snug --help')\n", e.what());
    return snug::cli::kExitUsage;
  }
  for (auto& a : actions) {
    int rc = a();
    if (rc >= 0) return rc;
  }
  return snug::cli::kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  // Resident in full, so the plan counts it exactly (base/process_image.h).
  snug::populate_process_image();
  // Library code reports failures as values; this only catches what escapes
  // third-party code (e.g. std::bad_alloc) so it still ends in one line.
  try {
    return run_cli(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "snug: error: %s\n", e.what());
    return snug::cli::kExitFailure;
  }
}
