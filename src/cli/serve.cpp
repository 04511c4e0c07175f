// snug serve [MODEL]: the OpenAI-compatible HTTP server over the scheduler.
//
// Order of events: listen first (so /health can say "loading"), then plan,
// reserve and load inside the budget exactly as `snug plan --parallel N`
// computes it, start the scheduler, and serve until SIGTERM or SIGINT; the
// first signal drains (running requests finish or are cancelled within
// --shutdown-timeout) and exits 0, a second exits at once.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <thread>

#include "base/bytes.h"
#include "base/log.h"
#include "base/mapped_file.h"
#include "cli/budget.h"
#include "cli/common.h"
#include "cli/serve_flags.h"
#include "engine/scheduler.h"
#include "server/http_server.h"
#include "text/chat_prompt.h"

namespace snug::cli {
namespace {

// SIGTERM and SIGINT are blocked in every thread and taken by one thread with
// sigwait, so no handler runs inside library code: the first wakes serve_main,
// the second ends the process at once.
class Signals {
 public:
  Signals() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGINT);
    // Before any other thread exists, so all of them inherit the mask.
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
    std::thread([this] { wait_loop(); }).detach();
  }
  // Waits for the first signal; returns its number.
  int wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return signal_ != 0; });
    return signal_;
  }
  bool received() {
    std::lock_guard<std::mutex> lock(mu_);
    return signal_ != 0;
  }

 private:
  void wait_loop() {
    for (;;) {
      int sig = 0;
      if (sigwait(&set_, &sig) != 0) continue;
      std::lock_guard<std::mutex> lock(mu_);
      if (signal_ != 0) {
        static const char msg[] = "snug serve: second signal, exiting now\n";
        (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
        ::_exit(128 + sig);
      }
      signal_ = sig;
      cv_.notify_all();
    }
  }
  sigset_t set_;
  std::mutex mu_;
  std::condition_variable cv_;
  int signal_ = 0;
};

std::string url_host(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

}  // namespace

int serve_main(const ServeFlags& f) {
  set_log_level(LogLevel::kInfo);
  // Never freed: its detached thread may take a signal while the process exits.
  static Signals* const signals = new Signals;  // NOLINT(cppcoreguidelines-owning-memory)
  using Clock = std::chrono::steady_clock;

  server::ApiKeys keys;
  if (!f.api_key_file.empty()) {
    auto k = server::ApiKeys::load(f.api_key_file);
    if (!k.ok()) return fail(k.error());
    keys = std::move(k.value());
  } else if (f.host != "127.0.0.1" && f.host != "localhost" && f.host != "::1") {
    log_warn("serving on {} without --api-key-file: anyone who reaches it can use it",
             printable(f.host, 64));
  }
  if (f.shutdown_timeout < 0 || f.shutdown_timeout > 3600)
    return fail(make_error("--shutdown-timeout must be in [0, 3600] seconds"));

  const server::ServerLimits limits;
  const int32_t max_seqs = f.engine.resolved_max_seqs();
  const int32_t connections =
      limits.max_connections > 0 ? limits.max_connections : max_seqs + f.engine.queue + 8;

  memory::Ledger ledger;
  server::HttpServer http(limits, std::move(keys), &ledger);
  auto port = http.bind(f.host, f.port, connections);
  if (!port.ok()) return fail(port.error());
  http.start();
  std::fprintf(stderr, "snug serve: listening on http://%s:%d\n", url_host(f.host).c_str(), *port);

  auto pm = load_planned(f.engine.plan_flags(), &ledger);
  if (!pm.ok()) return fail(pm.error());
  const plan::MemoryPlan& mp = pm->fit.plan;
  const plan::SessionShape& shape = mp.session.shape;

  // The HTTP side's own bound, reserved like the engine's and printed with it.
  const uint64_t server_bytes =
      server::server_memory_bound(limits, connections, max_seqs, shape.n_ctx);
  auto server_reservation = pm->budget->reserve(server_bytes, "the HTTP server");
  if (!server_reservation.ok()) return fail(server_reservation.error());

  const engine::SchedulerOptions so = f.engine.scheduler_options(shape);
  const LoadedModel& lm = pm->lm;
  auto scheduler =
      engine::Scheduler::create(*lm.model, *lm.tokenizer, so, &ledger, pm->budget.get());
  if (!scheduler.ok()) return fail(scheduler.error());
  auto prompts = text::ChatPrompter::create(*lm.tokenizer, lm.model->config().arch_name);
  if (!prompts.ok()) return fail(make_error("chat template: ", prompts.error().message));
  // Map every weight page now, while /health still says loading, so that the
  // first request does not pay the page faults of a whole pass over the model.
  const auto populate_start = std::chrono::steady_clock::now();
  if (const MappedFile* map = lm.model->file().mapping()) map->populate();
  const double populate_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - populate_start).count();

  const plan::SessionPlan& sp = (*scheduler)->plan();
  const uint64_t predicted = mp.predicted_peak_rss + server_bytes;
  log_info("model {}: {} layers, context {} ({})", printable(lm.model->config().name, 200),
           lm.model->config().n_layers, sp.shape.n_ctx, pm->fit.context_reason);
  log_info(
      "plan: KV pool {} ({} blocks of {} tokens: {} x {} tokens, KV {}), workspace {} (as "
      "snug plan --ctx {} --parallel {} --max-seqs {} --batch {})",
      format_bytes(sp.kv_bytes), sp.kv_blocks, sp.shape.kv_block_tokens, sp.shape.n_parallel,
      sp.shape.n_ctx, plan::kv_type_label(sp.shape.k_type, sp.shape.v_type),
      format_bytes(sp.workspace.total()), sp.shape.n_ctx, sp.shape.n_parallel, max_seqs,
      sp.shape.n_batch);
  log_info("plan: predicted peak RSS {} ({} bytes: engine {} + HTTP server {}); budget {} ({})",
           format_bytes(predicted), predicted, format_bytes(mp.predicted_peak_rss),
           format_bytes(server_bytes), format_bytes(pm->budget_choice.bytes),
           pm->budget_choice.source);
  log_info("kernels: {}; weights mapped in {:.2f} s", describe_kernels(*lm.model), populate_s);
  log_info(
      "scheduler: {} sequences at once, {} tokens per step, queue {}, {} threads, prefix "
      "cache {}; {} connections",
      (*scheduler)->max_seqs(), f.engine.batch_tokens, f.engine.queue, (*scheduler)->n_threads(),
      so.prefix_cache ? "on" : "off", connections);

  server::ServedModel served;
  served.name = f.engine.served_name(f.alias);
  served.n_ctx = (*scheduler)->n_ctx();
  served.prompts = &prompts.value();
  http.attach(scheduler->get(), served, predicted);
  std::fprintf(stderr, "snug serve: ready, model '%s'\n", printable(served.name, 128).c_str());

  const int sig = signals->wait();
  log_info("{}: stopping; running requests have {} s to finish",
           sig == SIGINT ? "SIGINT" : "SIGTERM", f.shutdown_timeout);
  const auto deadline =
      Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(f.shutdown_timeout * 1000));
  http.shutdown(deadline);
  log_info("stopped");
  return 0;
}

}  // namespace snug::cli
