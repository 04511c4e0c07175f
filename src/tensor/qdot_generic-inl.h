// Portable quantized dot products (every Highway target). Weight blocks are
// decoded to int8 levels in scalar code, the integer block sums use Highway,
// and the float combination repeats dot_ref.cpp's expressions in the same
// order, so these results are bit-identical to the scalar reference.
// Per-target header: re-included once per target by foreach_target.h.
#if defined(SNUG_TENSOR_QDOT_GENERIC_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SNUG_TENSOR_QDOT_GENERIC_INL_H_
#undef SNUG_TENSOR_QDOT_GENERIC_INL_H_
#else
#define SNUG_TENSOR_QDOT_GENERIC_INL_H_
#endif

#include <hwy/highway.h>

#include "tensor/k_unpack.h"
#include "tensor/quant_blocks.h"

HWY_BEFORE_NAMESPACE();
namespace snug::tensor::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// sum a[i] * b[i] for n a multiple of 16.
HWY_INLINE int32_t DotI8(const int8_t* HWY_RESTRICT a, const int8_t* HWY_RESTRICT b, int n) {
  const hn::CappedTag<int16_t, 16> d16;
  const hn::Repartition<int32_t, decltype(d16)> d32;
  const hn::Rebind<int8_t, decltype(d16)> d8;
  auto s0 = hn::Zero(d32), s1 = hn::Zero(d32);
  for (int i = 0; i < n; i += static_cast<int>(hn::Lanes(d16))) {
    const auto va = hn::PromoteTo(d16, hn::LoadU(d8, a + i));
    const auto vb = hn::PromoteTo(d16, hn::LoadU(d8, b + i));
    s0 = hn::ReorderWidenMulAccumulate(d32, va, vb, s0, s1);
  }
  return hn::GetLane(hn::SumOfLanes(d32, hn::Add(s0, s1)));
}

// Level and combination rules of the 32-element formats (see quant_blocks.h).
struct GenQ4_0 {
  using Block = BlockQ4_0;
  static void Levels(const Block& b, int8_t* q) {
    for (int j = 0; j < 16; ++j) {
      q[j] = static_cast<int8_t>((b.qs[j] & 0xF) - 8);
      q[j + 16] = static_cast<int8_t>((b.qs[j] >> 4) - 8);
    }
  }
  static float Combine(const Block& b, const BlockQ8A& x, int32_t is) {
    return detail::f16_to_f32(b.d) * x.d * static_cast<float>(is);
  }
};
struct GenQ4_1 {
  using Block = BlockQ4_1;
  static void Levels(const Block& b, int8_t* q) {
    for (int j = 0; j < 16; ++j) {
      q[j] = static_cast<int8_t>(b.qs[j] & 0xF);
      q[j + 16] = static_cast<int8_t>(b.qs[j] >> 4);
    }
  }
  static float Combine(const Block& b, const BlockQ8A& x, int32_t is) {
    return detail::f16_to_f32(b.d) * x.d * static_cast<float>(is) + detail::f16_to_f32(b.m) * x.s;
  }
};
template <typename B>
void Levels5(const B& b, int8_t* q) {
  uint32_t qh;
  std::memcpy(&qh, b.qh, 4);
  for (int j = 0; j < 16; ++j) {
    q[j] = static_cast<int8_t>((b.qs[j] & 0xF) | (((qh >> j) & 1u) << 4));
    q[j + 16] = static_cast<int8_t>((b.qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4));
  }
}
struct GenQ5_0 {
  using Block = BlockQ5_0;
  static void Levels(const Block& b, int8_t* q) {
    Levels5(b, q);
    for (int j = 0; j < 32; ++j) q[j] = static_cast<int8_t>(q[j] - 16);
  }
  static float Combine(const Block& b, const BlockQ8A& x, int32_t is) {
    return detail::f16_to_f32(b.d) * x.d * static_cast<float>(is);
  }
};
struct GenQ5_1 {
  using Block = BlockQ5_1;
  static void Levels(const Block& b, int8_t* q) { Levels5(b, q); }
  static float Combine(const Block& b, const BlockQ8A& x, int32_t is) {
    return detail::f16_to_f32(b.d) * x.d * static_cast<float>(is) + detail::f16_to_f32(b.m) * x.s;
  }
};
struct GenQ8_0 {
  using Block = BlockQ8_0;
  static void Levels(const Block& b, int8_t* q) { std::memcpy(q, b.qs, 32); }
  static float Combine(const Block& b, const BlockQ8A& x, int32_t is) {
    return detail::f16_to_f32(b.d) * x.d * static_cast<float>(is);
  }
};

// One weight row against T activation rows (BlockQ8A), n elements.
template <class F, int T>
void TileQ32Generic(const uint8_t* wrow, int64_t n, const uint8_t* const* acts, float* out) {
  const auto* wb = reinterpret_cast<const typename F::Block*>(wrow);
  float sum[T] = {};
  HWY_ALIGN int8_t q[32];
  for (int64_t b = 0; b < n / kQK; ++b) {
    F::Levels(wb[b], q);
    for (int t = 0; t < T; ++t) {
      const BlockQ8A& a = reinterpret_cast<const BlockQ8A*>(acts[t])[b];
      sum[t] += F::Combine(wb[b], a, DotI8(q, a.qs, kQK));
    }
  }
  for (int t = 0; t < T; ++t) out[t] = sum[t];
}

// One K-format weight row against T q8_K activation rows.
template <class Block, int T>
void TileKGeneric(const uint8_t* wrow, int64_t n, const uint8_t* const* acts, float* out) {
  const auto* wb = reinterpret_cast<const Block*>(wrow);
  float sum[T] = {};
  HWY_ALIGN detail::KBlockInts k;
  for (int64_t b = 0; b < n / kQKK; ++b) {
    detail::unpack_k(wb[b], &k);
    for (int t = 0; t < T; ++t) {
      const BlockQ8_K& a = reinterpret_cast<const BlockQ8_K*>(acts[t])[b];
      int32_t isum = 0;
      for (int g = 0; g < kQKK / k.group; ++g) {
        isum += k.scale[g] * DotI8(k.q + g * k.group, a.qs + g * k.group, k.group);
      }
      const int32_t msum = detail::k_min_sum(k, a);
      sum[t] += k.d * a.d * static_cast<float>(isum) - k.dmin * a.d * static_cast<float>(msum);
    }
  }
  for (int t = 0; t < T; ++t) out[t] = sum[t];
}

}  // namespace snug::tensor::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // include guard toggle
