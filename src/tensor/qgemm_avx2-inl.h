// q4_0, q4_1, q5_0, q5_1, q8_0 and the N:M-sparse q8_0 and q4_0 against
// several tokens on AVX2 without AVX512-VNNI, in ggml's order, so with the
// same bits as the one-row tile (qdot_avx2-inl.h's TileQ32Avx2) and
// llama.cpp's AVX2 vec_dot (the sparse types: the dense type's bits). q4_0
// takes it always (where llama.cpp does not repack it, qseq_avx2-inl.h); the
// others only with ggml's order asked for (tensor::set_ggml_order), and
// block-sum order otherwise (qsum_avx2-inl.h, which reuses the chunk below).
//
// ggml's order, per (row, token): lane k of an 8-float accumulator takes, for
// every block in turn, fma(float(S_bk), d_w x d_a, acc_k), where S_bk is the
// exact int32 sum of the block's products 4k..4k+3; the row's result is
// ((acc0+acc4)+(acc2+acc6)) + ((acc1+acc5)+(acc3+acc7)) plus, for the formats
// with a minimum, the sum over blocks of m_w x s_a.
//
// The tile spends a vpmaddubsw, a vpmaddwd, a conversion, a multiply-add, the
// scale's multiply and broadcast on every (block, row, token). Here eight
// rows sit in the eight int32 lanes of a register instead: lane r of
// accumulator k is row r's acc_k. A block of eight rows is transposed once
// (register k = the four levels 4k..4k+3 of each row) into a chunk on the
// stack, and each token then takes four or five instructions per register for
// eight rows: its four activation bytes broadcast, vpmaddubsw, vpmaddwd,
// conversion, multiply-add (signed formats: vpsignb moves the weight's sign
// onto the activation, as ggml does, so the bytes multiplied are |w| and
// sign(a, w)). The scale is one multiply per block for the eight rows.
#if defined(SNUG_TENSOR_QGEMM_AVX2_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef SNUG_TENSOR_QGEMM_AVX2_INL_H_
#undef SNUG_TENSOR_QGEMM_AVX2_INL_H_
#else
#define SNUG_TENSOR_QGEMM_AVX2_INL_H_
#endif

#include <hwy/highway.h>

#include "tensor/simd_x86.h"

// AVX3_DL too: qsum_avx2-inl.h's one-token kernel takes SumTree8 from here.
#if SNUG_X86_AVX2
#include <immintrin.h>

#include <cstring>

#include "tensor/dtype.h"
#include "tensor/qdot_avx2-inl.h"
#include "tensor/quant_blocks.h"

HWY_BEFORE_NAMESPACE();
#if SNUG_X86_VNNI512
SNUG_BEGIN_VNNI
#endif
namespace snug::tensor::HWY_NAMESPACE {

inline constexpr int kARows = 8;    // weight rows per register (int32 lanes)
inline constexpr int kAChunk = 16;  // blocks transposed at a time
inline constexpr int kAToks = 32;   // tokens whose accumulators one pass keeps
// Fewest tokens for which the row-block kernel takes whole groups of eight
// rows (the tiles keep the rest and smaller batches).
inline constexpr int64_t kARowBlockTokens = 8;
// How many groups of eight rows ahead the rows are asked for.
inline constexpr int64_t kAAhead = 2;

// Registers per block in a chunk: the unsigned levels, and for the signed
// formats their absolute values beside the signed levels.
template <class F>
constexpr int ARegs() {
  return F::kSigned ? 16 : 8;
}

struct alignas(32) APack {
  __m256i w[kAChunk * 16];
  __m256 d[kAChunk];  // weight scales, lane r: row r
  __m256 m[kAChunk];  // weight minimums (unsigned formats)
};

// Transposes eight rows of eight int32: r[k] lane i becomes r[i] lane k.
HWY_INLINE void Transpose8x8(__m256i r[8]) {
  __m256i t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int h = 0; h < 2; ++h) {  // rows 4h..4h+3
    const __m256i* s = t + 4 * h;
    u[4 * h + 0] = _mm256_unpacklo_epi64(s[0], s[2]);
    u[4 * h + 1] = _mm256_unpackhi_epi64(s[0], s[2]);
    u[4 * h + 2] = _mm256_unpacklo_epi64(s[1], s[3]);
    u[4 * h + 3] = _mm256_unpackhi_epi64(s[1], s[3]);
  }
  for (int k = 0; k < 4; ++k) {
    r[k] = _mm256_permute2x128_si256(u[k], u[4 + k], 0x20);
    r[k + 4] = _mm256_permute2x128_si256(u[k], u[4 + k], 0x31);
  }
}

