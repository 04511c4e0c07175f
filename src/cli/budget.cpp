#include "cli/budget.h"

#include "base/bytes.h"
#include "base/log.h"
#include "base/sysmem.h"
#include "engine/session.h"

namespace snug::cli {

CLI::Validator memory_size_validator() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        auto r = parse_bytes(s);
        return r.ok() ? std::string() : r.error().message;
      },
      "SIZE");
}

Result<BudgetChoice> resolve_budget(const std::string& flag, bool given) {
  BudgetChoice b;
  if (given) {
    auto bytes = parse_bytes(flag);
    if (!bytes.ok()) return make_error("--memory: ", bytes.error().message);
    b.bytes = *bytes;
    b.source = "--memory";
    return b;
  }
  SNUG_ASSIGN_OR_RETURN(MemoryLimits limits, probe_memory_limits());
  const plan::DefaultBudget d = plan::default_budget(limits, probe_process_memory().rss);
  if (d.bytes == 0)
    return make_error("no memory is available (", d.source, ": ", format_bytes(d.available),
                      " free)");
  b.bytes = d.bytes;
  b.source = d.source + ": " + format_bytes(d.available) + " free + this process " +
             format_bytes(d.self_rss) + " - headroom " + format_bytes(d.headroom);
  return b;
}

void add_repack_options(CLI::App& app, RepackFlags* f) {
  app.add_flag("--repack", f->repack,
               "pack the q4_0/q4_1/q5_0/q5_1/q8_0/q4_K/q6_K matrices once at load into the "
               "matrix kernel's layout, in private memory of the same size: faster products at "
               "every batch size, but the weights are no longer shared with other processes "
               "through the page cache (--pack-dir keeps them shared; AVX512-VNNI CPUs, "
               "elsewhere it does nothing)");
  app.add_option("--pack-dir", f->pack_dir,
                 "--repack's packed matrices in a file under DIR (created when missing), mapped "
                 "shared: every snug process running the model with DIR reads the same pages, and "
                 "a later start maps the file instead of packing; a file made for another model "
                 "file or build is rebuilt, and one that cannot be written leaves the weights "
                 "mapped, with a warning. DIR must be writable only by users you trust")
      ->type_name("DIR");
}

void add_kv_type_options(CLI::App& app, std::string* kv_type, std::string* k_type,
                         std::string* v_type) {
  app.add_option("--kv-type", *kv_type, "KV cache type of keys and values: f16, q8_0 or q4_0");
  app.add_option("--k-type", *k_type, "KV cache type of the keys (default: --kv-type)");
  app.add_option("--v-type", *v_type, "KV cache type of the values (default: --kv-type)");
}

namespace {

Result<tensor::DType> kv_type_flag(const char* flag, const std::string& name) {
  auto t = plan::parse_kv_type(name);
  if (!t) return make_error(flag, ": '", name, "' is not one of f16, q8_0, q4_0");
  return *t;
}

}  // namespace

Result<plan::SessionShape> session_shape(const PlanFlags& f) {
  plan::SessionShape s;
  SNUG_ASSIGN_OR_RETURN(tensor::DType both, kv_type_flag("--kv-type", f.kv_type));
  s.set_kv_type(both);
  if (!f.k_type.empty()) {
    SNUG_ASSIGN_OR_RETURN(s.k_type, kv_type_flag("--k-type", f.k_type));
  }
  if (!f.v_type.empty()) {
    SNUG_ASSIGN_OR_RETURN(s.v_type, kv_type_flag("--v-type", f.v_type));
  }
  s.n_ctx = f.ctx;
  s.n_parallel = f.parallel;
  s.n_seqs = f.seqs;
  s.n_batch = f.batch;
  s.n_threads = f.threads > 0 ? f.threads : engine::default_thread_count();
  return s;
}

PlannedMemory planned_memory(const PlannedModel& pm) {
  PlannedMemory p;
  auto at = [&p](memory::Category c) -> uint64_t& { return p.category[static_cast<int>(c)]; };
  at(memory::Category::kWeightsMapped) = pm.footprint.weights_mapped;
  at(memory::Category::kWeightsResident) = pm.footprint.weights_resident;
  at(memory::Category::kKvCache) = pm.fit.plan.kv;
  at(memory::Category::kScratch) = pm.fit.plan.workspace;
  at(memory::Category::kTokenizer) = pm.footprint.tokenizer_bytes;
  p.predicted_peak_rss = pm.fit.plan.predicted_peak_rss;
  p.n_ctx = pm.fit.plan.session.shape.n_ctx;
  p.context_reason = pm.fit.context_reason;
  return p;
}

