// Qwen 2 / 2.5 (llama.cpp's LLM_ARCH_QWEN2) and Qwen 3 (LLM_ARCH_QWEN3): the
// Llama graph (forward_decoder) with NeoX rope. Qwen 2 adds biases to the q, k
// and v projections, which bind_weights takes wherever a file has them; Qwen 3
// has none and normalises every query and key head (attn_q_norm, attn_k_norm)
// before rope instead. The output head is tied or not, as the file says.
#include "model/family.h"

namespace snug::model {

Status read_qwen(const gguf::File& /*f*/, ModelConfig& c) {
  c.rope_neox = true;
  c.qk_norm = c.arch == Arch::kQwen3;
  return ok_status();
}

}  // namespace snug::model
