// The dispatched (SIMD) matrix kernels against their scalar twins, on every
// Highway target this CPU supports, at shapes that exercise every remainder:
// cols a multiple of the block but not of 512, rows not a multiple of the row
// tile, and 1, 3 and 17 tokens.
//
// Tolerances, relative to sum_i |w_i * x_i| of the dequantized operands:
//   quantized formats 2e-6 (integer block sums are exact; only the float
//   combination across blocks is reordered), f32/f16/bf16 1e-5 (float sums
//   reordered into SIMD lanes). Activation quantization must be bit-exact.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include "base/thread_pool.h"
#include "tensor/fp16.h"
#include "tensor/k_unpack.h"
#include "tensor/kernels.h"
#include "tensor/kernels_ref.h"
#include "tensor/quant_blocks.h"
#include "test_util.h"

namespace snug::tensor {
namespace {

using testing::random_values;

class Simd : public testing::PerTarget {};

struct Case {
  DType type;
  int64_t rows, cols;
};

std::vector<Case> cases() {
  std::vector<Case> c;
  for (DType t : testing::kWeightTypes) {
    const bool k = info(t).block_size == 256;
    c.push_back({t, 13, k ? 768 : 224});
    c.push_back({t, 8, k ? 256 : 32});
    c.push_back({t, 5, k ? 1280 : 608});
    // Two whole 16-row blocks and a tail (the AVX512-VNNI row-block kernels),
    // over one chunk of 37 blocks (q4_0, q4_1: their nibbles stay packed, so
    // 48 fit), three of 16 blocks (the other 32-element formats) or five of
    // two super-blocks, the last one short (q4_K).
    c.push_back({t, 37, k ? 2304 : 1184});
    // One 16-row block and a tail over 65 blocks: q4_0's and q4_1's rows in
    // five chunks.
    if (!k) c.push_back({t, 21, 2080});
  }
  return c;
}

// Dequantized activations as matmul_rows sees them (token-major).
std::vector<float> dequantized_activations(DType w, const void* qx, int64_t cols, int64_t n_tok) {
  std::vector<float> out(static_cast<size_t>(cols * n_tok));
  const size_t rb = ref::activation_row_bytes(w, cols);
  for (int64_t t = 0; t < n_tok; ++t) {
    const char* row = static_cast<const char*>(qx) + t * rb;
    float* o = out.data() + t * cols;
    switch (activation_type(w)) {
      case DType::kF32:
        std::memcpy(o, row, cols * 4);
        break;
      case DType::kQ8_0: {
        const auto* b = reinterpret_cast<const BlockQ8A*>(row);
        for (int64_t i = 0; i < cols; ++i) {
          const BlockQ8A& blk = b[i / 32];
          o[i] = blk.d * static_cast<float>(blk.qs[i % 32]);
        }
        break;
      }
      default:
        ref::dequantize_row(DType::kQ8_K, row, o, cols);
    }
  }
  return out;
}

TEST_P(Simd, QuantizeActivationsBitExact) {
  for (const Case& c : cases()) {
    for (int64_t n_tok : {1, 3, 17}) {
      const int64_t stride = c.cols + 32;
      auto x = random_values(stride * n_tok, 21);
      // A block of zeros in each row (its scale 0, its levels 0), where there is a third.
      for (int64_t t = 0; t < n_tok && c.cols >= 96; ++t) {
        std::fill_n(x.begin() + t * stride + 64, 32, 0.f);
      }
      const size_t bytes = matmul_scratch_bytes(c.type, c.cols, n_tok);
      std::vector<uint8_t> got(bytes + 1, 0xAB), want(bytes + 1, 0xAB);
      quantize_activations(c.type, x.data(), stride, c.cols, n_tok, got.data());
      ref::quantize_activations(c.type, x.data(), stride, c.cols, n_tok, want.data());
      ASSERT_EQ(got, want) << dtype_name(c.type) << " cols " << c.cols << " n_tok " << n_tok;
    }
  }
}

TEST_P(Simd, MatmulRowsMatchesReference) {
  for (const Case& c : cases()) {
    const bool is_float = activation_type(c.type) == DType::kF32;
    const double rel_tol = is_float ? 1e-5 : 2e-6;
    const auto wf = random_values(c.rows * c.cols, 31);
    const size_t rb = *row_bytes(c.type, c.cols);
    std::vector<uint8_t> wq(rb * c.rows);
    for (int64_t r = 0; r < c.rows; ++r) {
      quantize_row(c.type, wf.data() + r * c.cols, wq.data() + r * rb, c.cols);
    }
    std::vector<float> wd(c.rows * c.cols);
    for (int64_t r = 0; r < c.rows; ++r) {
      dequantize_row(c.type, wq.data() + r * rb, wd.data() + r * c.cols, c.cols);
    }
    const MatView w{c.type, wq.data(), c.rows, c.cols, rb};
    for (int64_t n_tok : {1, 3, 17}) {
      const auto x = random_values(c.cols * n_tok, 41);
      std::vector<uint8_t> qx(matmul_scratch_bytes(c.type, c.cols, n_tok));
      ref::quantize_activations(c.type, x.data(), c.cols, c.cols, n_tok, qx.data());
      const auto xd = dequantized_activations(c.type, qx.data(), c.cols, n_tok);
      const int64_t y_stride = c.rows + 3;
      std::vector<float> got(y_stride * n_tok, -1.f), want(y_stride * n_tok, -1.f);
      matmul_rows(w, qx.data(), n_tok, 0, c.rows, got.data(), y_stride);
      ref::matmul_rows(w, qx.data(), n_tok, 0, c.rows, want.data(), y_stride);
      for (int64_t t = 0; t < n_tok; ++t) {
        for (int64_t r = 0; r < c.rows; ++r) {
          double l1 = 0;
          for (int64_t i = 0; i < c.cols; ++i) {
            l1 += std::fabs(static_cast<double>(wd[r * c.cols + i]) * xd[t * c.cols + i]);
          }
          EXPECT_NEAR(got[t * y_stride + r], want[t * y_stride + r], rel_tol * l1 + 1e-30)
              << dtype_name(c.type) << " rows " << c.rows << " cols " << c.cols << " n_tok "
              << n_tok << " r " << r << " t " << t;
        }
        for (int64_t r = c.rows; r < y_stride; ++r) EXPECT_EQ(got[t * y_stride + r], -1.f);
      }
      // A sub-range writes only its rows, with the same values as the full call.
      std::vector<float> part(y_stride * n_tok, -1.f);
      matmul_rows(w, qx.data(), n_tok, 1, c.rows - 1, part.data(), y_stride);
      for (int64_t t = 0; t < n_tok; ++t) {
        EXPECT_EQ(part[t * y_stride], -1.f);
        for (int64_t r = 1; r < c.rows - 1; ++r) {
          EXPECT_EQ(part[t * y_stride + r], got[t * y_stride + r]) << dtype_name(c.type);
        }
      }
    }
  }
}

void each_tokens_row_is_the_same_in_any_batch() {
  for (const Case& c : cases()) {
    const auto wf = random_values(c.rows * c.cols, 33);
    const size_t rb = *row_bytes(c.type, c.cols);
    std::vector<uint8_t> wq(rb * c.rows);
    for (int64_t r = 0; r < c.rows; ++r)
      quantize_row(c.type, wf.data() + r * c.cols, wq.data() + r * rb, c.cols);
    const MatView w{c.type, wq.data(), c.rows, c.cols, rb};
    // One token group of 16 (passes of 8 and 3), and three: the last one of
    // one token or of two, after groups that read a chunk repacked once; and
    // past one span of 64 tokens (a row in several chunks repacked again).
    for (const int64_t n_tok : {11, 33, 34, 70}) {
      const auto x = random_values(c.cols * n_tok, 43);
      std::vector<uint8_t> qx(matmul_scratch_bytes(c.type, c.cols, n_tok));
      quantize_activations(c.type, x.data(), c.cols, c.cols, n_tok, qx.data());
      std::vector<float> all(c.rows * n_tok);
      matmul_rows(w, qx.data(), n_tok, 0, c.rows, all.data(), c.rows);
      const size_t act = matmul_scratch_bytes(c.type, c.cols, 1);
      for (int64_t t = 0; t < n_tok; ++t) {
        std::vector<float> one(c.rows);
        matmul_rows(w, qx.data() + t * act, 1, 0, c.rows, one.data(), c.rows);
        for (int64_t r = 0; r < c.rows; ++r) {
          ASSERT_EQ(one[r], all[t * c.rows + r])
              << dtype_name(c.type) << " cols " << c.cols << " n_tok " << n_tok << " token " << t
              << " row " << r;
        }
      }
    }
  }
}

// matmul() over a pool gives the same bits as one matmul_rows call: each
// (row, token) result is computed the same way whatever tile it lands in.
// Batch invariance (engine/scheduler.h): a token's row of a product is the
// same bits whether it is computed alone or in any position of a batch of
// any size, for every format and target, with either one-token kernel of
// AVX3_DL (one_token_kernel: cols 224 and 608 are short rows ending in a
// partial group of eight blocks, and 5 and 13 rows leave rows to the one-row
// kernel after the eight-row one).
TEST_P(Simd, EachTokensRowIsTheSameInAnyBatch) {
  for (const OneTokenKernel k : {OneTokenKernel::kOneRow, OneTokenKernel::kEightRows}) {
    set_one_token_kernel(k);
    each_tokens_row_is_the_same_in_any_batch();
    set_one_token_kernel(OneTokenKernel::kAuto);
    if (HasFatalFailure()) return;
  }
}

TEST_P(Simd, ThreadedMatmulIsDeterministic) {
  ThreadPool pool(3);
  for (const Case& c : cases()) {
    const auto wf = random_values(c.rows * c.cols, 51);
    const size_t rb = *row_bytes(c.type, c.cols);
    std::vector<uint8_t> wq(rb * c.rows);
    for (int64_t r = 0; r < c.rows; ++r) {
      quantize_row(c.type, wf.data() + r * c.cols, wq.data() + r * rb, c.cols);
    }
    const MatView w{c.type, wq.data(), c.rows, c.cols, rb};
    for (int64_t n_tok : {1, 17}) {
      const auto x = random_values(c.cols * n_tok, 61);
      std::vector<uint8_t> scratch(matmul_scratch_bytes(c.type, c.cols, n_tok));
      std::vector<float> y(c.rows * n_tok), y1(c.rows * n_tok);
      matmul(w, x.data(), c.cols, n_tok, y.data(), c.rows, scratch.data(), pool);
      quantize_activations(c.type, x.data(), c.cols, c.cols, n_tok, scratch.data());
      matmul_rows(w, scratch.data(), n_tok, 0, c.rows, y1.data(), c.rows);
      EXPECT_EQ(y, y1) << dtype_name(c.type);
    }
  }
}

#if HWY_ARCH_X86
// Block b of a 32-element format's row: its signed levels, f16 scale and
// (formats with a minimum) f16 minimum.
struct Q32Block {
  int levels[32];
  uint16_t d = 0, m = 0;
  bool has_min = false;
};
Q32Block q32_block(DType type, const uint8_t* row, int64_t b) {
  Q32Block k;
  switch (type) {
    case DType::kQ4_0:
    case DType::kQ4_1: {
      const bool one = type == DType::kQ4_1;
      const uint8_t* blk = row + b * (one ? sizeof(BlockQ4_1) : sizeof(BlockQ4_0));
      std::memcpy(&k.d, blk, 2);
      if (one) std::memcpy(&k.m, blk + 2, 2);
      const uint8_t* qs = blk + (one ? 4 : 2);
      for (int j = 0; j < 16; ++j) {
        k.levels[j] = (qs[j] & 15) - (one ? 0 : 8);
        k.levels[j + 16] = (qs[j] >> 4) - (one ? 0 : 8);
      }
      k.has_min = one;
      break;
    }
    case DType::kQ5_0:
    case DType::kQ5_1: {
      const bool one = type == DType::kQ5_1;
      const uint8_t* blk = row + b * (one ? sizeof(BlockQ5_1) : sizeof(BlockQ5_0));
      std::memcpy(&k.d, blk, 2);
      if (one) std::memcpy(&k.m, blk + 2, 2);
      uint32_t qh;
      std::memcpy(&qh, blk + (one ? 4 : 2), 4);
      const uint8_t* qs = blk + (one ? 8 : 6);
      for (int j = 0; j < 16; ++j) {
        k.levels[j] = ((qs[j] & 15) | ((qh >> j) & 1) << 4) - (one ? 0 : 16);
        k.levels[j + 16] = ((qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - (one ? 0 : 16);
      }
      k.has_min = one;
      break;
    }
    case DType::kQ8_0: {
      const uint8_t* blk = row + b * sizeof(BlockQ8_0);
      std::memcpy(&k.d, blk, 2);
      for (int j = 0; j < 32; ++j) k.levels[j] = static_cast<int8_t>(blk[2 + j]);
      break;
    }
    default:
      ADD_FAILURE() << "q32_block: " << dtype_name(type);
      std::fill(std::begin(k.levels), std::end(k.levels), 0);
  }
  return k;
}

// Exact value of the quantized product a kernel computes for one (row,
// token) of a 32-element format: sum over blocks of d_w * d_a * (integer dot of
// the levels) + m_w * s_a (formats with a minimum), in double.
double exact_q32(DType type, const uint8_t* row, const BlockQ8A* a, int64_t cols) {
  double sum = 0;
  for (int64_t b = 0; b < cols / 32; ++b) {
    const Q32Block k = q32_block(type, row, b);
    int64_t dot = 0;
    for (int j = 0; j < 32; ++j) dot += int64_t{k.levels[j]} * a[b].qs[j];
    sum += double{detail::f16_to_f32(k.d)} * a[b].d * static_cast<double>(dot);
    if (k.has_min) sum += double{detail::f16_to_f32(k.m)} * a[b].s;
  }
  return sum;
}

// ggml's AVX2 order (ggml_vec_dot_q4_0_q8_0 and its siblings) in scalar
// code: lane k of eight accumulators takes, block by block,
// fma(float(levels 4k..4k+3 . activations 4k..4k+3), d_w x d_a, acc_k); the
// lanes are summed as ((0+4)+(2+6))+((1+5)+(3+7)), and the formats with a
// minimum add the sum, block by block, of m_w x s_a.
float ggml_q32(DType type, const uint8_t* row, const BlockQ8A* a, int64_t cols) {
  float acc[8] = {}, bias = 0;
  for (int64_t b = 0; b < cols / 32; ++b) {
    const Q32Block k = q32_block(type, row, b);
    const float dd = detail::f16_to_f32(k.d) * a[b].d;
    for (int lane = 0; lane < 8; ++lane) {
      int32_t s = 0;
      for (int j = 4 * lane; j < 4 * lane + 4; ++j) s += k.levels[j] * a[b].qs[j];
      acc[lane] = std::fma(static_cast<float>(s), dd, acc[lane]);
    }
    if (k.has_min) bias += detail::f16_to_f32(k.m) * a[b].s;
  }
  return (((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))) + bias;
}

// Block-sum order (qgemm_vnni-inl.h, qsum_avx2-inl.h) in scalar code: the
// block's exact integer dot S_b; acc[b % 8] = fma(float(S_b), d_w x d_a,
// acc[b % 8]), then for the formats with a minimum acc[b % 8] = fma(m_w, s_a,
// acc[b % 8]); the accumulators summed as ((0+4)+(2+6))+((1+5)+(3+7)).
float blocksum_q32(DType type, const uint8_t* row, const BlockQ8A* a, int64_t cols) {
  float acc[8] = {};
  for (int64_t b = 0; b < cols / 32; ++b) {
    const Q32Block k = q32_block(type, row, b);
    int32_t s = 0;
    for (int j = 0; j < 32; ++j) s += k.levels[j] * a[b].qs[j];
    float& g = acc[b % 8];
    g = std::fma(static_cast<float>(s), detail::f16_to_f32(k.d) * a[b].d, g);
    if (k.has_min) g = std::fma(detail::f16_to_f32(k.m), a[b].s, g);
  }
  return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

// llama.cpp's order for the q4_0 matrices it repacks on AVX2
// (ggml_gemv_q4_0_8x8_q8_0, ggml_gemm_q4_0_8x8_q8_0) in scalar code: one
// accumulator from +0 and, block by block, fma(float(the block's exact
// integer dot), d_w x d_a, acc).
float repack_q32(DType type, const uint8_t* row, const BlockQ8A* a, int64_t cols) {
  float acc = 0;
  for (int64_t b = 0; b < cols / 32; ++b) {
    const Q32Block k = q32_block(type, row, b);
    int32_t s = 0;
    for (int j = 0; j < 32; ++j) s += k.levels[j] * a[b].qs[j];
    acc = std::fma(static_cast<float>(s), detail::f16_to_f32(k.d) * a[b].d, acc);
  }
  return acc;
}

// attention_f16_heads for every head count up to 7 (one or two passes of up
// to four heads), head sizes that take the AVX-512 path (multiples of 16) or
// the per-head ggml kernel (40), and positions from 1 to past the value
// pass's span of 256, over blocks of 16 rows scattered in reverse, from the
// first row of the first block or from row 7 (a sliding window's start):
// - against a float64 softmax over the same f16 keys and values, no less
//   accurate than attention_f16_ggml head by head (summed over all outputs);
// - a head alone and in its group give the same bits, so how attend()
//   splits a token's heads never changes a result;
// - on AVX-512, and on AVX2 in block-sum order, for head sizes of multiples
//   of 16: the bits of grouped_heads_twin, so the two targets agree;
// - otherwise (ggml's order asked for, other targets, other head sizes), the
//   bits of attention_f16_ggml head by head: llama.cpp's order, four heads a
//   pass.
// Both orders are run (set_ggml_order).
TEST_P(Simd, AttentionHeadsMatchFloat64) {
  struct Dims {
    int64_t dk, dv;
  };
  for (Dims dims : {Dims{64, 64}, Dims{48, 80}, Dims{40, 40}, Dims{128, 128}, Dims{96, 48}}) {
    for (int64_t nh : {1, 3, 7}) {
      for (int64_t n : {1, 5, 300}) {
        for (int32_t first : {0, 7}) {  // a window's first position mid-block
          const int64_t dk = dims.dk, dv = dims.dv, bt = 16, nb = (first + n + bt - 1) / bt;
          const auto kf = random_values(n * dk, 51), vf = random_values(n * dv, 52);
          auto qf = random_values(nh * dk, 53);
          for (float& x : qf) x *= 4.f;  // a softmax that is not flat
          // Block b of the pool holds rows [16 b', 16 b' + 16) for b' = nb - 1 - b.
          std::vector<uint16_t> kpool(static_cast<size_t>(nb * bt * dk)),
              vpool(static_cast<size_t>(nb * bt * dv));
          std::vector<const uint16_t*> kb(static_cast<size_t>(nb)), vb(static_cast<size_t>(nb));
          std::vector<double> kd(static_cast<size_t>(n * dk)), vd(static_cast<size_t>(n * dv));
          for (int64_t b = 0; b < nb; ++b) {
            kb[static_cast<size_t>(b)] = kpool.data() + (nb - 1 - b) * bt * dk;
            vb[static_cast<size_t>(b)] = vpool.data() + (nb - 1 - b) * bt * dv;
          }
          for (int64_t t = 0; t < n; ++t) {
            const int64_t at_row = first + t;
            auto* kr =
                const_cast<uint16_t*>(kb[static_cast<size_t>(at_row / bt)]) + (at_row % bt) * dk;
            auto* vr =
                const_cast<uint16_t*>(vb[static_cast<size_t>(at_row / bt)]) + (at_row % bt) * dv;
            for (int64_t i = 0; i < dk; ++i) {
              kr[i] = detail::f32_to_f16(kf[static_cast<size_t>(t * dk + i)]);
              kd[static_cast<size_t>(t * dk + i)] = detail::f16_to_f32(kr[i]);
            }
            for (int64_t i = 0; i < dv; ++i) {
              vr[i] = detail::f32_to_f16(vf[static_cast<size_t>(t * dv + i)]);
              vd[static_cast<size_t>(t * dv + i)] = detail::f16_to_f32(vr[i]);
            }
          }
          double vmax = 0;  // ggml's f16 query and weights: errors of a few 1e-3 x max |v|
          for (double x : vd) vmax = std::max(vmax, std::fabs(x));
          const PagedRows k{kb.data(), static_cast<int32_t>(bt), dk, first};
          const PagedRows v{vb.data(), static_cast<int32_t>(bt), dv, first};
          const float scale = 1.f / std::sqrt(static_cast<float>(dk));
          std::vector<float> scratch(
              static_cast<size_t>(attention_heads_scratch_floats(n, nh, dk, dv)));
          std::vector<float> got(static_cast<size_t>(nh * dv)), one(static_cast<size_t>(dv)),
              ggml(static_cast<size_t>(dv));
          const std::string at = std::string(hwy::TargetName(GetParam())) + " dk " +
                                 std::to_string(dk) + " dv " + std::to_string(dv) + " heads " +
                                 std::to_string(nh) + " n " + std::to_string(n) + " first " +
                                 std::to_string(first);
          std::vector<float> kfr(kd.begin(), kd.end()), vfr(vd.begin(), vd.end());  // f16 values
          for (bool ggml_asked : {false, true}) {
            set_ggml_order(ggml_asked);
            const bool grouped =
                HWY_ARCH_X86 && dk % 16 == 0 && dv % 16 == 0 &&
                (GetParam() <= HWY_AVX3 || (GetParam() <= HWY_AVX2 && !ggml_asked));
            for (SumOrder order : {SumOrder::kVecDot, SumOrder::kGemm}) {
              attention_f16_heads(qf.data(), nh, k, v, n, dk, dv, scale, order, got.data(),
                                  scratch.data());
              double err_heads = 0, err_ggml = 0;
              for (int64_t h = 0; h < nh; ++h) {
                const float* qh = qf.data() + h * dk;
                attention_f16_heads(qh, 1, k, v, n, dk, dv, scale, order, one.data(),
                                    scratch.data());
                attention_f16_ggml(qh, k, v, n, dk, dv, scale, order, ggml.data(), scratch.data());
                const std::vector<float> twin =
                    grouped ? testing::grouped_heads_twin(qh, kfr, vfr, n, dk, dv, scale)
                            : std::vector<float>();
                std::vector<double> w(static_cast<size_t>(n));
                double mx = -1e300, sum = 0;
                for (int64_t t = 0; t < n; ++t) {
                  double dot = 0;
                  for (int64_t i = 0; i < dk; ++i)
                    dot += double{qh[i]} * kd[static_cast<size_t>(t * dk + i)];
                  w[static_cast<size_t>(t)] = dot * scale;
                  mx = std::max(mx, w[static_cast<size_t>(t)]);
                }
                for (double& x : w) sum += (x = std::exp(x - mx));
                for (int64_t i = 0; i < dv; ++i) {
                  double o = 0;
                  for (int64_t t = 0; t < n; ++t) {
                    o += w[static_cast<size_t>(t)] / sum * vd[static_cast<size_t>(t * dv + i)];
                  }
                  const float g = got[static_cast<size_t>(h * dv + i)];
                  ASSERT_EQ(g, one[static_cast<size_t>(i)]) << at << " head " << h << " col " << i;
                  if (grouped) {
                    ASSERT_EQ(g, twin[static_cast<size_t>(i)])
                        << at << " head " << h << " col " << i;
                  } else {  // attention_f16_ggml_heads: ggml's bits, head by head
                    ASSERT_EQ(g, ggml[static_cast<size_t>(i)])
                        << at << " head " << h << " col " << i;
                  }
                  ASSERT_NEAR(g, o, 1e-2 * vmax) << at << " head " << h << " col " << i;
                  err_heads += std::fabs(g - o);
                  err_ggml += std::fabs(ggml[static_cast<size_t>(i)] - o);
                }
              }
              EXPECT_LE(err_heads, err_ggml) << at;
              if (n == 300 && nh == 3 && dk == 64 && first == 0 && order == SumOrder::kVecDot) {
                std::printf("%s%s: summed error %.3g (ggml's order %.3g)\n", at.c_str(),
                            ggml_asked ? " (ggml's order asked for)" : "", err_heads, err_ggml);
              }
            }
          }
          set_ggml_order(false);
        }
      }
    }
  }
}

// The targets the cross-target tests compare: AVX2, AVX3 and AVX3_DL where
// this CPU runs them. One target (an AVX2-only CPU) still checks rows that
// start mid-block against whole-matrix calls; below AVX2, the portable
// kernels do.
std::vector<int64_t> x86_targets() {
  std::vector<int64_t> targets;
  for (int64_t t : hwy::SupportedAndGeneratedTargets()) {
    if (t == HWY_AVX2 || t == HWY_AVX3 || t == HWY_AVX3_DL) targets.push_back(t);
  }
  if (targets.empty()) targets = hwy::SupportedAndGeneratedTargets();
  return targets;
}

// For w (53 rows or more) against n_tok tokens of act bytes each at qx, on every
// x86_targets() target:
// - a token's row is the same bits alone, in batches of 2 and 3, in the
//   whole batch, and for rows 3..50 (blocks that start mid-matrix);
// - with `bits` (formats that take one order on every target): every
//   target's result is bits(r, t), bit for bit;
// - without: AVX2 and AVX3 give ggml(r, t) (ggml's order, or the order
//   llama.cpp takes for that matrix) bit for bit, and, where `more_accurate`,
//   AVX3_DL's results (`order`) summed over every (row, token) are no
//   further from exact(r, t) than theirs.
void check_targets(const MatView& w, const uint8_t* qx, size_t act, int64_t n_tok,
                   const std::function<double(int64_t, int64_t)>& exact, const char* order,
                   const std::function<float(int64_t, int64_t)>& bits,
                   const std::function<float(int64_t, int64_t)>& ggml = nullptr,
                   bool more_accurate = true) {
  const std::vector<int64_t> targets = x86_targets();
  const int64_t rows = w.rows;
  std::vector<std::vector<float>> got;  // per target: all n_tok tokens at once
  for (int64_t target : targets) {
    hwy::SetSupportedTargetsForTest(target);
    const std::string name = std::string(dtype_name(w.type)) + " " + hwy::TargetName(target);
    std::vector<float> all(static_cast<size_t>(n_tok * rows), -1.f);
    matmul_rows(w, qx, n_tok, 0, rows, all.data(), rows);
    // 9 and 16: the row-block kernel's passes of eight and one, and of two eights.
    for (int64_t nt : {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{8}, int64_t{9}, int64_t{16}}) {
      for (int64_t t0 = 0; t0 + nt <= n_tok; t0 += 11) {
        std::vector<float> y(static_cast<size_t>(nt * rows), -1.f);
        matmul_rows(w, qx + t0 * act, nt, 0, rows, y.data(), rows);
        std::vector<float> part(y.size(), -1.f);
        matmul_rows(w, qx + t0 * act, nt, 3, 51, part.data(), rows);
        for (int64_t t = 0; t < nt; ++t) {
          for (int64_t r = 0; r < rows; ++r) {
            ASSERT_EQ(y[t * rows + r], all[(t0 + t) * rows + r])
                << name << ": token " << t0 + t << " row " << r << " in a batch of " << nt
                << " against " << n_tok;
            if (r >= 3 && r < 51) {
              ASSERT_EQ(part[t * rows + r], y[t * rows + r]) << name;
            }
          }
        }
      }
    }
    got.push_back(std::move(all));
  }
  hwy::SetSupportedTargetsForTest(0);
  if (bits) {
    for (size_t i = 0; i < targets.size(); ++i) {
      for (int64_t t = 0; t < n_tok; ++t) {
        for (int64_t r = 0; r < rows; ++r) {
          const float want = bits(r, t);
          ASSERT_EQ(got[i][t * rows + r], want)
              << dtype_name(w.type) << " " << hwy::TargetName(targets[i]) << " row " << r
              << " token " << t << ": not " << order << " (exact " << exact(r, t) << ")";
        }
      }
    }
    return;
  }
  ASSERT_TRUE(static_cast<bool>(ggml)) << "check_targets: neither bits nor ggml";
  size_t ggml_target = targets.size();  // a target with ggml's order, if any
  for (size_t i = 0; i < targets.size(); ++i) {
    if (targets[i] == HWY_AVX3_DL) continue;
    ggml_target = i;
    for (int64_t t = 0; t < n_tok; ++t) {
      for (int64_t r = 0; r < rows; ++r) {
        ASSERT_EQ(got[i][t * rows + r], ggml(r, t))
            << dtype_name(w.type) << " " << hwy::TargetName(targets[i]) << " row " << r << " token "
            << t << ": not ggml's order (exact " << exact(r, t) << ")";
      }
    }
  }
  for (size_t i = 0; i < targets.size(); ++i) {
    if (!more_accurate || targets[i] != HWY_AVX3_DL || ggml_target == targets.size()) continue;
    double err_sum = 0, err_ggml = 0;
    for (int64_t t = 0; t < n_tok; ++t) {
      for (int64_t r = 0; r < rows; ++r) {
        const double e = exact(r, t);
        err_sum += std::fabs(got[i][t * rows + r] - e);
        err_ggml += std::fabs(got[ggml_target][t * rows + r] - e);
      }
    }
    EXPECT_LE(err_sum, err_ggml) << dtype_name(w.type) << ": " << order << "'s error " << err_sum
                                 << ", ggml order's " << err_ggml;
    EXPECT_GT(err_ggml, 0.0) << "the orders' results cannot be told apart";
  }
}

// The 32-element formats on every x86 target from AVX2 up, with raw blocks
// holding every level the format can (q8_0's -128 included) and activations
// at +-127, 1 to 35 tokens (pairs, a lone token, a second group of 16), rows
// that start mid-block:
// - within a target, a token's row is the same bits alone or in any batch
//   (on AVX3_DL: the one-row kernel of one token, the row-block kernel and
//   the tiles for the rows past the last 16; on AVX2 and AVX3: the
//   few-token kernels below eight tokens (a lone token, pairs), the
//   eight-row kernels from eight on (q4_1: sixteen rows, then a group of
//   eight; 61 rows hold both), from any first row, in token groups of 32,
//   the tiles for the rows past the last group);
// - q4_1, q5_0, q5_1 and q8_0 take block-sum order (blocksum_q32) bit for
//   bit on every target (qsum_avx2-inl.h, qgemm_vnni-inl.h), and its error
//   against the exact product, summed over every result, is no larger than
//   ggml's order's;
// - with ggml's order asked for (set_ggml_order), AVX2 and AVX3 give it bit
//   for bit (ggml_q32, llama.cpp's AVX2 vec_dot) while AVX3_DL keeps
//   block-sum order;
// - q4_0 keeps ggml's order on AVX2 and AVX3 either way, except for a q4_0
//   matrix of whole groups of eight rows (56 here, and the N:M-sparse q4_0
//   alike): there llama.cpp's repacked order (repack_q32, the kernels of
//   qseq_avx2-inl.h); AVX3_DL takes block-sum order, no less accurate.
TEST(SimdX86, ThirtyTwoElementFormatsOnEveryTarget) {
  std::mt19937 rng(7);
  const auto byte = [&] { return static_cast<uint8_t>(rng() & 0xFF); };
  const auto scale = [&] {  // f16 in [2^-14, 2^-4): normal, never inf or NaN
    return static_cast<uint16_t>(((rng() % 10) + 1) << 10 | (rng() & 0x3FF));
  };
  const int64_t cols = 1184, n_tok = 35;
  struct Case {
    DType type;
    int64_t rows;
  };
  for (Case c : {Case{DType::kQ4_0, 53}, Case{DType::kQ4_1, 53}, Case{DType::kQ5_0, 53},
                 Case{DType::kQ5_1, 53}, Case{DType::kQ8_0, 53}, Case{DType::kQ4_0, 56},
                 Case{DType::kQ4_1, 61}}) {
    const DType type = c.type;
    const int64_t rows = c.rows;
    const bool repacked = type == DType::kQ4_0 && rows % 8 == 0;
    const size_t rb = *row_bytes(type, cols);
    const size_t block = rb / (cols / 32);
    std::vector<uint8_t> wq(rb * rows);
    for (size_t i = 0; i < wq.size(); ++i) wq[i] = byte();
    for (size_t off = 0; off < wq.size(); off += block) {
      const uint16_t d = scale(), m = scale();
      std::memcpy(&wq[off], &d, 2);
      if (type == DType::kQ4_1 || type == DType::kQ5_1) std::memcpy(&wq[off + 2], &m, 2);
    }
    const MatView w{type, wq.data(), rows, cols, rb};
    std::vector<BlockQ8A> qx(static_cast<size_t>(n_tok * cols / 32));
    for (BlockQ8A& a : qx) {
      int sum = 0;
      for (int8_t& q : a.qs) {
        const int v = static_cast<int>(rng() % 255) - 127;
        q = static_cast<int8_t>(rng() % 8 == 0 ? (v < 0 ? -127 : 127) : v);
        sum += q;
      }
      a.d = std::ldexp(static_cast<float>(rng() % 1000 + 1), -12);
      a.s = a.d * static_cast<float>(sum);
    }
    const auto exact = [&](int64_t r, int64_t t) {
      return exact_q32(type, wq.data() + r * rb, qx.data() + t * (cols / 32), cols);
    };
    const auto ggml = [&](int64_t r, int64_t t) {
      const auto* a = qx.data() + t * (cols / 32);
      return repacked ? repack_q32(type, wq.data() + r * rb, a, cols)
                      : ggml_q32(type, wq.data() + r * rb, a, cols);
    };
    const auto* qxb = reinterpret_cast<const uint8_t*>(qx.data());
    const size_t act = sizeof(BlockQ8A) * (cols / 32);
    if (type == DType::kQ4_0) {
      ASSERT_NO_FATAL_FAILURE(
          check_targets(w, qxb, act, n_tok, exact, "block-sum order", nullptr, ggml, !repacked));
    } else {
      const auto sum = [&](int64_t r, int64_t t) {
        return blocksum_q32(type, wq.data() + r * rb, qx.data() + t * (cols / 32), cols);
      };
      ASSERT_NO_FATAL_FAILURE(check_targets(w, qxb, act, n_tok, exact, "block-sum order", sum));
      set_ggml_order(true);
      check_targets(w, qxb, act, n_tok, exact, "block-sum order", nullptr, ggml);
      set_ggml_order(false);
      ASSERT_FALSE(HasFatalFailure()) << dtype_name(type) << " with ggml's order asked for";
      double err_sum = 0, err_ggml = 0;
      int differ = 0;
      for (int64_t t = 0; t < n_tok; ++t) {
        for (int64_t r = 0; r < rows; ++r) {
          const double e = exact(r, t);
          err_sum += std::fabs(sum(r, t) - e);
          err_ggml += std::fabs(ggml(r, t) - e);
          differ += sum(r, t) != ggml(r, t);
        }
      }
      EXPECT_LE(err_sum, err_ggml) << dtype_name(type);
      EXPECT_GT(differ, rows * n_tok / 4) << dtype_name(type) << ": the orders barely differ";
    }
    if (repacked) {
      // The two orders differ on this input, so the test tells them apart.
      int differ = 0;
      for (int64_t r = 0; r < rows; ++r) {
        differ += repack_q32(type, wq.data() + r * rb, qx.data(), cols) !=
                  ggml_q32(type, wq.data() + r * rb, qx.data(), cols);
      }
      EXPECT_GT(differ, rows / 4);
    }
  }
}

// Super-block b of a q4_K/q6_K row against its token's q8_K block, exactly:
// dot = sum_g scale_g x (integer dot of group g), mins = sum_g min_g x (the
// token's group sum), with the block's d and dmin.
struct KSums {
  int64_t dot = 0, mins = 0;
  float d = 0, dmin = 0;
};
KSums k_sums(DType type, const uint8_t* row, const BlockQ8_K& a, int64_t b) {
  detail::KBlockInts k{};
  if (type == DType::kQ4_K) {
    detail::unpack_k(reinterpret_cast<const BlockQ4_K*>(row)[b], &k);
  } else {
    detail::unpack_k(reinterpret_cast<const BlockQ6_K*>(row)[b], &k);
  }
  KSums out{0, 0, k.d, k.dmin};
  for (int g = 0; g < kQKK / k.group; ++g) {
    int64_t gd = 0, gs = 0;
    for (int e = g * k.group; e < (g + 1) * k.group; ++e) {
      gd += int64_t{k.q[e]} * a.qs[e];
      gs += a.qs[e];
    }
    out.dot += k.scale[g] * gd;
    out.mins += k.min[g] * gs;
  }
  return out;
}

// Exact value of a q4_K/q6_K row against one token's q8_K row, in double:
// per super-block d_w d_a dot - dmin_w d_a mins (k_sums).
double exact_k(DType type, const uint8_t* row, const BlockQ8_K* a, int64_t cols) {
  double sum = 0;
  for (int64_t b = 0; b < cols / kQKK; ++b) {
    const KSums k = k_sums(type, row, a[b], b);
    sum += double{k.d} * a[b].d * static_cast<double>(k.dot) -
           double{k.dmin} * a[b].d * static_cast<double>(k.mins);
  }
  return sum;
}

// Super-block-sum order (qgemm_k_vnni-inl.h, qgemm_k_avx2-inl.h) in scalar
// code: per super-block b the exact integers I_b = sum_g scale_g x (group g's
// integer dot) and M_b = sum_g min_g x (the token's group sum);
// acc[b % 8] = fma(float(I_b), d_w d_a, acc[b % 8]), then
// fma(-float(M_b), dmin_w d_a, acc[b % 8]); the accumulators summed as
// ((0+4)+(2+6))+((1+5)+(3+7)).
float sbsum_k(DType type, const uint8_t* row, const BlockQ8_K* a, int64_t cols) {
  float acc[8] = {};
  for (int64_t b = 0; b < cols / kQKK; ++b) {
    const KSums k = k_sums(type, row, a[b], b);
    EXPECT_LT(std::abs(k.dot), int64_t{1} << 31);
    float& s = acc[b % 8];
    s = std::fma(static_cast<float>(k.dot), k.d * a[b].d, s);
    if (type == DType::kQ4_K) s = std::fma(-static_cast<float>(k.mins), k.dmin * a[b].d, s);
  }
  return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

// q4_K and q6_K take super-block-sum order on every target from AVX2 up
// (AVX3_DL: a row-block kernel for 3 tokens and more, tiles for fewer and
// for the rows past the last 16; AVX2 and AVX3: an eight-row kernel from 2
// tokens of q4_K and 4 of q6_K, tiles for fewer and for the rows past the
// last eight): on every
// target a token's row is the same alone, in batches of 2, 3 and 8 and in
// the whole batch, and for a row range starting mid-matrix, and it is
// sbsum_k's value bit for bit. Two inputs: quantized random values, and raw
// blocks with every level the format holds, all-maximum sub-blocks against
// all -128 and all +127 activations (the int16 sums' extremes: q4_K's
// eight-register sums reach -30720, q6_K's two-register sums -32256).
TEST(SimdX86, KFormatsOnEveryTarget) {
  const int64_t rows = 53, cols = 2304, n_tok = 35;  // 9 super-blocks: a short chunk and group
  for (const bool raw : {false, true}) {
    for (DType type : {DType::kQ4_K, DType::kQ6_K}) {
      const size_t rb = *row_bytes(type, cols);
      std::vector<uint8_t> wq(rb * rows);
      std::vector<uint8_t> qx(matmul_scratch_bytes(type, cols, n_tok));
      const size_t act = matmul_scratch_bytes(type, cols, 1);
      if (!raw) {
        const auto wf = random_values(rows * cols, 71);
        for (int64_t r = 0; r < rows; ++r) {
          quantize_row(type, wf.data() + r * cols, wq.data() + r * rb, cols);
        }
        const auto x = random_values(cols * n_tok, 73);
        ref::quantize_activations(type, x.data(), cols, cols, n_tok, qx.data());
      } else {
        std::mt19937 rng(79);
        for (uint8_t& b : wq) b = static_cast<uint8_t>(rng() & 0xFF);
        const size_t bsz = type == DType::kQ4_K ? sizeof(BlockQ4_K) : sizeof(BlockQ6_K);
        for (size_t off = 0; off < wq.size(); off += bsz) {
          // f16 scales in [2^-14, 2^-4): normal, never inf or NaN
          const auto half = [&] {
            return static_cast<uint16_t>(((rng() % 10) + 1) << 10 | (rng() & 0x3FF));
          };
          if (rng() % 4 == 0) {  // every level at its maximum, every scale too
            if (type == DType::kQ4_K) {
              std::memset(wq.data() + off + offsetof(BlockQ4_K, scales), 0xFF, 12 + 128);
            } else {
              std::memset(wq.data() + off, 0xFF, 128 + 64);
              std::memset(wq.data() + off + offsetof(BlockQ6_K, scales), 0x80, 16);  // -128
            }
          }
          const uint16_t d = half(), dmin = half();
          if (type == DType::kQ4_K) {
            std::memcpy(wq.data() + off, &d, 2);
            std::memcpy(wq.data() + off + 2, &dmin, 2);
          } else {
            std::memcpy(wq.data() + off + offsetof(BlockQ6_K, d), &d, 2);
          }
        }
        for (int64_t t = 0; t < n_tok; ++t) {
          auto* a = reinterpret_cast<BlockQ8_K*>(qx.data() + t * act);
          for (int64_t b = 0; b < cols / kQKK; ++b) {
            const uint32_t kind = rng() % 4;  // all -128, all +127, or random
            for (int8_t& q : a[b].qs) {
              q = static_cast<int8_t>(kind == 0 ? -128 : kind == 1 ? 127 : (rng() & 0xFF));
            }
            for (int g = 0; g < kQKK / 16; ++g) {
              int sum = 0;
              for (int e = 0; e < 16; ++e) sum += a[b].qs[16 * g + e];
              a[b].bsums[g] = static_cast<int16_t>(sum);
            }
            a[b].d = std::ldexp(static_cast<float>(rng() % 1000 + 1), -12);
          }
        }
      }
      const MatView w{type, wq.data(), rows, cols, rb};
      const auto at = [&](int64_t t) {
        return reinterpret_cast<const BlockQ8_K*>(qx.data() + t * act);
      };
      const auto exact = [&](int64_t r, int64_t t) {
        return exact_k(type, wq.data() + r * rb, at(t), cols);
      };
      const auto bits = [&](int64_t r, int64_t t) {
        return sbsum_k(type, wq.data() + r * rb, at(t), cols);
      };
      SCOPED_TRACE(raw ? "raw blocks" : "quantized values");
      ASSERT_NO_FATAL_FAILURE(
          check_targets(w, qx.data(), act, n_tok, exact, "super-block-sum order", bits));
    }
  }
}

#endif  // HWY_ARCH_X86

SNUG_INSTANTIATE_TARGETS(Simd);

}  // namespace
}  // namespace snug::tensor