namespace {

// Everything but the session's KV cache and workspace, which Session::create reserves.
Result<memory::Reservation> reserve_base(const PlannedModel& pm) {
  const plan::MemoryPlan& m = pm.fit.plan;
  return pm.budget->reserve(m.predicted_peak_rss - m.kv - m.workspace,
                            "the model, tokenizer and process");
}

}  // namespace

Error explain_budget(Error e, const BudgetChoice& b) {
  if (!b.source.empty() && b.source != "--memory")
    e.message += " (the budget is the " + b.source + "; --memory sets it)";
  return e;
}

Result<PlannedModel> load_planned(const PlanFlags& f, memory::Ledger* ledger) {
  PlannedModel pm;
  SNUG_ASSIGN_OR_RETURN(pm.budget_choice, resolve_budget(f.memory, f.memory_given));
  SNUG_ASSIGN_OR_RETURN(plan::SessionShape shape, session_shape(f));
  SNUG_ASSIGN_OR_RETURN(std::string path, resolve_model_path(f.model));
  // Mapping the file takes no memory; parsing touches only the header's pages.
  SNUG_ASSIGN_OR_RETURN(gguf::File file, gguf::File::open(path));
  SNUG_ASSIGN_OR_RETURN(pm.footprint, plan::plan_model(file, f.repack.packing()));
  if (!pm.footprint.runnable) return make_error("'", path, "': ", pm.footprint.runnable_note);
  auto fitted = plan::fit(pm.footprint, {shape, pm.budget_choice.bytes});
  if (!fitted.ok()) return explain_budget(fitted.take_error(), pm.budget_choice);
  pm.fit = std::move(fitted.value());
  if (f.beside) {
    // The fit left room for the engine alone. Fitted again in the budget less
    // what sits beside it at this context, a smaller context needs no more
    // beside it, so the second fit holds both.
    const uint64_t beside = f.beside(pm.fit.plan.session.shape.n_ctx);
    const uint64_t budget = pm.budget_choice.bytes;
    if (pm.fit.plan.predicted_peak_rss + beside > budget) {
      if (!pm.fit.auto_context || beside >= budget) {
        return explain_budget(
            make_error("'", pm.footprint.name, "' needs ",
                       format_bytes(pm.fit.plan.predicted_peak_rss), " and the HTTP server ",
                       format_bytes(beside), " but the memory budget is ", format_bytes(budget),
                       ": lower --ctx or --parallel"),
            pm.budget_choice);
      }
      auto again = plan::fit(pm.footprint, {shape, budget - beside});
      if (!again.ok()) return explain_budget(again.take_error(), pm.budget_choice);
      pm.fit = std::move(again.value());
    }
  }
  const plan::MemoryPlan& m = pm.fit.plan;
  if (pm.fit.auto_context)
    log_info("context {} chosen to fit the {} budget ({}): predicted peak {}",
             m.session.shape.n_ctx, format_bytes(pm.budget_choice.bytes), pm.budget_choice.source,
             format_bytes(m.predicted_peak_rss));
  pm.budget = std::make_unique<memory::Budget>(pm.budget_choice.bytes);
  SNUG_ASSIGN_OR_RETURN(pm.base, reserve_base(pm));
  SNUG_ASSIGN_OR_RETURN(pm.lm, load_model_file(std::move(file), ledger, f.repack));
  return pm;
}

Status fit_one_shot(PlannedModel& pm, int32_t prompt_tokens, int32_t n_predict) {
  if (!pm.fit.auto_context || n_predict < 0) return ok_status();
  const plan::SessionShape& shape = pm.fit.plan.session.shape;
  const plan::ContextChoice choice =
      plan::one_shot_context(prompt_tokens, n_predict, shape.kv_block_tokens,
                             pm.footprint.config.n_ctx_train, shape.n_ctx);
  plan::FitRequest request{shape, pm.budget_choice.bytes};
  request.shape.n_ctx = choice.n_ctx;
  auto fitted = plan::fit(pm.footprint, request);
  if (!fitted.ok()) return explain_budget(fitted.take_error(), pm.budget_choice);
  plan::Fit narrowed = std::move(fitted.value());
  narrowed.context_reason = choice.reason;
  pm.base.release();
  pm.fit = std::move(narrowed);
  SNUG_ASSIGN_OR_RETURN(pm.base, reserve_base(pm));
  log_info("context {} ({}): predicted peak {}", choice.n_ctx, choice.reason,
           format_bytes(pm.fit.plan.predicted_peak_rss));
  return ok_status();
}

}  // namespace snug::cli
