// Quantization file types ("Q4_K_M", "Q8_0", ...) and the per-tensor type
// choice behind them. The choice follows llama.cpp's llama_tensor_get_type so
// that a file snug quantizes has the same tensor types as one llama-quantize
// makes from the same input: the _S/_M/_L mixes give more bits to the tensors
// that hurt most when coarse (attn_v, ffn_down in the first and last layers,
// the output projection), and a tensor whose rows are not a multiple of a
// format's block falls back to a compatible 32-element format.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "gguf/gguf.h"
#include "tensor/dtype.h"

namespace snug::compress {

// A target named on the command line. file_type is the value llama.cpp writes
// to general.file_type (its llama_ftype); base is the type most tensors get.
struct QuantKind {
  std::string_view name;  // "Q4_K_M"
  uint32_t file_type;
  tensor::DType base;
};

// Case-insensitive lookup; nullopt for a name that is not a known target.
std::optional<QuantKind> find_quant_kind(std::string_view name);
// "F32, F16, BF16, Q8_0, ..." for error messages and help.
std::string quant_kind_names();
// A single tensor type by name ("q8_0", "Q6_K", "f16"), for --keep; nullopt if
// unknown or not one snug can quantize to.
std::optional<tensor::DType> find_tensor_type(std::string_view name);

// --keep PATTERN=TYPE: tensors whose name matches the glob PATTERN (`*`, `?`,
// character classes as fnmatch) get TYPE instead of what the mix would choose.
struct KeepRule {
  std::string pattern;
  tensor::DType type;
};
Result<KeepRule> parse_keep_rule(std::string_view spec);

// What the mixes need to know about the model, read from its metadata.
struct MixModel {
  std::string arch;
  int n_layer = 0;          // {arch}.block_count
  int n_gqa = 0;            // query heads per KV head (0 when unknown)
  int n_expert = 0;         // {arch}.expert_count
  bool tied_output = true;  // no output.weight: token_embd serves as the output projection
};
Result<MixModel> read_mix_model(const gguf::File& file);

// The decision for one tensor.
struct TensorPlan {
  const gguf::TensorInfo* src = nullptr;
  tensor::DType type = tensor::DType::kF32;  // output type
  bool quantize = false;                     // false: bytes copied unchanged
  std::string note;                          // fallback or override explanation, or empty
};

// Types for every tensor of `file`, in the order the output file holds them
// (llama.cpp's: by layer, then by name). Rules apply in this order: tensors that
// are never quantized (1-D, norms, not named *weight) keep their type; a --keep
// rule wins over the mix; the mix's choice; the block-size fallback.
// has_imatrix: an importance matrix will be used, which moves Q4_0 / Q5_0's
// first eighth of ffn_down to Q4_1 / Q5_1, as llama.cpp does.
std::vector<TensorPlan> plan_tensor_types(const gguf::File& file, const MixModel& model,
                                          const QuantKind& kind, const std::vector<KeepRule>& keep,
                                          bool has_imatrix = false);

}  // namespace snug::compress
