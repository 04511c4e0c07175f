// An independent forward pass for the tests: the Llama family (Qwen 2 and 3
// with their biases, norms and NeoX rotation, and Gemma 3, from their
// published definitions: see scalar_forward.cpp) written out in
// plain loops over double precision, sharing nothing with src/model but the
// GGUF reader and the row decoders (which the gguf tests check against the
// `gguf` Python package). Weights are read by name from the file and widened
// to double, so the only difference from the real forward is the arithmetic:
// float32 sums, 8-bit activations for quantized weights, KV rows stored in
// f16 or q8_0. Slow and simple on purpose: tiny models only.
#pragma once

#include <cstdint>
#include <vector>

#include "base/result.h"
#include "gguf/gguf.h"

namespace snug::testing {

struct ScalarModel {
  int32_t n_layers = 0, n_embd = 0, n_ff = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int32_t n_vocab = 0, rope_dim = 0;
  double rope_base = 10000, rms_eps = 1e-5;
  bool gemma3 = false;
  bool neox = false;   // qwen2, qwen3, gemma3 rotate halves
  int32_t window = 0;  // gemma3: sliding window of its local layers
  // Matrices are [rows][cols] row-major, as GGUF stores them (ne[0] = cols).
  struct Layer {
    std::vector<double> attn_norm, wq, wk, wv, wo, ffn_norm, gate, up, down;
    std::vector<double> q_norm, k_norm;                 // qwen3, gemma3 (else empty)
    std::vector<double> post_attn_norm, post_ffn_norm;  // gemma3
    std::vector<double> bq, bk, bv;                     // where the file has them
    std::vector<double> bo, b_down;                     // where the file has them
  };
  std::vector<double> token_embd;  // [n_vocab][n_embd]
  std::vector<double> output_norm;
  std::vector<double> output;  // [n_vocab][n_embd]: token_embd when the file has no output.weight
  std::vector<Layer> layers;
};

Result<ScalarModel> load_scalar_model(const gguf::File& file);

// How positions are rotated: NORM (adjacent pairs, what GGUF's llama
// converters permute Q and K for) is right for the Llama family; NEOX (halves)
// exists so a test can show the comparison tells the two apart.
enum class ScalarRope { kNorm, kNeox };

// Logits [tokens.size()][n_vocab] of every position of one sequence fed from
// position 0, causal attention over its own earlier positions (Gemma 3 always
// rotates halves, as Qwen does: `rope` applies to the Llama family).
std::vector<double> scalar_forward(const ScalarModel& m, const std::vector<int32_t>& tokens,
                                   ScalarRope rope = ScalarRope::kNorm);

}  // namespace snug::testing
