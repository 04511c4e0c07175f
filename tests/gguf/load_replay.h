// Everything that reads a GGUF file before a token is computed, in the order
// the CLI runs it: the reader (header-only, as the planner reads it), the
// planner's footprint, the hyper-parameter checks, the tokenizer built from
// the metadata (then used on a probe text) and the model's chat template, the
// strict reader and weight binding. fuzz/fuzz_gguf.cpp fuzzes exactly this
// function and gguf_malformed_test replays tests/gguf/regressions/ through it,
// so a regression file takes the path the fuzzer found it on.
#pragma once

#include <cstdint>
#include <span>

#include <vector>

#include "base/result.h"

namespace snug::testing {

// Each step's result; a step whose input an earlier step refused keeps
// ok_status(). An abort (a token id outside the vocabulary, a failed check),
// a sanitizer report or a hang is a bug, never an outcome.
struct LoadOutcome {
  Status header;     // gguf::File::parse with allow_missing_data
  Status plan;       // plan::plan_model
  Status config;     // model::read_config
  Status tokenizer;  // text::Tokenizer::from_gguf
  Status chat;       // text::ChatTemplate::parse and render, when the model has a template
  Status model;      // strict gguf::File::parse, then model::Model::from_file

  // The file loads as `snug run` would load it.
  bool loaded() const;
  // The errors of the steps that failed, in step order.
  std::vector<const Error*> errors() const;
};

LoadOutcome replay_load(std::span<const uint8_t> bytes);

}  // namespace snug::testing
