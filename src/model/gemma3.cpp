// Gemma 3 (llama.cpp's LLM_ARCH_GEMMA3, its interleaved sliding-window
// variant): embeddings scaled by sqrt(width); five sliding-window layers to
// one global one, each kind with its own rope base; NeoX rope after per-head
// RMS norms of q and k; queries scaled before attention; RMS norms of the
// attention and feed-forward outputs before each residual addition; a GeGLU
// feed-forward network with the tanh-approximate GELU; the output head tied
// to the embeddings. Its graph is forward_decoder's (decoder.cpp) with these
// parameters.
#include <cmath>
#include <string>
#include <vector>

#include "model/family.h"

namespace snug::model {

// Gemma 3's hyper-parameters as llama.cpp reads them: a sliding window
// (required); which layers use it, from attention.sliding_window_pattern (a
// period n: layer l is windowed unless l % n == n - 1; or one bool per layer),
// every sixth layer global by default; windowed layers' rope base from
// rope.freq_base_swa, 10000 by default, unscaled; an optional final logit
// soft-cap; queries scaled by 1/sqrt(head size) (27B: 1/sqrt(width / heads),
// Gemma's query_pre_attn_scalar).
Status read_gemma3(const gguf::File& f, ModelConfig& c) {
  const std::string window_key = "gemma3.attention.sliding_window";
  if (!f.find(window_key)) return make_error("'", f.name(), "': missing ", window_key);
  SNUG_ASSIGN_OR_RETURN(uint64_t window, f.get_uint(window_key));
  if (window == 0) return make_error("'", f.name(), "': ", window_key, " is zero");
  if (window > static_cast<uint64_t>(c.n_ctx_train))
    return make_error("'", f.name(), "': sliding window of ", window,
                      " tokens exceeds the trained context of ", c.n_ctx_train);
  c.sliding_window = static_cast<int32_t>(window);

  const auto n = static_cast<size_t>(c.n_layers);
  std::vector<bool> windowed(n);
  const std::string pattern_key = "gemma3.attention.sliding_window_pattern";
  const gguf::Value* pattern = f.find(pattern_key);
  if (pattern != nullptr && pattern->type == gguf::ValueType::kArray) {
    if (pattern->elem_type != gguf::ValueType::kBool || pattern->count != n)
      return make_error("'", f.name(), "': ", pattern_key, " must be ", n,
                        " bools (one per layer), not ", pattern->count, " elements");
    for (size_t l = 0; l < n; ++l) windowed[l] = pattern->array_i64(l) != 0;
  } else {
    SNUG_ASSIGN_OR_RETURN(uint64_t period, f.get_uint_or(pattern_key, 6));
    for (size_t l = 0; l < n; ++l) windowed[l] = period == 0 || l % period < period - 1;
  }
  SNUG_ASSIGN_OR_RETURN(float local_base, f.get_float_or("gemma3.rope.freq_base_swa", 10000.f));
  if (!(local_base > 0.f) || !std::isfinite(local_base))
    return make_error("'", f.name(), "': rope parameters must be positive and finite");
  if (c.rope_sets[0].ext_factor != 0.f)
    return make_error("'", f.name(), "': rope scaling 'yarn' is not supported for gemma3");
  RopeParams local = c.rope_sets[0];  // llama.cpp shares attn_factor between the sets
  local.freq_base = local_base;
  local.freq_scale = 1.f;
  c.rope_sets.push_back(local);
  for (size_t l = 0; l < n; ++l) {
    if (windowed[l]) c.layers[l] = {c.sliding_window, 1};
  }
  SNUG_ASSIGN_OR_RETURN(c.final_softcap, f.get_float_or("gemma3.final_logit_softcapping", 0.f));
  if (!(c.final_softcap >= 0.f) || !std::isfinite(c.final_softcap))
    return make_error("'", f.name(), "': final_logit_softcapping ", c.final_softcap,
                      " is out of range");
  c.rope_neox = true;
  c.ffn_activation = FfnActivation::kGeluTanh;
  c.embd_scale = std::sqrt(static_cast<float>(c.n_embd));
  // 27B (62 layers): width / heads in integers, as llama.cpp computes it.
  const int32_t query_width = c.n_layers == 62 ? c.n_embd / c.n_heads : c.head_dim_k;
  c.query_scale = 1.f / std::sqrt(static_cast<float>(query_width));
  c.qk_norm = true;
  c.post_norms = true;
  return ok_status();
}

}  // namespace snug::model
