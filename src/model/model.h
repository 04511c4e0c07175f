// A loaded model: its mapped file, validated hyper-parameters, bound weights
// and the forward pass of its architecture family over a ragged batch of
// tokens from many sequences.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/result.h"
#include "base/thread_pool.h"
#include "gguf/gguf.h"
#include "kv/kv_cache.h"
#include "memory/buffer.h"
#include "memory/ledger.h"
#include "model/config.h"
#include "model/file_pages.h"
#include "model/pack_file.h"
#include "model/weights.h"
#include "model/workspace.h"

namespace snug::model {

// A layer's matrix of `role` (one of kQ ... kDown; nullptr for kOutput, which
// belongs to no layer).
tensor::MatView* layer_matrix(LayerWeights& L, MatRole role);
inline const tensor::MatView* layer_matrix(const LayerWeights& L, MatRole role) {
  return layer_matrix(const_cast<LayerWeights&>(L), role);
}

// Tokens of several sequences in one forward call. The tokens of a sequence
// are contiguous in the batch and continue it: the first is at the sequence's
// current KV length.
struct Batch {
  std::vector<int32_t> tokens;
  std::vector<kv::SeqId> seqs;
  std::vector<uint8_t> want_logits;  // 1: return logits for this token
  // 1: a generated token, whose attention sums in llama.cpp's single-token
  // order; 0: a prompt token, in its prompt-processing (GEMM) order. Set by
  // what the token is, never by what else is in the batch, so a token's
  // arithmetic does not depend on the batch it runs in (batch invariance).
  std::vector<uint8_t> decode;
  void clear() {
    tokens.clear();
    seqs.clear();
    want_logits.clear();
    decode.clear();
  }
  void add(int32_t token, kv::SeqId seq, bool logits, bool generated = false) {
    tokens.push_back(token);
    seqs.push_back(seq);
    want_logits.push_back(logits ? 1 : 0);
    decode.push_back(generated ? 1 : 0);
  }
  int32_t size() const { return static_cast<int32_t>(tokens.size()); }
  int32_t n_logits() const;
};

class Model {
 public:
  // Opens and validates `path`; weights stay in the mapping and are charged
  // to the ledger as mapped.
  static Result<std::unique_ptr<Model>> load(const std::string& path, memory::Ledger* ledger);
  static Result<std::unique_ptr<Model>> from_file(gguf::File file, memory::Ledger* ledger);

  const ModelConfig& config() const { return config_; }
  const gguf::File& file() const { return file_; }
  const Weights& weights() const { return weights_; }
  std::vector<tensor::DType> matrix_types() const;
  kv::KvLayout kv_layout(tensor::DType kv_type, int32_t block_tokens = 16) const;

  // Appends every token's keys and values to its sequence in `cache` and
  // writes one row of n_vocab logits per token with want_logits, in batch
  // order, to ws.logits. Fails before computing anything, leaving the cache as
  // it was, when the cache has too few free blocks, the batch exceeds the
  // workspace shape or a sequence's context, or the batch is malformed (fields
  // of different lengths, a sequence that is not live or whose tokens are not
  // contiguous).
  Status forward(const Batch& batch, kv::KvCache& cache, Workspace& ws, ThreadPool& pool) const;
  // The forward pass through layers [first, last) only, for calibration
  // tools that run a model layer by layer (SparseGPT): with first > 0 the
  // caller has put the residual stream entering layer `first` in ws.x (a row
  // per token); with last < n_layers, ws.x holds the stream leaving layer
  // last - 1 afterwards and no logits are computed. Every layer's keys and
  // values are appended to the cache as forward() does (those of layers
  // outside the range are left unwritten).
  Status forward_layers(const Batch& batch, kv::KvCache& cache, Workspace& ws, ThreadPool& pool,
                        int32_t first, int32_t last) const;
  // Points layer `layer`'s matrix `role` at `view`, which must have the same
  // shape and outlive the model's use of it: a tool running the model with
  // edited weights (SparseGPT's pruned layers feeding the next).
  Status replace_matrix(int32_t layer, MatRole role, const tensor::MatView& view);
  // Points the output bias after the attention output (kO) or the down
  // projection (kDown) of `layer` at `bias` (n_embd floats the caller keeps
  // alive; null: none).
  Status replace_bias(int32_t layer, MatRole role, const float* bias);

