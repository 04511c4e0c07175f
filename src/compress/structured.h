// Structured pruning: removing whole feed-forward channels, whole attention
// head groups (a KV head with the query heads that share it) and whole layers,
// so that the matrices really shrink and the file is a standard GGUF of
// smaller dimensions that llama.cpp loads too.
//
// Scores come from one calibration run:
// - a feed-forward channel j of a layer: ||W_down[:, j]|| x the standard
//   deviation of the down projection's input j (what the channel adds to the
//   residual stream beyond its mean, which the refit's output bias keeps: the
//   fluctuation of FLAP, An et al. 2024; the RMS for a cut without the refit);
// - a head group: the same over the attention output's input columns of its
//   query heads, summed in squares;
// - a layer: its block influence (Men et al. 2024, ShortGPT), 1 - the mean
//   cosine similarity of the residual stream before and after it.
// Every layer loses the same number of channels and groups (the file's
// feed_forward_length and head counts stay single numbers), each layer the
// ones that score lowest in it; the lowest-influence layers go whole. With
// the refit (refit_structured), which head groups go is chosen again per
// layer, by greedy Optimal Brain Surgeon removal on that layer's inputs
// (about their mean), and the cut layers get output biases.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "memory/ledger.h"
#include "model/model.h"

namespace snug::compress {

struct StructuredCut {
  double ffn = 0;      // share of each layer's feed-forward channels removed, [0, 1)
  double heads = 0;    // share of each layer's KV head groups removed, [0, 1)
  int32_t layers = 0;  // whole layers removed
  bool empty() const { return ffn == 0 && heads == 0 && layers == 0; }
};
// "ffn=0.25,heads=0.25,layers=2" (any of the three, each once); a one-line Error otherwise.
Result<StructuredCut> parse_structured_cut(std::string_view text);

// What the calibration run measured.
struct StructuredScores {
  std::vector<std::vector<double>> ffn;    // [layer][channel]
  std::vector<std::vector<double>> heads;  // [layer][KV head]
  std::vector<double> influence;           // [layer]
};

// about_mean: channels and head groups scored by their inputs' spread about
// the mean (standard deviation) rather than their RMS, for a cut that the
// refit follows (its output bias keeps the mean; without it a channel with a
// large steady input is not cheap to lose).
Result<StructuredScores> structured_scores(const model::Model& m, std::span<const int32_t> tokens,
                                           int32_t bos, int32_t n_ctx, int32_t max_chunks,
                                           int32_t n_threads, memory::Ledger* ledger,
                                           bool about_mean = false);

// What stays: sorted indices into the original model.
struct StructuredPlan {
  std::vector<int32_t> layers;                 // kept layers
  std::vector<std::vector<int32_t>> channels;  // per original layer: kept channels
  std::vector<std::vector<int32_t>> groups;    // per original layer: kept KV heads
  int32_t n_ff = 0, n_heads = 0, n_kv_heads = 0;
};

// Chooses what goes. Refuses a cut that would remove every head group or
// every channel of a layer, or every layer, or layers of a model whose layers
// differ (Gemma 3's sliding-window pattern follows the layer index).
Result<StructuredPlan> plan_structured(const model::ModelConfig& c, const StructuredScores& s,
                                       const StructuredCut& cut);

// The layers that read removed units, refitted: per original layer, the
// attention output and the down projection in f32 (rows x the original
// columns, the removed columns zero), each with an output bias (n_embd):
// the least-squares fit of the original matrix's output from the kept
// columns' inputs and a constant, W'_K = W_K + W_R C_RK (C_KK + damping)^-1
// with C = sum (x - m)(x - m)^T, and b = W m - W' m, m the inputs' mean, over
// the calibration text as the pruned layers before it produce it (as
// SparseGPT: layer by layer, the model pointed at the refitted matrices
// before its streams move on). The bias takes what the removed units gave on
// average (an attention head that mostly looks at the first token gives
// nearly a constant), which the kept columns could only imitate. A family
// whose llama.cpp graph takes no output bias (ModelConfig::output_biases:
// Gemma 3, Qwen) gets none: its fit is W_K + W_R H_RK (H_KK + damping)^-1
// with H = sum x x^T. Empty for a layer that goes.
struct StructuredRefit {
  std::vector<std::vector<float>> o, down;
  std::vector<std::vector<float>> bo, b_down;  // [n_embd] per layer
  uint64_t bytes() const;
};

// H - sum sum^T / rows: the scatter of a matrix's inputs about their mean,
// from H = sum x x^T and sum = sum x over `rows` rows (H unchanged when
// rows <= 0).
std::vector<double> centred_scatter(const std::vector<double>& h, const std::vector<double>& sum,
                                    int64_t rows);

// W (rows x n, f32, row-major) refitted to the kept columns with an output
// bias: the least-squares fit of W x from the kept columns and a constant
// over the calibration rows, with the kept columns' part damped as
// refit_structured damps it. c: centred_scatter of the inputs; sum, count:
// their column sums and rows. Removed columns become zero; `bias` (rows)
// is W m - W' m, m the inputs' mean.
Status refit_columns_with_bias(std::vector<float>& w, int64_t rows, int64_t n,
                               const std::vector<double>& c, const std::vector<double>& sum,
                               int64_t count, const std::vector<int64_t>& keep,
                               std::vector<float>& bias);

// Working memory refit_structured takes for the model (the refitted
// matrices, one layer's Hessians and the calibration streams).
uint64_t refit_structured_bytes(const model::ModelConfig& c, int32_t n_ctx, int64_t chunks);

// The `keep` units (each `width` consecutive columns, sorted) of W (rows x n,
// f32, row-major) that greedy Optimal Brain Surgeon removal leaves, with
// H = sum x x^T (n x n, f64) of W's inputs: one unit at a time, the one whose
// removal adds the least output error tr(W_U ([H^-1]_UU)^-1 W_U^T) when the
// other columns compensate by least squares, then W and H^-1 updated as if
// it were gone (ZipLM, Kurtic et al. 2023, does this for structures). Fails
// with one line when the damped H is not positive definite.
Result<std::vector<int32_t>> obs_keep_units(const std::vector<float>& w, int64_t rows, int64_t n,
                                            const std::vector<double>& h, int64_t width,
                                            int64_t keep);

// Refits the plan's layers over the calibration text, each layer's head
// groups first chosen again by obs_keep_units on its inputs (the plan's count
// kept, its groups replaced); `m` ends up pointing at
// the refitted matrices (kept alive by the result). Fails with one line when
// the text is shorter than one chunk or a damped Hessian is not positive
// definite.
Result<StructuredRefit> refit_structured(model::Model& m, StructuredPlan& plan,
                                         std::span<const int32_t> tokens, int32_t bos,
                                         int32_t n_ctx, int32_t max_chunks, int32_t n_threads,
                                         memory::Ledger* ledger);

struct StructuredSummary {
  uint64_t input_bytes = 0, output_bytes = 0;
  uint64_t input_weights = 0, output_weights = 0;  // elements of every tensor
};

// Writes `out`: `in` cut to the plan. Rows that go are dropped as they are;
// matrices that lose columns (attention output, down projection) are
// re-packed in their type, or q8_0 when the new width is not a whole number
// of the type's blocks. Metadata: block_count, feed_forward_length,
// head_count, head_count_kv, and key_length / value_length so that readers
// do not derive the head size from the narrower head count. With `refit`,
// the attention output and down projection's kept columns come from it.
// Refuses as quantize_file does (output = input, a full disk: no file left).
Result<StructuredSummary> write_structured(const std::string& in, const std::string& out,
                                           const model::ModelConfig& c, const StructuredPlan& plan,
                                           const StructuredRefit* refit = nullptr);

}  // namespace snug::compress
