// snug's N:M-sparse formats (q8_0_nm, q4_0_nm): a row pruned 2:4 or 4:8 and
// stored sparse stands for exactly the dense row of the same type, and every
// kernel that reads it, on every Highway target this CPU runs, gives the
// dense type's results bit for bit (the dense kernels are held against the
// scalar reference in simd_test, which also covers the sparse types).
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include "base/thread_pool.h"
#include "tensor/kernels.h"
#include "tensor/kernels_ref.h"
#include "tensor/nm_sparse.h"
#include "tensor/quant_blocks.h"
#include "test_util.h"

namespace snug::tensor {
namespace {

using testing::random_values;

// Values pruned n:m per row (the |x| largest n of each m kept, ties to the
// lower index), as snug prune writes them.
std::vector<float> pruned(int64_t rows, int64_t cols, int n, int m, uint32_t seed) {
  std::vector<float> x = random_values(rows * cols, seed);
  for (int64_t g = 0; g < rows * cols; g += m) {
    for (int drop = 0; drop < m - n; ++drop) {
      int64_t worst = -1;
      for (int64_t j = g; j < g + m; ++j) {
        if (x[j] != 0.f && (worst < 0 || std::fabs(x[j]) < std::fabs(x[worst]))) worst = j;
      }
      if (worst >= 0) x[worst] = 0.f;
    }
  }
  return x;
}

std::vector<uint8_t> quantized(DType t, const std::vector<float>& x, int64_t rows, int64_t cols) {
  const size_t rb = *row_bytes(t, cols);
  std::vector<uint8_t> q(rb * rows);
  for (int64_t r = 0; r < rows; ++r) quantize_row(t, x.data() + r * cols, q.data() + r * rb, cols);
  return q;
}

TEST(NmSparse, Sizes) {
  EXPECT_EQ(*row_bytes(DType::kQ8_0NM, 576), 18u * 22u);
  EXPECT_EQ(*row_bytes(DType::kQ4_0NM, 576), 18u * 14u);
  EXPECT_EQ(dtype_name(DType::kQ8_0NM), "q8_0_nm");
  EXPECT_EQ(*nm_sparse_type(DType::kQ4_0), DType::kQ4_0NM);
  EXPECT_EQ(*nm_dense_type(DType::kQ8_0NM), DType::kQ8_0);
  EXPECT_FALSE(nm_sparse_type(DType::kQ4_K).has_value());
  EXPECT_TRUE(snug_only_type(DType::kQ4_0NM));
  EXPECT_FALSE(snug_only_type(DType::kQ8_0));
  EXPECT_EQ(activation_type(DType::kQ4_0NM), DType::kQ8_0);
  // GGUF ids outside ggml's range, known to snug's reader.
  EXPECT_TRUE(dtype_info(1008).has_value());
  EXPECT_TRUE(dtype_info(1002).has_value());
}

// The sparse block expands to the dense block of the pruned row byte for
// byte, and compressing the dense block gives the sparse one back.
TEST(NmSparse, ExpandsToTheDenseBlock) {
  for (auto [n, m] : {std::pair{2, 4}, std::pair{4, 8}}) {
    const int64_t cols = 1024;
    const auto x = pruned(1, cols, n, m, 5);
    const auto q8 = quantized(DType::kQ8_0, x, 1, cols);
    const auto s8 = quantized(DType::kQ8_0NM, x, 1, cols);
    const auto q4 = quantized(DType::kQ4_0, x, 1, cols);
    const auto s4 = quantized(DType::kQ4_0NM, x, 1, cols);
    // A row keeps scales, masks and kept levels apart.
    const int64_t nb = cols / kQK;
    const detail::NmRow<BlockQ8_0NM> row8(const_cast<uint8_t*>(s8.data()), nb);
    const detail::NmRow<BlockQ4_0NM> row4(const_cast<uint8_t*>(s4.data()), nb);
    EXPECT_EQ(row8.qs - s8.data(), 6 * nb);
    for (int64_t b = 0; b < nb; ++b) {
      BlockQ8_0NM sb8;
      row8.get(b, &sb8);
      EXPECT_EQ(std::memcmp(&sb8.d, s8.data() + 2 * b, 2), 0);
      const auto& db8 = reinterpret_cast<const BlockQ8_0*>(q8.data())[b];
      uint32_t mask;
      std::memcpy(&mask, sb8.mask, 4);
      for (int byte = 0; byte < 4; ++byte) EXPECT_EQ(__builtin_popcount(mask >> 8 * byte & 255), 4);
      BlockQ8_0 e8;
      detail::nm_expand(sb8, &e8);
      ASSERT_EQ(std::memcmp(&e8, &db8, sizeof e8), 0) << n << ":" << m << " block " << b;
      BlockQ8_0NM c8;
      EXPECT_TRUE(detail::nm_compress(db8, &c8));
      EXPECT_EQ(std::memcmp(c8.qs, sb8.qs, sizeof c8.qs), 0);
      BlockQ4_0 e4;
      BlockQ4_0NM sb4;
      row4.get(b, &sb4);
      detail::nm_expand(sb4, &e4);
      ASSERT_EQ(std::memcmp(&e4, &reinterpret_cast<const BlockQ4_0*>(q4.data())[b], sizeof e4), 0)
          << n << ":" << m << " block " << b;
    }
    std::vector<float> dense(cols), sparse(cols);
    for (DType t : {DType::kQ8_0, DType::kQ4_0}) {
      const auto d = quantized(t, x, 1, cols);
      const auto s = quantized(*nm_sparse_type(t), x, 1, cols);
      dequantize_row(t, d.data(), dense.data(), cols);
      dequantize_row(*nm_sparse_type(t), s.data(), sparse.data(), cols);
      EXPECT_EQ(dense, sparse) << dtype_name(t);
    }
  }
  // A dense block with more than 4 nonzero levels in a group does not fit.
  BlockQ8_0 full{};
  for (int j = 0; j < kQK; ++j) full.qs[j] = static_cast<int8_t>(j + 1);
  BlockQ8_0NM s{};
  EXPECT_FALSE(detail::nm_compress(full, &s));
}

class NmSimd : public testing::PerTarget {};

// Sparse and dense products of the same pruned matrix are the same bits for
// 1 token (the one-row kernel), several (row-block and tile kernels), any
// row range and through the pool: one row block and a tail, columns that are
// not a multiple of the eight-block group, and (16 and 40 rows) q4_0 matrices
// of whole groups of eight rows, which AVX2 multiplies in llama.cpp's
// repacked order (qseq_avx2-inl.h), sparse or dense.
TEST_P(NmSimd, SameBitsAsTheDenseType) {
  ThreadPool pool(2);
  struct Shape {
    int64_t rows, cols;
  };
  for (auto [n, m] : {std::pair{2, 4}, std::pair{4, 8}}) {
    for (Shape sh :
         {Shape{37, 1184}, Shape{5, 224}, Shape{16, 32}, Shape{19, 608}, Shape{40, 608}}) {
      const auto x = pruned(sh.rows, sh.cols, n, m, 7 + static_cast<uint32_t>(sh.cols));
      for (DType dt : {DType::kQ8_0, DType::kQ4_0}) {
        const DType st = *nm_sparse_type(dt);
        const auto d = quantized(dt, x, sh.rows, sh.cols);
        const auto s = quantized(st, x, sh.rows, sh.cols);
        const MatView wd{dt, d.data(), sh.rows, sh.cols, *row_bytes(dt, sh.cols)};
        const MatView ws{st, s.data(), sh.rows, sh.cols, *row_bytes(st, sh.cols)};
        for (int64_t n_tok : {1, 3, 17}) {
          const auto a = random_values(sh.cols * n_tok, 9);
          std::vector<uint8_t> qx(matmul_scratch_bytes(dt, sh.cols, n_tok));
          quantize_activations(dt, a.data(), sh.cols, sh.cols, n_tok, qx.data());
          std::vector<float> yd(sh.rows * n_tok), ys(sh.rows * n_tok, -1.f);
          matmul_rows(wd, qx.data(), n_tok, 0, sh.rows, yd.data(), sh.rows);
          matmul_rows(ws, qx.data(), n_tok, 0, sh.rows, ys.data(), sh.rows);
          ASSERT_EQ(yd, ys) << dtype_name(st) << " " << n << ":" << m << " rows " << sh.rows
                            << " cols " << sh.cols << " n_tok " << n_tok;
          std::vector<float> part(sh.rows * n_tok, -1.f);
          matmul_rows(ws, qx.data(), n_tok, 1, sh.rows, part.data(), sh.rows);
          for (int64_t t = 0; t < n_tok; ++t) {
            for (int64_t r = 1; r < sh.rows; ++r)
              ASSERT_EQ(part[t * sh.rows + r], yd[t * sh.rows + r]);
          }
          std::vector<float> yp(sh.rows * n_tok);
          matmul(ws, a.data(), sh.cols, n_tok, yp.data(), sh.rows, qx.data(), pool);
          ASSERT_EQ(yp, yd) << dtype_name(st) << " pooled";
        }
      }
    }
  }
  EXPECT_NE(std::string(matmul_kernel(DType::kQ8_0NM)).find("nm"), std::string::npos);
}

// Masks that break the format (bytes with other than 4 bits set, as a
// damaged file has) give some values and never a read outside the row: the
// sanitizer build runs this on every target.
TEST_P(NmSimd, DamagedMasksStayInBounds) {
  std::mt19937 rng(3);
  for (DType st : {DType::kQ8_0NM, DType::kQ4_0NM}) {
    for (int64_t rows : {1, 16, 17}) {
      const int64_t cols = 288;
      const size_t rb = *row_bytes(st, cols);
      const int64_t nb = cols / kQK;
      // Exactly the row bytes, so an overread lands past the allocation.
      std::vector<uint8_t> w(rb * rows);
      for (auto& b : w) b = static_cast<uint8_t>(rng());
      for (int64_t r = 0; r < rows; ++r) {
        uint8_t* row = w.data() + r * rb;
        for (int64_t b = 0; b < nb; ++b) {
          const uint32_t mask = b % 3 == 0 ? 0xFFFFFFFFu : static_cast<uint32_t>(rng());
          std::memcpy(row + 2 * nb + 4 * b, &mask, 4);
          row[2 * b + 1] = 0x3C;  // a finite f16 scale
        }
      }
      const MatView mv{st, w.data(), rows, cols, rb};
      for (int64_t n_tok : {1, 5}) {
        const auto a = random_values(cols * n_tok, 4);
        std::vector<uint8_t> qx(matmul_scratch_bytes(st, cols, n_tok));
        quantize_activations(st, a.data(), cols, cols, n_tok, qx.data());
        std::vector<float> y(rows * n_tok);
        matmul_rows(mv, qx.data(), n_tok, 0, rows, y.data(), rows);
        std::vector<float> deq(cols);
        for (int64_t r = 0; r < rows; ++r) dequantize_row(st, w.data() + r * rb, deq.data(), cols);
      }
    }
  }
}

SNUG_INSTANTIATE_TARGETS(NmSimd);

}  // namespace
}  // namespace snug::tensor
