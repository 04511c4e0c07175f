// q4_0, q4_1 and q8_0 on AVX512-VNNI, in block-sum order: a one-row kernel
// for one token, a row-block kernel for more, and a tile kernel for the rows
// past the last whole 16, all with the same arithmetic, so that which one
// computes a (row, token) never changes it.
//
// Block-sum order, per (row, token): S_b = the exact int32 sum of block b's
// 32 products; acc[b % 8] = fma(float(S_b), d_w x d_a, acc[b % 8]), then for
// q4_1 acc[b % 8] = fma(m_w, s_a, acc[b % 8]) (the weight minimum times the
// activation's scaled sum); the result is
// ((acc0+acc4)+(acc2+acc6)) + ((acc1+acc5)+(acc3+acc7)). ggml (and snug's AVX2
// and AVX3 targets) keeps eight accumulators per block instead, one per group
// of 4 products, and sums the minimums apart: 8 float multiply-adds per block
// where this takes one. Fewer roundings, so no less accurate
// (tests/tensor/simd_test holds it against the exact product); not llama.cpp's
// bits, which snug promises only on its AVX2 target (tests/reference/arith.py).
//
// Row-block kernel: sixteen weight rows sit in the sixteen int32 lanes of a
// zmm register, so one vpdpbusd does four multiply-adds for each of 16 rows
// against one token's broadcast activation bytes. A weight block of 16 rows is
// repacked once per pass (transposed so that group k of all 16 rows is one
// register; q4_0's and q4_1's nibbles stay packed until the tokens' pass
// splits them) into a chunk on the stack; the tokens then read it from L1,
// up to eight at a time (VTokensWide: a block's registers loaded, and its
// nibbles split, once for all of them; VTokensSum for one or two). A matrix packed once at load
// (MatView::packed, PackVnni) holds these chunks for every 16 rows in as many bytes as the file's
// rows, and the kernel reads them in place at any number of tokens. Offset formats (q4_0 levels q -
// 8, q8_0 stored here as level + 128) start each sum at -offset x the sum of the token's
// activations, which keeps it exact.
//
// One-row kernel (VRowSum): qrow_vnni-inl.h. Tile kernel: qdot_avx2-inl.h's
// TileQ32Sum (its block sums by one 256-bit vpdpbusd each here), shared with
// AVX2 and AVX3.
#if defined(SNUG_TENSOR_QGEMM_VNNI_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SNUG_TENSOR_QGEMM_VNNI_INL_H_
#undef SNUG_TENSOR_QGEMM_VNNI_INL_H_
#else
#define SNUG_TENSOR_QGEMM_VNNI_INL_H_
#endif

#include <hwy/highway.h>

#include "tensor/qdot_avx2-inl.h"
#include "tensor/simd_x86.h"

#if SNUG_X86_VNNI512
#include <immintrin.h>

#include <array>
#include <cstddef>
#include <cstring>
#include <type_traits>
#include <utility>

#include "tensor/dtype.h"
#include "tensor/quant_blocks.h"

HWY_BEFORE_NAMESPACE();
SNUG_BEGIN_VNNI
namespace snug::tensor::HWY_NAMESPACE {

inline constexpr int kVRows = 16;   // weight rows per register (int32 lanes)
inline constexpr int kVChunk = 16;  // weight blocks repacked at a time
// Rows of up to this many blocks of 8 registers (twice as many of 4: q4_0's
// and q4_1's packed nibbles, VChunkMax) are repacked as one chunk: an
// 18-block row (576 wide) in chunks of 16 and 2 spent a pass, its setup and
// its accumulators' loads and stores, on two blocks; and a row in one chunk
// is repacked once for all its token groups (MatmulVnni).
inline constexpr int kVChunkMax = 24;
inline constexpr int kVToks = 16;      // tokens whose accumulators one pass keeps
inline constexpr int kVSpanToks = 64;  // tokens a row in several chunks keeps (MatmulVnni)
// How many 16-row groups ahead a packed matrix is asked for: one group
// (18-34 KiB for a 2048-wide row) is too little lead from DRAM.
inline constexpr int64_t kPackedAhead = 2;

// One repacked chunk of 16 rows x up to VChunkMax<F>() blocks. A block's levels take 8
// registers, lane r of register k holding row r's unsigned levels 4k..4k+3;
// q4_0's and q4_1's take 4, lane r of register k holding the bytes 4k..4k+3
// of row r's packed nibbles (levels 4k..4k+3 low, 16+4k..16+4k+3 high), which
// VTokensSum splits (VRegs); q5_0's and q5_1's those 4 and their fifth bits
// as eight byte masks (FifthBitMasks).
struct alignas(64) VPack {
  __m512i w[kVChunkMax * 8];  // block b's registers from b x StackRegs<F>()
  __m256i d[kVChunkMax * 2];  // weight scales (f16, lane r: row r), blocks of 4 registers
  __m256i m[kVChunkMax * 2];  // weight minimums (q4_1, f16)
};

// Registers per block of a packed matrix (PackVnni): 4 where the nibbles are
// kept packed, and a fifth for q5_0's and q5_1's fifth bits (FifthBitMasks).
template <class F>
constexpr int VRegs() {
  if constexpr (F::kQ4) return F::kQh < 0 ? 4 : 5;
  return 8;
}
// And per block of a VPack on the stack: q5_0's and q5_1's levels whole
// there, since several tokens' passes read each chunk (splitting them in
// every pass cost 20-30% of a prompt's products).
template <class F>
constexpr int StackRegs() {
  return F::kQh >= 0 ? 8 : VRegs<F>();
}
// The most blocks a VPack holds, and so a chunk's.
template <class F>
constexpr int VChunkMax() {
  return kVChunkMax * 8 / StackRegs<F>();
}

// Where VTokensSum reads a chunk's repacked blocks: a VPack on the stack, or
// a row group of a matrix packed once at load (PackVnni).
struct VPackView {
  const __m512i* w;
  const __m256i* d;
  const __m256i* m;
};
HWY_INLINE VPackView ViewOf(const VPack& p) {
  return {p.w, p.d, p.m};
}

// A token's state between chunks: the eight accumulators (block % 8) of 16 rows.
struct alignas(64) VAcc {
  __m512 g[8];
};

// The 16 rows' results: ((g0+g4)+(g2+g6)) + ((g1+g5)+(g3+g7)), Hsum's tree.
HWY_INLINE __m512 VAccSum(const VAcc& a) {
  const __m512* g = a.g;
  const __m512 even = _mm512_add_ps(_mm512_add_ps(g[0], g[4]), _mm512_add_ps(g[2], g[6]));
  const __m512 odd = _mm512_add_ps(_mm512_add_ps(g[1], g[5]), _mm512_add_ps(g[3], g[7]));
  return _mm512_add_ps(even, odd);
}

// out[k] lane r = 32-bit word k of the 16 bytes at base + r * stride.
HWY_INLINE void Transpose16x4(const uint8_t* base, int64_t stride, __m512i out[4]) {
  __m512i z[4];  // z[g], 128-bit lane L: row 4L + g
  for (int g = 0; g < 4; ++g) {
    const auto row = [&](int r) {
      return _mm_loadu_si128(reinterpret_cast<const __m128i*>(base + r * stride));
    };
    __m512i v = _mm512_castsi128_si512(row(g));
    v = _mm512_inserti32x4(v, row(4 + g), 1);
    v = _mm512_inserti32x4(v, row(8 + g), 2);
    z[g] = _mm512_inserti32x4(v, row(12 + g), 3);
  }
  const __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]);
  const __m512i t1 = _mm512_unpackhi_epi32(z[0], z[1]);
  const __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]);
  const __m512i t3 = _mm512_unpackhi_epi32(z[2], z[3]);
  out[0] = _mm512_unpacklo_epi64(t0, t2);
  out[1] = _mm512_unpackhi_epi64(t0, t2);
  out[2] = _mm512_unpacklo_epi64(t1, t3);
  out[3] = _mm512_unpackhi_epi64(t1, t3);
}

