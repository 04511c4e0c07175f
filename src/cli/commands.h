// One function per subcommand: each registers its flags on the app and
// returns the action to run after parsing.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace snug::cli {

using Action = std::function<int()>;

Action add_run(CLI::App& app);
Action add_chat(CLI::App& app);
Action add_inspect(CLI::App& app);
Action add_plan(CLI::App& app);
Action add_quantize(CLI::App& app);
Action add_imatrix(CLI::App& app);
Action add_prune(CLI::App& app);
Action add_perplexity(CLI::App& app);
// Checks serve's flags and replaces the process with snug-serve (serve_flags.h).
Action add_serve(CLI::App& app, int argc, char** argv);
Action add_batch(CLI::App& app, int argc, char** argv);

}  // namespace snug::cli
