#include "compress/sparsegpt.h"

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>

#include <fmt/format.h>

#include "base/bytes.h"
#include "base/thread_pool.h"
#include "compress/calibrate.h"
#include "kv/kv_cache.h"
#include "tensor/kernels.h"

namespace snug::compress {
namespace {

using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Marks in `mask` (row-major, rows x count) the `drop` entries of lowest
// saliency; ties go to the later entry, as prune_row's do.
void mark_lowest(const Mat& w1, const Eigen::VectorXd& d2, int64_t drop,
                 std::vector<uint8_t>& mask) {
  const int64_t rows = w1.rows(), count = w1.cols();
  std::vector<int64_t> idx(static_cast<size_t>(rows * count));
  std::iota(idx.begin(), idx.end(), 0);
  auto sal = [&](int64_t k) {
    const double v = w1(k / count, k % count);
    return v * v / d2(k % count);
  };
  auto less = [&](int64_t a, int64_t b) {
    const double sa = sal(a), sb = sal(b);
    return sa < sb || (sa == sb && a > b);
  };
  drop = std::min<int64_t>(drop, static_cast<int64_t>(idx.size()));
  if (drop <= 0) return;
  if (drop < static_cast<int64_t>(idx.size()))
    std::nth_element(idx.begin(), idx.begin() + drop, idx.end(), less);
  for (int64_t k = 0; k < drop; ++k) mask[static_cast<size_t>(idx[static_cast<size_t>(k)])] = 1;
}

}  // namespace

uint64_t sparsegpt_bytes(int64_t rows, int64_t cols, int32_t block) {
  const auto r = static_cast<uint64_t>(rows), c = static_cast<uint64_t>(cols);
  const auto b = static_cast<uint64_t>(std::min<int64_t>(block, cols));
  // W in double, H, H^-1 and its factor, a block's copy, errors and mask.
  return 8 * r * c + 3 * 8 * c * c + 2 * 8 * r * b + r * b;
}

Result<int64_t> sparsegpt_prune(float* w, int64_t rows, int64_t cols, std::vector<double> h,
                                const SparseGptOptions& o) {
  const NmPattern p = o.pattern;
  if (!(o.sparsity >= 0.0 && o.sparsity < 1.0))
    return make_error("sparsity must be in [0, 1), got ", o.sparsity);
  if (o.block <= 0) return make_error("SparseGPT block must be positive, got ", o.block);
  if (!p.unstructured() && (p.n <= 0 || p.n >= p.m || o.block % p.m != 0))
    return make_error("pattern ", p.n, ":", p.m, " does not fit SparseGPT blocks of ", o.block);
  if (h.size() != static_cast<size_t>(cols * cols))
    return make_error("Hessian of ", h.size(), " entries for ", cols, " columns");
  Eigen::Map<Mat> H(h.data(), cols, cols);
  Mat W = Eigen::Map<MatF>(w, rows, cols).cast<double>();
  // Columns no input reached carry no information: their weights go.
  for (int64_t j = 0; j < cols; ++j) {
    if (H(j, j) == 0.0) {
      H(j, j) = 1.0;
      W.col(j).setZero();
    }
  }
  H.diagonal().array() += o.damp * H.diagonal().mean();
  Eigen::LLT<Mat> chol(H);
  if (chol.info() != Eigen::Success)
    return make_error(
        "the calibration Hessian is not positive definite (more calibration text, "
        "or more damping)");
  Mat U = chol.solve(Mat::Identity(cols, cols));  // H^-1
  h.clear();
  h.shrink_to_fit();
  Eigen::LLT<Mat> chol_inv(U);
  if (chol_inv.info() != Eigen::Success)
    return make_error("the inverse calibration Hessian is not positive definite");
  U = chol_inv.matrixU();  // H^-1 = U^T U

  int64_t removed = 0;
  std::vector<uint8_t> mask;
  for (int64_t i1 = 0; i1 < cols; i1 += o.block) {
    const int64_t count = std::min<int64_t>(o.block, cols - i1);
    Mat W1 = W.middleCols(i1, count);
    Mat Err1 = Mat::Zero(rows, count);
    const Eigen::VectorXd d = U.diagonal().segment(i1, count);
    const Eigen::VectorXd d2 = d.array().square();
    mask.assign(static_cast<size_t>(rows * count), 0);
    if (p.unstructured()) {
      mark_lowest(W1, d2, static_cast<int64_t>(std::floor(o.sparsity * rows * count)), mask);
    }
    for (int64_t j = 0; j < count; ++j) {
      if (!p.unstructured() && j % p.m == 0) {
        // Each row's group of M from here: drop the M - N of lowest saliency,
        // with the weights as the columns before have left them.
        const int64_t g = std::min<int64_t>(p.m, count - j);
        const int64_t keep = (g * p.n + p.m - 1) / p.m;
        for (int64_t r = 0; r < rows; ++r) {
          Mat one = W1.block(r, j, 1, g);
          std::vector<uint8_t> m1(static_cast<size_t>(g), 0);
          mark_lowest(one, d2.segment(j, g), g - keep, m1);
          for (int64_t k = 0; k < g; ++k) mask[static_cast<size_t>(r * count + j + k)] = m1[k];
        }
      }
      for (int64_t r = 0; r < rows; ++r) {
        if (mask[static_cast<size_t>(r * count + j)] == 0) continue;
        Err1(r, j) = W1(r, j) / d(j);
        W1(r, j) = 0.0;
        ++removed;
      }
      // The removed weights' error onto the rest of the block's columns.
      if (j + 1 < count)
        W1.rightCols(count - j - 1).noalias() -=
            Err1.col(j) * U.block(i1 + j, i1 + j + 1, 1, count - j - 1);
    }
    W.middleCols(i1, count) = W1;
    // And onto every column after the block.
    if (i1 + count < cols)
      W.rightCols(cols - i1 - count).noalias() -=
          Err1 * U.block(i1, i1 + count, count, cols - i1 - count);
  }
  Eigen::Map<MatF>(w, rows, cols) = W.cast<float>();
  return removed;
}

namespace {

// The four inputs of a layer's matrices: attention (q, k, v), the attention
// output, the feed-forward network (gate, up), the down projection.
constexpr model::MatRole kRoles[] = {
    model::MatRole::kQ,    model::MatRole::kK,  model::MatRole::kV,   model::MatRole::kO,
    model::MatRole::kGate, model::MatRole::kUp, model::MatRole::kDown};

}  // namespace

Result<std::map<std::string, std::vector<uint8_t>>> sparsegpt_model(
    model::Model& m, std::span<const int32_t> tokens, int32_t bos, const PruneOptions& prune,
    const SparseGptRun& run, memory::Ledger* ledger) {
  const auto t0 = std::chrono::steady_clock::now();
  const model::ModelConfig& c = m.config();
  if (run.n_ctx <= 0) return make_error("calibration chunks must hold tokens, got ", run.n_ctx);
  int32_t n_chunks = static_cast<int32_t>(tokens.size() / static_cast<size_t>(run.n_ctx));
  if (n_chunks == 0)
    return make_error("the calibration text has ", tokens.size(), " tokens; a chunk of ", run.n_ctx,
                      " needs at least ", run.n_ctx);
  if (run.max_chunks > 0) n_chunks = std::min(n_chunks, run.max_chunks);
  auto keep = [&](const std::string& name) { return is_kept(prune.keep, name); };
  auto name_of = [](int32_t l, model::MatRole role) {
    return "blk." + std::to_string(l) + "." + model::mat_role_stem(role) + ".weight";
  };
  // The plan, checked before anything runs.
  uint64_t packed_bytes = 0, solver = 0, hessians = 0;
  std::vector<tensor::DType> pruned_types;  // what replace_matrix will put in
  for (int32_t l = 0; l < c.n_layers; ++l) {
    uint64_t layer_h = 0;
    std::array<bool, 4> seen{};
    for (model::MatRole role : kRoles) {
      const tensor::MatView& v =
          *model::layer_matrix(m.weights().layers[static_cast<size_t>(l)], role);
      const std::string name = name_of(l, role);
      if (keep(name)) continue;
      const tensor::DType to = pruned_type(v.type, prune);
      pruned_types.push_back(to);
      auto rb = tensor::row_bytes(to, v.cols);
      if (!rb || !tensor::info(to).has_kernels)
        return make_error("tensor '", name, "' has ", v.cols, " columns, not a whole number of ",
                          tensor::dtype_name(to), " blocks");
      packed_bytes += *rb * static_cast<uint64_t>(v.rows);
      solver = std::max(solver, sparsegpt_bytes(v.rows, v.cols, run.matrix.block));
      if (!seen[static_cast<size_t>(input_of(role))]) {
        seen[static_cast<size_t>(input_of(role))] = true;
        layer_h += 8 * static_cast<uint64_t>(v.cols) * static_cast<uint64_t>(v.cols);
      }
    }
    hessians = std::max(hessians, layer_h);
  }
  const uint64_t stream_bytes = LayerStreams::stream_bytes(c, run.n_ctx, n_chunks);
  if (run.on_plan)
    run.on_plan(fmt::format(
        "{} chunks of {} tokens; working memory {}: residual streams {}, one layer's Hessians "
        "{}, the solver {}, the pruned tensors {}",
        n_chunks, run.n_ctx, format_bytes(stream_bytes + hessians + solver + packed_bytes),
        format_bytes(stream_bytes), format_bytes(hessians), format_bytes(solver),
        format_bytes(packed_bytes)));

  SNUG_ASSIGN_OR_RETURN(std::unique_ptr<LayerStreams> streams,
                        LayerStreams::create(m, tokens, bos, run.n_ctx, n_chunks, run.n_threads,
                                             ledger, pruned_types));
  ThreadPool pool(std::max(1, run.n_threads));
  std::map<std::string, std::vector<uint8_t>> out;
  HessianCollector hc;
  std::vector<float> w;
  for (int32_t l = 0; l < c.n_layers; ++l) {
    hc.layer = l;
    hc.clear();
    // The dense layer's Hessians; its output is not wanted.
    SNUG_RETURN_IF_ERROR(streams->run_layer(l, &hc, /*advance=*/false));
    hc.finish();
    for (model::MatRole role : kRoles) {
      const std::string name = name_of(l, role);
      if (keep(name)) continue;
      const tensor::MatView v =
          *model::layer_matrix(m.weights().layers[static_cast<size_t>(l)], role);
      w.resize(static_cast<size_t>(v.rows * v.cols));
      for (int64_t r = 0; r < v.rows; ++r)
        tensor::dequantize_row(v.type, static_cast<const uint8_t*>(v.data) + r * v.row_bytes,
                               w.data() + r * v.cols, v.cols);
      const auto& h = hc.h[static_cast<size_t>(input_of(role))];
      if (h.empty()) return make_error("the calibration run saw no input of '", name, "'");
      SNUG_ASSIGN_OR_RETURN(int64_t removed,
                            sparsegpt_prune(w.data(), v.rows, v.cols, h, run.matrix));
      (void)removed;
      const tensor::DType to = pruned_type(v.type, prune);
      const uint64_t rb = *tensor::row_bytes(to, v.cols);
      std::vector<uint8_t>& bytes = out[name];
      bytes.resize(rb * static_cast<uint64_t>(v.rows));
      pool.run([&](int tid, int nth) {
        for_each_chunk(v.rows, 1, tid, nth, [&](int64_t b, int64_t e) {
          for (int64_t r = b; r < e; ++r)
            tensor::quantize_row(to, w.data() + r * v.cols,
                                 bytes.data() + static_cast<uint64_t>(r) * rb, v.cols);
        });
      });
      SNUG_RETURN_IF_ERROR(
          m.replace_matrix(l, role, tensor::MatView{to, bytes.data(), v.rows, v.cols, rb}));
    }
    SNUG_RETURN_IF_ERROR(streams->run_layer(l, nullptr, /*advance=*/true));
    if (run.on_layer)
      run.on_layer(l + 1, c.n_layers,
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return out;
}

}  // namespace snug::compress
