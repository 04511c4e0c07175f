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

#include "base/result.h"
#include "compress/prune.h"

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

}  // namespace snug::compress