// Sum of the 8 int32 lanes (exact).
HWY_INLINE int32_t HsumI32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// Where a format keeps its parts, and how its levels are made.
struct VQ4_0 {
  using Block = BlockQ4_0;
  static constexpr bool kQ4 = true;  // nibbles
  static constexpr int kOffset = 8;  // levels q - 8
  static constexpr bool kMin = false;
  static constexpr int kQs = offsetof(BlockQ4_0, qs);
  static constexpr bool kSparse = false;
  static constexpr int kQh = -1;  // no fifth bits
};
struct VQ4_1 {
  using Block = BlockQ4_1;
  static constexpr bool kQ4 = true;  // nibbles
  static constexpr int kOffset = 0;
  static constexpr bool kMin = true;
  static constexpr int kQs = offsetof(BlockQ4_1, qs);
  static constexpr bool kSparse = false;
  static constexpr int kQh = -1;  // no fifth bits
};
struct VQ8_0 {
  using Block = BlockQ8_0;
  static constexpr bool kQ4 = false;   // nibbles
  static constexpr int kOffset = 128;  // int8 levels, stored here as level + 128
  static constexpr bool kMin = false;
  static constexpr int kQs = offsetof(BlockQ8_0, qs);
  static constexpr bool kSparse = false;
  static constexpr int kQh = -1;  // no fifth bits
};
// q5_0 and q5_1: q4_0's and q4_1's nibbles with a fifth bit each, bit j of
// the 32-bit qh for element j (q5_0's levels q - 16).
struct VQ5_0 {
  using Block = BlockQ5_0;
  static constexpr bool kQ4 = true;
  static constexpr int kOffset = 16;
  static constexpr bool kMin = false;
  static constexpr int kQs = offsetof(BlockQ5_0, qs);
  static constexpr bool kSparse = false;
  static constexpr int kQh = offsetof(BlockQ5_0, qh);
};
struct VQ5_1 {
  using Block = BlockQ5_1;
  static constexpr bool kQ4 = true;
  static constexpr int kOffset = 0;
  static constexpr bool kMin = true;
  static constexpr int kQs = offsetof(BlockQ5_1, qs);
  static constexpr bool kSparse = false;
  static constexpr int kQh = offsetof(BlockQ5_1, qh);
};
// snug's N:M-sparse formats (quant_blocks.h): each block expanded to the 32
// levels of the dense block it stands for, q8_0's then flipped as VQ8_0's,
// q4_0's unsigned with 8 where an element was dropped, so both take the
// dense formats' integer sums and give their bits.
struct VQ8_0NM {
  using Block = BlockQ8_0NM;
  static constexpr bool kQ4 = false;
  static constexpr int kOffset = 128;
  static constexpr bool kMin = false;
  static constexpr int kQs = offsetof(BlockQ8_0NM, qs);
  static constexpr bool kSparse = true;
  static constexpr int kQh = -1;  // no fifth bits
};
struct VQ4_0NM {
  using Block = BlockQ4_0NM;
  static constexpr bool kQ4 = false;  // expanded to one level per byte
  static constexpr int kOffset = 8;
  static constexpr bool kMin = false;
  static constexpr int kQs = offsetof(BlockQ4_0NM, qs);
  static constexpr bool kSparse = true;
  static constexpr int kQh = -1;  // no fifth bits
};

// The 32 unsigned levels the row-block kernel takes for one sparse block,
// from its mask and kept levels: q8_0's level + 128 (as stored), q4_0's
// level, and level zero (128, 8) where dropped.
template <class F>
HWY_INLINE __m256i NmLevels(const uint8_t* mask, const uint8_t* qs) {
  uint32_t m;
  std::memcpy(&m, mask, 4);
  if constexpr (std::is_same_v<F, VQ8_0NM>) {
    const __m128i kept = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
    return _mm256_mask_expand_epi8(_mm256_set1_epi8(static_cast<char>(0x80)), m,
                                   _mm256_zextsi128_si256(kept));
  } else {
    const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs));
    const __m128i lv =
        _mm_and_si128(_mm_unpacklo_epi64(q, _mm_srli_epi16(q, 4)), _mm_set1_epi8(0x0F));
    return _mm256_mask_expand_epi8(_mm256_set1_epi8(8), m, _mm256_zextsi128_si256(lv));
  }
}

