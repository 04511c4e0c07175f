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
#include <limits>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/bytes.h"
#include "base/log.h"
#include "base/mapped_file.h"
#include "cli/budget.h"
#include "cli/common.h"
#include "cli/serve_flags.h"
#include "engine/model_registry.h"
#include "engine/scheduler.h"
#include "gguf/gguf.h"
#include "plan/footprint.h"
#include "plan/session_plan.h"
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

// Serves until the first SIGTERM or SIGINT, then stops accepting and gives
// running requests `timeout` seconds to finish.
void wait_and_shut_down(Signals* signals, server::HttpServer& http, double timeout) {
  const int sig = signals->wait();
  log_info("{}: stopping; running requests have {} s to finish",
           sig == SIGINT ? "SIGINT" : "SIGTERM", timeout);
  http.shutdown(std::chrono::steady_clock::now() +
                std::chrono::milliseconds(static_cast<int64_t>(timeout * 1000)));
}

// "30s", "5m", "1h", "250ms", a number of seconds, or -1 / "forever" (never).
Result<std::chrono::milliseconds> parse_duration(const std::string& text) {
  using std::chrono::milliseconds;
  if (text == "-1" || text == "forever" || text == "never") return milliseconds(-1);
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const std::string unit = used > 0 ? text.substr(used) : "";
  double scale = 0;
  if (unit.empty() || unit == "s") scale = 1000;
  if (unit == "ms") scale = 1;
  if (unit == "m") scale = 60'000;
  if (unit == "h") scale = 3'600'000;
  if (used == 0 || scale == 0 || !(v >= 0) || v * scale > 1e12)
    return make_error("--keep-alive: '", printable(text, 32),
                      "' is not a duration (30s, 5m, 1h, or -1 for never)");
  return milliseconds(static_cast<int64_t>(v * scale));
}

// The files --models names: .gguf files in each directory (sorted), files as given.
struct ModelFile {
  std::string path;
  bool from_directory = false;  // found by listing: skipped (with a warning) if unsupported
};
Result<std::vector<ModelFile>> model_files(const std::vector<std::string>& args) {
  namespace fs = std::filesystem;
  std::vector<ModelFile> out;
  for (const std::string& a : args) {
    std::error_code ec;
    if (fs::is_directory(a, ec)) {
      std::vector<std::string> found;
      for (const auto& e : fs::directory_iterator(a, ec)) {
        if (e.path().extension() == ".gguf" && e.is_regular_file(ec)) found.push_back(e.path());
      }
      if (ec) return make_error("--models: cannot list '", printable(a, 200), "': ", ec.message());
      if (found.empty()) return make_error("--models: no .gguf file in '", printable(a, 200), "'");
      std::sort(found.begin(), found.end());
      for (std::string& p : found) out.push_back({std::move(p), true});
    } else {
      SNUG_ASSIGN_OR_RETURN(std::string path, resolve_model_path(a));
      out.push_back({std::move(path), false});
    }
  }
  return out;
}

// The tenants' KV shares in blocks of a pool planned as `sp` (empty: none).
std::vector<int32_t> tenant_shares(const server::ApiKeys& keys, const plan::SessionPlan& sp) {
  std::vector<int32_t> out;
  bool any = false;
  const uint64_t block = sp.kv_blocks > 0 ? sp.kv_bytes / static_cast<uint64_t>(sp.kv_blocks) : 0;
  for (const server::Tenant& t : keys.tenants()) {
    const uint64_t b = block > 0 ? t.kv_bytes / block : 0;
    out.push_back(static_cast<int32_t>(std::min<uint64_t>(b, INT32_MAX)));
    any = any || t.kv_bytes > 0;
  }
  if (!any) out.clear();
  return out;
}

// What a model loaded by the registry holds; members are destroyed in
// reverse order: the scheduler (joined) before the model it runs.
struct ServedModelInstance {
  LoadedModel lm;
  std::unique_ptr<engine::Scheduler> scheduler;
  std::optional<text::ChatPrompter> prompts;
};

// Every model planned from its header (context --ctx, else the smaller of its
// trained context and 4096) against `budget_bytes`, and the bytes the process
// and the HTTP server hold beside them: what --models serves, and --dry-run prints.
struct ServedModelPlan {
  std::string name, path;
  plan::SessionShape shape;
  plan::SessionPlan session;
  uint64_t planned = 0;
  std::string too_large;
};
struct ServePlan {
  std::vector<ServedModelPlan> models;
  uint64_t process = 0;       // the process's own bytes (the largest of the models' plans)
  uint64_t server_bytes = 0;  // the HTTP server's bound
};

