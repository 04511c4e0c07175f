// Flags shared by the commands that generate text (run, chat): model,
// context, threads, sampling, memory budget and report.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "cli/budget.h"
#include "engine/generate.h"
#include "engine/session.h"

namespace snug::cli {

struct GenFlags {
  CLI::Option* memory_option = nullptr;
  std::string model = "smollm2";
  int32_t n_predict = -1;
  int32_t ctx = 0;
  int32_t batch = 256;
  int32_t threads = 0;
  std::string memory;           // --memory SIZE
  std::string kv_type = "f16";  // --kv-type; --k-type / --v-type override it when given
  std::string k_type;
  std::string v_type;
  std::string system;
  std::vector<std::string> stop;
  engine::SamplerParams sampler;
  bool memory_report = false;
  RepackFlags repack;
  bool ignore_eos = false;
  bool verbose = false;

  void add_to(CLI::App& app);
  // The budget and shape to plan; call after parsing.
  PlanFlags plan_flags() const;
  // Options for the session of a model loaded by load_planned (its fitted context).
  engine::SessionOptions session_options(const PlannedModel& pm) const;
  engine::GenerateOptions generate_options() const;
};

}  // namespace snug::cli
