// Importance matrices: for each weight matrix, how large the activations that
// multiply each of its input columns were over a calibration text. Quantizing
// with them (tensor::quantize_row_weighted) spends precision on the columns
// that matter to the model's outputs.
//
// The file is the GGUF format llama.cpp's llama-imatrix writes today, so either
// tool reads the other's files: general.type = "imatrix", imatrix.datasets
// (string array), imatrix.chunk_count and imatrix.chunk_size (u32), and per
// weight "<name>.in_sum2" (f32 [cols, n_mat]: the sum over calibration rows of
// each column's squared input) with "<name>.counts" (f32 [1, n_mat]: rows seen),
// in name order. n_mat is 1 for a dense weight, the expert count for a 3-D one.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "base/result.h"
#include "gguf/gguf.h"

namespace snug::compress {

struct ImatrixEntry {
  int64_t cols = 0;            // the weight's input columns (its ne[0])
  std::vector<float> in_sum2;  // [n_mat][cols] sum of x^2 per column (as stored: f32)
  std::vector<float> counts;   // [n_mat] rows accumulated
  int64_t n_mat() const { return static_cast<int64_t>(counts.size()); }
};

struct Imatrix {
  std::map<std::string, ImatrixEntry> entries;  // by weight name, "blk.0.attn_q.weight"
  std::vector<std::string> datasets;            // calibration files, as named when collected
  uint32_t chunk_count = 0;                     // chunks of chunk_size tokens evaluated
  uint32_t chunk_size = 0;
};

// Writes `m` to `path` (temporary name, then rename: no partial file on failure).
Status save_imatrix(const Imatrix& m, const std::string& path);

// Reads and validates an imatrix file: a one-line Error for a file that is not
// GGUF, is not an imatrix (no *.in_sum2 tensors), lacks the imatrix metadata,
// or holds an entry whose sums or counts are missing, not f32, mis-shaped,
// negative or not finite.
Result<Imatrix> load_imatrix(const std::string& path);

// Ok when every entry names a tensor of `model` with the same input columns
// (and expert count); otherwise the Error says the imatrix was made for
// another model and names the first entry that does not fit.
Status check_imatrix_fits(const Imatrix& m, const gguf::File& model, const std::string& path);

// Per-column importance for tensor::quantize_row_weighted, [n_mat][cols]:
// in_sum2 / count, as llama-quantize normalises it (1 for a matrix never seen).
std::vector<float> importance(const ImatrixEntry& e);

}  // namespace snug::compress
