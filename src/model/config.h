// Hyper-parameters of a model, read from GGUF metadata and validated so that
// nothing downstream can divide by zero or size a buffer from an absurd value.
#pragma once

#include <cstdint>
#include <string>

#include "base/result.h"
#include "gguf/gguf.h"

namespace snug::model {

enum class Arch { kLlama };

struct ModelConfig {
  Arch arch = Arch::kLlama;
  std::string arch_name;  // general.architecture
  std::string name;       // general.name, for messages
  int32_t n_layers = 0;
  int32_t n_embd = 0;
  int32_t n_ff = 0;
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;
  int32_t head_dim_k = 0;  // per head
  int32_t head_dim_v = 0;
  int32_t n_vocab = 0;
  int32_t n_ctx_train = 0;
  int32_t rope_dim = 0;  // dimensions rotated per head
  float rope_base = 10000.f;
  float rope_scale = 1.f;  // position multiplier (1 / linear scaling factor)
  float rms_eps = 1e-5f;
  bool tied_output = false;  // output head shares token_embd.weight
};

// Reads and checks the hyper-parameters; an Error names the key and the problem
// (an unsupported architecture, zero heads, heads that do not divide the width...).
Result<ModelConfig> read_config(const gguf::File& file);

}  // namespace snug::model
