// Token sampling: greedy, or a chain of repetition penalty -> top-k ->
// temperature -> softmax -> top-p -> min-p -> seeded draw, in llama.cpp's
// order. Candidate storage is allocated once per sampler, not per token.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace snug::engine {

struct SamplerParams {
  float temperature = 0.8f;     // <= 0: greedy (argmax)
  int32_t top_k = 40;           // <= 0: off
  float top_p = 0.95f;          // >= 1: off
  float min_p = 0.05f;          // <= 0: off
  float repeat_penalty = 1.0f;  // 1: off
  int32_t repeat_last_n = 64;
  uint64_t seed = 0xC0FFEE;
};

class Sampler {
 public:
  Sampler(const SamplerParams& params, int32_t n_vocab);
  // Picks the next token from n_vocab logits; `history` holds the tokens so
  // far (for the repetition penalty). logits are not modified.
  int32_t sample(const float* logits, std::span<const int32_t> history);
  const SamplerParams& params() const { return p_; }

 private:
  struct Cand {
    int32_t id;
    float logit;
    float p;
  };
  SamplerParams p_;
  int32_t n_vocab_;
  std::vector<Cand> cands_;
  std::vector<float> penalised_;
  std::vector<int32_t> recent_;
  std::mt19937_64 rng_;
};

int32_t argmax(const float* logits, int32_t n);

}  // namespace snug::engine
