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
  add_engine_flags(*sub, &f->engine);
  sub->add_option("--host", f->host, "address to listen on (default: 127.0.0.1)");
  sub->add_option("--port", f->port, "port (0: any free port; the log prints it)")
      ->check(CLI::Range(0, 65535));
  sub->add_option("--api-key-file", f->api_key_file,
                  "file with one API key per line; requests need Authorization: Bearer KEY");
  sub->add_option("--tenants", f->tenants_file,
                  "JSON file of tenants: their API keys, the models each may use, requests in "
                  "flight and tokens per minute (instead of --api-key-file; docs/SERVING.md)");
  sub->add_option("--model-alias", f->alias, "the model's name in the API");
  sub->add_option("--shutdown-timeout", f->shutdown_timeout,
                  "seconds running requests get to finish after SIGTERM (default 10)")
      ->check(CLI::Range(0.0, 3600.0));
  sub->add_option("--models", f->models,
                  "serve several models under one --memory budget: GGUF files or directories "
                  "of them, loaded on demand and evicted least recently used by bytes "
                  "(instead of MODEL)");
  sub->add_option("--pin", f->pins, "with --models: a model never evicted (repeatable)");
  sub->add_option("--keep-alive", f->keep_alive,
                  "with --models: unload a model idle this long (30s, 5m, 1h; -1: never, the "
                  "default); NAME=DURATION for one model (repeatable)");
  sub->add_flag("--exit-with-parent", f->exit_with_parent,
                "stop (as on SIGTERM) when the process that started it exits, even if it was "
                "killed outright: for supervisors such as the Python package's Server");
  sub->add_flag("--dry-run", f->dry_run,
                "print what serving would take as one JSON object (every model planned as "
                "--models plans it, the process and the HTTP server; without --memory, no "
                "budget) and exit; nothing is loaded or bound");
  return sub;
}

int exec_serve_program(int argc, char** argv) {
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
                         " (snug serve and snug batch run the snug-serve program built beside "
                         "snug)"));
}

Action exec_serve_action(CLI::App* sub, std::shared_ptr<const void> flags, int argc, char** argv) {
  return [flags, sub, argc, argv]() -> int {  // flags: bound values live as long as the action
    if (!*sub) return -1;
    return exec_serve_program(argc, argv);
  };
}

Action add_serve(CLI::App& app, int argc, char** argv) {
  auto f = std::make_shared<ServeFlags>();
  CLI::App* sub = add_serve_flags(app, f.get());
  return exec_serve_action(sub, f, argc, argv);
}

}  // namespace snug::cli
