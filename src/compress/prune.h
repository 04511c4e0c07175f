// Pruning: setting the least important weights of the decoder's matrices to
// zero, in a copy of a GGUF file. A weight's importance is its magnitude
// (magnitude pruning) or its magnitude times the norm of the activations its
// input column sees over a calibration text (Wanda, Sun et al. 2023: per
// output row, |W_ij| * ||X_j||_2), or SparseGPT's (compress/sparsegpt.h:
// layer by layer, the kept weights updated to make up for the removed ones,
// computed before the file is written). Unstructured pruning removes the given
// share of each row; N:M pruning keeps the N most important weights of every
// M consecutive ones in a row (2:4 and 4:8 are what sparse kernels use).
//
// Which tensors: the linear layers of the decoder blocks
// (blk.N.attn_{q,k,v,output}.weight and blk.N.ffn_{gate,up,down}.weight);
// the token embedding and the output head are never pruned, as in the Wanda
// and SparseGPT papers (they cost the most), and --keep globs protect more.
// Pruned tensors are written in their own type or in `type`; every other
// tensor is copied byte for byte. A pruned weight is written as 0 in f32;
// whether it stays exactly 0 once packed depends on the type (q8_0, q4_0 and
// the K-quants without a minimum hold 0 exactly; q4_1, q5_1 and q4_K add a
// block minimum, so their zeros come back as small values): the summary
// counts the exact zeros of each pruned tensor as written.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "compress/imatrix.h"
#include "compress/quantize.h"
#include "tensor/dtype.h"

namespace snug::compress {

enum class PruneMethod { kMagnitude, kWanda, kSparseGpt };
// "magnitude", "wanda", "sparsegpt"; nullopt otherwise.
std::optional<PruneMethod> parse_prune_method(std::string_view name);
const char* prune_method_names();  // for messages

// N of every M weights kept; m == 0: unstructured.
struct NmPattern {
  int32_t n = 0;
  int32_t m = 0;
  bool unstructured() const { return m == 0; }
  double sparsity() const { return m == 0 ? 0.0 : 1.0 - static_cast<double>(n) / m; }
};
// "unstructured" or "N:M" with 0 < N < M <= 64; a one-line Error otherwise.
Result<NmPattern> parse_nm_pattern(std::string_view text);

struct PruneOptions {
  PruneMethod method = PruneMethod::kMagnitude;
  double sparsity = 0.5;              // share of each row removed (unstructured), in [0, 1)
  NmPattern pattern;                  // N:M instead of `sparsity` when not unstructured
  std::vector<std::string> keep;      // globs of tensor names never pruned
  std::optional<tensor::DType> type;  // pruned tensors' type; default: each one's own
  // A pattern that keeps at most 4 of every 8 (2:4, 4:8, 1:4, ...) is stored
  // in snug's N:M-sparse form of q8_0 and q4_0 (q8_0_nm, q4_0_nm: about 35%
  // and 22% smaller, read by sparse kernels, unreadable by llama.cpp) unless
  // `dense`; the other types have no sparse form and hold the zeros.
  bool dense = false;
  // Wanda: per-column sums of squared inputs of every prunable matrix
  // (collect_imatrix over the calibration text). Required for kWanda.
  const Imatrix* activations = nullptr;
  // SparseGPT: the pruned tensors, packed, by name (sparsegpt_model), written
  // as they are. Required for kSparseGpt.
  const std::map<std::string, std::vector<uint8_t>>* packed = nullptr;
  int threads = 1;
  std::function<void(size_t index, size_t count, const std::string& name)> on_progress;
};

struct PruneSummary {
  QuantizeSummary files;          // sizes and per-tensor types; zeros counted for pruned tensors
  std::vector<size_t> pruned;     // indices into files.tensors of the tensors pruned
  uint64_t prunable_weights = 0;  // elements of the pruned tensors
  uint64_t removed_weights = 0;   // set to zero before packing
  uint64_t zero_weights = 0;      // exactly zero in the written file, pruned tensors
};

// Whether a pattern's zeros fit snug's N:M-sparse types (at most 4 kept of
// every aligned 8).
bool nm_storable(NmPattern pattern);
// The type a pruned tensor of type `from` is written in: options.type or
// `from`, in its N:M-sparse form where the pattern fits one and not dense.
tensor::DType pruned_type(tensor::DType from, const PruneOptions& options);

// Whether the tensor named `name` (2-D) is one the pruner may touch, before --keep.
bool is_prunable(std::string_view name);
// Whether `name` matches one of the --keep globs (fnmatch).
bool is_kept(const std::vector<std::string>& keep, const std::string& name);

// Zeroes, in the row `w` of `cols` weights, the least important ones: the
// floor(sparsity * cols) lowest scores (unstructured), or the M - N lowest of
// every M consecutive (a last partial group of g keeps ceil(g * N / M)).
// score_i = |w_i| * col_scale[i] (col_scale null: 1). Ties go to the lower
// column index being kept. Returns how many were zeroed. `order` is scratch.
int64_t prune_row(float* w, int64_t cols, const float* col_scale, double sparsity,
                  NmPattern pattern, std::vector<int32_t>& order);

// Writes `out`: `in` with its prunable matrices pruned. Refuses, with a
// one-line Error and nothing written: a sparsity outside [0, 1), a pattern
// with n >= m, Wanda without activations or with activations made for
// another model, an output that is the input; a failed write removes the
// partial output (quantize_file's rules).
Result<PruneSummary> prune_file(const std::string& in, const std::string& out,
                                const PruneOptions& options);

}  // namespace snug::compress
