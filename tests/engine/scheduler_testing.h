// Helpers for the scheduler's tests: the same request run alone through a
// Session (the path `snug run` takes), and a request's stream collected.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "engine/scheduler.h"
#include "model/model.h"

namespace snug::engine::testing {

// The logprob the scheduler reports for token `id`, computed the same way
// (log-softmax summed in double), so equal arithmetic gives equal bits.
float logprob_of(const float* logits, int32_t n, int32_t id);

struct Alone {
  std::vector<int32_t> tokens;  // greedy
  std::vector<float> logprobs;  // of each: bit-for-bit evidence of the same arithmetic
};

// `prompt` then n greedy tokens through a Session of context n_ctx: the
// prompt in one call, each generated token fed as generated; keys and values
// cached as k_type and v_type.
Alone alone_with_logprobs(const model::Model& m, const std::vector<int32_t>& prompt, int n,
                          int32_t n_ctx, tensor::DType k_type = tensor::DType::kF16,
                          tensor::DType v_type = tensor::DType::kF16);

struct Outcome {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::string text;
  Finish fin;
  bool finished = false;
};

// Reads events until the finish or `limit`.
Outcome collect(RequestStream& s, std::chrono::milliseconds limit = std::chrono::seconds(120));

}  // namespace snug::engine::testing
