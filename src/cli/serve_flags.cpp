#include "cli/serve_flags.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "cli/budget.h"

namespace snug::cli {

CLI::App* add_serve_flags(CLI::App& app, ServeFlags* f) {
  CLI::App* sub = app.add_subcommand("serve", "OpenAI-compatible HTTP server");
  sub->add_option("model", f->model, "GGUF file or known model name (default: smollm2)");
  sub->add_option("--host", f->host, "address to listen on (default: 127.0.0.1)");
  sub->add_option("--port", f->port, "port (0: any free port; the log prints it)")
      ->check(CLI::Range(0, 65535));
  f->memory_option = sub->add_option("--memory", f->memory,
                                     "memory budget (default: what the machine or its cgroup "
                                     "allows, minus 10% headroom)")
                         ->check(memory_size_validator());
  sub->add_option("-c,--ctx", f->ctx,
                  "tokens per sequence (default: the largest that fits --parallel sequences)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--parallel", f->parallel,
                  "full-context sequences the KV pool holds (as snug plan --parallel)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--batch-tokens", f->batch_tokens, "tokens per forward pass")
      ->check(CLI::PositiveNumber);
  sub->add_option("--max-seqs", f->max_seqs,
                  "sequences running at once (default: 4 x --parallel, at most --batch-tokens)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--queue", f->queue, "waiting requests beyond which requests get 503")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("-t,--threads", f->threads, "threads (0: all available cores)")
      ->check(CLI::NonNegativeNumber);
  add_kv_type_options(*sub, &f->kv_type, &f->k_type, &f->v_type);
  sub->add_option("--api-key-file", f->api_key_file,
                  "file with one API key per line; requests need Authorization: Bearer KEY");
  sub->add_option("--model-alias", f->alias, "the model's name in the API");
  sub->add_flag("--no-prefix-cache", f->no_prefix_cache, "do not reuse cached prompt blocks");
  sub->add_option("--shutdown-timeout", f->shutdown_timeout,
                  "seconds running requests get to finish after SIGTERM (default 10)")
      ->check(CLI::Range(0.0, 3600.0));
  return sub;
}

Action add_serve(CLI::App& app, int argc, char** argv) {
  auto f = std::make_shared<ServeFlags>();
  CLI::App* sub = add_serve_flags(app, f.get());
  return [sub, argc, argv]() -> int {
    if (!*sub) return -1;
    // The flags were checked here; snug-serve parses the same arguments.
    std::error_code ec;
    const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    const std::string server =
        (ec ? std::filesystem::path(argv[0]) : self).parent_path() / "snug-serve";
    std::vector<char*> args(argv, argv + argc);
    args[0] = const_cast<char*>(server.c_str());
    args.push_back(nullptr);
    ::execv(server.c_str(), args.data());
    return fail(make_error("cannot start '", printable(server, 200), "': ", std::strerror(errno),
                           " (snug serve runs the snug-serve program built beside snug)"));
  };
}

}  // namespace snug::cli