// Prefetches this block's slice of the lines [pf0, pf1) (of nb blocks) into
// L2 only (prefetcht1). Into L1, a next group's lines (a group ahead of the
// one being repacked from DRAM, or a packed matrix's group after next) held
// the L1 miss buffers while the current group streamed in, and pushed out the
// chunk and activations the passes read: kernels_bench on Zen 4, the q8_0 head
// (49152x576) mapped, 2.1-2.4 -> 1.6 ms at two tokens, 2.2-2.6 -> 1.8-2.0 at
// four; 49152x2048 q4_1 at four tokens 9.0-9.2 -> 5.5-5.9 ms; sixteen tokens
// within the noise.
HWY_INLINE void PrefetchSlice(const uint8_t* pf, int64_t pf0, int64_t pf1, int b, int nb) {
  for (int64_t l = pf0 + (pf1 - pf0) * b / nb; l < pf0 + (pf1 - pf0) * (b + 1) / nb; ++l) {
    _mm_prefetch(reinterpret_cast<const char*>(pf + 64 * l), _MM_HINT_T1);
  }
}

// q5_0's and q5_1's fifth bits for 16 rows (qh lane r: row r's 32 bits, bit
// j for element j) as eight 64-bit byte masks in one register: mask k's bit
// 4r + i is element 4k + i's bit of row r, the byte of level register k that
// takes +16 (VTokensSum). One vpshufbitqmb each: byte j of the control picks
// bit 32 x (row r = j / 4 odd) + 4k + j % 4 of its 64-bit lane.
struct alignas(64) FifthBitIdx {
  uint8_t k[8][64];
};
inline constexpr FifthBitIdx kFifthBitIdx = [] {
  FifthBitIdx x{};
  for (int k = 0; k < 8; ++k) {
    for (int j = 0; j < 64; ++j)
      x.k[k][j] = static_cast<uint8_t>(32 * ((j / 4) % 2) + 4 * k + j % 4);
  }
  return x;
}();
HWY_INLINE __m512i FifthBitMasks(__m512i qh) {
  alignas(64) uint64_t m[8];
  for (int k = 0; k < 8; ++k) {
    m[k] = _mm512_bitshuffle_epi64_mask(qh, _mm512_load_si512(kFifthBitIdx.k[k]));
  }
  return _mm512_load_si512(m);
}

// A block's levels for 16 rows in a packed matrix's form (VRegs<F>()
// registers) from the file's rows at blk (row stride `stride`).
template <class F>
HWY_INLINE void RawBlock(const uint8_t* blk, int64_t stride, __m512i* g) {
  if constexpr (std::is_same_v<F, VQ8_0>) {
    Transpose16x4(blk + F::kQs, stride, g);
    Transpose16x4(blk + F::kQs + 16, stride, g + 4);
    const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
    for (int k = 0; k < 8; ++k) g[k] = _mm512_xor_si512(g[k], flip);
  } else {
    // Element j < 16 is the low nibble of qs[j], element j + 16 its high
    // one; SplitLevels splits them.
    Transpose16x4(blk + F::kQs, stride, g);
    if constexpr (F::kQh >= 0) {
      alignas(64) int32_t qh32[kVRows];
      for (int r = 0; r < kVRows; ++r) std::memcpy(&qh32[r], blk + r * stride + F::kQh, 4);
      g[4] = FifthBitMasks(_mm512_load_si512(qh32));
    }
  }
}

// The 8 level registers of a block kept as nibbles (kRegs 4), or as nibbles
// and q5's fifth-bit masks (kRegs 5): level register k, lane r, holds row r's
// levels 4k..4k+3.
template <int kRegs>
HWY_INLINE void SplitLevels(const __m512i* raw, __m512i* out) {
  static_assert(kRegs == 4 || kRegs == 5);
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  for (int k = 0; k < 4; ++k) {
    out[k] = _mm512_and_si512(raw[k], low4);
    out[k + 4] = _mm512_and_si512(_mm512_srli_epi32(raw[k], 4), low4);
  }
  if constexpr (kRegs == 5) {
    for (int k = 0; k < 8; ++k) {
      uint64_t fifth;
      std::memcpy(&fifth, reinterpret_cast<const uint8_t*>(raw + 4) + 8 * k, 8);
      out[k] = _mm512_mask_add_epi8(out[k], fifth, out[k], _mm512_set1_epi8(16));
    }
  }
}

// A block's 8 level registers from its kRegs stored ones: split (kRegs 4
// or 5) or copied (kRegs 8) into `out`, so that a pass over several tokens
// holds them in registers (read through p.w, they were loaded again for
// every token: the accumulators' stores may alias them).
template <int kRegs>
HWY_INLINE void LevelRegs(const __m512i* stored, __m512i* out) {
  if constexpr (kRegs < 8) {
    SplitLevels<kRegs>(stored, out);
  } else {
    for (int k = 0; k < 8; ++k) out[k] = stored[k];
  }
}

// A block's f16 scales (and q4_1's/q5_1's minimums) for 16 rows, lane r:
// row r's. Every block starts with its scale, the minimum after it. (Scalar
// loads: on Zen 4 they beat vpgatherdd.)
template <class F>
HWY_INLINE void BlockScales(const uint8_t* blk, int64_t stride, __m256i* d, __m256i* m) {
  alignas(64) int32_t dm32[kVRows];
  for (int r = 0; r < kVRows; ++r) std::memcpy(&dm32[r], blk + r * stride, 4);
  const __m512i dm = _mm512_load_si512(dm32);
  *d = _mm512_cvtepi32_epi16(dm);
  if constexpr (F::kMin) *m = _mm512_cvtepi32_epi16(_mm512_srli_epi32(dm, 16));
}

