#include "model/config.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>

#include "kv/attention.h"
#include "model/family.h"
#include "tensor/kernels.h"

namespace snug::model {
namespace {

// Generous upper bounds: anything beyond is a corrupt or hostile header.
constexpr uint64_t kMaxLayers = 4096;
constexpr uint64_t kMaxWidth = 1u << 20;
constexpr uint64_t kMaxHeads = 4096;
constexpr uint64_t kMaxVocab = 1u << 24;
constexpr uint64_t kMaxCtx = 1u << 24;

Result<int32_t> bounded(const gguf::File& f, const std::string& key, uint64_t max,
                        std::optional<uint64_t> fallback = {}) {
  Result<uint64_t> v = fallback ? f.get_uint_or(key, *fallback) : f.get_uint(key);
  if (!v.ok()) return v.take_error();
  if (*v == 0) return make_error("'", f.name(), "': ", key, " is zero");
  if (*v > max)
    return make_error("'", f.name(), "': ", key, " = ", *v, " is implausibly large (max ", max,
                      ")");
  return static_cast<int32_t>(*v);
}

// general.architecture names as llama.cpp spells them.
constexpr std::pair<const char*, Arch> kArchs[] = {{"llama", Arch::kLlama},
                                                   {"gemma3", Arch::kGemma3},
                                                   {"qwen2", Arch::kQwen2},
                                                   {"qwen3", Arch::kQwen3}};

std::optional<Arch> arch_of(const std::string& name) {
  for (const auto& [n, a] : kArchs) {
    if (name == n) return a;
  }
  return std::nullopt;
}

// Rope scaling as llama.cpp reads it (llama_model::load_hparams and
// llama_context's YaRN set-up): type "linear" (the default), "none" or
// "yarn"; factor from rope.scaling.factor (or the older rope.scale_linear);
// YaRN blends over the pairs whose wavelengths span 32 to 1 turns of
// rope.scaling.original_context_length and keeps attention's magnitude with
// yarn_attn_factor = (0.1 ln(factor) + 1) / (1 + 0.1 ln(factor)), times
// rope.scaling.attn_factor. Llama 3's scaling is a rope_freqs tensor
// (weights.cpp), not a type.
Status read_rope_scaling(const gguf::File& f, const ModelConfig& c, RopeParams& rope) {
  const std::string a = c.arch_name + ".";
  SNUG_ASSIGN_OR_RETURN(float factor, f.get_float_or(a + "rope.scaling.factor", 0.f));
  if (factor == 0.f) {
    SNUG_ASSIGN_OR_RETURN(factor, f.get_float_or(a + "rope.scale_linear", 0.f));
  }
  if (factor == 0.f) factor = 1.f;
  SNUG_ASSIGN_OR_RETURN(float attn, f.get_float_or(a + "rope.scaling.attn_factor", 1.f));
  if (!(factor > 0.f) || !(rope.freq_base > 0.f) || !(attn > 0.f) || !std::isfinite(factor) ||
      !std::isfinite(rope.freq_base) || !std::isfinite(attn))
    return make_error("'", f.name(), "': rope parameters must be positive and finite");
  std::string type = "linear";
  if (f.find(a + "rope.scaling.type")) {
    SNUG_ASSIGN_OR_RETURN(type, f.get_string(a + "rope.scaling.type"));
  }
  rope.freq_scale = type == "none" ? 1.f : 1.f / factor;
  if (type == "yarn") {
    SNUG_ASSIGN_OR_RETURN(float log_mul,
                          f.get_float_or(a + "rope.scaling.yarn_log_multiplier", 0.f));
    if (log_mul != 0.f)
      return make_error("'", f.name(), "': rope scaling 'yarn' with a log multiplier (", log_mul,
                        ") is not supported");
    SNUG_ASSIGN_OR_RETURN(uint64_t orig, f.get_uint_or(a + "rope.scaling.original_context_length",
                                                       static_cast<uint64_t>(c.n_ctx_train)));
    if (orig == 0 || orig > kMaxCtx)
      return make_error("'", f.name(), "': rope.scaling.original_context_length ", orig,
                        " is out of range");
    rope.ext_factor = 1.f;
    const float scale = 1.f / rope.freq_scale;
    const float mscale = scale <= 1.f ? 1.f : 0.1f * std::log(scale) + 1.f;
    rope.attn_factor = mscale * (1.f / (1.f + 0.1f * std::log(scale)));
    tensor::rope_yarn_corr_dims(c.rope_dim, static_cast<int64_t>(orig), rope.freq_base, 32.f, 1.f,
                                rope.corr_dims);
  } else if (type != "linear" && type != "none") {
    return make_error("'", f.name(), "': rope scaling '", printable(type), "' is not supported");
  }
  rope.attn_factor *= attn;
  return ok_status();
}

}  // namespace

bool arch_supported(const std::string& arch_name) {
  return arch_of(arch_name).has_value();
}
const char* supported_archs() {
  static const std::string list = [] {
    std::string s;
    for (const auto& [name, arch] : kArchs) s += (s.empty() ? "" : ", ") + std::string(name);
    return s;
  }();
  return list.c_str();
}

Result<ModelConfig> read_config(const gguf::File& f) {
  ModelConfig c;
  SNUG_ASSIGN_OR_RETURN(c.arch_name, f.get_string("general.architecture"));
  if (auto arch = arch_of(c.arch_name)) {
    c.arch = *arch;
  } else {
    return make_error("'", f.name(), "': architecture '", printable(c.arch_name),
                      "' is not supported (supported: ", supported_archs(), ")");
  }
  c.name = f.get_string("general.name").ok() ? *f.get_string("general.name") : c.arch_name;
  const std::string a = c.arch_name + ".";
  SNUG_ASSIGN_OR_RETURN(c.n_layers, bounded(f, a + "block_count", kMaxLayers));
  SNUG_ASSIGN_OR_RETURN(c.n_embd, bounded(f, a + "embedding_length", kMaxWidth));
  SNUG_ASSIGN_OR_RETURN(c.n_ff, bounded(f, a + "feed_forward_length", kMaxWidth));
  SNUG_ASSIGN_OR_RETURN(c.n_heads, bounded(f, a + "attention.head_count", kMaxHeads));
  SNUG_ASSIGN_OR_RETURN(c.n_kv_heads,
                        bounded(f, a + "attention.head_count_kv", kMaxHeads, c.n_heads));
  SNUG_ASSIGN_OR_RETURN(c.n_ctx_train, bounded(f, a + "context_length", kMaxCtx, 2048));
  if (c.n_heads % c.n_kv_heads != 0)
    return make_error("'", f.name(), "': ", c.n_heads, " attention heads are not a multiple of ",
                      c.n_kv_heads, " KV heads");
  int32_t default_hd = c.n_embd / c.n_heads;
  if (!f.find(a + "attention.key_length") && c.n_embd % c.n_heads != 0)
    return make_error("'", f.name(), "': embedding width ", c.n_embd, " is not divisible by ",
                      c.n_heads, " heads");
  SNUG_ASSIGN_OR_RETURN(c.head_dim_k,
                        bounded(f, a + "attention.key_length", kMaxWidth, default_hd));
  SNUG_ASSIGN_OR_RETURN(c.head_dim_v,
                        bounded(f, a + "attention.value_length", kMaxWidth, default_hd));
  if (c.head_dim_k > kv::kMaxHeadDim || c.head_dim_v > kv::kMaxHeadDim)
    return make_error("'", f.name(), "': head size ", std::max(c.head_dim_k, c.head_dim_v),
                      " exceeds the supported ", kv::kMaxHeadDim);
  SNUG_ASSIGN_OR_RETURN(c.rope_dim,
                        bounded(f, a + "rope.dimension_count", kMaxWidth, c.head_dim_k));
  if (c.rope_dim > c.head_dim_k || c.rope_dim % 2 != 0)
    return make_error("'", f.name(), "': rope.dimension_count ", c.rope_dim,
                      " does not fit head size ", c.head_dim_k);
  RopeParams rope;
  SNUG_ASSIGN_OR_RETURN(rope.freq_base, f.get_float_or(a + "rope.freq_base", 10000.f));
  SNUG_RETURN_IF_ERROR(read_rope_scaling(f, c, rope));
  c.rope_sets = {rope};
  c.layers.assign(static_cast<size_t>(c.n_layers), LayerConfig{});
  SNUG_ASSIGN_OR_RETURN(c.rms_eps, f.get_float_or(a + "attention.layer_norm_rms_epsilon", 1e-5f));
  if (!(c.rms_eps > 0.f) || c.rms_eps > 1.f)
    return make_error("'", f.name(), "': layer_norm_rms_epsilon ", c.rms_eps, " is out of range");

  const gguf::Value* tokens = f.find("tokenizer.ggml.tokens");
  const gguf::TensorInfo* emb = f.find_tensor("token_embd.weight");
  if (!emb) return make_error("'", f.name(), "': missing tensor 'token_embd.weight'");
  if (emb->ne[0] != c.n_embd)
    return make_error("'", f.name(), "': token_embd.weight has width ", emb->ne[0], ", expected ",
                      c.n_embd);
  if (emb->rows() > static_cast<int64_t>(kMaxVocab))
    return make_error("'", f.name(), "': vocabulary of ", emb->rows(),
                      " tokens is implausibly large");
  c.n_vocab = static_cast<int32_t>(emb->rows());
  if (tokens &&
      (tokens->type != gguf::ValueType::kArray || tokens->elem_type != gguf::ValueType::kString))
    return make_error("'", f.name(), "': tokenizer.ggml.tokens must be an array of strings");
  if (tokens && tokens->strings.size() != static_cast<size_t>(c.n_vocab))
    return make_error("'", f.name(), "': tokenizer has ", tokens->strings.size(),
                      " tokens but token_embd.weight has ", c.n_vocab, " rows");
  c.tied_output = f.find_tensor("output.weight") == nullptr;
  switch (c.arch) {
    case Arch::kLlama:
      c.output_biases = true;
      break;
    case Arch::kGemma3:
      SNUG_RETURN_IF_ERROR(read_gemma3(f, c));
      break;
    case Arch::kQwen2:
    case Arch::kQwen3:
      SNUG_RETURN_IF_ERROR(read_qwen(f, c));
      break;
  }
  return c;
}

std::vector<int32_t> layer_windows(const ModelConfig& c) {
  std::vector<int32_t> w;
  for (const LayerConfig& l : c.layers) w.push_back(l.window);
  if (std::all_of(w.begin(), w.end(), [](int32_t x) { return x == 0; })) w.clear();
  return w;
}

}  // namespace snug::model
