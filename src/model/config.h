// Hyper-parameters of a model, read from GGUF metadata and validated so that
// nothing downstream can divide by zero or size a buffer from an absurd value.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"
#include "gguf/gguf.h"
#include "tensor/kernels.h"

namespace snug::model {

enum class Arch { kLlama, kGemma3, kQwen2, kQwen3 };

// The feed-forward network's gate activation: SwiGLU (Llama) or GeGLU with
// the tanh-approximate GELU (Gemma).
enum class FfnActivation { kSilu, kGeluTanh };

// Rotary embedding parameters as the kernels take them; a model has one set
// per distinct set its layers use (Gemma 3: one for local layers, one for
// global ones). freq_factors stays null here: Llama 3's divisors are a
// tensor (Weights::rope_freqs), added for set 0 when the angles are made.
// attn_factor is llama.cpp's yarn_attn_factor times rope.scaling.attn_factor.
using RopeParams = tensor::RopeScaling;

// What may differ between the layers of one model.
struct LayerConfig {
  int32_t window = 0;    // attends to its last `window` positions (sliding window); 0: all
  int32_t rope_set = 0;  // index into ModelConfig::rope_sets
};

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
  int32_t rope_dim = 0;               // dimensions rotated per head
  bool rope_neox = false;             // rotates pairs (i, i + rope_dim/2), not adjacent pairs
  std::vector<RopeParams> rope_sets;  // [0]: the model's own (global layers')
  std::vector<LayerConfig> layers;    // [n_layers]
  int32_t sliding_window = 0;         // widest window of any layer; 0: every layer global
  float rms_eps = 1e-5f;
  bool tied_output = false;  // output head shares token_embd.weight
  // Family details the shared blocks take as parameters.
  FfnActivation ffn_activation = FfnActivation::kSilu;
  float embd_scale = 1.f;  // token embeddings are multiplied by this (Gemma: sqrt(n_embd))
  // > 0: queries are multiplied by this after rope and attention scales by 1
  // (Gemma, as llama.cpp computes it); 0: attention scales q.k by 1/sqrt(head_dim_k).
  float query_scale = 0.f;
  bool qk_norm = false;  // per-head RMS norms of q and k before rope (attn_q_norm, attn_k_norm)
  float final_softcap = 0.f;  // > 0: logits = cap * tanh(logits / cap) (Gemma's option)
  bool post_norms = false;    // RMS norms of the attention and feed-forward outputs before
                              // their residual additions (post_attention_norm, post_ffw_norm)
  // The family's llama.cpp graph adds attn_output.bias and ffn_down.bias where a file has them
  // (llama's does; Gemma 3's and Qwen's load neither and refuse a file that carries them).
  bool output_biases = false;
};

// Whether snug runs files of this general.architecture, and the list of those
// it runs, for messages ("llama, gemma3").
bool arch_supported(const std::string& arch_name);
const char* supported_archs();

// Each layer's sliding window for the KV cache's layout (kv::KvLayout::layer_window):
// empty when every layer attends globally.
std::vector<int32_t> layer_windows(const ModelConfig& c);

// Reads and checks the hyper-parameters; an Error names the key and the problem
// (an unsupported architecture, zero heads, heads that do not divide the width...).
Result<ModelConfig> read_config(const gguf::File& file);

}  // namespace snug::model
