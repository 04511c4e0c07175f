// `snug serve`'s flags, shared by the two programs that parse them.
//
// The server is its own executable, snug-serve, beside snug: serving links
// cpp-httplib with OpenSSL, zlib and brotli (and the prefix cache's SHA-256),
// whose image (7 MiB, resident in full: base/process_image.h) and start-up
// work would otherwise be in every `snug run`. As it is, `snug serve ...`
// checks its flags and replaces itself with `snug-serve serve ...`, and only
// the server pays (its image in its plan, and server::kHttpLibraryBytes).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/engine_flags.h"

namespace snug::cli {

struct ServeFlags {
  EngineFlags engine;
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port
  std::string api_key_file;
  std::string tenants_file;  // --tenants: keys grouped into tenants with quotas (JSON)
  std::string alias;
  double shutdown_timeout = 10;  // seconds
  // Several models under one budget (engine/model_registry.h): files or
  // directories of .gguf files; empty: the one MODEL, loaded at start.
  std::vector<std::string> models;
  std::vector<std::string> pins;        // --pin NAME: never evicted
  std::vector<std::string> keep_alive;  // --keep-alive DURATION or NAME=DURATION
  bool dry_run = false;                 // --dry-run: print the plan as JSON, serve nothing
  bool exit_with_parent = false;        // stop when the process that started it exits
};

// Adds the "serve" subcommand and its flags bound to `f`.
CLI::App* add_serve_flags(CLI::App& app, ServeFlags* f);

// Replaces this process with snug-serve (beside the snug binary) on the same
// arguments; returns only on failure, with the exit code.
int exec_serve_program(int argc, char** argv);
// The action of a subcommand that snug-serve runs: exec_serve_program when
// `sub` was parsed. Holds `flags`, the values the subcommand's options are bound to.
Action exec_serve_action(CLI::App* sub, std::shared_ptr<const void> flags, int argc, char** argv);

// The server itself (serve.cpp, linked into snug-serve only).
int serve_main(const ServeFlags& f);

}  // namespace snug::cli
