// snug run MODEL -p PROMPT: generate once. Only generated text goes to stdout.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "base/sysmem.h"
#include "cli/budget.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/gen_flags.h"
#include "text/chat_prompt.h"

namespace snug::cli {
namespace {

struct RunFlags {
  GenFlags gen;
  std::string prompt;
  std::string prompt_file;
  std::string token_ids_file;
  bool no_chat = false;
  bool json = false;
};

// One JSON object for scripts and benchmarks: tokens, text, timings, memory.
void print_json(const std::vector<int32_t>& prompt, const engine::GenerateResult& r,
                const memory::Ledger& ledger, const PlannedModel& pm) {
  nlohmann::json j = kernels_json(*pm.lm.model);
  // The attention kernel of this run's KV types: attention_kernel(K's type),
  // except f16 keys beside quantized values, which the flash kernel scores
  // in ggml's order.
  const plan::SessionShape& shape = pm.fit.plan.session.shape;
  const char* attention = shape.k_type == tensor::DType::kF16 && shape.v_type != tensor::DType::kF16
                              ? "f16-ggml"
                              : tensor::attention_kernel(shape.k_type);
  j["attention_kernel"] = attention != nullptr ? attention : "none";
  j["context"] = pm.fit.plan.session.shape.n_ctx;
  j["context_reason"] = pm.fit.context_reason;
  j["prompt_token_ids"] = prompt;
  j["token_ids"] = r.tokens;
  j["text"] = r.text;
  j["stop_reason"] = engine::stop_reason_name(r.reason);
  j["prompt_tokens_evaluated"] = r.prompt_tokens;
  j["prompt_seconds"] = r.prompt_seconds;
  j["generate_seconds"] = r.generate_seconds;
  j["prompt_tokens_per_second"] = r.prompt_tokens / std::max(r.prompt_seconds, 1e-9);
  j["generate_tokens_per_second"] =
      static_cast<double>(r.tokens.size()) / std::max(r.generate_seconds, 1e-9);
  nlohmann::json mem;
  for (int k = 0; k < static_cast<int>(memory::Category::kCount); ++k) {
    auto c = static_cast<memory::Category>(k);
    mem[std::string(memory::category_name(c))] = ledger.peak(c);
  }
  j["ledger_peak_bytes"] = mem;
  j["peak_rss_bytes"] = probe_process_memory().peak_rss;
  j["predicted_peak_rss_bytes"] = pm.fit.plan.predicted_peak_rss;
  std::string out = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::printf("%s\n", out.c_str());
}

int run_main(const RunFlags& f) {
  if (f.gen.verbose) set_log_level(LogLevel::kInfo);
  std::string prompt = f.prompt;
  if (!f.prompt_file.empty()) {
    std::ifstream in(f.prompt_file, std::ios::binary);
    if (!in) return fail(make_error("cannot read prompt file '", f.prompt_file, "'"));
    std::stringstream ss;
    ss << in.rdbuf();
    prompt = ss.str();
  }
  memory::Ledger ledger;
  auto pm = load_planned(f.gen.plan_flags(), &ledger);
  if (!pm.ok()) return fail(pm.error());
  const LoadedModel* lm = &pm->lm;
  const text::Tokenizer& tok = *lm->tokenizer;

  std::vector<int32_t> ids;
  if (!f.token_ids_file.empty()) {
    // Token ids given directly (benchmarks, reference comparisons): no template, no tokenizer.
    std::ifstream in(f.token_ids_file);
    if (!in) return fail(make_error("cannot read token ids file '", f.token_ids_file, "'"));
    std::string word;
    while (in >> word) {
      char* end = nullptr;
      long id = std::strtol(word.c_str(), &end, 10);
      if (*end != 0 || id < 0 || id >= lm->model->config().n_vocab)
        return fail(make_error("token ids file '", f.token_ids_file, "': '", word,
                               "' is not a token id of this model"));
      ids.push_back(static_cast<int32_t>(id));
    }
  } else if (!f.no_chat) {
    std::vector<text::ChatMessage> msgs;
    if (!f.gen.system.empty()) msgs.push_back({"system", f.gen.system});
    msgs.push_back({"user", prompt});
    auto prompter = text::ChatPrompter::create(tok, lm->model->config().arch_name);
    if (!prompter.ok()) return fail(prompter.error());
    auto chat_ids = prompter->chat(msgs);
    if (!chat_ids.ok()) return fail(chat_ids.error());
    ids = std::move(chat_ids).value();
  } else {
    // Raw completion: the prompt is plain text, special-token text included.
    ids = tok.encode(prompt, /*add_special=*/true, /*parse_special=*/false);
  }
  if (ids.empty()) return fail(make_error("the prompt is empty"));
  // With -n the run knows its length: its cache holds prompt + n, not the largest context.
  if (Status st = fit_one_shot(*pm, static_cast<int32_t>(ids.size()), f.gen.n_predict); !st.ok())
    return fail(st.error());

  auto session =
      engine::Session::create(*lm->model, f.gen.session_options(*pm), &ledger, pm->budget.get());
  if (!session.ok()) return fail(session.error());
  log_info("model {}: {} layers, context {} ({}), {} threads",
           printable(lm->model->config().name, 200), lm->model->config().n_layers,
           (*session)->n_ctx(), pm->fit.context_reason, (*session)->n_threads());
  log_info("kernels: {}", describe_kernels(*lm->model));

  const bool tty = ::isatty(STDOUT_FILENO) != 0;
  engine::TextSink sink;
  if (!f.json) {
    sink = [](std::string_view s) {
      std::fwrite(s.data(), 1, s.size(), stdout);
      std::fflush(stdout);
    };
  }
  auto result = engine::generate(**session, tok, ids, f.gen.generate_options(), sink);
  if (!result.ok()) return fail(result.error());
  if (f.json) {
    print_json(ids, *result, ledger, *pm);
    const PlannedMemory planned = planned_memory(*pm);
    if (f.gen.memory_report) print_memory_report(ledger, &planned);
    return 0;
  }
  if (tty && !result->text.empty() && result->text.back() != '\n') std::fputc('\n', stdout);
  std::fflush(stdout);
  if (f.gen.verbose) {
    const auto& r = *result;
    // After the run, so that its page faults have mapped the weights.
    const std::string pages = describe_weight_pages(*lm->model);
    std::fprintf(
        stderr,
        "\nprompt: %d tokens in %.3f s (%.1f tok/s); generated: %zu tokens in %.3f s "
        "(%.1f tok/s); stop: %s; kernels %s%s%s\n",
        r.prompt_tokens, r.prompt_seconds, r.prompt_tokens / std::max(r.prompt_seconds, 1e-9),
        r.tokens.size(), r.generate_seconds,
        static_cast<double>(r.tokens.size()) / std::max(r.generate_seconds, 1e-9),
        std::string(engine::stop_reason_name(r.reason)).c_str(),
        describe_kernels(*lm->model).c_str(), pages.empty() ? "" : "; weights: ", pages.c_str());
  }
  const PlannedMemory planned = planned_memory(*pm);
  if (f.gen.memory_report) print_memory_report(ledger, &planned);
  return 0;
}

}  // namespace

Action add_run(CLI::App& app) {
  auto flags = std::make_shared<RunFlags>();
  CLI::App* sub = app.add_subcommand("run", "generate text from a prompt");
  flags->gen.add_to(*sub);
  sub->add_option("-p,--prompt", flags->prompt, "prompt text");
  sub->add_option("-f,--file", flags->prompt_file, "read the prompt from a file");
  sub->add_option("--token-ids-file", flags->token_ids_file,
                  "read the prompt as token ids (whitespace-separated)");
  sub->add_flag("--no-chat", flags->no_chat, "use the raw prompt, without the chat template");
  sub->add_flag("--json", flags->json,
                "print one JSON object (token ids, text, timings, memory) instead of text");
  return [flags, sub]() -> int {
    if (!*sub) return -1;
    return run_main(*flags);
  };
}

}  // namespace snug::cli
