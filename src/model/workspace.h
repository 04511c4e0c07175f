// Per-step scratch for the forward pass, sized once from the batch shape and
// carved from one arena (memory rule 2: nothing large is allocated in the token
// loop). The planner calls plan_workspace() too, so the plan and the
// reservation are the same numbers.
#pragma once

#include <cstdint>
#include <vector>

#include "base/result.h"
#include "memory/buffer.h"
#include "model/config.h"
#include "tensor/dtype.h"

namespace snug::model {

struct WorkspaceShape {
  int32_t max_tokens = 1;  // tokens in one forward call (prefill chunk)
  int32_t max_logits = 1;  // rows of logits one call can return
  int32_t max_ctx = 1;     // longest sequence attended over
  int32_t n_threads = 1;
};

struct WorkspacePlan {
  WorkspaceShape shape;
  uint64_t activations = 0;  // residual stream, q/k/v, attention output, feed-forward
  uint64_t logits = 0;       // gathered final states and logits
  uint64_t quant = 0;        // activations converted for the integer dot products
  uint64_t attention = 0;    // per-thread score rows
  uint64_t total() const { return activations + logits + quant + attention; }
};

// `matrix_types`: the types of the model's weight matrices (from the header).
WorkspacePlan plan_workspace(const ModelConfig& c, const std::vector<tensor::DType>& matrix_types,
                             const WorkspaceShape& shape);

// The weight matrices of a decoder layer (and the output head), as the
// GGUF tensor-name stems llama.cpp uses: "blk.N.<stem>.weight".
enum class MatRole : uint8_t { kQ, kK, kV, kO, kGate, kUp, kDown, kOutput };
const char* mat_role_stem(MatRole role);  // "attn_q", ..., "output"

// Sees the input rows of every matrix product of a forward pass, before the
// product: what importance-matrix collection needs. `layer` is -1 for the
// output head. Called on the forward pass's thread, never concurrently.
class ActivationObserver {
 public:
  virtual ~ActivationObserver() = default;
  virtual void observe(int32_t layer, MatRole role, const float* x, int32_t rows, int64_t cols) = 0;
};

struct Workspace {
  static Result<Workspace> create(const ModelConfig& c, const WorkspacePlan& plan,
                                  memory::Ledger* ledger);

  WorkspaceShape shape;
  memory::Buffer buffer;
  float* x = nullptr;        // [max_tokens, n_embd] residual stream
  float* xb = nullptr;       // [max_tokens, n_embd] normalised input of a sub-layer
  float* q = nullptr;        // [max_tokens, n_heads * head_dim_k]
  float* k = nullptr;        // [max_tokens, n_kv_heads * head_dim_k]
  float* v = nullptr;        // [max_tokens, n_kv_heads * head_dim_v]
  float* att = nullptr;      // [max_tokens, n_heads * head_dim_v]
  float* gate = nullptr;     // [max_tokens, n_ff]
  float* up = nullptr;       // [max_tokens, n_ff]
  float* final_x = nullptr;  // [max_logits, n_embd]
  float* logits = nullptr;   // [max_logits, n_vocab]
  void* quant = nullptr;     // matmul activation scratch
  uint64_t quant_bytes = 0;  // its size (WorkspacePlan::quant)
  float* scores = nullptr;   // [n_threads][kv::attention_scratch_floats(max_ctx, ...)]
  int64_t scores_stride = 0;
  int32_t* pos = nullptr;  // [max_tokens] position of each batch token
  float* rope = nullptr;   // [max_tokens][rope set][rope_dim] cos, sin per rotated pair
  ActivationObserver* observer = nullptr;  // optional, not owned

  // The activation scratch for n_tok rows of `cols` columns converted for a
  // matrix of `type`. The plan sized it for the model's matrix types; a
  // matrix swapped in later (compress's refits) whose conversion needs more
  // is a programmer error, stopped here rather than written past the end.
  void* quant_for(tensor::DType type, int64_t cols, int64_t n_tok) const;
};

}  // namespace snug::model