Result<ServePlan> plan_served_models(const ServeFlags& f, const std::vector<ModelFile>& files,
                                     const BudgetChoice& choice, int32_t connections,
                                     const server::ServerLimits& limits) {
  ServePlan out;
  int32_t max_ctx = 1;
  for (const ModelFile& mf : files) {
    const std::string& path = mf.path;
    ServedModelPlan p;
    p.path = path;
    p.name = std::filesystem::path(path).stem().string();
    for (const ServedModelPlan& o : out.models) {
      if (o.name == p.name)
        return make_error("--models: two models are named '", printable(p.name, 64), "' (",
                          printable(o.path, 200), " and ", printable(path, 200), ")");
    }
    SNUG_ASSIGN_OR_RETURN(gguf::File file, gguf::File::open(path));
    SNUG_ASSIGN_OR_RETURN(plan::ModelFootprint fp,
                          plan::plan_model(file, f.engine.repack.packing()));
    if (!fp.runnable) {
      if (!mf.from_directory) return make_error("'", printable(path, 200), "': ", fp.runnable_note);
      log_warn("--models: skipping '{}': {}", printable(path, 200), fp.runnable_note);
      continue;
    }
    PlanFlags pf = f.engine.plan_flags();
    pf.model = path;
    SNUG_ASSIGN_OR_RETURN(p.shape, session_shape(pf));
    if (p.shape.n_ctx == 0) {
      const int32_t trained = fp.config.n_ctx_train > 0 ? fp.config.n_ctx_train : 4096;
      p.shape.n_ctx = std::min(trained, 4096);
    } else if (fp.config.n_ctx_train > 0 && p.shape.n_ctx > fp.config.n_ctx_train) {
      return make_error("'", printable(path, 200), "': --ctx ", p.shape.n_ctx,
                        " exceeds the model's trained context of ", fp.config.n_ctx_train);
    }
    auto fit = plan::fit(fp, {p.shape, choice.bytes});
    if (fit.ok()) {
      p.planned = fit->plan.predicted_peak_rss - fit->plan.process;
      p.session = fit->plan.session;
      out.process = std::max(out.process, fit->plan.process);
      max_ctx = std::max(max_ctx, p.shape.n_ctx);
    } else {
      p.too_large = "model '" + p.name + "' cannot be served in this budget: " +
                    explain_budget(fit.take_error(), choice).message;
      // What it would need, for /v1/models and --dry-run (when the shape is valid).
      if (auto m = plan::plan_memory(fp, p.shape); m.ok()) {
        p.planned = m->predicted_peak_rss - m->process;
        p.session = m->session;
        out.process = std::max(out.process, m->process);
      }
    }
    out.models.push_back(std::move(p));
  }
  if (out.models.empty()) return make_error("--models: no model that snug can serve");
  out.server_bytes = server::server_memory_bound(
      limits, connections, f.engine.resolved_max_seqs() * static_cast<int32_t>(out.models.size()),
      max_ctx);
  return out;
}

// Why a model that fits the budget alone can never load beside the process and
// the HTTP server (`base` of `limit`); empty when it can.
std::string never_fits(const ServedModelPlan& p, uint64_t base, uint64_t limit) {
  const uint64_t room = limit - std::min(limit, base);
  if (p.planned <= room) return {};
  return fmt::format(
      "model '{}' needs {} and the budget has {} for models ({} of {} hold the process and the "
      "HTTP server); it can never be loaded",
      p.name, format_bytes(p.planned), format_bytes(room), format_bytes(base), format_bytes(limit));
}