// Repacks blocks [0, nb) of 16 rows starting at w (row stride `stride`).
template <class F>
// With one pass over the chunk (a single token), the prefetch of the next
// row block's lines [pf0, pf1) is spread over the blocks here.
HWY_INLINE void Repack(const uint8_t* w, int64_t stride, int nb, VPack& p, const uint8_t* pf,
                       int64_t pf0, int64_t pf1) {
  constexpr int64_t kBytes = sizeof(typename F::Block);
  for (int b = 0; b < nb; ++b) {
    PrefetchSlice(pf, pf0, pf1, b, nb);
    const uint8_t* blk = w + b * kBytes;
    BlockScales<F>(blk, stride, &p.d[b], &p.m[b]);
    __m512i* g = p.w + b * StackRegs<F>();
    if constexpr (StackRegs<F>() == VRegs<F>()) {
      RawBlock<F>(blk, stride, g);
    } else {
      __m512i raw[VRegs<F>()];
      RawBlock<F>(blk, stride, raw);
      SplitLevels<VRegs<F>()>(raw, g);
    }
  }
}

// Repack for the sparse formats: blocks [c0, c0 + nb) of 16 rows of nblocks
// blocks each starting at w (row stride `stride`), each expanded to the
// unsigned levels of its dense block (NmLevels), then transposed as VQ8_0's.
template <class F>
HWY_INLINE void RepackNm(const uint8_t* w, int64_t stride, int64_t nblocks, int c0, int nb,
                         VPack& p, const uint8_t* pf, int64_t pf0, int64_t pf1) {
  constexpr int64_t kKept = sizeof(F::Block::qs);
  for (int b = 0; b < nb; ++b) {
    PrefetchSlice(pf, pf0, pf1, b, nb);
    const int64_t gb = c0 + b;
    alignas(64) int32_t d32[kVRows];
    alignas(64) uint8_t lv[kVRows][kQK];
    for (int r = 0; r < kVRows; ++r) {
      const uint8_t* row = w + r * stride;
      uint16_t d;
      std::memcpy(&d, row + 2 * gb, 2);
      d32[r] = d;
      _mm256_store_si256(reinterpret_cast<__m256i*>(lv[r]),
                         NmLevels<F>(row + 2 * nblocks + 4 * gb, row + 6 * nblocks + kKept * gb));
    }
    p.d[b] = _mm512_cvtepi32_epi16(_mm512_load_si512(d32));
    __m512i* g = p.w + b * 8;
    Transpose16x4(lv[0], kQK, g);
    Transpose16x4(lv[0] + 16, kQK, g + 4);
  }
}

// The block sum of one token against 16 rows: start plus the exact int32 sum
// of the block's 32 products per row (lane), in two chains of four vpdpbusd
// (one chain of eight measured 10% slower in a 16-token pass on the Xeon,
// four of two 5%: a vpaddd more or less per token and block weighs against
// the chains' latency).
HWY_INLINE __m512i BlockSumFrom(const __m512i* w, const int8_t* x, int32_t start) {
  __m512i lo = _mm512_set1_epi32(start);
  __m512i hi = _mm512_setzero_si512();
  for (int k = 0; k < 4; ++k) {
    int32_t v0, v1;
    std::memcpy(&v0, x + 4 * k, 4);
    std::memcpy(&v1, x + 16 + 4 * k, 4);
    lo = _mm512_dpbusd_epi32(lo, w[k], _mm512_set1_epi32(v0));
    hi = _mm512_dpbusd_epi32(hi, w[k + 4], _mm512_set1_epi32(v1));
  }
  return _mm512_add_epi32(lo, hi);
}
// init: -offset x the sum of the token's 32 activations (offset formats).
template <class F>
HWY_INLINE __m512i BlockSum(const __m512i* w, const int8_t* x, int32_t init) {
  return BlockSumFrom(w, x, F::kOffset ? init : 0);
}

// BlockSum as floats, made without vcvtdq2ps (a port-0 uop on Intel, where
// 512-bit vpdpbusd also runs): the sum starts at the bits of 1.5 x 2^23, so
// that, |S| < 2^22, its int32 end is the float 1.5 x 2^23 + S (the exponent
// fixed, S in the mantissa), and subtracting 1.5 x 2^23 leaves S exactly,
// the float vcvtdq2ps gives: the same bits. The largest |S| is q8_0's:
// 32 x 255 x 127 + 128 x 32 x 127 < 2^21. kernels_bench, Emerald Rapids:
// q4_1 passes of 8 and 16 tokens 1-3% faster, q8_0's unchanged.
inline constexpr int32_t kFloatMagicBits = 0x4B400000;  // 1.5 x 2^23
inline constexpr float kFloatMagic = 12582912.0f;
template <class F>
HWY_INLINE __m512 BlockSumF(const __m512i* w, const int8_t* x, int32_t init) {
  const __m512i s = BlockSumFrom(w, x, kFloatMagicBits + (F::kOffset ? init : 0));
  return _mm512_sub_ps(_mm512_castsi512_ps(s), _mm512_set1_ps(kFloatMagic));
}

