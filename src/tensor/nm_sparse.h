// Scalar conversions between snug's N:M-sparse blocks and the dense blocks
// they stand for (quant_blocks.h describes both). Expansion is exact: a
// sparse block expands to the dense block a dense quantizer writes for the
// same pruned values, so the kernels multiply expanded blocks with the dense
// arithmetic and give the dense type's results bit for bit.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "tensor/quant_blocks.h"

namespace snug::tensor::detail {

inline constexpr int kNmKept = kQK / 2;  // kept elements per block
inline constexpr int kNmGroup = 8;       // each 8 consecutive elements keep 4

inline uint32_t nm_mask(const uint8_t* m) {
  uint32_t v;
  std::memcpy(&v, m, 4);
  return v;
}

// The kept levels of a sparse q4_0 block in order, unsigned (0..15).
inline void nm_q4_levels(const BlockQ4_0NM& s, uint8_t out[kNmKept]) {
  for (int k = 0; k < kNmKept / 2; ++k) {
    out[k] = s.qs[k] & 15;
    out[k + kNmKept / 2] = s.qs[k] >> 4;
  }
}

inline void nm_expand(const BlockQ8_0NM& s, BlockQ8_0* d) {
  d->d = s.d;
  const uint32_t m = nm_mask(s.mask);
  int k = 0;
  // (A mask with more than 16 bits set, from a damaged file, is cut at 16.)
  for (int j = 0; j < kQK; ++j) {
    d->qs[j] = (m >> j & 1u) && k < kNmKept ? static_cast<int8_t>(s.qs[k++] ^ 0x80) : int8_t{0};
  }
}

inline void nm_expand(const BlockQ4_0NM& s, BlockQ4_0* d) {
  d->d = s.d;
  uint8_t kept[kNmKept], lv[kQK];
  nm_q4_levels(s, kept);
  const uint32_t m = nm_mask(s.mask);
  int k = 0;
  for (int j = 0; j < kQK; ++j) lv[j] = (m >> j & 1u) && k < kNmKept ? kept[k++] : uint8_t{8};
  for (int j = 0; j < kQK / 2; ++j) d->qs[j] = static_cast<uint8_t>(lv[j] | lv[j + 16] << 4);
}

// The mask that keeps, in each group of 8 of the 32 values, the 4 of
// largest magnitude mag[j] (the lower index on ties).
template <class T>
inline uint32_t nm_choose(const T* mag) {
  uint32_t mask = 0;
  for (int g = 0; g < kQK; g += kNmGroup) {
    bool take[kNmGroup] = {};
    for (int n = 0; n < kNmGroup / 2; ++n) {
      int best = -1;
      for (int j = 0; j < kNmGroup; ++j) {
        if (!take[j] && (best < 0 || mag[g + j] > mag[g + best])) best = j;
      }
      take[best] = true;
    }
    for (int j = 0; j < kNmGroup; ++j) {
      if (take[j]) mask |= 1u << (g + j);
    }
  }
  return mask;
}

// The sparse block of a dense one with the kept elements `mask` (each byte
// with 4 bits set); false when a dropped element is not zero (it is lost).
inline bool nm_pack(const BlockQ8_0& d, uint32_t mask, BlockQ8_0NM* s) {
  bool exact = true;
  s->d = d.d;
  std::memcpy(s->mask, &mask, 4);
  int k = 0;
  for (int j = 0; j < kQK; ++j) {
    if (mask >> j & 1u)
      s->qs[k++] = static_cast<uint8_t>(d.qs[j] ^ 0x80);  // stored + 128
    else
      exact = exact && d.qs[j] == 0;
  }
  return exact;
}

inline bool nm_pack(const BlockQ4_0& d, uint32_t mask, BlockQ4_0NM* s) {
  bool exact = true;
  s->d = d.d;
  std::memcpy(s->mask, &mask, 4);
  uint8_t kept[kNmKept];
  int k = 0;
  for (int j = 0; j < kQK; ++j) {
    const int lv = j < 16 ? d.qs[j] & 15 : d.qs[j - 16] >> 4;
    if (mask >> j & 1u)
      kept[k++] = static_cast<uint8_t>(lv);
    else
      exact = exact && lv == 8;
  }
  for (int i = 0; i < kNmKept / 2; ++i)
    s->qs[i] = static_cast<uint8_t>(kept[i] | kept[i + kNmKept / 2] << 4);
  return exact;
}

// Compresses a dense block, keeping the 4 largest levels of each group of 8;
// false when that drops a nonzero one.
inline bool nm_compress(const BlockQ8_0& d, BlockQ8_0NM* s) {
  int mag[kQK];
  for (int j = 0; j < kQK; ++j) mag[j] = std::abs(static_cast<int>(d.qs[j]));
  return nm_pack(d, nm_choose(mag), s);
}

// Where the parts of a sparse row of nb blocks lie (quant_blocks.h): block
// b's scale at d + 2b, its mask at mask + 4b, its kept levels at qs + kQs * b.
template <class S>
struct NmRow {
  static constexpr int64_t kQs = sizeof(S::qs);
  uint8_t* d;
  uint8_t* mask;
  uint8_t* qs;
  NmRow(void* row, int64_t nb)
      : d(static_cast<uint8_t*>(row)), mask(d + 2 * nb), qs(mask + 4 * nb) {}
  void get(int64_t b, S* s) const {
    std::memcpy(&s->d, d + 2 * b, 2);
    std::memcpy(s->mask, mask + 4 * b, 4);
    std::memcpy(s->qs, qs + kQs * b, kQs);
  }
  void put(int64_t b, const S& s) const {
    std::memcpy(d + 2 * b, &s.d, 2);
    std::memcpy(mask + 4 * b, s.mask, 4);
    std::memcpy(qs + kQs * b, s.qs, kQs);
  }
};

// Expands a sparse row of nb blocks (S: BlockQ8_0NM or BlockQ4_0NM) into the
// dense type's nb blocks.
template <class S, class D>
inline void nm_expand_row(const void* src, void* dst, int64_t nb) {
  const NmRow<S> row(const_cast<void*>(src), nb);
  auto* d = static_cast<D*>(dst);
  for (int64_t i = 0; i < nb; ++i) {
    S s;
    row.get(i, &s);
    nm_expand(s, d + i);
  }
}

}  // namespace snug::tensor::detail
