// Flags shared by the commands that generate text (run, chat): model,
// context, threads, sampling, memory report.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "engine/generate.h"
#include "engine/session.h"

namespace snug::cli {

struct GenFlags {
  std::string model = "smollm2";
  int32_t n_predict = -1;
  int32_t ctx = 0;
  int32_t batch = 256;
  int32_t threads = 0;
  std::string system;
  std::vector<std::string> stop;
  engine::SamplerParams sampler;
  bool memory_report = false;
  bool ignore_eos = false;
  bool verbose = false;

  void add_to(CLI::App& app);
  engine::SessionOptions session_options() const;
  engine::GenerateOptions generate_options() const;
};

}  // namespace snug::cli