// Four activation bytes in every dword.
HWY_INLINE __m256i Bcast4(const int8_t* x) {
  int32_t v;
  std::memcpy(&v, x, 4);
  return _mm256_set1_epi32(v);
}

// The rows of a later group, which the hardware prefetchers follow poorly
// from DRAM (eight or sixteen interleaved row streams): bytes [off, off +
// bytes) of `rows` rows from `first` (row_bytes apart), asked for an equal
// share of lines at each of `steps` Step()s, one per block of the pass. Asked
// for all at once, the lines of a sixteen-row group (about a hundred) filled
// the miss buffers and held up the products behind them: head-sized
// matrices, whose rows come from DRAM, took 1.5x the cycles of cached ones
// per block, token and eight rows. Into L2 only, as PrefetchSlice (VNNI)
// does (q4_K 49152x2048 at two and four tokens, Zen 4: 5.8-6.7 -> 4.9 ms,
// 7.9-8.6 -> 7.1-7.2; the other formats within the noise). Rest() asks for
// whatever is left. Default-constructed, it asks for nothing.
class RowsAhead {
 public:
  RowsAhead() = default;
  RowsAhead(const uint8_t* first, int64_t row_bytes, int rows, int64_t off, int64_t bytes,
            int steps)  // steps >= 1
      : row_(first + off),
        row_bytes_(row_bytes),
        lines_((bytes + 63) / 64),
        left_(rows * lines_),
        per_((left_ + steps - 1) / steps) {}
  HWY_INLINE void Step() { Ask(per_); }
  HWY_INLINE void Rest() { Ask(left_); }

 private:
  // The position is walked in locals and stored once: kept in the members,
  // GCC stored them on every line.
  HWY_INLINE void Ask(int64_t n) {
    n = n < left_ ? n : left_;
    left_ -= n;
    const uint8_t* row = row_;
    int64_t line = line_;
    for (; n > 0; --n) {
      _mm_prefetch(reinterpret_cast<const char*>(row + line * 64), _MM_HINT_T1);
      if (++line == lines_) {
        line = 0;
        row += row_bytes_;
      }
    }
    row_ = row;
    line_ = line;
  }

  const uint8_t* row_ = nullptr;
  int64_t row_bytes_ = 0;
  int64_t lines_ = 0;
  int64_t line_ = 0;
  int64_t left_ = 0;
  int64_t per_ = 0;
};

// ((v0+v4)+(v2+v6)) + ((v1+v5)+(v3+v7)) lane by lane: Hsum's tree for eight
// rows at once.
HWY_INLINE __m256 SumTree8(const __m256* v) {
  return _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(v[0], v[4]), _mm256_add_ps(v[2], v[6])),
                       _mm256_add_ps(_mm256_add_ps(v[1], v[5]), _mm256_add_ps(v[3], v[7])));
}

