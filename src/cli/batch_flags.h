// `snug batch`'s flags. Like `snug serve`, the command runs in snug-serve
// (serve_flags.h says why): `snug batch ...` checks its flags and replaces
// itself with `snug-serve batch ...`.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "cli/commands.h"
#include "cli/engine_flags.h"

namespace snug::cli {

struct BatchFlags {
  EngineFlags engine;
  std::string in;      // requests, JSONL
  std::string out;     // results, JSONL, appended to (resumable)
  std::string alias;   // the model's name in requests and results
  bool quiet = false;  // no progress bar
  bool verbose = false;
};

// Adds the "batch" subcommand and its flags bound to `f`.
CLI::App* add_batch_flags(CLI::App& app, BatchFlags* f);

// The job itself (batch.cpp, linked into snug-serve only).
int batch_main(const BatchFlags& f);

}  // namespace snug::cli
