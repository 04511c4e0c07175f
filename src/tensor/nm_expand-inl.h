// N:M-sparse rows (quant_blocks.h's BlockQ8_0NM / BlockQ4_0NM) expanded to
// the dense blocks they stand for, per target: vpexpandb on AVX3_DL, tables
// of vpshufb controls on the other x86 targets from AVX2 up, nm_sparse.h's
// scalar loop below. The AVX2 multi-row kernels expand block by block in
// registers (qdot_avx2-inl.h's Avx2Q8_0Nm); the tiles expand a row with
// ExpandNmRow and run the dense type's kernel on it: the same arithmetic, so
// the same bits.
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

#if SNUG_X86_AVX2
#if HWY_TARGET > HWY_AVX3_DL
// vpshufb controls for mask byte i (0..3) of a block, 256 entries each: byte p
// of entry m is 4 i + the rank of bit p among m's set bits (the kept element
// it takes: mask byte i's ranks start at 4 i when every byte has 4 bits set)
// where bit p is set, 0x80 (zero) where not. With the 4 i folded in, a
// block's control is four loads and no arithmetic (8 KiB, in L1).
struct NmShuffleTable {
  std::array<uint64_t, 4 * 256> c{};
  constexpr NmShuffleTable() {
    for (int i = 0; i < 4; ++i) {
      for (int m = 0; m < 256; ++m) {
        uint64_t v = 0;
        int rank = 4 * i;
        for (int p = 0; p < 8; ++p) {
          const uint64_t b = (m >> p & 1) ? static_cast<uint64_t>(rank++ & 15) : 0x80u;
          v |= b << (8 * p);
        }
        c[static_cast<size_t>(256 * i + m)] = v;
      }
    }
  }
};
inline constexpr NmShuffleTable kNmShuffle{};

// 32 bytes: element j of the block is kept byte rank(j) of `kept` (16 bytes,
// the same in both 128-bit lanes), or 0.
HWY_INLINE __m256i NmExpandBytes(const uint8_t* mask, __m256i kept) {
  const uint64_t* t = kNmShuffle.c.data();
  const auto half = [&](int i) {
    const __m128i lo = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(t + 256 * i + mask[i]));
    return _mm_castpd_si128(_mm_loadh_pd(
        _mm_castsi128_pd(lo), reinterpret_cast<const double*>(t + 256 * (i + 1) + mask[i + 1])));
  };
  const __m256i ctrl = _mm256_inserti128_si256(_mm256_castsi128_si256(half(0)), half(2), 1);
  return _mm256_shuffle_epi8(kept, ctrl);
}
#else
HWY_INLINE __m256i NmExpandBytes(const uint8_t* mask, __m256i kept) {
  return _mm256_maskz_expand_epi8(detail::nm_mask(mask), kept);
}
#endif

// A block's 16 kept q8_0 levels (stored + 128) as signed bytes in both lanes.
HWY_INLINE __m256i NmKeptQ8(const uint8_t* qs) {
  const __m256i v =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
  return _mm256_xor_si256(v, _mm256_set1_epi8(static_cast<char>(0x80)));
}

// A block's 16 kept q4_0 levels (8 bytes of nibbles) minus 8, in [-8, 7], in
// both lanes.
HWY_INLINE __m256i NmKeptQ4(const uint8_t* qs) {
  int64_t v;
  std::memcpy(&v, qs, 8);
  const __m256i q = _mm256_set1_epi64x(v);
  const __m256i lv =
      _mm256_and_si256(_mm256_unpacklo_epi64(q, _mm256_srli_epi16(q, 4)), _mm256_set1_epi8(0x0F));
  return _mm256_sub_epi8(lv, _mm256_set1_epi8(8));
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
      const __m256i q = NmExpandBytes(mask + 4 * i, NmKeptQ8(qs + 16 * i));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 2), q);
    }
    return;
  }
  for (int64_t i = 0; i < nb; ++i, dst += sizeof(BlockQ4_0)) {
    std::memcpy(dst, d + 2 * i, 2);
    // Dropped elements are level 8 (zero): expand level - 8, then add 8 back.
    const __m256i e =
        _mm256_add_epi8(NmExpandBytes(mask + 4 * i, NmKeptQ4(qs + 8 * i)), _mm256_set1_epi8(8));
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