// T tokens (1 or 2) against one repacked chunk of nb blocks, in block-sum
// order: acc[b % 8] = fma(float(S_b), d_w x d_a, acc[b % 8]), then for q4_1
// acc[b % 8] = fma(m_w, s_a, acc[b % 8]). a[t]: token t's activation blocks of
// the chunk; co[t]: for offset formats, -offset x the sum of each block's
// activations. first: the chunk is the row's first (the chunk starts at a
// multiple of 8 blocks, so b % 8 is the row's). The accumulators are named
// variables: as arrays, GCC 12 kept some in memory.
template <class F, int T, int kRegs = StackRegs<F>()>
HWY_NOINLINE void VTokensSum(const VPackView& p, int nb, const BlockQ8A* const* a,
                             const int32_t* const* co, bool first, VAcc* acc,
                             const uint8_t* pf = nullptr, int64_t pf0 = 0, int64_t pf1 = 0) {
  static_assert(T == 1 || T == 2);
  static_assert(kVChunk % 8 == 0);
  constexpr int t1 = T - 1;  // the second token, or the first again when T = 1
  __m512 s0_0, s0_1, s0_2, s0_3, s0_4, s0_5, s0_6, s0_7;
  __m512 s1_0, s1_1, s1_2, s1_3, s1_4, s1_5, s1_6, s1_7;
#define SNUG_VLOAD(t, j)                                               \
  do {                                                                 \
    s##t##_##j = first ? _mm512_setzero_ps() : acc[(t) ? t1 : 0].g[j]; \
  } while (0)
  SNUG_VLOAD(0, 0);
  SNUG_VLOAD(0, 1);
  SNUG_VLOAD(0, 2);
  SNUG_VLOAD(0, 3);
  SNUG_VLOAD(0, 4);
  SNUG_VLOAD(0, 5);
  SNUG_VLOAD(0, 6);
  SNUG_VLOAD(0, 7);
  SNUG_VLOAD(1, 0);
  SNUG_VLOAD(1, 1);
  SNUG_VLOAD(1, 2);
  SNUG_VLOAD(1, 3);
  SNUG_VLOAD(1, 4);
  SNUG_VLOAD(1, 5);
  SNUG_VLOAD(1, 6);
  SNUG_VLOAD(1, 7);
#undef SNUG_VLOAD
  for (int b = 0; b < nb; b += 8) {
#define SNUG_VBLOCK(j)                                                                            \
  do {                                                                                            \
    const int bj = b + (j);                                                                       \
    if (bj >= nb) break;                                                                          \
    if (pf != nullptr) PrefetchSlice(pf, pf0, pf1, bj, nb);                                       \
    __m512i wb[8];                                                                                \
    LevelRegs<kRegs>(p.w + bj * kRegs, wb);                                                       \
    const __m512 dw = _mm512_cvtph_ps(p.d[bj]);                                                   \
    const __m512 mw = F::kMin ? _mm512_cvtph_ps(p.m[bj]) : dw;                                    \
    const BlockQ8A& x0 = a[0][bj];                                                                \
    const __m512 d0 = _mm512_mul_ps(dw, _mm512_set1_ps(x0.d));                                    \
    s0_##j = _mm512_fmadd_ps(BlockSumF<F>(wb, x0.qs, F::kOffset ? co[0][bj] : 0), d0, s0_##j);    \
    if constexpr (F::kMin) s0_##j = _mm512_fmadd_ps(mw, _mm512_set1_ps(x0.s), s0_##j);            \
    if constexpr (T == 2) {                                                                       \
      const BlockQ8A& x1 = a[t1][bj];                                                             \
      const __m512 d1 = _mm512_mul_ps(dw, _mm512_set1_ps(x1.d));                                  \
      s1_##j = _mm512_fmadd_ps(BlockSumF<F>(wb, x1.qs, F::kOffset ? co[t1][bj] : 0), d1, s1_##j); \
      if constexpr (F::kMin) s1_##j = _mm512_fmadd_ps(mw, _mm512_set1_ps(x1.s), s1_##j);          \
    }                                                                                             \
  } while (0)
    SNUG_VBLOCK(0);
    SNUG_VBLOCK(1);
    SNUG_VBLOCK(2);
    SNUG_VBLOCK(3);
    SNUG_VBLOCK(4);
    SNUG_VBLOCK(5);
    SNUG_VBLOCK(6);
    SNUG_VBLOCK(7);
#undef SNUG_VBLOCK
  }
#define SNUG_VSTORE(t, j)     \
  do {                        \
    acc[t].g[j] = s##t##_##j; \
  } while (0)
  SNUG_VSTORE(0, 0);
  SNUG_VSTORE(0, 1);
  SNUG_VSTORE(0, 2);
  SNUG_VSTORE(0, 3);
  SNUG_VSTORE(0, 4);
  SNUG_VSTORE(0, 5);
  SNUG_VSTORE(0, 6);
  SNUG_VSTORE(0, 7);
  if constexpr (T == 2) {
    SNUG_VSTORE(1, 0);
    SNUG_VSTORE(1, 1);
    SNUG_VSTORE(1, 2);
    SNUG_VSTORE(1, 3);
    SNUG_VSTORE(1, 4);
    SNUG_VSTORE(1, 5);
    SNUG_VSTORE(1, 6);
    SNUG_VSTORE(1, 7);
  }
#undef SNUG_VSTORE
}

// VTokensSum for T = 3..kVWideToks tokens: each block's registers loaded
// (and split) once for all of them, and the tokens' accumulators kept in acc
// (memory) instead of registers: the same fmas in the same order, so the
// same bits. With two tokens a pass, a weight load and an activation
// broadcast went with every vpdpbusd. Blocks of 8 registers (q8_0, and q5
// and the sparse formats on the stack) take it too: kernels_bench q8_0
// 49152x576 at 16 tokens 6.8 -> 4.8 ms, 576x1536 159 -> 119 us.
inline constexpr int kVWideToks = 8;
template <class F, int T, int kRegs>
HWY_NOINLINE void VTokensWide(const VPackView& p, int nb, const BlockQ8A* const* a,
                              const int32_t* const* co, bool first, VAcc* acc, const uint8_t* pf,
                              int64_t pf0, int64_t pf1) {
  static_assert(T >= 3 && T <= kVWideToks && kRegs <= 8);
  static_assert(kVChunk % 8 == 0);
  if (first) {
    for (int t = 0; t < T; ++t) {
      for (__m512& g : acc[t].g) g = _mm512_setzero_ps();
    }
  }
  for (int b = 0; b < nb; ++b) {
    PrefetchSlice(pf, pf0, pf1, b, nb);
    __m512i wb[8];
    LevelRegs<kRegs>(p.w + b * kRegs, wb);
    const __m512 dw = _mm512_cvtph_ps(p.d[b]);
    const __m512 mw = F::kMin ? _mm512_cvtph_ps(p.m[b]) : dw;
    for (int t = 0; t < T; ++t) {
      const BlockQ8A& x = a[t][b];
      const __m512 dt = _mm512_mul_ps(dw, _mm512_set1_ps(x.d));
      __m512 g = acc[t].g[b % 8];
      g = _mm512_fmadd_ps(BlockSumF<F>(wb, x.qs, F::kOffset ? co[t][b] : 0), dt, g);
      if constexpr (F::kMin) g = _mm512_fmadd_ps(mw, _mm512_set1_ps(x.s), g);
      acc[t].g[b % 8] = g;
    }
  }
}

