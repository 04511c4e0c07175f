// Perplexity and divergence from a base model over a token sequence, the way
// llama.cpp's perplexity tool measures them, so the numbers compare directly:
// the text is cut into non-overlapping windows of n_ctx tokens, each evaluated
// from an empty cache (its first token replaced by BOS when the vocabulary
// adds one), and only the second half of each window is scored, so every
// scored token sees at least n_ctx/2 tokens of context.
//
// Against a base model (the same vocabulary, e.g. the unquantized weights) it
// adds, per scored position, the KL divergence KL(base || model) of the
// next-token distributions, whether the two agree on the most likely token,
// and the change in the probability of the real next token.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "base/result.h"
#include "memory/ledger.h"
#include "model/model.h"
#include "tensor/dtype.h"

namespace snug::engine {

struct PerplexityOptions {
  int32_t n_ctx = 512;     // window size
  int32_t n_batch = 512;   // tokens per forward call (at most n_ctx)
  int32_t max_chunks = 0;  // 0: every whole window of the text
  int32_t n_threads = 0;   // 0: all cores the process may use
  tensor::DType k_type = tensor::DType::kF16;
  tensor::DType v_type = tensor::DType::kF16;
  // After each window: windows done, windows in all, the running result.
  std::function<void(int32_t done, int32_t total, double ppl)> on_chunk;
};

// A mean with its standard error (llama.cpp's mean_and_uncertainty).
struct Estimate {
  double value = 0;
  double error = 0;
};

struct KlStats {
  Estimate ppl_base;
  Estimate ln_ppl_ratio;  // mean ln(PPL(model) / PPL(base))
  Estimate kld;           // mean KL(base || model), nats
  double kld_median = 0, kld_p90 = 0, kld_p99 = 0, kld_p999 = 0, kld_max = 0;
  Estimate same_top;    // share of positions where the most likely tokens agree
  Estimate rms_p_diff;  // RMS change of the real next token's probability
};

struct PerplexityResult {
  int32_t n_ctx = 0;
  int32_t n_chunks = 0;
  int64_t n_tokens = 0;           // of the whole text
  int64_t n_scored = 0;           // positions scored
  Estimate ppl;                   // exp of the mean negative log-likelihood
  std::vector<double> chunk_ppl;  // running PPL after each window, as llama.cpp prints it
  bool has_base = false;
  KlStats kl;
  double seconds = 0;            // evaluation time, both models
  double tokens_per_second = 0;  // evaluated tokens of the model (not the base) per second
};

// Evaluates `tokens` (the tokenized text, BOS included when the vocabulary adds
// one) with `model` and, when given, `base`. Needs at least 2 * n_ctx tokens,
// as llama.cpp does. Memory: per model a KV cache of n_ctx tokens and a
// workspace returning n_batch rows of logits, plus, with a base, its
// log-probabilities for the scored half of one window; all charged to `ledger`.
Result<PerplexityResult> evaluate_perplexity(const model::Model& model, const model::Model* base,
                                             std::span<const int32_t> tokens, int32_t bos,
                                             const PerplexityOptions& options,
                                             memory::Ledger* ledger);

}  // namespace snug::engine
