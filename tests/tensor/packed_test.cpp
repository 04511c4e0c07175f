// The packed form of a matrix (MatView::packed, matmul_pack): on targets
// whose row-block kernel takes one (AVX512-VNNI's q4_0, q4_1, q5_0, q5_1,
// q8_0, q4_K and q6_K) it
// holds as many bytes as the packed rows in the file, and products that read
// it give the bits of the matrix it came from for one token (where the
// unpacked matrix takes the one-row kernel), several, any row range and
// through the pool; every other target and type takes no packed form and
// ignores one made for the best target.
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include "base/thread_pool.h"
#include "tensor/kernels.h"
#include "test_util.h"

namespace snug::tensor {
namespace {

using testing::random_values;

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

std::vector<uint8_t> quantized_rows(DType t, const std::vector<float>& x, int64_t rows,
                                    int64_t cols) {
  const size_t rb = *row_bytes(t, cols);
  std::vector<uint8_t> q(rb * rows);
  for (int64_t r = 0; r < rows; ++r) quantize_row(t, x.data() + r * cols, q.data() + r * rb, cols);
  return q;
}

bool packs_on_this_target(DType t) {
  const std::string kernel = matmul_kernel(t);
  return (t == DType::kQ4_0 || t == DType::kQ4_1 || t == DType::kQ8_0 || t == DType::kQ5_0 ||
          t == DType::kQ5_1 || t == DType::kQ4_K || t == DType::kQ6_K) &&
         kernel.find("avx512vnni") != std::string::npos;
}

class Packed : public testing::PerTarget {};

TEST_P(Packed, SameBitsAsTheFileLayout) {
  ThreadPool pool(2);
  struct Shape {
    int64_t rows, cols;
  };
  // Whole 16-row groups and a tail; 1 to 37 blocks a row (more than the
  // 16-block chunk, and odd counts whose groups are padded to 64 bytes); 1 to
  // 9 super-blocks of the K formats (odd counts: a chunk of 2 cut short,
  // q6_K's groups padded).
  const Shape shapes[] = {{37, 1184}, {16, 32},  {48, 96},  {19, 608}, {5, 224},
                          {37, 2304}, {16, 256}, {35, 768}, {7, 512}};
  for (DType t : {DType::kQ4_0, DType::kQ4_1, DType::kQ8_0, DType::kQ5_0, DType::kQ5_1,
                  DType::kQ4_K, DType::kQ6_K, DType::kQ5_K}) {
    for (Shape sh : shapes) {
      if (sh.cols % info(t).block_size != 0) continue;
      const auto x = random_values(sh.rows * sh.cols, 11 + static_cast<uint32_t>(sh.cols));
      const auto q = quantized_rows(t, x, sh.rows, sh.cols);
      const MatView w{t, q.data(), sh.rows, sh.cols, *row_bytes(t, sh.cols)};
      // Packed for the best target, as Model::repack does at load.
      hwy::SetSupportedTargetsForTest(0);
      const int64_t best_bytes = matmul_packed_bytes(w);
      std::unique_ptr<void, FreeDeleter> buf(
          best_bytes > 0 ? std::aligned_alloc(64, static_cast<size_t>((best_bytes + 63) / 64 * 64))
                         : nullptr);
      if (best_bytes > 0) matmul_pack(w, buf.get());
      hwy::SetSupportedTargetsForTest(GetParam());

      const int64_t bytes = matmul_packed_bytes(w);
      const std::string what = std::string(dtype_name(t)) + " " + std::to_string(sh.rows) + "x" +
                               std::to_string(sh.cols) + " on " + simd_target();
      if (!packs_on_this_target(t)) {
        EXPECT_EQ(bytes, 0) << what;
      } else {
        // The 16-row groups' bytes in the file, each padded to 64 bytes.
        const int64_t file_bytes = sh.rows / 16 * 16 * static_cast<int64_t>(w.row_bytes);
        EXPECT_GE(bytes, file_bytes) << what;
        EXPECT_LT(bytes, file_bytes + 64 * (sh.rows / 16) + (file_bytes == 0 ? 1 : 0)) << what;
        EXPECT_EQ(bytes, best_bytes) << what;
      }
      if (best_bytes == 0) continue;
      MatView wp = w;
      wp.packed = buf.get();
      if (bytes > 0) {
        // Every packed row reads back as the file's bytes and values.
        std::vector<uint8_t> row(w.row_bytes);
        std::vector<float> got(sh.cols), want(sh.cols);
        for (int64_t r = 0; r < matmul_packed_rows(w); ++r) {
          matmul_unpack_row(wp, r, row.data());
          ASSERT_EQ(0, std::memcmp(row.data(), q.data() + r * w.row_bytes, w.row_bytes))
              << what << " row " << r;
          matmul_packed_dequantize_row(wp, r, got.data());
          dequantize_row(t, q.data() + r * w.row_bytes, want.data(), sh.cols);
          ASSERT_EQ(got, want) << what << " row " << r;
        }
      }
      for (int64_t n_tok : {1, 2, 3, 6, 17}) {
        const auto a = random_values(sh.cols * n_tok, 5 + static_cast<uint32_t>(n_tok));
        std::vector<uint8_t> qx(matmul_scratch_bytes(t, sh.cols, n_tok));
        quantize_activations(t, a.data(), sh.cols, sh.cols, n_tok, qx.data());
        std::vector<float> want(sh.rows * n_tok), got(sh.rows * n_tok, -1.f);
        matmul_rows(w, qx.data(), n_tok, 0, sh.rows, want.data(), sh.rows);
        matmul_rows(wp, qx.data(), n_tok, 0, sh.rows, got.data(), sh.rows);
        ASSERT_EQ(got, want) << what << " n_tok " << n_tok;
        // Row ranges from a group's start and from inside one (the latter
        // reads the file's layout).
        for (int64_t r0 : {int64_t{16}, int64_t{1}}) {
          if (r0 >= sh.rows) continue;
          std::vector<float> part(sh.rows * n_tok, -1.f);
          matmul_rows(wp, qx.data(), n_tok, r0, sh.rows, part.data(), sh.rows);
          for (int64_t tk = 0; tk < n_tok; ++tk) {
            for (int64_t r = r0; r < sh.rows; ++r) {
              ASSERT_EQ(part[tk * sh.rows + r], want[tk * sh.rows + r])
                  << what << " n_tok " << n_tok << " from row " << r0;
            }
          }
        }
        std::vector<float> pooled(sh.rows * n_tok);
        matmul(wp, a.data(), sh.cols, n_tok, pooled.data(), sh.rows, qx.data(), pool);
        ASSERT_EQ(pooled, want) << what << " n_tok " << n_tok << " pooled";
      }
    }
  }
}

SNUG_INSTANTIATE_TARGETS(Packed);

}  // namespace
}  // namespace snug::tensor
