// Flags of the commands that run the scheduler (`snug serve`, `snug batch`):
// the model, the budget, the KV pool and the scheduler's shape. One struct so
// that both commands plan, reserve and schedule the same way.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "cli/budget.h"
#include "cli/common.h"
#include "engine/scheduler.h"

namespace snug::cli {

struct EngineFlags {
  std::string model = kDefaultModel;
  std::string memory;
  CLI::Option* memory_option = nullptr;
  int32_t ctx = 0;  // 0: the largest that fits `parallel` sequences
  int32_t parallel = 4;
  int32_t batch_tokens = 256;
  int32_t prefill_chunk = 0;  // 0: what batch_tokens leaves
  int32_t max_seqs = 0;       // 0: 4 x parallel, at most batch_tokens
  int32_t queue = 64;
  int32_t threads = 0;
  std::string kv_type = "f16";
  std::string k_type;
  std::string v_type;
  bool no_prefix_cache = false;
  RepackFlags repack;
  std::string admission = "reserve";  // reserve | prompt (engine::SchedulerOptions::Admission)

  // Sequences running at once, as the scheduler will resolve max_seqs.
  int32_t resolved_max_seqs() const;
  // The plan's flags (n_seqs = resolved_max_seqs(), as the scheduler plans).
  PlanFlags plan_flags() const;
  // The model's name in requests and responses: `alias` when given, else a
  // short name as given ("smollm2"), else the file's name without .gguf.
  std::string served_name(const std::string& alias) const;
  // The scheduler's options for the planned shape.
  engine::SchedulerOptions scheduler_options(const plan::SessionShape& shape) const;
};

// Adds the model argument and the engine flags to `sub`, bound to `f`.
void add_engine_flags(CLI::App& sub, EngineFlags* f);

}  // namespace snug::cli
