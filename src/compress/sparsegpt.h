// SparseGPT (Frantar and Alistarh, 2023): pruning a weight matrix so that its
// outputs over calibration inputs change as little as possible. Columns are
// visited left to right in blocks; within a block, the mask is chosen by the
// saliency w^2 / [H^-1]_jj^2, and each weight removed has its error spread
// over the not yet visited weights of its row through the inverse Hessian's
// Cholesky factor (the Optimal Brain Surgeon update), so that the kept
// weights compensate for the removed ones. H = sum over calibration rows of
// x x^T for the matrix's input x.
#pragma once

#include <cstdint>
#include <vector>

#include <functional>
#include <map>
#include <span>
#include <string>

#include "base/result.h"
#include "compress/prune.h"
#include "memory/ledger.h"
#include "model/model.h"

namespace snug::compress {

struct SparseGptOptions {
  double sparsity = 0.5;  // unstructured: share of each block's weights removed
  NmPattern pattern;      // N:M instead, within each row (block must be a multiple of M)
  int32_t block = 128;    // columns per block (the mask is chosen per block)
  double damp = 0.01;     // added to H's diagonal, times its mean
};

// Bytes of working memory sparsegpt_prune takes for a rows x cols matrix
// (the weights in double, H and its factors, a block's buffers).
uint64_t sparsegpt_bytes(int64_t rows, int64_t cols, int32_t block = 128);

// Prunes w (rows x cols, row-major f32) in place given h (cols x cols,
// row-major, symmetric: the sum of x x^T over calibration rows), which it
// consumes. Columns no input ever reached (h_jj == 0) are zeroed. Returns how
// many weights were removed; an Error when H with its damping is not
// positive definite, or the block is not a multiple of M.
Result<int64_t> sparsegpt_prune(float* w, int64_t rows, int64_t cols, std::vector<double> h,
                                const SparseGptOptions& options);

// The whole model, layer by layer, as the paper does: the calibration text is
// cut into chunks of n_ctx tokens (the first of each replaced by `bos` when
// >= 0) whose residual streams are kept between layers; for each layer, one
// pass gathers the Hessians of its four inputs (attention, attention output,
// feed-forward, down projection) from the streams the already pruned layers
// produced, its prunable matrices are pruned and packed in their type (or
// options.type), the model is pointed at them, and a second pass moves the
// streams on through the pruned layer.
struct SparseGptRun {
  int32_t n_ctx = 512;
  int32_t max_chunks = 64;  // 0: every whole chunk of the text
  int32_t n_threads = 1;
  SparseGptOptions matrix;  // sparsity and pattern (from the prune options)
  // Before the run: its working memory; after each layer: layers done, in all, seconds.
  std::function<void(const std::string& plan)> on_plan;
  std::function<void(int32_t done, int32_t total, double seconds)> on_layer;
};

// Packed tensors by name, for PruneOptions::packed. Fails with a one-line
// Error when the text is shorter than one chunk, a type cannot hold a
// matrix's rows, or a Hessian is not positive definite. `m`'s matrices end
// up pointing into the returned buffers.
Result<std::map<std::string, std::vector<uint8_t>>> sparsegpt_model(
    model::Model& m, std::span<const int32_t> tokens, int32_t bos, const PruneOptions& prune,
    const SparseGptRun& run, memory::Ledger* ledger);

}  // namespace snug::compress
