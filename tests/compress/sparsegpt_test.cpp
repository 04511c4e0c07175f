// SparseGPT's matrix step against independent references: with uncorrelated
// inputs (H = I) it is magnitude pruning within each block; with correlated
// inputs its output error over the calibration rows lies between the least-
// squares optimum for its own mask (solved directly, per row, in double) and
// the error of the same mask without the compensating update, far below the
// latter; N:M keeps N of every M; bad shapes and options are refused.
#include "compress/sparsegpt.h"

#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cmath>
#include <random>

namespace snug::compress {
namespace {

using Mat = Eigen::MatrixXd;

struct Problem {
  Mat X;  // calibration rows x cols
  Mat W;  // rows x cols
  std::vector<double> h;
};

// Inputs whose columns are mixtures of a few shared factors plus noise, as
// activations are: strongly correlated columns are where the update pays.
Problem correlated(int64_t rows, int64_t cols, int64_t samples, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> n(0, 1);
  Problem p;
  const int64_t factors = cols / 4;
  Mat F(samples, factors), M(factors, cols);
  for (int64_t i = 0; i < F.size(); ++i) F.data()[i] = n(rng);
  for (int64_t i = 0; i < M.size(); ++i) M.data()[i] = n(rng);
  p.X = F * M;
  for (int64_t i = 0; i < p.X.size(); ++i) p.X.data()[i] += 0.3 * n(rng);
  p.W.resize(rows, cols);
  for (int64_t i = 0; i < p.W.size(); ++i) p.W.data()[i] = n(rng);
  const Mat H = p.X.transpose() * p.X;
  p.h.resize(static_cast<size_t>(cols * cols));
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j) p.h[static_cast<size_t>(i * cols + j)] = H(i, j);
  return p;
}

std::vector<float> to_floats(const Mat& W) {
  std::vector<float> w(static_cast<size_t>(W.size()));
  for (int64_t r = 0; r < W.rows(); ++r)
    for (int64_t c = 0; c < W.cols(); ++c)
      w[static_cast<size_t>(r * W.cols() + c)] = static_cast<float>(W(r, c));
  return w;
}

Mat from_floats(const std::vector<float>& w, int64_t rows, int64_t cols) {
  Mat W(rows, cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) W(r, c) = w[static_cast<size_t>(r * cols + c)];
  return W;
}

// Squared output error over the calibration rows.
double output_error(const Mat& X, const Mat& W, const Mat& got) {
  return (X * (W - got).transpose()).squaredNorm();
}

// The sequential Optimal Brain Surgeon steps SparseGPT's factored update
// stands for, computed directly: visiting columns left to right, column j is
// set to its final value (0 where `mask` says, else as it stands) and the
// columns after it, still free, move by -H_FF^-1 H_Fj (q_j - w_j), a solve on
// the (damped) Hessian restricted to them. O(cols^4): small problems only.
Mat sequential_obs(const Problem& p, const Mat& mask, double damp) {
  const int64_t cols = p.W.cols();
  Mat H = p.X.transpose() * p.X;
  H.diagonal().array() += damp * H.diagonal().mean();
  Mat W = p.W;
  for (int64_t j = 0; j < cols; ++j) {
    const int64_t f = cols - j - 1;
    Eigen::VectorXd move;
    if (f > 0) {
      move = H.bottomRightCorner(f, f).ldlt().solve(H.block(j + 1, j, f, 1));
    }
    for (int64_t r = 0; r < W.rows(); ++r) {
      if (mask(r, j) == 0.0) continue;
      const double delta = -W(r, j);  // q_j - w_j with q_j = 0
      W(r, j) = 0.0;
      if (f > 0) W.row(r).tail(f) -= delta * move.transpose();
    }
  }
  return W;
}

// Per row, the kept weights that best reproduce the row's outputs (least squares).
Mat least_squares_for_mask(const Mat& X, const Mat& W, const Mat& got) {
  Mat out = Mat::Zero(W.rows(), W.cols());
  for (int64_t r = 0; r < W.rows(); ++r) {
    std::vector<int64_t> kept;
    for (int64_t c = 0; c < W.cols(); ++c)
      if (got(r, c) != 0.0) kept.push_back(c);
    Mat Xs(X.rows(), static_cast<int64_t>(kept.size()));
    for (size_t k = 0; k < kept.size(); ++k) Xs.col(static_cast<int64_t>(k)) = X.col(kept[k]);
    const Eigen::VectorXd y = X * W.row(r).transpose();
    const Eigen::VectorXd ws = Xs.colPivHouseholderQr().solve(y);
    for (size_t k = 0; k < kept.size(); ++k) out(r, kept[k]) = ws(static_cast<int64_t>(k));
  }
  return out;
}

TEST(SparseGpt, WithUncorrelatedInputsItIsMagnitudePruningPerBlock) {
  const int64_t rows = 8, cols = 64;
  std::mt19937 rng(5);
  std::normal_distribution<float> n(0, 1);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (float& x : w) x = n(rng);
  std::vector<double> h(static_cast<size_t>(cols * cols), 0.0);
  for (int64_t j = 0; j < cols; ++j) h[static_cast<size_t>(j * cols + j)] = 1.0;
  SparseGptOptions o;
  o.sparsity = 0.5;
  o.block = 32;
  std::vector<float> got = w;
  auto removed = sparsegpt_prune(got.data(), rows, cols, h, o);
  ASSERT_TRUE(removed.ok()) << removed.error().message;
  EXPECT_EQ(*removed, rows * cols / 2);
  // The reference: within each block of 32 columns, the half of all its
  // weights (every row) with the smallest magnitude goes; the rest stay.
  for (int64_t b = 0; b < cols; b += 32) {
    std::vector<float> mags;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = b; c < b + 32; ++c)
        mags.push_back(std::fabs(w[static_cast<size_t>(r * cols + c)]));
    std::vector<float> sorted = mags;
    std::sort(sorted.begin(), sorted.end());
    const float cut = sorted[sorted.size() / 2];  // smallest kept magnitude
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = b; c < b + 32; ++c) {
        const size_t i = static_cast<size_t>(r * cols + c);
        if (std::fabs(w[i]) < cut) {
          EXPECT_EQ(got[i], 0.f) << r << "," << c;
        } else {
          EXPECT_FLOAT_EQ(got[i], w[i]) << r << "," << c;
        }
      }
    }
  }
}

