// Calibration runs: evaluating a model over a text to learn which inputs its
// weights see. collect_imatrix() is llama.cpp's llama-imatrix: the text is cut
// into chunks of n_ctx tokens, each evaluated from an empty cache with its
// first token replaced by BOS (when the vocabulary adds one), and for every
// weight matrix of the decoder blocks the squares of its input activations are
// summed per column, with the count of rows seen.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "base/result.h"
#include "compress/imatrix.h"
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

}  // namespace snug::compress
