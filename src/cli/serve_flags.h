// `snug serve`'s flags, shared by the two programs that parse them.
//
// The server is its own executable, snug-serve, beside snug: serving links
// cpp-httplib with OpenSSL, zlib and brotli (and the prefix cache's SHA-256),
// whose pages and start-up work add about 6 MiB to a process. In one binary
// every `snug run` would carry them; as it is, `snug serve ...` checks its
// flags and replaces itself with `snug-serve serve ...`, and only the server
// pays (server::kHttpLibraryBytes in its plan).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "cli/commands.h"
#include "cli/common.h"

namespace snug::cli {

struct ServeFlags {
  std::string model = kDefaultModel;
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port
  std::string memory;
  CLI::Option* memory_option = nullptr;
  int32_t ctx = 0;  // 0: the largest that fits `parallel` sequences
  int32_t parallel = 4;
  int32_t batch_tokens = 256;
  int32_t max_seqs = 0;  // 0: 4 x parallel, at most batch_tokens
  int32_t queue = 64;
  int32_t threads = 0;
  std::string kv_type = "f16";
  std::string k_type;
  std::string v_type;
  std::string api_key_file;
  std::string alias;
  bool no_prefix_cache = false;
  double shutdown_timeout = 10;  // seconds
};

// Adds the "serve" subcommand and its flags bound to `f`.
CLI::App* add_serve_flags(CLI::App& app, ServeFlags* f);

// The server itself (serve.cpp, linked into snug-serve only).
int serve_main(const ServeFlags& f);

}  // namespace snug::cli
