// Budgets for the commands that load a model: --memory or the machine's real
// limit, the fit of the model into it from the header alone, and loading only
// after the fit succeeded (a refusal leaves nothing mapped beyond the header).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "base/result.h"
#include "cli/common.h"
#include "memory/budget.h"
#include "memory/ledger.h"
#include "plan/fit.h"

namespace snug::cli {

struct BudgetChoice {
  uint64_t bytes = 0;
  std::string source;  // "--memory", or how the default was derived
};

// A CLI11 check for --memory: the error names what parse_bytes refused.
CLI::Validator memory_size_validator();

// `flag` empty: the default budget (plan::default_budget of this machine);
// otherwise the parsed size. `given` tells an empty --memory from an absent one.
Result<BudgetChoice> resolve_budget(const std::string& flag, bool given);

// `e` (a model that does not fit the budget), saying where a default budget
// came from ("the budget is the cgroup v2 limit ..."): in a container, the
// limit a user did not set explains the refusal. An empty source: no budget.
Error explain_budget(Error e, const BudgetChoice& b);

struct PlanFlags {
  std::string model;
  std::string memory;  // --memory SIZE, empty when absent
  bool memory_given = false;
  int32_t ctx = 0;  // 0: auto-fit
  int32_t parallel = 1;
  int32_t seqs = 0;  // sequences decoded per step (plan::SessionShape::n_seqs); 0: parallel
  int32_t batch = 256;
  int32_t threads = 0;          // 0: all cores the process may use
  std::string kv_type = "f16";  // --kv-type: K and V
  std::string k_type;           // --k-type, --v-type: override --kv-type when given
  std::string v_type;
  RepackFlags repack;  // --repack / --pack-dir: packed after loading, and planned so
  // Bytes the caller reserves from the same budget beside the engine (the HTTP
  // server's bound), by context length; non-decreasing in it. Empty: none.
  std::function<uint64_t(int32_t n_ctx)> beside;
};

// Adds --repack and --pack-dir bound to f.
void add_repack_options(CLI::App& app, RepackFlags* f);

// Adds --kv-type, --k-type and --v-type bound to the three strings (PlanFlags' fields).
void add_kv_type_options(CLI::App& app, std::string* kv_type, std::string* k_type,
                         std::string* v_type);

// The shape for a plan (threads resolved); an Error for an unknown KV type.
Result<plan::SessionShape> session_shape(const PlanFlags& f);

// A model loaded inside its budget. Member order matters: the reservation
// is returned to the budget before the budget goes.
struct PlannedModel {
  BudgetChoice budget_choice;
  plan::ModelFootprint footprint;
  plan::Fit fit;
  std::unique_ptr<memory::Budget> budget;
  memory::Reservation base;  // process, header, weights, tokenizer, engine bookkeeping
  LoadedModel lm;
};

// The plan's figures by ledger category, for print_memory_report.
PlannedMemory planned_memory(const PlannedModel& pm);

// Opens the header, plans, fits, reserves and only then loads the weights and
// the tokenizer. Fails before loading when the model does not fit.
Result<PlannedModel> load_planned(const PlanFlags& f, memory::Ledger* ledger);

// A one-shot run that will generate at most `n_predict` tokens (>= 0) after a
// prompt of `prompt_tokens`: when the context was auto-fitted, narrows it to
// plan::one_shot_context and re-plans (the KV cache and workspace Session
// takes, and the base reservation), so the run holds what it can use rather
// than the largest context the budget allows. An explicit --ctx stays.
Status fit_one_shot(PlannedModel& pm, int32_t prompt_tokens, int32_t n_predict);

}  // namespace snug::cli