  // Gives every matrix the dispatched kernels take in a packed form
  // (tensor::matmul_pack) a private packed copy, as many bytes as its rows in
  // the file, and lets the mapping's pages of those rows go, a slice of rows
  // at a time (a tied embedding table's lookups then read the packed copy,
  // tensor::matmul_packed_dequantize_row).
  // The ledger moves the bytes from weights (mapped) to weights (resident).
  // The products then read one stream per 16 rows instead of repacking the
  // weights on every call: faster at any batch size, but the copy is this
  // process's own (memory rule 1's shared pages no longer serve it). A no-op
  // on targets without a packed form. Returns the bytes packed.
  Result<uint64_t> repack(memory::Ledger* ledger);
  // repack's packed matrices in a file under `dir` (pack_file.h), mapped
  // shared: built there (and `dir` created) when missing or stale, else
  // mapped as it is. The ledger moves the packed rows' bytes from the model
  // file to the pack file, both weights (mapped): every process with the same
  // model and directory shares the pages. A no-op (bytes 0) on targets without
  // a packed form; an error for a model with no file mapping, or a directory
  // or file that cannot be made. Call it on an unpacked model, once.
  struct SharedPack {
    uint64_t bytes = 0;        // the matrices' packed bytes
    std::string path;          // the pack file
    bool built = false;        // this call wrote it
    std::string stale_reason;  // why a file that was there was replaced ("" when none was)
    int removed_stale = 0;     // pack files of an earlier version of the model file, removed
  };
  Result<SharedPack> repack_shared(memory::Ledger* ledger, const std::string& dir);
  // Bytes of packed matrices, private (repack) or shared (repack_shared).
  uint64_t packed_bytes() const { return resident_charge_.bytes() + shared_pack_bytes_; }
  // Bytes the dispatched kernels could read packed but read from the file's
  // rows, repacking them on every call (0 on targets without a packed form,
  // and after repack or repack_shared).
  uint64_t unpacked_packable_bytes() const;
  // repack_shared's mapping of the pack file; null before it or without one.
  const MappedFile* pack_mapping() const { return pack_map_ ? &*pack_map_ : nullptr; }

 private:
  Model() = default;
  gguf::File file_;
  ModelConfig config_;
  Weights weights_;
  memory::Charge mapped_charge_;
  std::vector<memory::Buffer> packed_;  // Model::repack's copies
  memory::Charge resident_charge_;
  std::optional<MappedFile> pack_map_;  // repack_shared's file
  uint64_t shared_pack_bytes_ = 0;
  // The matrices the dispatched kernels take packed and not yet packed, with their packed bytes.
  std::vector<std::pair<tensor::MatView*, uint64_t>> packable();
  // The file bytes of `rows` rows of a matrix read from the mapping.
  ByteRange file_range(const tensor::MatView& v, int64_t rows) const;
  // What packing `todo`'s matrices leaves mapped and lets go (file_pages.h).
  PackedPages packed_pages_of(const std::vector<std::pair<tensor::MatView*, uint64_t>>& todo) const;
  // Writes `todo` packed to a new pack file at path (PackFileWriter), letting
  // the model file's pages of each slice of rows go once it is written.
  Status write_pack_file(const std::string& path, const PackKey& key,
                         const std::vector<std::pair<tensor::MatView*, uint64_t>>& todo,
                         memory::Ledger* ledger);
};

// The decoder graph every supported family takes (decoder.cpp), built from
// the shared blocks of blocks.h and parameterised by the family's config.
// The batch is already checked and its KV rows prepared; ws.pos holds each
// token's position.
// Layers [first, last) only: with first > 0, ws.x holds the residual stream
// entering layer `first` instead of the tokens' embeddings; with last <
// n_layers, ws.x is left holding the stream after layer last - 1 and no
// logits are computed.
void forward_decoder(const ModelConfig& c, const Weights& w, const Batch& batch, kv::KvCache& cache,
                     Workspace& ws, ThreadPool& pool, int32_t first, int32_t last);

}  // namespace snug::model
