// Calibration runs: evaluating a model over a text to learn which inputs its
// weights see. collect_imatrix() is llama.cpp's llama-imatrix: the text is cut
// into chunks of n_ctx tokens, each evaluated from an empty cache with its
// first token replaced by BOS (when the vocabulary adds one), and for every
// weight matrix of the decoder blocks the squares of its input activations are
// summed per column, with the count of rows seen.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/thread_pool.h"
#include "compress/imatrix.h"
#include "kv/kv_cache.h"
#include "memory/ledger.h"
#include "model/model.h"

namespace snug::compress {

struct ImatrixOptions {
  int32_t n_ctx = 512;     // tokens per chunk (imatrix.chunk_size)
  int32_t n_batch = 512;   // tokens per forward call (at most n_ctx)
  int32_t max_chunks = 0;  // 0: every whole chunk of the text
  int32_t n_threads = 1;
  bool process_output = false;  // also collect output.weight (llama-imatrix --process-output);
                                // a model whose output is tied to token_embd has none
  std::string dataset;          // recorded in imatrix.datasets
  // After each chunk: chunks done, chunks in all, seconds since the start.
  std::function<void(int32_t done, int32_t total, double seconds)> on_chunk;
};

// Evaluates `tokens` (the tokenized calibration text) with `m` and returns the
// statistics; `bos` < 0 leaves each chunk's first token as it is. Fails with a
// one-line Error when the text is shorter than one chunk, or when activations
// are not finite. Memory: a KV cache of n_ctx tokens, a workspace for n_batch
// tokens and the sums (one double per input column of every matrix), the first
// two charged to `ledger`.
Result<Imatrix> collect_imatrix(const model::Model& m, std::span<const int32_t> tokens, int32_t bos,
                                const ImatrixOptions& options, memory::Ledger* ledger);

// The residual streams of calibration chunks, moved through a model one layer
// at a time (model::Model::forward_layers): what layer-by-layer tools need
// (SparseGPT's Hessians from the already pruned layers' outputs, structured
// pruning's layer influence). The text is cut into chunks of n_ctx tokens,
// the first of each replaced by `bos` when >= 0; memory: the streams
// (chunks x n_ctx x n_embd floats), a KV cache and a workspace for one chunk.
// Which of a layer's four inputs a matrix reads: 0 attention (q, k, v), 1
// attention output, 2 feed-forward (gate, up), 3 down projection; -1 the
// output head.
int input_of(model::MatRole role);

// Sums x x^T (in double) over the rows reaching each input of one layer:
// the Hessians of least-squares fits of that layer's matrices; and x itself,
// with the count of rows, for fits that take a constant term too.
class HessianCollector : public model::ActivationObserver {
 public:
  int32_t layer = -1;                      // the layer observed
  std::array<std::vector<double>, 4> h;    // [input_of]: cols x cols, row-major
  std::array<std::vector<double>, 4> sum;  // [input_of]: cols
  std::array<int64_t, 4> rows{};           // [input_of]: rows summed
  std::array<int64_t, 4> cols{};

  void observe(int32_t l, model::MatRole role, const float* x, int32_t rows, int64_t n) override;
  // The full symmetric matrices, once a layer's rows are all in.
  void finish();
  // Forgets the sums, for the next layer.
  void clear();

 private:
  std::vector<float> g_;  // one call's lower triangle
};

class LayerStreams {
 public:
  // Embeds every chunk. Fails when the text is shorter than one chunk.
  // `swapped_in`: the matrix types the caller will put into the model's
  // layers between runs (Model::replace_matrix), which the workspace's
  // activation scratch must hold beside the model's own.
  static Result<std::unique_ptr<LayerStreams>> create(
      const model::Model& m, std::span<const int32_t> tokens, int32_t bos, int32_t n_ctx,
      int32_t max_chunks, int32_t n_threads, memory::Ledger* ledger,
      std::span<const tensor::DType> swapped_in = {});
  // Bytes the streams of `chunks` chunks take, for plans made before create().
  static uint64_t stream_bytes(const model::ModelConfig& c, int32_t n_ctx, int64_t chunks) {
    return static_cast<uint64_t>(chunks) * static_cast<uint64_t>(n_ctx) *
           static_cast<uint64_t>(c.n_embd) * sizeof(float);
  }
  // Chunks the text gives (0 when shorter than one).
  static int32_t chunk_count(size_t tokens, int32_t n_ctx, int32_t max_chunks);

  int32_t chunks() const { return static_cast<int32_t>(streams_.size()); }
  int32_t n_ctx() const { return n_ctx_; }

  // Runs layer l over every chunk from its stream, `observer` (may be null)
  // seeing the layer's matrix inputs and `each` (may be empty) each chunk's
  // stream before and after the layer (n_ctx rows of n_embd); with advance,
  // the streams become the layer's output.
  Status run_layer(int32_t l, model::ActivationObserver* observer, bool advance,
                   const std::function<void(const float* in, const float* out)>& each = {});

 private:
  LayerStreams(const model::Model& m) : m_(m) {}
  Status pass(int32_t i, int32_t first, int32_t last, bool keep,
              const std::function<void(const float* in, const float* out)>& each);
  const model::Model& m_;
  std::span<const int32_t> tokens_;
  int32_t bos_ = -1;
  int32_t n_ctx_ = 0;
  std::vector<std::vector<float>> streams_;
  kv::KvCache cache_;
  model::Workspace ws_;
  std::unique_ptr<ThreadPool> pool_;
  model::Batch batch_;
};

}  // namespace snug::compress
