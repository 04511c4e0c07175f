// Importance-weighted quantizers: what ggml's quantize_q2_K ... quantize_q6_K
// and quantize_q4_0/q4_1/q5_0/q5_1 do when given quant_weights (an importance
// matrix), bit-identical to them. Where the round-to-nearest path weights each
// element's error by a function of the element itself (x^2, |x|), these weight
// it by the caller's per-column importance (the mean squared activation that
// multiplies that column), so the scales are chosen to keep the error small
// where the model's inputs are large. The group scales themselves are then
// quantized with the group's total weight (make_qp, make_qx over the scales).
//
// Operation order follows ggml's C exactly (float arithmetic, no contraction:
// this library builds with -ffp-contract=off).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/check.h"
#include "tensor/fp16.h"
#include "tensor/kernels_ref.h"
#include "tensor/quant_blocks.h"
#include "tensor/quant_common.h"

namespace snug::tensor {
namespace {

using detail::clamp;
using detail::f16_to_f32;
using detail::f32_to_f16;
using detail::finish_q6_K;
using detail::kGroupMaxEps;
using detail::nearest_int;
using detail::pack_2bit;

// Symmetric levels L in [0, 2*nmax) for x ~= scale * (L - nmax), error
// weighted by qw, searching 19 candidate scales (ggml make_qx_quants,
// rmse_type 1 with quant weights).
float make_qx(int n, int nmax, const float* x, int8_t* L, const float* qw) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    std::memset(L, 0, static_cast<size_t>(n));
    return 0.f;
  }
  float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = qw[i];
    sumlx += w * x[i] * static_cast<float>(l);
    suml2 += w * static_cast<float>(l) * static_cast<float>(l);
  }
  float scale = suml2 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
      const float w = qw[i];
      sumlx += w * x[i] * static_cast<float>(l);
      suml2 += w * static_cast<float>(l) * static_cast<float>(l);
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        L[i] = static_cast<int8_t>(nmax + clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Asymmetric levels L in [0, nmax] for x ~= scale * L - the_min, searching
// nstep+1 scales around nmax / (max - min) for the least weighted error, each
// with the least-squares scale and min for its levels (ggml make_qkx3_quants,
// always called with weights here). Returns scale; *the_min is >= 0.
float make_qkx3(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                uint8_t* Laux, float rmin, float rdelta, int nstep) {
  float min = x[0], max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max <= min) {
    std::memset(L, 0, static_cast<size_t>(n));
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_mad = 0;
  for (int i = 0; i < n; ++i) {
    L[i] = static_cast<uint8_t>(clamp(nearest_int(iscale * (x[i] - min)), 0, nmax));
    const float diff = scale * L[i] + min - x[i];
    best_mad += weights[i] * (diff * diff);
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clamp(nearest_int(iscale * (x[i] - min)), 0, nmax);
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weights[i];
      sum_l += w * static_cast<float>(l);
      sum_l2 += w * static_cast<float>(l) * static_cast<float>(l);
      sum_xl += w * static_cast<float>(l) * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float mad = 0;
      for (int i = 0; i < n; ++i) {
        const float diff = this_scale * Laux[i] + this_min - x[i];
        mad += weights[i] * (diff * diff);
      }
      if (mad < best_mad) {
        std::memcpy(L, Laux, static_cast<size_t>(n));
        best_mad = mad;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// Non-negative levels L in [0, nmax] for non-negative x (the group scales or
// mins of a super-block) ~= scale * L, weighted by qw: 9 candidate scales,
// then up to 5 rounds of per-element refinement (ggml make_qp_quants).
float make_qp(int n, int nmax, const float* x, uint8_t* L, const float* qw) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = std::max(max, x[i]);
  if (max < kGroupMaxEps) {
    std::memset(L, 0, static_cast<size_t>(n));
    return 0.f;
  }
  float iscale = nmax / max;
  // ggml stores these unclamped into uint8_t (modulo 256), then measures with them.
  for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(nearest_int(iscale * x[i]));
  const float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * L[i];
    best_mse += qw[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * is + nmax) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::min(nmax, nearest_int(iscale_is * x[i]));
      const float diff = x[i] - scale_is * static_cast<float>(l);
      mse += qw[i] * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::min(nmax, nearest_int(iscale * x[i]));
    L[i] = static_cast<uint8_t>(l);
    const float w = qw[i];
    sumlx += w * x[i] * static_cast<float>(l);
    suml2 += w * static_cast<float>(l) * static_cast<float>(l);
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = qw[i];
      float slx = sumlx - w * x[i] * L[i];
      float sl2 = suml2 - w * L[i] * L[i];
      if (slx > 0 && sl2 > 0) {
        const int new_l = std::min(nmax, nearest_int(x[i] * sl2 / slx));
        if (new_l != L[i]) {
          slx += w * x[i] * static_cast<float>(new_l);
          sl2 += w * static_cast<float>(new_l) * static_cast<float>(new_l);
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<uint8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// weight[l] = qw[l] * sqrt(sigma2 + x[l]^2): the importance of a column scaled
// by how large this element is against the block's spread; returns the sum.
float element_weights(const float* x, const float* qw, float sigma2, int n, float* weight) {
  float sumw = 0;
  for (int l = 0; l < n; ++l) weight[l] = qw[l] * std::sqrt(sigma2 + x[l] * x[l]);
  for (int l = 0; l < n; ++l) sumw += weight[l];
  return sumw;
}

float sum_squares(const float* x, int64_t n) {
  float s = 0;
  for (int64_t j = 0; j < n; ++j) s += x[j] * x[j];
  return s;
}

void q2_K(const float* x, BlockQ2_K* y, int64_t n, const float* qw) {
  uint8_t L[kQKK], Laux[16], Ls[16], Lm[16];
  float mins[16], scales[16], sw[16], weight[16];
  for (int64_t i = 0; i < n / kQKK; ++i, x += kQKK, qw += kQKK) {
    const float sigma2 = sum_squares(x, kQKK) / kQKK;
    for (int j = 0; j < 16; ++j) {
      sw[j] = element_weights(x + 16 * j, qw + 16 * j, sigma2, 16, weight);
      scales[j] =
          make_qkx3(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36);
    }
    float dm = make_qp(16, 15, scales, Ls, sw);
    float mm = make_qp(16, 15, mins, Lm, sw);
    y[i].d = f32_to_f16(dm);
    y[i].dmin = f32_to_f16(mm);
    dm = f16_to_f32(y[i].d);
    mm = f16_to_f32(y[i].dmin);
    for (int j = 0; j < 16; ++j) y[i].scales[j] = static_cast<uint8_t>(Ls[j] | (Lm[j] << 4));
    for (int j = 0; j < 16; ++j) {
      const float d = dm * static_cast<float>(y[i].scales[j] & 0xF);
      if (!d) continue;
      const float m = mm * static_cast<float>(y[i].scales[j] >> 4);
      for (int ii = 0; ii < 16; ++ii) {
        L[16 * j + ii] = static_cast<uint8_t>(clamp(nearest_int((x[16 * j + ii] + m) / d), 0, 3));
      }
    }
    pack_2bit(L, y[i].qs);
  }
}

void q3_K(const float* x, BlockQ3_K* y, int64_t n, const float* qw) {
  int8_t L[kQKK], Ls[16];
  float scales[16], weight[16], sw[16];
  for (int64_t i = 0; i < n / kQKK; ++i, x += kQKK, qw += kQKK) {
    const float sigma2 = 2 * sum_squares(x, kQKK) / kQKK;
    for (int j = 0; j < 16; ++j) {
      sw[j] = element_weights(x + 16 * j, qw + 16 * j, sigma2, 16, weight);
      scales[j] = make_qx(16, 4, x + 16 * j, L + 16 * j, weight);
    }
    std::memset(y[i].scales, 0, 12);
    const float d_block = make_qx(16, 32, scales, Ls, sw);
    for (int j = 0; j < 16; ++j) {
      int l = static_cast<uint8_t>(Ls[j]);  // make_qx levels are 0..63
      if (j < 8) {
        y[i].scales[j] = static_cast<uint8_t>(l & 0xF);
      } else {
        y[i].scales[j - 8] |= static_cast<uint8_t>((l & 0xF) << 4);
      }
      l >>= 4;
      y[i].scales[j % 4 + 8] |= static_cast<uint8_t>(l << (2 * (j / 4)));
    }
    y[i].d = f32_to_f16(d_block);
    int8_t sc[16];
    q3k_scales(y[i].scales, sc);
    for (int j = 0; j < 16; ++j) {
      const float d = f16_to_f32(y[i].d) * sc[j];
      if (!d) continue;
      for (int ii = 0; ii < 16; ++ii) {
        L[16 * j + ii] = static_cast<int8_t>(clamp(nearest_int(x[16 * j + ii] / d), -4, 3) + 4);
      }
    }
    std::memset(y[i].hmask, 0, 32);
    for (int j = 0; j < kQKK; ++j) {
      if (L[j] > 3) {
        y[i].hmask[j % 32] |= static_cast<uint8_t>(1u << (j / 32));
        L[j] = static_cast<int8_t>(L[j] - 4);
      }
    }
    pack_2bit(reinterpret_cast<const uint8_t*>(L), y[i].qs);
  }
}

// Shared by q4_K and q5_K: 8 groups of 32, asymmetric, 6-bit scales and mins
// chosen by make_qp with each group's total weight; L is requantized against them.
template <int kNmax>
void k4_weighted(const float* x, const float* qw, uint16_t* d_out, uint16_t* dmin_out,
                 uint8_t* packed, uint8_t* L) {
  uint8_t Laux[32], Ls[8], Lm[8];
  float weights[32], sw[8], mins[8], scales[8];
  const float sigma2 = 2 * sum_squares(x, kQKK) / kQKK;
  for (int j = 0; j < 8; ++j) {
    sw[j] = element_weights(x + 32 * j, qw + 32 * j, sigma2, 32, weights);
    scales[j] =
        make_qkx3(32, kNmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36);
  }
  const float d_block = make_qp(8, 63, scales, Ls, sw);
  const float m_block = make_qp(8, 63, mins, Lm, sw);
  for (int j = 0; j < 8; ++j) {
    uint8_t ls = Ls[j], lm = Lm[j];
    if (kNmax == 31) {  // ggml's q5_K clamps here, q4_K does not (make_qp already does)
      ls = std::min<uint8_t>(63, ls);
      lm = std::min<uint8_t>(63, lm);
    }
    if (j < 4) {
      packed[j] = ls;
      packed[j + 4] = lm;
    } else {
      packed[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
      packed[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
      packed[j] |= static_cast<uint8_t>((lm >> 4) << 6);
    }
  }
  *d_out = f32_to_f16(d_block);
  *dmin_out = f32_to_f16(m_block);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    k4_scale_min(j, packed, &sc, &m);
    const float d = f16_to_f32(*d_out) * sc;
    if (!d) continue;
    const float dm = f16_to_f32(*dmin_out) * m;
    for (int ii = 0; ii < 32; ++ii) {
      L[32 * j + ii] =
          static_cast<uint8_t>(clamp(nearest_int((x[32 * j + ii] + dm) / d), 0, kNmax));
    }
  }
}

void q4_K(const float* x, BlockQ4_K* y, int64_t n, const float* qw) {
  uint8_t L[kQKK];
  for (int64_t i = 0; i < n / kQKK; ++i, x += kQKK, qw += kQKK) {
    k4_weighted<15>(x, qw, &y[i].d, &y[i].dmin, y[i].scales, L);
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        y[i].qs[32 * c + l] = static_cast<uint8_t>(L[64 * c + l] | (L[64 * c + l + 32] << 4));
      }
    }
  }
}

void q5_K(const float* x, BlockQ5_K* y, int64_t n, const float* qw) {
  uint8_t L[kQKK];
  for (int64_t i = 0; i < n / kQKK; ++i, x += kQKK, qw += kQKK) {
    k4_weighted<31>(x, qw, &y[i].d, &y[i].dmin, y[i].scales, L);
    std::memset(y[i].qh, 0, 32);
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        int l1 = L[64 * c + l], l2 = L[64 * c + l + 32];
        if (l1 > 15) {
          l1 -= 16;
          y[i].qh[l] |= static_cast<uint8_t>(1u << (2 * c));
        }
        if (l2 > 15) {
          l2 -= 16;
          y[i].qh[l] |= static_cast<uint8_t>(2u << (2 * c));
        }
        y[i].qs[32 * c + l] = static_cast<uint8_t>(l1 | (l2 << 4));
      }
    }
  }
}

// q6_K takes the importance as the weights directly (no sigma term).
void q6_K(const float* x, BlockQ6_K* y, int64_t n, const float* qw) {
  int8_t L[kQKK];
  float scales[16];
  for (int64_t i = 0; i < n / kQKK; ++i, x += kQKK, qw += kQKK) {
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < 16; ++ib) {
      scales[ib] = make_qx(16, 32, x + 16 * ib, L + 16 * ib, qw + 16 * ib);
      const float abs_scale = std::fabs(scales[ib]);
      if (abs_scale > max_abs_scale) {
        max_abs_scale = abs_scale;
        max_scale = scales[ib];
      }
    }
    if (max_abs_scale < kGroupMaxEps) {
      std::memset(&y[i], 0, sizeof(BlockQ6_K));
      continue;
    }
    finish_q6_K(x, scales, max_scale, L, &y[i]);
  }
}

// The 32-element formats: sigma2 is the mean square of the whole row.
void q4_0(const float* x, BlockQ4_0* y, int64_t n, const float* qw) {
  float weight[kQK];
  int8_t L[kQK];
  const float sigma2 = sum_squares(x, n) / static_cast<float>(n);
  for (int64_t ib = 0; ib < n / kQK; ++ib) {
    const float* xb = x + kQK * ib;
    element_weights(xb, qw + kQK * ib, sigma2, kQK, weight);
    y[ib].d = f32_to_f16(make_qx(kQK, 8, xb, L, weight));
    for (int j = 0; j < 16; ++j) y[ib].qs[j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
  }
}

void q4_1(const float* x, BlockQ4_1* y, int64_t n, const float* qw) {
  float weight[kQK];
  uint8_t L[kQK], Laux[kQK];
  const float sigma2 = sum_squares(x, n) / static_cast<float>(n);
  for (int64_t ib = 0; ib < n / kQK; ++ib) {
    const float* xb = x + kQK * ib;
    element_weights(xb, qw + kQK * ib, sigma2, kQK, weight);
    float min;
    const float d = make_qkx3(kQK, 15, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36);
    y[ib].d = f32_to_f16(d);
    y[ib].m = f32_to_f16(-min);
    for (int j = 0; j < 16; ++j) y[ib].qs[j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
  }
}

// Low nibbles into qs, fifth bits into qh (element j's bit at j).
template <typename Block, typename Level>
void pack_5bit(const Level* L, Block* y) {
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const auto xi0 = static_cast<uint8_t>(L[j]);
    const auto xi1 = static_cast<uint8_t>(L[j + 16]);
    y->qs[j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
    qh |= ((xi0 & 0x10u) >> 4) << j;
    qh |= ((xi1 & 0x10u) >> 4) << (j + kQK / 2);
  }
  std::memcpy(y->qh, &qh, sizeof(qh));
}

void q5_0(const float* x, BlockQ5_0* y, int64_t n, const float* qw) {
  float weight[kQK];
  int8_t L[kQK];
  const float sigma2 = sum_squares(x, n) / static_cast<float>(n);
  for (int64_t ib = 0; ib < n / kQK; ++ib) {
    const float* xb = x + kQK * ib;
    element_weights(xb, qw + kQK * ib, sigma2, kQK, weight);
    y[ib].d = f32_to_f16(make_qx(kQK, 16, xb, L, weight));
    pack_5bit(L, &y[ib]);
  }
}

void q5_1(const float* x, BlockQ5_1* y, int64_t n, const float* qw) {
  float weight[kQK];
  uint8_t L[kQK], Laux[kQK];
  const float sigma2 = sum_squares(x, n) / static_cast<float>(n);
  for (int64_t ib = 0; ib < n / kQK; ++ib) {
    const float* xb = x + kQK * ib;
    element_weights(xb, qw + kQK * ib, sigma2, kQK, weight);
    float min;
    const float d = make_qkx3(kQK, 31, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36);
    y[ib].d = f32_to_f16(d);
    y[ib].m = f32_to_f16(-min);
    pack_5bit(L, &y[ib]);
  }
}

}  // namespace

bool has_weighted_quantizer(DType type) {
  switch (type) {
    case DType::kQ2_K:
    case DType::kQ3_K:
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ5_0:
    case DType::kQ5_1:
      return true;
    default:
      return false;
  }
}

namespace ref {

void quantize_row_weighted(DType type, const float* src, void* dst, int64_t n,
                           const float* weights) {
  if (weights == nullptr || !has_weighted_quantizer(type)) {
    ref::quantize_row(type, src, dst, n);
    return;
  }
  SNUG_CHECK(n % info(type).block_size == 0);
  switch (type) {
    case DType::kQ2_K:
      return q2_K(src, static_cast<BlockQ2_K*>(dst), n, weights);
    case DType::kQ3_K:
      return q3_K(src, static_cast<BlockQ3_K*>(dst), n, weights);
    case DType::kQ4_K:
      return q4_K(src, static_cast<BlockQ4_K*>(dst), n, weights);
    case DType::kQ5_K:
      return q5_K(src, static_cast<BlockQ5_K*>(dst), n, weights);
    case DType::kQ6_K:
      return q6_K(src, static_cast<BlockQ6_K*>(dst), n, weights);
    case DType::kQ4_0:
      return q4_0(src, static_cast<BlockQ4_0*>(dst), n, weights);
    case DType::kQ4_1:
      return q4_1(src, static_cast<BlockQ4_1*>(dst), n, weights);
    case DType::kQ5_0:
      return q5_0(src, static_cast<BlockQ5_0*>(dst), n, weights);
    case DType::kQ5_1:
      return q5_1(src, static_cast<BlockQ5_1*>(dst), n, weights);
    default:
      break;
  }
}

}  // namespace ref

void quantize_row_weighted(DType type, const float* src, void* dst, int64_t n,
                           const float* weights) {
  ref::quantize_row_weighted(type, src, dst, n, weights);
}

}  // namespace snug::tensor
