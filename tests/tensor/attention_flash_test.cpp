// attention_flash_ggml (attention over f16, q8_0 and q4_0 keys and values) on
// every Highway target this CPU supports, against two references in double:
//
//  - "stored": softmax over the scores of the stored (dequantized) keys with
//    the query as the kernel converts it (q8_0 activations for quantized K,
//    f16 for f16 K), weighting the stored values. Only float rounding differs
//    (integer block sums are exact): |out - ref| <= 1e-5 * max|v| + 1e-6.
//  - "exact": the unquantized query, keys and values. The error is the KV
//    type's own: |out - ref| <= tol(K, V) * max|v| with tol 2e-3 for f16,
//    3e-2 for q8_0 and 0.25 for q4_0 (the worse of K and V decides).
//
// Also: quantize_kv_row stores f16 and q4_0 exactly as quantize_row, and
// q8_0 as ggml's x86 quantizer (same scale, levels within one of the
// reference quantizer's, and equal to it nearly everywhere).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include "tensor/kernels.h"
#include "tensor/kernels_ref.h"
#include "tensor/quant_blocks.h"
#include "test_util.h"

namespace snug::tensor {
namespace {

using testing::random_values;

constexpr DType kKvTypes[] = {DType::kF16, DType::kQ8_0, DType::kQ4_0};

class AttentionFlash : public testing::PerTarget {};

// n rows of dim floats stored in `type`, paged in blocks of bt rows.
struct Paged {
  // Position 0 at row `first` of the first block (a window's start).
  Paged(DType type, const std::vector<float>& x, int64_t n, int64_t dim, int32_t bt,
        int32_t first = 0)
      : stride(*row_bytes(type, dim)), first(first) {
    const int64_t n_blocks = (first + n + bt - 1) / bt;
    // One allocation per block, in reverse order, so that blocks are not contiguous.
    storage.resize(static_cast<size_t>(n_blocks));
    for (int64_t b = n_blocks - 1; b >= 0; --b)
      storage[static_cast<size_t>(b)].assign(stride * static_cast<size_t>(bt), 0);
    for (int64_t t = 0; t < n; ++t) quantize_kv_row(type, x.data() + t * dim, at(t), dim);
    for (auto& s : storage) blocks.push_back(s.data());
    rows = PagedKvRows{blocks.data(), bt, stride, type, first};
  }
  uint8_t* at(int64_t t) {
    const int64_t r = first + t, bt = static_cast<int64_t>(storage[0].size() / stride);
    return storage[static_cast<size_t>(r / bt)].data() + (r % bt) * stride;
  }
  // Row t as the kernel reads it, in f32.
  std::vector<float> row(int64_t t, int64_t dim) const {
    std::vector<float> out(static_cast<size_t>(dim));
    const int64_t r = first + t, bt = rows.block_tokens;
    ref::dequantize_row(rows.type, blocks[static_cast<size_t>(r / bt)] + (r % bt) * stride,
                        out.data(), dim);
    return out;
  }
  size_t stride;  // bytes per row
  int32_t first;
  std::vector<std::vector<uint8_t>> storage;
  std::vector<const uint8_t*> blocks;
  PagedKvRows rows{};
};

// The query as the kernel's K dot product sees it.
std::vector<float> converted_query(DType k_type, const std::vector<float>& q) {
  std::vector<float> out(q.size());
  const auto n = static_cast<int64_t>(q.size());
  if (k_type == DType::kF16) {
    for (size_t i = 0; i < q.size(); ++i) out[i] = fp16_to_fp32(fp32_to_fp16(q[i]));
  } else {
    std::vector<BlockQ8A> a(static_cast<size_t>(n / 32));
    ref::quantize_activation_row(DType::kQ8_0, q.data(), a.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const BlockQ8A& b = a[static_cast<size_t>(i / 32)];
      out[static_cast<size_t>(i)] = b.d * b.qs[i % 32];
    }
  }
  return out;
}

// softmax(scale * q.k_t) v_t in double.
std::vector<double> reference(const std::vector<float>& q, const std::vector<std::vector<float>>& k,
                              const std::vector<std::vector<float>>& v, float scale) {
  std::vector<double> w(k.size());
  double mx = -1e300, sum = 0;
  for (size_t t = 0; t < k.size(); ++t) {
    double dot = 0;
    for (size_t i = 0; i < q.size(); ++i) dot += double(q[i]) * k[t][i];
    w[t] = dot * scale;
    mx = std::max(mx, w[t]);
  }
  for (double& x : w) sum += (x = std::exp(x - mx));
  std::vector<double> out(v[0].size(), 0.0);
  for (size_t t = 0; t < v.size(); ++t)
    for (size_t i = 0; i < out.size(); ++i) out[i] += w[t] / sum * v[t][i];
  return out;
}

float type_tolerance(DType t) {
  return t == DType::kF16 ? 2e-3f : t == DType::kQ8_0 ? 3e-2f : 0.25f;
}

TEST_P(AttentionFlash, MatchesReferencesForEveryKvTypePair) {
  const int32_t bt = 16;
  for (int64_t dk : {64, 128}) {
    const int64_t dv = 64;
    for (int64_t n : {1, 5, 16, 37}) {
      // Keys large enough that the softmax is peaked (as in trained models).
      const auto kx = random_values(n * dk, 1 + static_cast<uint32_t>(n), 0.f);
      const auto vx = random_values(n * dv, 2 + static_cast<uint32_t>(n), 0.f);
      auto q = random_values(dk, 3, 0.f);
      for (float& x : q) x *= 4.f;
      const float scale = 1.f / std::sqrt(static_cast<float>(dk));
      std::vector<std::vector<float>> k_exact, v_exact;
      for (int64_t t = 0; t < n; ++t) {
        k_exact.emplace_back(kx.begin() + t * dk, kx.begin() + (t + 1) * dk);
        v_exact.emplace_back(vx.begin() + t * dv, vx.begin() + (t + 1) * dv);
      }
      const auto exact = reference(q, k_exact, v_exact, scale);
      for (DType kt : kKvTypes) {
        for (DType vt : kKvTypes) {
          const Paged k(kt, kx, n, dk, bt), v(vt, vx, n, dv, bt);
          std::vector<std::vector<float>> k_stored, v_stored;
          float vmax = 0;
          for (int64_t t = 0; t < n; ++t) {
            k_stored.push_back(k.row(t, dk));
            v_stored.push_back(v.row(t, dv));
            for (float x : v_stored.back()) vmax = std::max(vmax, std::fabs(x));
          }
          const auto stored = reference(converted_query(kt, q), k_stored, v_stored, scale);
          std::vector<float> scratch(static_cast<size_t>(attention_flash_scratch_floats(dk, dv)));
          std::vector<float> out(static_cast<size_t>(dv) + 1, -7.f);
          attention_flash_ggml(q.data(), k.rows, v.rows, n, dk, dv, scale, out.data(),
                               scratch.data());
          EXPECT_EQ(out[dv], -7.f) << "wrote past dv";
          const float tol = std::max(type_tolerance(kt), type_tolerance(vt));
          for (int64_t i = 0; i < dv; ++i) {
            SCOPED_TRACE(::testing::Message() << dtype_name(kt) << "/" << dtype_name(vt) << " dk "
                                              << dk << " n " << n << " i " << i);
            ASSERT_NEAR(out[i], stored[i], 1e-5 * vmax + 1e-6);
            ASSERT_NEAR(out[i], exact[i], tol * vmax);
          }
        }
      }
    }
  }
}

// attention_kv_heads for every pair of KV types, 1, 3 and 7 heads (one or two
// passes of up to four), head sizes (64, 64), (128, 128) and (32, 96), 1 to
// 300 positions (past the value pass's span of 256) over blocks of 16 rows
// scattered in reverse, from a block's first row or from row 7 (a window's
// start):
// - on AVX2 and up the bits of grouped_heads_twin over the rows as stored
//   (dequantize_row's f32 values), so every x86 target gives the same; with
//   ggml's order asked for, and below AVX2, attention_flash_ggml's head by
//   head (llama.cpp's flash arithmetic);
// - a head alone and in its group give the same bits;
// - against a float64 softmax over the stored rows and the f32 query: within
//   1e-4 x max |v| (f32 rounding only), and over all outputs closer than
//   attention_flash_ggml, which rounds the query to K's dot type.
TEST_P(AttentionFlash, KvHeadsTakeTheGroupedArithmetic) {
  const int32_t bt = 16;
  struct Dims {
    int64_t dk, dv;
  };
  for (Dims dims : {Dims{64, 64}, Dims{128, 128}, Dims{32, 96}}) {
    const int64_t dk = dims.dk, dv = dims.dv;
    for (int64_t nh : {1, 3, 7}) {
      for (int64_t n : {1, 5, 300}) {
        for (int32_t first : {0, 7}) {
          const auto kx = random_values(n * dk, 61, 0.f), vx = random_values(n * dv, 62, 0.f);
          auto q = random_values(nh * dk, 63, 0.f);
          for (float& x : q) x *= 4.f;  // a softmax that is not flat
          const float scale = 1.f / std::sqrt(static_cast<float>(dk));
          for (DType kt : kKvTypes) {
            for (DType vt : kKvTypes) {
              const Paged k(kt, kx, n, dk, bt, first), v(vt, vx, n, dv, bt, first);
              std::vector<std::vector<float>> ks, vs;
              std::vector<float> kf, vf;  // the stored rows in f32, row after row
              float vmax = 0;
              for (int64_t t = 0; t < n; ++t) {
                ks.push_back(k.row(t, dk));
                vs.push_back(v.row(t, dv));
                kf.insert(kf.end(), ks.back().begin(), ks.back().end());
                vf.insert(vf.end(), vs.back().begin(), vs.back().end());
                for (float x : vs.back()) vmax = std::max(vmax, std::fabs(x));
              }
              std::vector<float> scratch(
                  static_cast<size_t>(std::max(attention_kv_heads_scratch_floats(n, nh, dk, dv),
                                               attention_flash_scratch_floats(dk, dv))));
              std::vector<float> got(static_cast<size_t>(nh * dv) + 1, -7.f),
                  one(static_cast<size_t>(dv)), flash(static_cast<size_t>(dv));
              const std::string at = std::string(hwy::TargetName(GetParam())) + " " +
                                     std::string(dtype_name(kt)) + "/" +
                                     std::string(dtype_name(vt)) + " dk " + std::to_string(dk) +
                                     " dv " + std::to_string(dv) + " heads " + std::to_string(nh) +
                                     " n " + std::to_string(n) + " first " + std::to_string(first);
              for (bool ggml_asked : {false, true}) {
                set_ggml_order(ggml_asked);
                const bool grouped = HWY_ARCH_X86 && GetParam() <= HWY_AVX2 && !ggml_asked;
                attention_kv_heads(q.data(), nh, k.rows, v.rows, n, dk, dv, scale, got.data(),
                                   scratch.data());
                ASSERT_EQ(got[static_cast<size_t>(nh * dv)], -7.f) << at << ": wrote past";
                double err_got = 0, err_flash = 0;
                for (int64_t h = 0; h < nh; ++h) {
                  const float* qh = q.data() + h * dk;
                  attention_kv_heads(qh, 1, k.rows, v.rows, n, dk, dv, scale, one.data(),
                                     scratch.data());
                  attention_flash_ggml(qh, k.rows, v.rows, n, dk, dv, scale, flash.data(),
                                       scratch.data());
                  const std::vector<float> twin =
                      grouped ? testing::grouped_heads_twin(qh, kf, vf, n, dk, dv, scale) : flash;
                  const auto want = reference(std::vector<float>(qh, qh + dk), ks, vs, scale);
                  for (int64_t i = 0; i < dv; ++i) {
                    const float g = got[static_cast<size_t>(h * dv + i)];
                    SCOPED_TRACE(::testing::Message() << at << " head " << h << " col " << i
                                                      << (ggml_asked ? " (ggml's order)" : ""));
                    ASSERT_EQ(g, one[static_cast<size_t>(i)]);
                    ASSERT_EQ(g, twin[static_cast<size_t>(i)]);
                    if (grouped) {
                      ASSERT_NEAR(g, want[static_cast<size_t>(i)], 1e-4 * vmax);
                    }
                    err_got += std::fabs(g - want[static_cast<size_t>(i)]);
                    err_flash +=
                        std::fabs(flash[static_cast<size_t>(i)] - want[static_cast<size_t>(i)]);
                  }
                }
                if (grouped) {
                  EXPECT_LE(err_got, err_flash) << at;
                }
              }
              set_ggml_order(false);
            }
          }
        }
      }
    }
  }
}

TEST_P(AttentionFlash, F16PairAgreesWithTheNonFlashKernel) {
  const int64_t d = 64, n = 29;
  const int32_t bt = 8;
  const auto kx = random_values(n * d, 5), vx = random_values(n * d, 6), q = random_values(d, 7);
  const Paged k(DType::kF16, kx, n, d, bt), v(DType::kF16, vx, n, d, bt);
  std::vector<const uint16_t*> kb, vb;
  for (const uint8_t* p : k.blocks) kb.push_back(reinterpret_cast<const uint16_t*>(p));
  for (const uint8_t* p : v.blocks) vb.push_back(reinterpret_cast<const uint16_t*>(p));
  std::vector<float> scratch(static_cast<size_t>(attention_scratch_floats(n, d, d)));
  std::vector<float> flash(d), plain(d);
  attention_flash_ggml(q.data(), k.rows, v.rows, n, d, d, 0.125f, flash.data(), scratch.data());
  attention_f16_ggml(q.data(), PagedRows{kb.data(), bt, d}, PagedRows{vb.data(), bt, d}, n, d, d,
                     0.125f, SumOrder::kVecDot, plain.data(), scratch.data());
  float vmax = 0;
  for (float x : vx) vmax = std::max(vmax, std::fabs(x));
  // The non-flash kernel rounds the probabilities to f16 (llama.cpp does): ~1e-3 relative.
  for (int64_t i = 0; i < d; ++i) EXPECT_NEAR(flash[i], plain[i], 2e-3 * vmax) << i;
}

TEST_P(AttentionFlash, QuantizeKvRowFollowsGgmlCpu) {
  const int64_t n = 512;
  const auto x = random_values(n, 11);
  for (DType t : {DType::kF16, DType::kQ4_0}) {
    auto want = testing::quantized(t, x);
    std::vector<uint8_t> got(want.size());
    quantize_kv_row(t, x.data(), got.data(), n);
    EXPECT_EQ(got, want) << dtype_name(t);
  }
  // f16 through vcvtps2ph on x86: the same bits for overflow, infinities,
  // half subnormals, ties and NaN (a chunk with a NaN falls to the scalar path).
  std::vector<float> special(x.begin(), x.begin() + 40);
  const float tiny = std::ldexp(1.f, -24), inf = std::numeric_limits<float>::infinity();
  const uint32_t nan_bits = 0xFFC12345u;  // vcvtps2ph would keep part of this payload
  float nan_payload;
  std::memcpy(&nan_payload, &nan_bits, 4);
  const float vals[] = {65520.f,
                        -65519.f,
                        inf,
                        -inf,
                        tiny,
                        1.5f * tiny,
                        0.5f * tiny,
                        -0.f,
                        1.f + std::ldexp(1.f, -11),
                        std::numeric_limits<float>::quiet_NaN()};
  for (size_t i = 0; i < std::size(vals); ++i) special[3 * i + 1] = vals[i];
  {
    auto want_f16 = testing::quantized(DType::kF16, special);
    std::vector<uint8_t> got_f16(want_f16.size());
    quantize_kv_row(DType::kF16, special.data(), got_f16.data(), 40);
    EXPECT_EQ(got_f16, want_f16);
  }
  const auto want = testing::quantized(DType::kQ8_0, x);
  std::vector<BlockQ8_0> got(n / 32);
  quantize_kv_row(DType::kQ8_0, x.data(), got.data(), n);
  const auto* w = reinterpret_cast<const BlockQ8_0*>(want.data());
  int differ = 0;
  for (int64_t b = 0; b < n / 32; ++b) {
    EXPECT_EQ(got[b].d, w[b].d) << b;
    for (int j = 0; j < 32; ++j) {
      EXPECT_LE(std::abs(got[b].qs[j] - w[b].qs[j]), 1) << b << " " << j;
      differ += got[b].qs[j] != w[b].qs[j];
    }
  }
  EXPECT_LE(differ, n / 100);
}

SNUG_INSTANTIATE_TARGETS(AttentionFlash);

}  // namespace
}  // namespace snug::tensor
