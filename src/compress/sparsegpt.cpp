#include "compress/sparsegpt.h"

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <numeric>

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

}  // namespace snug::compress
