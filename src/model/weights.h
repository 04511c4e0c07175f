// Weights bound by name to tensors in the mapped GGUF file. Nothing is copied:
// every view points into the file's pages (memory rule 1), and binding checks
// each tensor's presence, shape and type so the forward pass can trust them.
#pragma once

#include <string>
#include <vector>

#include "base/result.h"
#include "gguf/gguf.h"
#include "model/config.h"
#include "tensor/kernels.h"

namespace snug::model {

struct LayerWeights {
  const float* attn_norm = nullptr;  // [n_embd]
  tensor::MatView wq;                // n_heads*head_dim_k rows x n_embd
  tensor::MatView wk;                // n_kv_heads*head_dim_k rows x n_embd
  tensor::MatView wv;                // n_kv_heads*head_dim_v rows x n_embd
  tensor::MatView wo;                // n_embd rows x n_heads*head_dim_v
  const float* ffn_norm = nullptr;   // [n_embd]
  tensor::MatView gate;              // n_ff rows x n_embd
  tensor::MatView up;                // n_ff rows x n_embd
  tensor::MatView down;              // n_embd rows x n_ff
  // Present where the family has them (ModelConfig::qk_norm, post_norms), else null.
  const float* q_norm = nullptr;          // [head_dim_k], every query head
  const float* k_norm = nullptr;          // [head_dim_k], every key head
  const float* post_attn_norm = nullptr;  // [n_embd]
  const float* post_ffn_norm = nullptr;   // [n_embd]
  // Projection biases, wherever a file has them (Qwen 2), else null.
  const float* bq = nullptr;  // [n_heads * head_dim_k]
  const float* bk = nullptr;  // [n_kv_heads * head_dim_k]
  const float* bv = nullptr;  // [n_kv_heads * head_dim_v]
  // Output biases: llama.cpp's optional attn_output.bias and ffn_down.bias,
  // which a structured cut writes for what the removed units gave on average.
  const float* bo = nullptr;      // [n_embd]
  const float* b_down = nullptr;  // [n_embd]
};

struct Weights {
  tensor::MatView token_embd;          // n_vocab rows x n_embd
  const float* output_norm = nullptr;  // [n_embd]
  tensor::MatView output;              // n_vocab rows x n_embd (token_embd when tied)
  const float* rope_freqs = nullptr;   // [rope_dim / 2] Llama 3's frequency divisors, or null
  std::vector<LayerWeights> layers;
  uint64_t bytes = 0;  // tensor data referenced, for the ledger
  // Every tensor bound, in binding order: what a forward pass reads of the
  // file (file_pages.h); a tensor the model does not know is never touched.
  std::vector<const gguf::TensorInfo*> tensors;
};

// The names bind_weights binds for `config`: the tensors it refuses a file
// without, then those it binds where the file has them. The plan counts the
// same list (plan/footprint.cpp).
struct WeightNames {
  std::vector<std::string> required;
  std::vector<std::string> optional;
};
WeightNames weight_tensor_names(const ModelConfig& config);

Result<Weights> bind_weights(const gguf::File& file, const ModelConfig& config);

}  // namespace snug::model
