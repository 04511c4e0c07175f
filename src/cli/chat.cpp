// snug chat MODEL: an interactive conversation. Each turn re-renders the whole
// conversation with the chat template; the session reuses the KV cache of the
// unchanged prefix, so only the new turn is evaluated.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>

#include "base/log.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/gen_flags.h"
#include "text/chat_prompt.h"

namespace snug::cli {
namespace {

int chat_main(const GenFlags& f) {
  if (f.verbose) set_log_level(LogLevel::kInfo);
  memory::Ledger ledger;
  auto pm = load_planned(f.plan_flags(), &ledger);
  if (!pm.ok()) return fail(pm.error());
  const LoadedModel* lm = &pm->lm;
  const text::Tokenizer& tok = *lm->tokenizer;
  auto session =
      engine::Session::create(*lm->model, f.session_options(*pm), &ledger, pm->budget.get());
  if (!session.ok()) return fail(session.error());

  auto prompter = text::ChatPrompter::create(tok, lm->model->config().arch_name);
  if (!prompter.ok()) return fail(prompter.error());
  std::vector<text::ChatMessage> msgs;
  if (!f.system.empty()) msgs.push_back({"system", f.system});
  const bool interactive = ::isatty(STDIN_FILENO) != 0;
  if (interactive) std::fprintf(stderr, "snug chat: type a message, or /exit to leave.\n");
  std::string line;
  for (;;) {
    if (interactive) std::fprintf(stderr, "> ");
    if (!std::getline(std::cin, line)) break;
    if (line == "/exit" || line == "/quit") break;
    if (line.empty()) continue;
    msgs.push_back({"user", line});
    auto ids = prompter->chat(msgs);
    if (!ids.ok()) return fail(ids.error());
    auto result =
        engine::generate(**session, tok, *ids, f.generate_options(), [](std::string_view s) {
          std::fwrite(s.data(), 1, s.size(), stdout);
          std::fflush(stdout);
        });
    if (!result.ok()) {
      // A turn that does not fit is reported; the conversation goes on without it.
      std::fprintf(stderr, "snug: error: %s\n", result.error().message.c_str());
      msgs.pop_back();
      continue;
    }
    std::fputc('\n', stdout);
    std::fflush(stdout);
    msgs.push_back({"assistant", result->text});
    log_info("turn: {} new prompt tokens ({} reused), {} generated", result->prompt_tokens,
             result->reused_tokens, result->tokens.size());
  }
  const PlannedMemory planned = planned_memory(*pm);
  if (f.memory_report) print_memory_report(ledger, &planned);
  return 0;
}

}  // namespace

Action add_chat(CLI::App& app) {
  auto flags = std::make_shared<GenFlags>();
  CLI::App* sub = app.add_subcommand("chat", "interactive chat (reads messages from stdin)");
  flags->add_to(*sub);
  return [flags, sub]() -> int {
    if (!*sub) return -1;
    return chat_main(*flags);
  };
}

}  // namespace snug::cli
