#include "model/workspace.h"

#include <algorithm>

#include "base/check.h"
#include "kv/attention.h"
#include "tensor/kernels.h"

namespace snug::model {

const char* mat_role_stem(MatRole role) {
  switch (role) {
    case MatRole::kQ:
      return "attn_q";
    case MatRole::kK:
      return "attn_k";
    case MatRole::kV:
      return "attn_v";
    case MatRole::kO:
      return "attn_output";
    case MatRole::kGate:
      return "ffn_gate";
    case MatRole::kUp:
      return "ffn_up";
    case MatRole::kDown:
      return "ffn_down";
    case MatRole::kOutput:
      return "output";
  }
  return "?";
}
namespace {
uint64_t f32s(int64_t n) {
  return static_cast<uint64_t>(n) * sizeof(float);
}
uint64_t round64(uint64_t b) {
  return (b + 63) / 64 * 64;
}
}  // namespace

WorkspacePlan plan_workspace(const ModelConfig& c, const std::vector<tensor::DType>& matrix_types,
                             const WorkspaceShape& s) {
  WorkspacePlan p;
  p.shape = s;
  const int64_t T = s.max_tokens;
  p.activations = round64(f32s(T * c.n_embd)) * 2 + round64(f32s(T * c.n_heads * c.head_dim_k)) +
                  round64(f32s(T * c.n_kv_heads * c.head_dim_k)) +
                  round64(f32s(T * c.n_kv_heads * c.head_dim_v)) +
                  round64(f32s(T * c.n_heads * c.head_dim_v)) + round64(f32s(T * c.n_ff)) * 2 +
                  round64(static_cast<uint64_t>(T) * sizeof(int32_t)) +
                  round64(f32s(T * c.rope_dim * static_cast<int64_t>(c.rope_sets.size())));
  p.logits = round64(f32s(int64_t{s.max_logits} * c.n_embd)) +
             round64(f32s(int64_t{s.max_logits} * c.n_vocab));
  const int64_t widest = std::max<int64_t>({c.n_embd, c.n_ff, int64_t{c.n_heads} * c.head_dim_v});
  uint64_t q = 0;
  for (tensor::DType t : matrix_types) {
    q = std::max<uint64_t>(q, tensor::matmul_scratch_bytes(t, widest, T));
  }
  p.quant = round64(q);
  p.attention = round64(
      f32s(int64_t{s.n_threads} * kv::attention_scratch_floats(s.max_ctx, c.n_heads / c.n_kv_heads,
                                                               c.head_dim_k, c.head_dim_v)));
  return p;
}

Result<Workspace> Workspace::create(const ModelConfig& c, const WorkspacePlan& plan,
                                    memory::Ledger* ledger) {
  Workspace w;
  w.shape = plan.shape;
  SNUG_ASSIGN_OR_RETURN(w.buffer,
                        memory::Buffer::allocate(plan.total(), ledger, memory::Category::kScratch));
  uint8_t* p = w.buffer.data();
  auto take = [&p](uint64_t bytes) {
    uint8_t* r = p;
    p += round64(bytes);
    return r;
  };
  const int64_t T = plan.shape.max_tokens, L = plan.shape.max_logits;
  w.x = reinterpret_cast<float*>(take(f32s(T * c.n_embd)));
  w.xb = reinterpret_cast<float*>(take(f32s(T * c.n_embd)));
  w.q = reinterpret_cast<float*>(take(f32s(T * c.n_heads * c.head_dim_k)));
  w.k = reinterpret_cast<float*>(take(f32s(T * c.n_kv_heads * c.head_dim_k)));
  w.v = reinterpret_cast<float*>(take(f32s(T * c.n_kv_heads * c.head_dim_v)));
  w.att = reinterpret_cast<float*>(take(f32s(T * c.n_heads * c.head_dim_v)));
  w.gate = reinterpret_cast<float*>(take(f32s(T * c.n_ff)));
  w.up = reinterpret_cast<float*>(take(f32s(T * c.n_ff)));
  w.final_x = reinterpret_cast<float*>(take(f32s(L * c.n_embd)));
  w.logits = reinterpret_cast<float*>(take(f32s(L * c.n_vocab)));
  w.quant = take(plan.quant);
  w.quant_bytes = plan.quant;
  w.scores = reinterpret_cast<float*>(take(plan.attention));
  w.scores_stride = kv::attention_scratch_floats(plan.shape.max_ctx, c.n_heads / c.n_kv_heads,
                                                 c.head_dim_k, c.head_dim_v);
  w.pos = reinterpret_cast<int32_t*>(take(static_cast<uint64_t>(T) * sizeof(int32_t)));
  w.rope = reinterpret_cast<float*>(
      take(f32s(T * c.rope_dim * static_cast<int64_t>(c.rope_sets.size()))));
  return w;
}

void* Workspace::quant_for(tensor::DType type, int64_t cols, int64_t n_tok) const {
  const uint64_t need = tensor::matmul_scratch_bytes(type, cols, n_tok);
  SNUG_CHECK(need <= quant_bytes);
  return quant;
}

}  // namespace snug::model