// VTokensWide for n = 3..kVWideToks tokens, n known at run time.
template <class F, int kRegs>
HWY_INLINE void VTokensWideN(int n, const VPackView& p, int nb, const BlockQ8A* const* a,
                             const int32_t* const* co, bool first, VAcc* acc, const uint8_t* pf,
                             int64_t pf0, int64_t pf1) {
  static constexpr auto kPasses = []<int... I>(std::integer_sequence<int, I...>) {
    return std::array{&VTokensWide<F, I + 3, kRegs>...};
  }
  (std::make_integer_sequence<int, kVWideToks - 2>{});
  kPasses[n - 3](p, nb, a, co, first, acc, pf, pf0, pf1);
}

// A matrix packed once for the row-block kernel (PackVnni): per group of 16
// rows, the repacked registers of every block, then the blocks' f16 scales,
// then (q4_1) their f16 minimums, padded to 64 bytes: what Repack leaves in a
// VPack, for the whole row, in as many bytes as the 16 rows take in the file
// (but for that padding).
template <class F>
constexpr int64_t PackedGroupBytes(int64_t nblocks) {
  return (nblocks * (64 * VRegs<F>() + 32 * (F::kMin ? 2 : 1)) + 63) / 64 * 64;
}
template <class F>
HWY_INLINE VPackView PackedView(const uint8_t* group, int64_t nblocks, int c0) {
  const auto* w = reinterpret_cast<const __m512i*>(group);
  const auto* d = reinterpret_cast<const __m256i*>(group + nblocks * 64 * VRegs<F>());
  return {w + c0 * VRegs<F>(), d + c0, F::kMin ? d + nblocks + c0 : nullptr};
}
// Packs the whole 16-row groups of the matrix into out (64-byte aligned).
template <class F>
void PackVnni(const uint8_t* wd, int64_t row_bytes, int64_t cols, int64_t rows, uint8_t* out) {
  const int nblocks = static_cast<int>(cols / kQK);
  for (int64_t g = 0; g < rows / kVRows; ++g) {
    uint8_t* grp = out + g * PackedGroupBytes<F>(nblocks);
    auto* w = reinterpret_cast<__m512i*>(grp);
    auto* d = reinterpret_cast<__m256i*>(grp + nblocks * 64 * VRegs<F>());
    for (int b = 0; b < nblocks; ++b) {
      const uint8_t* blk =
          wd + g * kVRows * row_bytes + b * static_cast<int64_t>(sizeof(typename F::Block));
      BlockScales<F>(blk, row_bytes, d + b, F::kMin ? d + nblocks + b : nullptr);
      RawBlock<F>(blk, row_bytes, w + b * VRegs<F>());
    }
  }
}

// Blocks [b0, b1) of row r of a packed matrix back in the file's layout, at
// out: byte i of lane r % 16 of each of the row's registers (PackVnni).
template <class F>
void UnpackVnni(const uint8_t* packed, int64_t nblocks, int64_t r, int64_t b0, int64_t b1,
                uint8_t* out) {
  using Block = typename F::Block;
  const uint8_t* grp = packed + r / kVRows * PackedGroupBytes<F>(nblocks);
  const int lane = static_cast<int>(r % kVRows);
  const uint8_t* d = grp + nblocks * 64 * VRegs<F>();
  for (int64_t b = b0; b < b1; ++b) {
    uint8_t* blk = out + (b - b0) * static_cast<int64_t>(sizeof(Block));
    const uint8_t* regs = grp + b * 64 * VRegs<F>();
    std::memcpy(blk, d + b * 32 + 2 * lane, 2);
    if constexpr (F::kMin) std::memcpy(blk + 2, d + nblocks * 32 + b * 32 + 2 * lane, 2);
    constexpr int kLevelBytes = F::kQ4 ? 16 : 32;  // register j / 4, byte j % 4
    for (int j = 0; j < kLevelBytes; ++j) {
      const uint8_t v = regs[64 * (j / 4) + 4 * lane + j % 4];
      blk[F::kQs + j] = std::is_same_v<F, VQ8_0> ? static_cast<uint8_t>(v ^ 0x80) : v;
    }
    if constexpr (F::kQh >= 0) {  // element 4k + i's fifth bit: bit 4 lane + i of mask k
      uint32_t qh = 0;
      for (int k = 0; k < 8; ++k) {
        uint64_t mask;
        std::memcpy(&mask, regs + 64 * 4 + 8 * k, 8);
        qh |= static_cast<uint32_t>((mask >> (4 * lane)) & 0xF) << (4 * k);
      }
      std::memcpy(blk + F::kQh, &qh, 4);
    }
  }
}