// The loops of the eight-row kernels (MatmulA; MatmulSum and MatmulSum16,
// qsum_avx2-inl.h; MatmulAK, qgemm_k_avx2-inl.h): each whole group of
// kSets x 8 rows from r0 on, below r1, against the tokens in groups of up to
// kAToks whose accumulators start at zero (acc[s * kAToks + t][b % 8], lane
// r: row 8 s + r's); per chunk of up to `chunk` blocks (block_bytes each, on
// average) pass(w, c0, nb, t0, nt, acc, ahead), w the group's first row,
// which calls ahead.Step() once per block: during the first token group it
// asks for the chunk's bytes of the kSets x 8 rows kAAhead eights on; at the
// end y[(t0 + t) * y_stride + rb + 8 s + r] = lane r of
// finish(t, SumTree8(acc[s * kAToks + t])). Returns the first row not
// computed.
template <int kSets = 1, class Pass, class Finish>
HWY_INLINE int64_t EightRowPasses(const uint8_t* wd, int64_t row_bytes, int nblocks, int chunk,
                                  int64_t block_bytes, int64_t n_tok, int64_t r0, int64_t r1,
                                  float* y, int64_t y_stride, const Pass& pass,
                                  const Finish& finish) {
  constexpr int kRows = kSets * kARows;
  alignas(32) __m256 acc[kSets * kAToks][8];
  int64_t rb = r0;
  for (; rb + kRows <= r1; rb += kRows) {
    const uint8_t* w = wd + rb * row_bytes;
    for (int64_t t0 = 0; t0 < n_tok; t0 += kAToks) {
      const int nt = static_cast<int>(n_tok - t0 < kAToks ? n_tok - t0 : kAToks);
      for (int s = 0; s < kSets; ++s) {
        for (int t = 0; t < nt; ++t) {
          for (int k = 0; k < 8; ++k) acc[s * kAToks + t][k] = _mm256_setzero_ps();
        }
      }
      for (int c0 = 0; c0 < nblocks; c0 += chunk) {
        const int nb = nblocks - c0 < chunk ? nblocks - c0 : chunk;
        RowsAhead ahead;
        if (t0 == 0 && rb + kRows + kAAhead * kARows <= r1) {
          ahead = RowsAhead(w + kAAhead * kARows * row_bytes, row_bytes, kRows, c0 * block_bytes,
                            nb * block_bytes, nb);
        }
        pass(w, c0, nb, t0, nt, acc, ahead);
      }
      for (int s = 0; s < kSets; ++s) {
        for (int t = 0; t < nt; ++t) {
          _mm256_storeu_ps(y + (t0 + t) * y_stride + rb + s * kARows,
                           finish(t, SumTree8(acc[s * kAToks + t])));
        }
      }
    }
  }
  return rb;
}

// Blocks [c0, c0 + nb) of eight rows of nblocks blocks (w: row 0) into p.
template <class F>
HWY_INLINE void RepackA(const uint8_t* w, int64_t row_bytes, int64_t nblocks, int64_t c0, int nb,
                        APack& p) {
  for (int b = 0; b < nb; ++b) {
    __m256i r[kARows];
    alignas(16) uint16_t dh[kARows], mh[kARows];
    for (int i = 0; i < kARows; ++i) {
      const uint8_t* row = w + i * row_bytes;
      r[i] = F::LevelsAt(row, nblocks, c0 + b);
      const uint32_t dm = F::ScaleMinBitsAt(row, nblocks, c0 + b);
      dh[i] = static_cast<uint16_t>(dm);
      if constexpr (!F::kSigned) mh[i] = static_cast<uint16_t>(dm >> 16);
    }
    Transpose8x8(r);
    __m256i* out = p.w + b * ARegs<F>();
    for (int k = 0; k < 8; ++k) {
      if constexpr (F::kSigned) {
        out[2 * k] = _mm256_sign_epi8(r[k], r[k]);
        out[2 * k + 1] = r[k];
      } else {
        out[k] = r[k];
      }
    }
    p.d[b] = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(dh)));
    if constexpr (!F::kSigned) {
      p.m[b] = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(mh)));
    }
  }
}

