// What a session will take, computed by the same functions the engine calls
// when it allocates (one source of truth): the KV block pool for a context,
// parallel sequences and KV type, the workspace for a batch shape, and the
// predicted peak resident set of the whole process.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"
#include "kv/kv_cache.h"
#include "model/config.h"
#include "model/workspace.h"
#include "plan/footprint.h"
#include "tensor/dtype.h"

namespace snug::plan {

// KV element types a session may ask for (for K and V each), largest first.
constexpr tensor::DType kKvTypes[] = {tensor::DType::kF16, tensor::DType::kQ8_0,
                                      tensor::DType::kQ4_0};
std::optional<tensor::DType> parse_kv_type(std::string_view name);  // "f16", "q8_0", "q4_0"
bool engine_supports_kv_type(tensor::DType t);                      // each of kKvTypes
// "q8_0" when K and V share a type, else "q8_0/f16" (K/V), for messages and tables.
std::string kv_type_label(tensor::DType k, tensor::DType v);

struct SessionShape {
  int32_t n_ctx = 0;       // tokens per sequence
  int32_t n_parallel = 1;  // sequences held at once (the KV pool holds n_parallel * n_ctx)
  // Sequences that may decode in one forward pass (rows of logits it returns):
  // a server admits more short sequences than n_parallel full ones. 0: n_parallel.
  int32_t n_seqs = 0;
  int32_t n_batch = 256;                       // prompt tokens per forward call
  int32_t n_threads = 1;                       // worker threads (attention scratch is per thread)
  tensor::DType k_type = tensor::DType::kF16;  // one of kKvTypes
  tensor::DType v_type = tensor::DType::kF16;
  int32_t kv_block_tokens = 16;
  // Positions a sliding-window layer group keeps behind its window
  // (kv::KvLayout::window_slack): a chat turn whose re-rendered prompt parts
  // from the history up to this far before its end still reuses the cache.
  int32_t kv_window_slack = 128;

  void set_kv_type(tensor::DType t) { k_type = v_type = t; }
};

struct SessionPlan {
  SessionShape shape;  // as given, n_batch clamped to n_ctx
  kv::KvLayout kv;
  // n_parallel * kv.sequence_blocks(n_ctx, n_batch): every position of the
  // global layers, the window and one batch of the windowed ones.
  int32_t kv_blocks = 0;
  uint64_t kv_bytes = 0;  // kv_blocks * kv.block_bytes()
  model::WorkspacePlan workspace;
};

// The sizes Session::create allocates. Fails on a shape out of range or sizes
// that overflow 64 bits.
Result<SessionPlan> plan_session(const model::ModelConfig& c,
                                 const std::vector<tensor::DType>& matrix_types,
                                 const SessionShape& shape);

// Largest n_ctx in [1, n_ctx_train] whose KV cache and workspace (shape's
// other fields as given) take at most `bytes`; 0 if none. For a caller that
// has a session's share of a budget, not the whole process's.
int32_t largest_session_context(const model::ModelConfig& c,
                                const std::vector<tensor::DType>& matrix_types, SessionShape shape,
                                uint64_t bytes);

// Resident memory of the process that is not in the ledger, beyond its image
// (the executable and its libraries, made resident in full at start and
// counted at their size: base/process_image.h). Measured on the release build
// (docs/PLAN.md, "How the overheads were measured"): the C++ runtime, heap
// bookkeeping, the main stack and the libraries' written data; and each worker
// thread's touched stack and allocator arena.
constexpr uint64_t kProcessBaseBytes = 128 * 1024;
constexpr uint64_t kPerThreadBytes = 32 * 1024;
// Engine bookkeeping per sequence: token history (4 bytes a token), KV block
// table, prefix-cache hashes and order flags, and the sampler's candidate list
// (12 bytes per vocabulary entry); for max(n_parallel, n_seqs) sequences.
uint64_t engine_bytes(const model::ModelConfig& c, const SessionShape& s);

// Everything the process will hold at its peak for one shape.
struct MemoryPlan {
  SessionPlan session;
  uint64_t process = 0;  // binary, libraries, runtime, thread stacks
  uint64_t header = 0;   // the file's metadata pages, touched when parsed
  uint64_t weights = 0;  // mapped weight pages a forward pass touches, plus resident copies
  uint64_t tokenizer = 0;
  uint64_t kv = 0;         // committed at session start (pre-faulted)
  uint64_t workspace = 0;  // committed at session start (pre-faulted)
  uint64_t engine = 0;
  uint64_t predicted_peak_rss = 0;  // the sum, bytes
};

Result<MemoryPlan> plan_memory(const ModelFootprint& fp, const SessionShape& shape);

}  // namespace snug::plan