// y[t * y_stride + r] for rows [r0, r1) (a multiple of 16 apart) and all
// n_tok tokens; act: BlockQ8A rows of act_bytes each. packed: the matrix's
// PackVnni form, read instead of repacking when r0 starts a group; the rows
// are then one stream per group, asked for a group ahead as the file's are.
// r_limit: the rows the passes may ask for ahead run up to there, past r1
// (the matrix's whole 16-row groups: a caller that claims rows piece by
// piece then finds its next piece's first rows on their way).
template <class F>
void MatmulVnni(const uint8_t* wd, int64_t row_bytes, int64_t cols, const uint8_t* act,
                int64_t act_bytes, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                int64_t y_stride, const uint8_t* packed = nullptr, int64_t r_limit = 0) {
  if (r_limit < r1) r_limit = r1;
  const int nblocks = static_cast<int>(cols / kQK);
  if (r0 % kVRows != 0) packed = nullptr;
  VPack pack;
  // The accumulators of up to kVSpanToks tokens: a row in several chunks
  // repacks each chunk once for that many tokens.
  VAcc acc_span[kVSpanToks];
  // Offset formats: -offset x the sum of each block's activations, for every
  // token and block once per call when they fit here (every decode step), else
  // per token group and chunk, as each 16-row block is reached.
  constexpr int kCorrAll = F::kOffset ? 16384 : 1;
  const bool corr_once = n_tok * nblocks <= kCorrAll;
  alignas(32) int32_t corr_all[kCorrAll];
  alignas(32) int32_t corr[F::kOffset ? kVToks : 1][VChunkMax<F>()];
  const int chunk = nblocks <= VChunkMax<F>() ? nblocks : kVChunk;
  const auto act_sum = [](const BlockQ8A& x) {
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qs));
    return -F::kOffset *
           HsumI32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1), q));
  };
  if constexpr (F::kOffset != 0) {
    if (corr_once) {
      for (int64_t t = 0; t < n_tok; ++t) {
        const auto* x = reinterpret_cast<const BlockQ8A*>(act + t * act_bytes);
        for (int b = 0; b < nblocks; ++b) corr_all[t * nblocks + b] = act_sum(x[b]);
      }
    }
  }
  for (int64_t rb = r0; rb + kVRows <= r1; rb += kVRows) {
    // The next 16 rows are one contiguous span that this pass reads in 16
    // interleaved streams, which the hardware prefetchers follow poorly; the
    // first token group's repacking asks for it, a slice per block (at once,
    // the prefetches would stall on full miss buffers).
    // A packed matrix's groups are contiguous. With one pass over a group (one
    // or two tokens) the pass asks for the group after next, into L2
    // (kPackedAhead); with several, each pass a slice of the next, as above.
    const bool stream = packed != nullptr && n_tok <= 2;
    const int64_t ahead_groups = stream ? kPackedAhead : 1;
    const bool ahead = rb + (1 + ahead_groups) * kVRows <= r_limit;
    const int64_t group_bytes = PackedGroupBytes<F>(nblocks);
    const uint8_t* next = packed != nullptr ? packed + (rb / kVRows + ahead_groups) * group_bytes
                                            : wd + (rb + kVRows) * row_bytes;
    const int64_t lines = (packed != nullptr ? group_bytes : kVRows * row_bytes) / 64;
    // One token group's passes over the chunk of nb blocks at c0, repacking it
    // first when `repack` (else the chunk is the one the last call left).
    const auto group = [&](int64_t t0, int c0, int nb, bool repack, VAcc* acc) {
      const int nt = static_cast<int>(n_tok - t0 < kVToks ? n_tok - t0 : kVToks);
      // The next row block's share of this chunk: prefetched while
      // repacking when one pass follows, else a slice after each pass.
      const int passes = (nt + kVWideToks - 1) / kVWideToks;
      const bool prefetch = ahead && t0 == 0;
      const int64_t share0 = lines * c0 / nblocks, share1 = lines * (c0 + nb) / nblocks;
      // A packed chunk read in place has no repacking to carry the prefetch.
      const bool slices = prefetch && (passes > 1 || (packed != nullptr && !stream));
      const int64_t pf1 = prefetch && !slices ? share1 : share0;
      VPackView view = ViewOf(pack);
      // A packed chunk is read in place.
      const bool in_place = packed != nullptr;
      if (in_place) {
        view = PackedView<F>(packed + rb / kVRows * group_bytes, nblocks, c0);
      } else if (repack) {
        if constexpr (F::kSparse) {
          RepackNm<F>(wd + rb * row_bytes, row_bytes, nblocks, c0, nb, pack, next, share0, pf1);
        } else {
          Repack<F>(wd + rb * row_bytes + c0 * static_cast<int64_t>(sizeof(typename F::Block)),
                    row_bytes, nb, pack, next, share0, pf1);
        }
      }
      const BlockQ8A* a[kVToks];
      const int32_t* co[kVToks];
      for (int t = 0; t < nt; ++t) {
        a[t] = reinterpret_cast<const BlockQ8A*>(act + (t0 + t) * act_bytes) + c0;
        co[t] = corr[F::kOffset ? t : 0];
        if constexpr (F::kOffset != 0) {
          if (corr_once) {
            co[t] = corr_all + (t0 + t) * nblocks + c0;
          } else {
            for (int b = 0; b < nb; ++b) corr[t][b] = act_sum(a[t][b]);
          }
        }
      }
      const uint8_t* pf = prefetch && stream ? next : nullptr;  // in the pass, into L2
      // One pass of up to kVWideToks tokens over the chunk, its blocks
      // kRegs registers each.
      const auto pass = [&]<int kRegs>(int t, int64_t l0, int64_t l1) {
        const bool first = c0 == 0;
        const int n = nt - t < kVWideToks ? nt - t : kVWideToks;
        if (n >= 3) {
          return VTokensWideN<F, kRegs>(n, view, nb, a + t, co + t, first, acc + t, next, l0, l1);
        }
        if (n == 2) {
          VTokensSum<F, 2, kRegs>(view, nb, a + t, co + t, first, acc + t, pf, share0, share1);
        } else {
          VTokensSum<F, 1, kRegs>(view, nb, a + t, co + t, first, acc + t, pf, share0, share1);
        }
        if (l0 < l1) PrefetchSlice(next, l0, l1, 0, 1);
      };
      for (int i = 0, t = 0; i < passes; ++i, t += kVWideToks) {
        int64_t l0 = 0, l1 = 0;  // the next row block's slice that this pass asks for
        if (slices) {
          l0 = lines * (c0 * passes + i * nb) / (nblocks * passes);
          l1 = lines * (c0 * passes + (i + 1) * nb) / (nblocks * passes);
        }
        if (in_place) {
          pass.template operator()<VRegs<F>()>(t, l0, l1);
        } else {
          pass.template operator()<StackRegs<F>()>(t, l0, l1);
        }
      }
    };
    // A row repacked as one chunk is repacked once for all the token groups
    // (each group's passes then run from its first block to its last, its
    // accumulators stored after it, so they stay in one place in L1); a
    // longer row once for every kVSpanToks tokens, whose accumulators are
    // kept across its chunks.
    const int64_t span = chunk == nblocks ? kVToks : kVSpanToks;
    for (int64_t s0 = 0; s0 < n_tok; s0 += span) {
      const int64_t s1 = n_tok - s0 < span ? n_tok : s0 + span;
      for (int c0 = 0; c0 < nblocks; c0 += chunk) {
        for (int64_t t0 = s0; t0 < s1; t0 += kVToks) {
          group(t0, c0, nblocks - c0 < chunk ? nblocks - c0 : chunk,
                t0 == s0 && (s0 == 0 || chunk < nblocks), acc_span + (t0 - s0));
        }
      }
      for (int64_t t = s0; t < s1; ++t) {
        _mm512_storeu_ps(y + t * y_stride + rb, VAccSum(acc_span[t - s0]));
      }
    }
  }
}