// One token over blocks [0, nb) of a chunk: acc[8] (lane r: row r's acc_k)
// and bias (lane r: row r's sum of m_w x s_a) updated in memory.
template <class F>
HWY_INLINE void TokenA(const APack& p, int nb, const BlockQ8A* a, __m256* acc, __m256* bias) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 s[8];
  for (int k = 0; k < 8; ++k) s[k] = acc[k];
  __m256 bs = *bias;
  for (int b = 0; b < nb; ++b) {
    const __m256 sc = _mm256_mul_ps(p.d[b], _mm256_broadcast_ss(&a[b].d));
    if constexpr (!F::kSigned) {
      bs = _mm256_add_ps(bs, _mm256_mul_ps(p.m[b], _mm256_broadcast_ss(&a[b].s)));
    }
    const __m256i* w = p.w + b * ARegs<F>();
    for (int k = 0; k < 8; ++k) {
      __m256i av = Bcast4(a[b].qs + 4 * k);
      __m256i wu;
      if constexpr (F::kSigned) {
        wu = w[2 * k];
        av = _mm256_sign_epi8(av, w[2 * k + 1]);
      } else {
        wu = w[k];
      }
      const __m256i sum = _mm256_madd_epi16(_mm256_maddubs_epi16(wu, av), ones);
      s[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), sc, s[k]);
    }
  }
  for (int k = 0; k < 8; ++k) acc[k] = s[k];
  *bias = bs;
}

// y[t * y_stride + r] for the whole groups of eight rows from r0 on, below
// r1, and all n_tok tokens; act: BlockQ8A rows of act_bytes each. Returns
// the first row not computed.
template <class F>
int64_t MatmulA(const uint8_t* wd, int64_t row_bytes, int64_t cols, const uint8_t* act,
                int64_t act_bytes, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                int64_t y_stride) {
  const int nblocks = static_cast<int>(cols / kQK);
  // Bytes a block takes on average, for the prefetch (an N:M-sparse row keeps
  // its parts by kind: asking for a chunk's share of the row covers the row).
  const int64_t block_bytes = row_bytes / nblocks;
  APack pack;
  __m256 bias[kAToks];  // zero for the signed formats, added as the tile adds its 0
  const auto pass = [&](const uint8_t* w, int c0, int nb, int64_t t0, int nt, __m256(*acc)[8],
                        RowsAhead& ahead) {
    if (c0 == 0) {
      for (int t = 0; t < nt; ++t) bias[t] = _mm256_setzero_ps();
    }
    RepackA<F>(w, row_bytes, nblocks, c0, nb, pack);
    for (int t = 0; t < nt; ++t) {
      // TokenA walks the chunk's blocks for one token: a share per token,
      // the rest with the last.
      if (t + 1 < nt) {
        ahead.Step();
      } else {
        ahead.Rest();
      }
      const auto* a = reinterpret_cast<const BlockQ8A*>(act + (t0 + t) * act_bytes) + c0;
      TokenA<F>(pack, nb, a, acc[t], &bias[t]);
    }
  };
  return EightRowPasses(wd, row_bytes, nblocks, kAChunk, block_bytes, n_tok, r0, r1, y, y_stride,
                        pass, [&](int t, __m256 sum) { return _mm256_add_ps(sum, bias[t]); });
}

// MatmulA for the formats it takes; other formats compute nothing (r0).
inline int64_t MatmulAvx2Rows(DType type, const uint8_t* wd, int64_t row_bytes, int64_t cols,
                              const uint8_t* act, int64_t act_bytes, int64_t n_tok, int64_t r0,
                              int64_t r1, float* y, int64_t y_stride) {
  if (n_tok < kARowBlockTokens) return r0;
  int64_t done = r0;
  WithQ32RowFormat(type, [&](auto f) {
    done = MatmulA<decltype(f)>(wd, row_bytes, cols, act, act_bytes, n_tok, r0, r1, y, y_stride);
  });
  return done;
}

}  // namespace snug::tensor::HWY_NAMESPACE
#if SNUG_X86_VNNI512
SNUG_END_VNNI
#endif
HWY_AFTER_NAMESPACE();

#endif  // SNUG_X86_AVX2
#endif  // include guard toggle
