#include "model/weights.h"

#include <string>
#include <utility>

namespace snug::model {
namespace {

class Binder {
 public:
  Binder(const gguf::File& f) : f_(f) {}

  Result<tensor::MatView> matrix(const std::string& name, int64_t rows, int64_t cols) {
    const gguf::TensorInfo* t = f_.find_tensor(name);
    if (!t) return make_error("'", f_.name(), "': missing tensor '", name, "'");
    if (t->ne[0] != cols || t->rows() != rows || t->n_dims > 2)
      return make_error("'", f_.name(), "': tensor '", name, "' has shape [", t->ne[0], ", ",
                        t->rows(), "], expected [", cols, ", ", rows, "]");
    if (!tensor::info(t->type).has_kernels)
      return make_error("'", f_.name(), "': tensor '", name, "' has type ",
                        tensor::dtype_name(t->type), ", which snug cannot compute with yet");
    if (tensor::snug_only_type(t->type) && cols > tensor::kNmMaxBlocks * 32)
      return make_error("'", f_.name(), "': tensor '", name, "' is ", tensor::dtype_name(t->type),
                        " with ", cols, " columns; snug's sparse kernels take at most ",
                        tensor::kNmMaxBlocks * 32);
    if (!t->data)
      return make_error("'", f_.name(), "': tensor '", name, "' has no data (header-only file)");
    bytes += t->bytes;
    bound.push_back(t);
    return tensor::MatView{t->type, t->data, rows, cols,
                           static_cast<size_t>(*tensor::row_bytes(t->type, cols))};
  }

  Result<const float*> vector(const std::string& name, int64_t n) {
    const gguf::TensorInfo* t = f_.find_tensor(name);
    if (!t) return make_error("'", f_.name(), "': missing tensor '", name, "'");
    if (t->n_elements() != n || t->ne[0] != n)
      return make_error("'", f_.name(), "': tensor '", name, "' has ", t->n_elements(),
                        " elements, expected ", n);
    if (t->type != tensor::DType::kF32)
      return make_error("'", f_.name(), "': tensor '", name, "' must be f32, not ",
                        tensor::dtype_name(t->type));
    if (!t->data)
      return make_error("'", f_.name(), "': tensor '", name, "' has no data (header-only file)");
    if (reinterpret_cast<uintptr_t>(t->data) % alignof(float) != 0)
      return make_error("'", f_.name(), "': tensor '", name, "' is misaligned");
    bytes += t->bytes;
    bound.push_back(t);
    return reinterpret_cast<const float*>(t->data);
  }

  // A vector the file may leave out: null when absent, checked when present.
  Result<const float*> optional_vector(const std::string& name, int64_t n) {
    if (f_.find_tensor(name) == nullptr) return static_cast<const float*>(nullptr);
    return vector(name, n);
  }

  uint64_t bytes = 0;
  std::vector<const gguf::TensorInfo*> bound;

