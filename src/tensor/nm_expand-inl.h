// N:M-sparse rows (quant_blocks.h's BlockQ8_0NM / BlockQ4_0NM) expanded to
// the dense blocks they stand for, per target: vpexpandb on AVX3_DL, a
// 256-entry shuffle table with vpshufb on the other x86 targets from AVX2
// up, nm_sparse.h's scalar loop below. The kernels that do not read sparse
// blocks directly (qgemm_vnni-inl.h does) expand a row with this and run the
// dense type's kernel on it: the same arithmetic, so the same bits.
//
// A mask byte without exactly 4 bits set (a damaged or hostile file) gives
// meaningless values, never a read outside the block.
#if defined(SNUG_TENSOR_NM_EXPAND_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SNUG_TENSOR_NM_EXPAND_INL_H_
#undef SNUG_TENSOR_NM_EXPAND_INL_H_
#else
#define SNUG_TENSOR_NM_EXPAND_INL_H_
#endif

#include <hwy/highway.h>

#include <array>
#include <cstring>

#include "tensor/dtype.h"
#include "tensor/nm_sparse.h"
#include "tensor/quant_blocks.h"
#include "tensor/simd_x86.h"

#if SNUG_X86_AVX2
#include <immintrin.h>
#endif

HWY_BEFORE_NAMESPACE();
namespace snug::tensor::HWY_NAMESPACE {

#if SNUG_X86_AVX2 && HWY_TARGET > HWY_AVX3_DL
// vpshufb controls for one mask byte with 4 bits set: byte p is the rank of
// bit p among the set bits (its kept element) where set, 0x80 (zero) where not.
struct NmShuffleTable {
  std::array<uint64_t, 256> c{};
  constexpr NmShuffleTable() {
    for (int m = 0; m < 256; ++m) {
      uint64_t v = 0;
      int rank = 0;
      for (int p = 0; p < 8; ++p) {
        const uint64_t b = (m >> p & 1) ? static_cast<uint64_t>(rank++ & 15) : 0x80u;
        v |= b << (8 * p);
      }
      c[static_cast<size_t>(m)] = v;
    }
  }
};
inline constexpr NmShuffleTable kNmShuffle{};

// 32 bytes: element j of the block is kept byte rank(j) of `kept` (16 bytes),
// or 0. Mask byte i's ranks start at 4 i when every byte has 4 bits set.
HWY_INLINE __m256i NmExpandBytes(const uint8_t* mask, __m128i kept) {
  const auto at = [&](int i) {
    return static_cast<int64_t>(kNmShuffle.c[mask[i]] + 0x0404040404040404ull * i);
  };
  const __m256i ctrl = _mm256_setr_epi64x(at(0), at(1), at(2), at(3));
  return _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(kept), ctrl);
}
#endif

// Expands a row of nb blocks of sparse type t (kQ8_0NM or kQ4_0NM) from src
// into the dense type's blocks at dst.
HWY_INLINE void ExpandNmRow(DType t, const uint8_t* src, uint8_t* dst, int64_t nb) {
#if SNUG_X86_AVX2
  const uint8_t* d = src;
  const uint8_t* mask = src + 2 * nb;
  const uint8_t* qs = mask + 4 * nb;
  if (t == DType::kQ8_0NM) {
    for (int64_t i = 0; i < nb; ++i, dst += sizeof(BlockQ8_0)) {
      std::memcpy(dst, d + 2 * i, 2);
      // Kept levels are stored + 128.
      const __m128i kept =
          _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs + 16 * i)),
                        _mm_set1_epi8(static_cast<char>(0x80)));
#if HWY_TARGET <= HWY_AVX3_DL
      const __m256i q =
          _mm256_maskz_expand_epi8(detail::nm_mask(mask + 4 * i), _mm256_zextsi128_si256(kept));
#else
      const __m256i q = NmExpandBytes(mask + 4 * i, kept);
#endif
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 2), q);
    }
    return;
  }
  for (int64_t i = 0; i < nb; ++i, dst += sizeof(BlockQ4_0)) {
    std::memcpy(dst, d + 2 * i, 2);
    const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs + 8 * i));
    const __m128i lv =
        _mm_and_si128(_mm_unpacklo_epi64(q, _mm_srli_epi16(q, 4)), _mm_set1_epi8(0x0F));
#if HWY_TARGET <= HWY_AVX3_DL
    const __m256i e = _mm256_mask_expand_epi8(_mm256_set1_epi8(8), detail::nm_mask(mask + 4 * i),
                                              _mm256_zextsi128_si256(lv));
#else
    // Dropped elements are level 8 (zero): expand level - 8, then add 8 back.
    const __m256i e = _mm256_add_epi8(
        NmExpandBytes(mask + 4 * i, _mm_sub_epi8(lv, _mm_set1_epi8(8))), _mm256_set1_epi8(8));
#endif
    const __m128i lo = _mm256_castsi256_si128(e), hi = _mm256_extracti128_si256(e, 1);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 2), _mm_or_si128(lo, _mm_slli_epi16(hi, 4)));
  }
#else
  if (t == DType::kQ8_0NM) {
    detail::nm_expand_row<BlockQ8_0NM, BlockQ8_0>(src, dst, nb);
  } else {
    detail::nm_expand_row<BlockQ4_0NM, BlockQ4_0>(src, dst, nb);
  }
#endif
}

}  // namespace snug::tensor::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // include guard toggle