TEST(SparseGpt, TheUpdateIsTheSequentialObsStepAndLowersTheError) {
  for (auto [pattern, sparsity] : {std::pair{NmPattern{}, 0.5}, {NmPattern{2, 4}, 0.0}}) {
    SCOPED_TRACE(pattern.m);
    const int64_t rows = 24, cols = 96;
    Problem p = correlated(rows, cols, 400, 11);
    SparseGptOptions o;
    o.sparsity = sparsity;
    o.pattern = pattern;
    o.block = 32;
    o.damp = 1e-4;
    std::vector<float> w = to_floats(p.W);
    auto removed = sparsegpt_prune(w.data(), rows, cols, p.h, o);
    ASSERT_TRUE(removed.ok()) << removed.error().message;
    EXPECT_EQ(*removed, rows * cols / 2);
    const Mat got = from_floats(w, rows, cols);
    // Same mask, no update: the original weights where kept.
    Mat masked = p.W;
    for (int64_t i = 0; i < masked.size(); ++i)
      if (got.data()[i] == 0.0) masked.data()[i] = 0.0;
    const double e_sparsegpt = output_error(p.X, p.W, got);
    const double e_masked = output_error(p.X, p.W, masked);
    const double e_optimal = output_error(p.X, p.W, least_squares_for_mask(p.X, p.W, got));
    std::printf("output error: least squares %.4g <= SparseGPT %.4g < mask alone %.4g\n", e_optimal,
                e_sparsegpt, e_masked);
    EXPECT_LE(e_optimal, e_sparsegpt * (1 + 1e-6));
    EXPECT_LT(e_sparsegpt, 0.7 * e_masked);
    // The factored, block-batched update equals the direct sequential one.
    Mat mask = Mat::Zero(rows, cols);
    for (int64_t i = 0; i < mask.size(); ++i) mask.data()[i] = got.data()[i] == 0.0 ? 1.0 : 0.0;
    const Mat direct = sequential_obs(p, mask, o.damp);
    EXPECT_LT((direct - got).norm() / direct.norm(), 1e-5);
    // N:M masks do not depend on the block size: the same output for any.
    if (!pattern.unstructured()) {
      for (int32_t block : {4, 96}) {
        SparseGptOptions ob = o;
        ob.block = block;
        std::vector<float> wb = to_floats(p.W);
        ASSERT_TRUE(sparsegpt_prune(wb.data(), rows, cols, p.h, ob).ok());
        EXPECT_LT((from_floats(wb, rows, cols) - got).norm() / got.norm(), 1e-5) << block;
      }
    }
    if (!pattern.unstructured()) {
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; c += 4)
          EXPECT_EQ((got.row(r).segment(c, 4).array() != 0.0).count(), 2) << r << "," << c;
    }
  }
}

TEST(SparseGpt, ColumnsNoInputReachedAreZeroedAndBadShapesRefused) {
  const int64_t rows = 4, cols = 32;
  Problem p = correlated(rows, cols, 200, 3);
  for (int64_t j = 0; j < cols; ++j) {  // column 5 never sees an input
    p.h[static_cast<size_t>(5 * cols + j)] = 0.0;
    p.h[static_cast<size_t>(j * cols + 5)] = 0.0;
  }
  std::vector<float> w = to_floats(p.W);
  SparseGptOptions o;
  o.sparsity = 0.25;
  o.block = 16;
  ASSERT_TRUE(sparsegpt_prune(w.data(), rows, cols, p.h, o).ok());
  for (int64_t r = 0; r < rows; ++r) EXPECT_EQ(w[static_cast<size_t>(r * cols + 5)], 0.f);
  o.pattern = {2, 3};  // 16 is not a multiple of 3
  EXPECT_FALSE(sparsegpt_prune(w.data(), rows, cols, p.h, o).ok());
  o.pattern = {};
  EXPECT_FALSE(sparsegpt_prune(w.data(), rows, cols, std::vector<double>(10), o).ok());
  o.sparsity = 1.0;
  EXPECT_FALSE(sparsegpt_prune(w.data(), rows, cols, p.h, o).ok());
  // A Hessian that is not positive semi-definite.
  std::vector<double> bad(static_cast<size_t>(cols * cols), 0.0);
  for (int64_t j = 0; j < cols; ++j) bad[static_cast<size_t>(j * cols + j)] = j == 0 ? -1e6 : 1.0;
  o.sparsity = 0.5;
  auto r = sparsegpt_prune(w.data(), rows, cols, bad, o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("positive definite"), std::string::npos);
}

}  // namespace
}  // namespace snug::compress