// Rows [r0, r1) rounded down to whole 16-row blocks by MatmulVnni for the
// formats it has (r_limit as there); returns the first row it did not do (r0
// when none).
HWY_NOINLINE inline int64_t MatmulVnniRows(DType type, const uint8_t* wd, int64_t row_bytes,
                                           int64_t cols, const uint8_t* act, int64_t act_bytes,
                                           int64_t n_tok, int64_t r0, int64_t r1, float* y,
                                           int64_t y_stride, const uint8_t* packed,
                                           int64_t r_limit = 0) {
  const int64_t end = r0 + (r1 - r0) / kVRows * kVRows;
  if (end == r0 || cols < kQK) return r0;
  switch (type) {
    case DType::kQ4_0:
      MatmulVnni<VQ4_0>(wd, row_bytes, cols, act, act_bytes, n_tok, r0, end, y, y_stride, packed,
                        r_limit);
      return end;
    case DType::kQ4_1:
      MatmulVnni<VQ4_1>(wd, row_bytes, cols, act, act_bytes, n_tok, r0, end, y, y_stride, packed,
                        r_limit);
      return end;
    case DType::kQ8_0:
      MatmulVnni<VQ8_0>(wd, row_bytes, cols, act, act_bytes, n_tok, r0, end, y, y_stride, packed,
                        r_limit);
      return end;
    case DType::kQ5_0:
      MatmulVnni<VQ5_0>(wd, row_bytes, cols, act, act_bytes, n_tok, r0, end, y, y_stride, packed,
                        r_limit);
      return end;
    case DType::kQ5_1:
      MatmulVnni<VQ5_1>(wd, row_bytes, cols, act, act_bytes, n_tok, r0, end, y, y_stride, packed,
                        r_limit);
      return end;
    case DType::kQ8_0NM:
      MatmulVnni<VQ8_0NM>(wd, row_bytes, cols, act, act_bytes, n_tok, r0, end, y, y_stride);
      return end;
    case DType::kQ4_0NM:
      MatmulVnni<VQ4_0NM>(wd, row_bytes, cols, act, act_bytes, n_tok, r0, end, y, y_stride);
      return end;
    default:
      return r0;
  }
}

// Bytes PackVnni writes for a rows x cols matrix of `type`, 0 where the
// row-block kernel takes no packed form; *packed_rows: the rows it covers.
HWY_NOINLINE inline int64_t VnniPackedBytes(DType type, int64_t rows, int64_t cols,
                                            int64_t* packed_rows) {
  const int64_t groups = rows / kVRows, nblocks = cols / kQK;
  *packed_rows = type == DType::kQ4_0 || type == DType::kQ4_1 || type == DType::kQ8_0 ||
                         type == DType::kQ5_0 || type == DType::kQ5_1
                     ? groups * kVRows
                     : 0;
  switch (type) {
    case DType::kQ4_0:
      return groups * PackedGroupBytes<VQ4_0>(nblocks);
    case DType::kQ5_0:
      return groups * PackedGroupBytes<VQ5_0>(nblocks);
    case DType::kQ5_1:
      return groups * PackedGroupBytes<VQ5_1>(nblocks);
    case DType::kQ4_1:
      return groups * PackedGroupBytes<VQ4_1>(nblocks);
    case DType::kQ8_0:
      return groups * PackedGroupBytes<VQ8_0>(nblocks);
    default:
      return 0;
  }
}
HWY_NOINLINE inline void UnpackVnniRow(DType type, const uint8_t* packed, int64_t cols, int64_t r,
                                       int64_t b0, int64_t b1, uint8_t* out) {
  const int64_t nblocks = cols / kQK;
  switch (type) {
    case DType::kQ4_0:
      return UnpackVnni<VQ4_0>(packed, nblocks, r, b0, b1, out);
    case DType::kQ4_1:
      return UnpackVnni<VQ4_1>(packed, nblocks, r, b0, b1, out);
    case DType::kQ5_0:
      return UnpackVnni<VQ5_0>(packed, nblocks, r, b0, b1, out);
    case DType::kQ5_1:
      return UnpackVnni<VQ5_1>(packed, nblocks, r, b0, b1, out);
    case DType::kQ8_0:
      return UnpackVnni<VQ8_0>(packed, nblocks, r, b0, b1, out);
    default:
      return;
  }
}
HWY_NOINLINE inline void PackVnniRows(DType type, const uint8_t* wd, int64_t row_bytes,
                                      int64_t cols, int64_t rows, uint8_t* out) {
  switch (type) {
    case DType::kQ4_0:
      return PackVnni<VQ4_0>(wd, row_bytes, cols, rows, out);
    case DType::kQ5_0:
      return PackVnni<VQ5_0>(wd, row_bytes, cols, rows, out);
    case DType::kQ5_1:
      return PackVnni<VQ5_1>(wd, row_bytes, cols, rows, out);
    case DType::kQ4_1:
      return PackVnni<VQ4_1>(wd, row_bytes, cols, rows, out);
    case DType::kQ8_0:
      return PackVnni<VQ8_0>(wd, row_bytes, cols, rows, out);
    default:
      return;
  }
}

}  // namespace snug::tensor::HWY_NAMESPACE
SNUG_END_VNNI
HWY_AFTER_NAMESPACE();

#endif  // SNUG_X86_VNNI512
#endif  // include guard