 private:
  const gguf::File& f_;
};

}  // namespace

Result<Weights> bind_weights(const gguf::File& file, const ModelConfig& c) {
  Binder b(file);
  Weights w;
  const int64_t q_rows = int64_t{c.n_heads} * c.head_dim_k;
  const int64_t k_rows = int64_t{c.n_kv_heads} * c.head_dim_k;
  const int64_t v_rows = int64_t{c.n_kv_heads} * c.head_dim_v;
  const int64_t o_cols = int64_t{c.n_heads} * c.head_dim_v;
  SNUG_ASSIGN_OR_RETURN(w.token_embd, b.matrix("token_embd.weight", c.n_vocab, c.n_embd));
  SNUG_ASSIGN_OR_RETURN(w.output_norm, b.vector("output_norm.weight", c.n_embd));
  if (c.tied_output) {
    w.output = w.token_embd;
  } else {
    SNUG_ASSIGN_OR_RETURN(w.output, b.matrix("output.weight", c.n_vocab, c.n_embd));
  }
  // Llama 3's rope scaling: divisors of each pair's frequency (llama.cpp reads
  // them for the llama architecture only).
  if (c.arch == Arch::kLlama) {
    SNUG_ASSIGN_OR_RETURN(w.rope_freqs, b.optional_vector("rope_freqs.weight", c.rope_dim / 2));
  }
  // Layers are added as their tensors bind, so a layer count the file cannot back
  // fails at the first missing tensor without sizing anything by it.
  for (int32_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LayerWeights& L = w.layers.emplace_back();
    SNUG_ASSIGN_OR_RETURN(L.attn_norm, b.vector(p + "attn_norm.weight", c.n_embd));
    SNUG_ASSIGN_OR_RETURN(L.wq, b.matrix(p + "attn_q.weight", q_rows, c.n_embd));
    SNUG_ASSIGN_OR_RETURN(L.wk, b.matrix(p + "attn_k.weight", k_rows, c.n_embd));
    SNUG_ASSIGN_OR_RETURN(L.wv, b.matrix(p + "attn_v.weight", v_rows, c.n_embd));
    SNUG_ASSIGN_OR_RETURN(L.wo, b.matrix(p + "attn_output.weight", c.n_embd, o_cols));
    SNUG_ASSIGN_OR_RETURN(L.ffn_norm, b.vector(p + "ffn_norm.weight", c.n_embd));
    SNUG_ASSIGN_OR_RETURN(L.gate, b.matrix(p + "ffn_gate.weight", c.n_ff, c.n_embd));
    SNUG_ASSIGN_OR_RETURN(L.up, b.matrix(p + "ffn_up.weight", c.n_ff, c.n_embd));
    SNUG_ASSIGN_OR_RETURN(L.down, b.matrix(p + "ffn_down.weight", c.n_embd, c.n_ff));
    SNUG_ASSIGN_OR_RETURN(L.bq, b.optional_vector(p + "attn_q.bias", q_rows));
    SNUG_ASSIGN_OR_RETURN(L.bk, b.optional_vector(p + "attn_k.bias", k_rows));
    SNUG_ASSIGN_OR_RETURN(L.bv, b.optional_vector(p + "attn_v.bias", v_rows));
    if (c.output_biases) {
      SNUG_ASSIGN_OR_RETURN(L.bo, b.optional_vector(p + "attn_output.bias", c.n_embd));
      SNUG_ASSIGN_OR_RETURN(L.b_down, b.optional_vector(p + "ffn_down.bias", c.n_embd));
    }
    if (c.qk_norm) {
      SNUG_ASSIGN_OR_RETURN(L.q_norm, b.vector(p + "attn_q_norm.weight", c.head_dim_k));
      SNUG_ASSIGN_OR_RETURN(L.k_norm, b.vector(p + "attn_k_norm.weight", c.head_dim_k));
    }
    if (c.post_norms) {
      SNUG_ASSIGN_OR_RETURN(L.post_attn_norm, b.vector(p + "post_attention_norm.weight", c.n_embd));
      SNUG_ASSIGN_OR_RETURN(L.post_ffn_norm, b.vector(p + "post_ffw_norm.weight", c.n_embd));
    }
  }
  w.bytes = b.bytes;
  w.tensors = std::move(b.bound);
  return w;
}

WeightNames weight_tensor_names(const ModelConfig& c) {
  WeightNames n;
  n.required = {"token_embd.weight", "output_norm.weight"};
  if (!c.tied_output) n.required.emplace_back("output.weight");
  if (c.arch == Arch::kLlama) n.optional.emplace_back("rope_freqs.weight");
  for (int32_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    for (const char* m : {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
                          "ffn_gate", "ffn_up", "ffn_down"})
      n.required.push_back(p + m + ".weight");
    for (const char* b : {"attn_q.bias", "attn_k.bias", "attn_v.bias"}) n.optional.push_back(p + b);
    if (c.output_biases) {
      n.optional.push_back(p + "attn_output.bias");
      n.optional.push_back(p + "ffn_down.bias");
    }
    if (c.qk_norm) {
      n.required.push_back(p + "attn_q_norm.weight");
      n.required.push_back(p + "attn_k_norm.weight");
    }
    if (c.post_norms) {
      n.required.push_back(p + "post_attention_norm.weight");
      n.required.push_back(p + "post_ffw_norm.weight");
    }
  }
  return n;
}

}  // namespace snug::model