// --dry-run: the plan as one JSON object on stdout (schema snug.serve-plan/1,
// docs/SERVING.md), nothing bound nor loaded. Without --memory the models are
// planned without a budget: the bytes they need, wherever they will run.
int print_serve_plan(const ServeFlags& f, int32_t connections, const server::ServerLimits& limits) {
  const bool given = f.engine.memory_option->count() > 0;
  BudgetChoice choice{std::numeric_limits<uint64_t>::max() / 4,
                      "none (--dry-run without --memory)"};
  if (given) {
    auto c = resolve_budget(f.engine.memory, true);
    if (!c.ok()) return fail(c.error());
    choice = *c;
  }
  std::vector<std::string> args = f.models;
  if (args.empty()) {
    auto path = resolve_model_path(f.engine.model);
    if (!path.ok()) return fail(path.error());
    args.push_back(*path);
  }
  auto files = model_files(args);
  if (!files.ok()) return fail(files.error());
  auto sp = plan_served_models(f, *files, choice, connections, limits);
  if (!sp.ok()) return fail(sp.error());
  const uint64_t base = sp->process + sp->server_bytes;
  uint64_t all = base, one = base;
  nlohmann::json models = nlohmann::json::array();
  for (ServedModelPlan& p : sp->models) {
    // As serve_models decides: beside the process and the HTTP server.
    if (given && p.too_large.empty()) p.too_large = never_fits(p, base, choice.bytes);
    nlohmann::json m{{"name", p.name},
                     {"path", p.path},
                     {"context_length", p.shape.n_ctx},
                     {"parallel", p.shape.n_parallel},
                     {"planned_bytes", p.planned},
                     {"kv_bytes", p.session.kv_bytes},
                     {"fits", p.too_large.empty()}};
    if (!p.too_large.empty()) m["refusal"] = p.too_large;
    all += p.planned;
    one = std::max(one, base + p.planned);
    models.push_back(std::move(m));
  }
  nlohmann::json out{{"schema", "snug.serve-plan/1"}, {"models", std::move(models)},
                     {"process_bytes", sp->process},  {"server_bytes", sp->server_bytes},
                     {"memory_bytes_all", all},       {"memory_bytes_one", one}};
  if (given) out["budget"] = {{"bytes", choice.bytes}, {"source", choice.source}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

// --models: every model is planned from its header at start, and the registry
// loads one on demand inside the budget, reserving its plan's bytes.
int serve_models(const ServeFlags& f, server::HttpServer& http, memory::Ledger& ledger,
                 int32_t connections, const server::ServerLimits& limits, Signals* signals) {
  if (f.engine.model != kDefaultModel)
    return fail(make_error("give one MODEL or --models, not both"));
  if (!f.alias.empty()) return fail(make_error("--model-alias names one model; not with --models"));
  auto choice = resolve_budget(f.engine.memory, f.engine.memory_option->count() > 0);
  if (!choice.ok()) return fail(choice.error());
  auto files = model_files(f.models);
  if (!files.ok()) return fail(files.error());
  auto sp = plan_served_models(f, *files, *choice, connections, limits);
  if (!sp.ok()) return fail(sp.error());
  std::vector<ServedModelPlan>& planned = sp->models;
  const uint64_t process = sp->process;
  const uint64_t server_bytes = sp->server_bytes;
  memory::Budget budget(choice->bytes);
  auto base = budget.reserve(process + server_bytes, "the process and the HTTP server");
  if (!base.ok()) return fail(base.error());

  std::vector<engine::ModelSpec> specs;
  for (ServedModelPlan& p : planned) {
    engine::ModelSpec spec;
    spec.name = p.name;
    spec.path = p.path;
    spec.planned_bytes = p.planned;
    spec.n_ctx = p.shape.n_ctx;
    spec.too_large = p.too_large;
    if (spec.too_large.empty()) spec.too_large = never_fits(p, budget.used(), budget.limit());
    spec.pinned = std::find(f.pins.begin(), f.pins.end(), p.name) != f.pins.end();
    for (const std::string& k : f.keep_alive) {
      const size_t eq = k.find('=');
      if (eq != std::string::npos && k.substr(0, eq) != p.name) continue;
      auto d = parse_duration(eq == std::string::npos ? k : k.substr(eq + 1));
      if (!d.ok()) return fail(d.error());
      spec.keep_alive = *d;
    }
    engine::SchedulerOptions so = f.engine.scheduler_options(p.shape);
    so.tenant_kv_blocks = tenant_shares(http.keys(), p.session);
    spec.load = [path = p.path, so, &ledger,
                 repack = f.engine.repack]() -> Result<engine::LoadedInstance> {
      auto inst = std::make_shared<ServedModelInstance>();
      SNUG_ASSIGN_OR_RETURN(gguf::File file, gguf::File::open(path));
      SNUG_ASSIGN_OR_RETURN(inst->lm, load_model_file(std::move(file), &ledger, repack));
      SNUG_ASSIGN_OR_RETURN(
          inst->scheduler,
          engine::Scheduler::create(*inst->lm.model, *inst->lm.tokenizer, so, &ledger));
      auto prompts =
          text::ChatPrompter::create(*inst->lm.tokenizer, inst->lm.model->config().arch_name);
      if (!prompts.ok()) return make_error("chat template: ", prompts.error().message);
      inst->prompts.emplace(std::move(prompts.value()));
      populate_weights(*inst->lm.model);
      engine::LoadedInstance out;
      out.scheduler = inst->scheduler.get();
      out.prompts = &*inst->prompts;
      out.owner = std::move(inst);
      return out;
    };
    specs.push_back(std::move(spec));
  }
  for (const std::string& pin : f.pins) {
    if (std::none_of(specs.begin(), specs.end(), [&](const auto& s) { return s.name == pin; }))
      return fail(make_error("--pin: no model is named '", printable(pin, 64), "'"));
  }
  for (const std::string& k : f.keep_alive) {
    const size_t eq = k.find('=');
    if (eq == std::string::npos) continue;
    const std::string name = k.substr(0, eq);
    if (std::none_of(specs.begin(), specs.end(), [&](const auto& s) { return s.name == name; }))
      return fail(make_error("--keep-alive: no model is named '", printable(name, 64), "'"));
  }

  log_info("budget {} ({}); process and HTTP server {}", format_bytes(budget.limit()),
           choice->source, format_bytes(budget.used()));
  for (const engine::ModelSpec& s : specs) {
    if (!s.too_large.empty()) {
      log_warn("{}", s.too_large);
      continue;
    }
    log_info("model {}: plan {} (context {}){}{}", printable(s.name, 128),
             format_bytes(s.planned_bytes), s.n_ctx, s.pinned ? ", pinned" : "",
             s.keep_alive.count() >= 0
                 ? fmt::format(", keep-alive {:.1f} s", s.keep_alive.count() / 1000.0)
                 : std::string());
  }
  engine::ModelRegistry registry(&budget, std::move(specs));
  http.attach(&registry, budget.limit(), choice->source);
  std::fprintf(stderr, "snug serve: ready, %zu models\n", registry.size());

  // Idle models past their keep-alive are unloaded about once a second.
  std::mutex reap_mu;
  std::condition_variable reap_cv;
  bool reap_stop = false;
  std::thread reaper([&] {
    std::unique_lock<std::mutex> lock(reap_mu);
    while (!reap_cv.wait_for(lock, std::chrono::seconds(1), [&] { return reap_stop; })) {
      lock.unlock();
      registry.reap();
      lock.lock();
    }
  });
  wait_and_shut_down(signals, http, f.shutdown_timeout);
  {
    std::lock_guard<std::mutex> lock(reap_mu);
    reap_stop = true;
  }
  reap_cv.notify_all();
  reaper.join();
  log_info("stopped");
  return 0;
}

}  // namespace

int serve_main(const ServeFlags& f) {
  set_log_level(LogLevel::kInfo);
  // Never freed: its detached thread may take a signal while the process exits.
  static Signals* const signals = new Signals;  // NOLINT(cppcoreguidelines-owning-memory)
  if (f.exit_with_parent) {
    // A supervisor killed outright (SIGKILL, an OOM kill) cannot stop us: when
    // we are re-parented, stop as on SIGTERM instead of serving on, orphaned.
    std::thread([parent = getppid()] {
      while (getppid() == parent) std::this_thread::sleep_for(std::chrono::milliseconds(250));
      log_warn("the parent process {} exited: stopping", parent);
      kill(getpid(), SIGTERM);
    }).detach();
  }

  server::ApiKeys keys;
  if (!f.api_key_file.empty() && !f.tenants_file.empty())
    return fail(make_error("give --api-key-file or --tenants, not both"));
  if (!f.api_key_file.empty() || !f.tenants_file.empty()) {
    auto k = f.tenants_file.empty() ? server::ApiKeys::load(f.api_key_file)
                                    : server::ApiKeys::load_tenants(f.tenants_file);
    if (!k.ok()) return fail(k.error());
    keys = std::move(k.value());
  } else if (f.host != "127.0.0.1" && f.host != "localhost" && f.host != "::1") {
    log_warn("serving on {} without --api-key-file or --tenants: anyone who reaches it can use it",
             printable(f.host, 64));
  }
  if (f.shutdown_timeout < 0 || f.shutdown_timeout > 3600)
    return fail(make_error("--shutdown-timeout must be in [0, 3600] seconds"));

  const server::ServerLimits limits;
  const int32_t max_seqs = f.engine.resolved_max_seqs();
  const int32_t connections =
      limits.max_connections > 0 ? limits.max_connections : max_seqs + f.engine.queue + 8;

  if (f.dry_run) {
    if (!f.models.empty() && f.engine.model != kDefaultModel)
      return fail(make_error("give one MODEL or --models, not both"));
    return print_serve_plan(f, connections, limits);
  }
  memory::Ledger ledger;
  server::HttpServer http(limits, std::move(keys), &ledger);
  auto port = http.bind(f.host, f.port, connections);
  if (!port.ok()) return fail(port.error());
  http.start();
  std::fprintf(stderr, "snug serve: listening on http://%s:%d\n", url_host(f.host).c_str(), *port);
  if (!f.models.empty()) return serve_models(f, http, ledger, connections, limits, signals);
  if (!f.pins.empty() || !f.keep_alive.empty())
    return fail(make_error("--pin and --keep-alive go with --models"));

  PlanFlags pf = f.engine.plan_flags();
  pf.beside = [&](int32_t n_ctx) {
    return server::server_memory_bound(limits, connections, max_seqs, n_ctx);
  };
  auto pm = load_planned(pf, &ledger);
  if (!pm.ok()) return fail(pm.error());
  const plan::MemoryPlan& mp = pm->fit.plan;
  const plan::SessionShape& shape = mp.session.shape;

  // The HTTP side's own bound, reserved like the engine's and printed with it.
  const uint64_t server_bytes =
      server::server_memory_bound(limits, connections, max_seqs, shape.n_ctx);
  auto server_reservation = pm->budget->reserve(server_bytes, "the HTTP server");
  if (!server_reservation.ok()) return fail(server_reservation.error());

  engine::SchedulerOptions so = f.engine.scheduler_options(shape);
  so.tenant_kv_blocks = tenant_shares(http.keys(), mp.session);
  const LoadedModel& lm = pm->lm;
  auto scheduler =
      engine::Scheduler::create(*lm.model, *lm.tokenizer, so, &ledger, pm->budget.get());
  if (!scheduler.ok()) return fail(scheduler.error());
  auto prompts = text::ChatPrompter::create(*lm.tokenizer, lm.model->config().arch_name);
  if (!prompts.ok()) return fail(make_error("chat template: ", prompts.error().message));
  // Map every weight page now, while /health still says loading, so that the
  // first request does not pay the page faults of a whole pass over the model.
  const auto populate_start = std::chrono::steady_clock::now();
  populate_weights(*lm.model);
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
  const std::string pages = describe_weight_pages(*lm.model);
  log_info("kernels: {}; weights mapped in {:.2f} s{}{}", describe_kernels(*lm.model), populate_s,
           pages.empty() ? "" : ", ", pages);
  if (const std::string hint = pack_hint(*lm.model); !hint.empty()) log_info("{}", hint);
  log_info(
      "scheduler: {} sequences at once, {} tokens per step, queue {}, {} threads, prefix "
      "cache {}; {} connections",
      (*scheduler)->max_seqs(), f.engine.batch_tokens, f.engine.queue, (*scheduler)->n_threads(),
      so.prefix_cache ? "on" : "off", connections);

  // One model, loaded above and pinned: the registry only routes to it.
  engine::ModelSpec spec;
  spec.name = f.engine.served_name(f.alias);
  spec.path = f.engine.model;
  spec.planned_bytes = mp.predicted_peak_rss - mp.process;
  spec.n_ctx = (*scheduler)->n_ctx();
  spec.pinned = true;
  engine::LoadedInstance loaded;
  loaded.owner = std::shared_ptr<void>(scheduler->get(), [](void*) {});  // owned here
  loaded.scheduler = scheduler->get();
  loaded.prompts = &prompts.value();
  std::vector<engine::ModelSpec> specs;
  specs.push_back(std::move(spec));
  engine::ModelRegistry registry(pm->budget.get(), std::move(specs), {loaded});
  http.attach(&registry, predicted, pm->budget_choice.source);
  std::fprintf(stderr, "snug serve: ready, model '%s'\n", printable(registry.name(0), 128).c_str());

  wait_and_shut_down(signals, http, f.shutdown_timeout);
  log_info("stopped");
  return 0;
}

}  // namespace snug::cli
