// matmul_rows per target: float weights with Highway FMA tiles, quantized
// weights with the x86 integer kernels (qdot_avx2-inl.h, every target from
// AVX2 up) or the portable ones (qdot_generic-inl.h, targets below AVX2). Compiled once per Highway
// target (foreach_target.h); HWY_DYNAMIC_DISPATCH picks one per call.
//
// Loop order: rows in blocks of kRowBlock (whose weights stay in L1/L2) ×
// tokens in tiles of up to kTokTile (one weight decode per tile) × rows in the
// block. Activations of all tokens are read from L2 each row block.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "tensor/matmul_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <array>
#include <string_view>
#include <type_traits>

#include "base/check.h"

#include "tensor/kernels_ref.h"
#include "tensor/kernels_simd.h"
#include "tensor/nm_expand-inl.h"
#include "tensor/qdot_avx2-inl.h"
#include "tensor/qdot_generic-inl.h"
#include "tensor/qgemm_avx2-inl.h"
#include "tensor/qgemm_k_avx2-inl.h"
#include "tensor/qgemm_k_vnni-inl.h"
#include "tensor/qgemm_vnni-inl.h"
#include "tensor/qrow_avx2-inl.h"
#include "tensor/qrow_vnni-inl.h"
#include "tensor/qseq_avx2-inl.h"
#include "tensor/qsum_avx2-inl.h"
#include "tensor/simd_x86.h"

HWY_BEFORE_NAMESPACE();
namespace snug::tensor::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Tokens per tile, at most. 8 for the 32-element formats where AVX-512 gives
// 32 vector registers (each token keeps its own accumulators), else 4: on Zen 4
// (576x1536, 128 tokens) 8 per tile takes q4_1 from 2.50 to 2.24 ms, but spills
// the K-format and float tiles (q4_K 2.93 -> 3.89 ms, f16 4.18 -> 5.09 ms).
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
constexpr int kTokTile = 8;
#else
constexpr int kTokTile = 4;
#endif
constexpr int kTokTileWide = kTokTile;
constexpr int kTokTileNarrow = 4;
constexpr int64_t kRowBlock = 16;
#if SNUG_X86_VNNI512
// Fewest tokens for which q4_K and q6_K take the row-block kernel on
// AVX512-VNNI (q4_K 2048x8192 on Zen 4: 2 tokens 830 us by the tiles, 870 by
// the row-block kernel; 4 tokens 1584 and 1048).
constexpr int64_t kKRowBlockTokens = 3;
#endif
// Weight loaders for the float formats: N elements starting at i as f32.
struct LoadF32 {
  template <class D>
  static HWY_INLINE hn::Vec<D> Load(D d, const uint8_t* w, int64_t i) {
    return hn::LoadU(d, reinterpret_cast<const float*>(w) + i);
  }
  static float Scalar(const uint8_t* w, int64_t i) { return reinterpret_cast<const float*>(w)[i]; }
};
struct LoadF16 {
  template <class D>
  static HWY_INLINE hn::Vec<D> Load(D d, const uint8_t* w, int64_t i) {
    const hn::Rebind<hwy::float16_t, D> dh;
    return hn::PromoteTo(d, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(w) + i));
  }
  static float Scalar(const uint8_t* w, int64_t i) {
    return detail::f16_to_f32(reinterpret_cast<const uint16_t*>(w)[i]);
  }
};
struct LoadBF16 {
  template <class D>
  static HWY_INLINE hn::Vec<D> Load(D d, const uint8_t* w, int64_t i) {
    const hn::Rebind<hwy::bfloat16_t, D> dh;
    return hn::PromoteTo(d, hn::LoadU(dh, reinterpret_cast<const hwy::bfloat16_t*>(w) + i));
  }
  static float Scalar(const uint8_t* w, int64_t i) {
    return detail::bf16_to_f32(reinterpret_cast<const uint16_t*>(w)[i]);
  }
};

// One float weight row against T f32 activation rows: two accumulators per
// token over 2N-element steps, then N-element steps, then a scalar tail.
template <class L, int T>
void TileFloat(const uint8_t* w, int64_t n, const uint8_t* const* acts, float* out) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const float* x[T];
  hn::Vec<decltype(d)> a0[T], a1[T];
  for (int t = 0; t < T; ++t) {
    x[t] = reinterpret_cast<const float*>(acts[t]);
    a0[t] = hn::Zero(d);
    a1[t] = hn::Zero(d);
  }
  int64_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    const auto w0 = L::Load(d, w, i), w1 = L::Load(d, w, i + N);
    for (int t = 0; t < T; ++t) {
      a0[t] = hn::MulAdd(w0, hn::LoadU(d, x[t] + i), a0[t]);
      a1[t] = hn::MulAdd(w1, hn::LoadU(d, x[t] + i + N), a1[t]);
    }
  }
  for (; i + N <= n; i += N) {
    const auto w0 = L::Load(d, w, i);
    for (int t = 0; t < T; ++t) a0[t] = hn::MulAdd(w0, hn::LoadU(d, x[t] + i), a0[t]);
  }
  for (int t = 0; t < T; ++t) {
    float s = hn::GetLane(hn::SumOfLanes(d, hn::Add(a0[t], a1[t])));
    for (int64_t j = i; j < n; ++j) s += L::Scalar(w, j) * x[t][j];
    out[t] = s;
  }
}

using TileFn = void (*)(const uint8_t*, int64_t, const uint8_t* const*, float*);

// The tile kernels for T = 1..kTokTile of one weight format, and the name of
// the implementation (what matmul_kernel() reports).
struct Tiles {
  std::array<TileFn, kTokTile> fn{};  // fn[T - 1] for T = 1..tile
  const char* name = nullptr;
  int tile = 0;  // tokens per tile
};

// K<T>::Run is the tile kernel for T tokens; K<1>::kName names the family.
template <template <int> class K, int kTile = kTokTileNarrow>
constexpr Tiles MakeTiles() {
  Tiles t;
  t.name = K<1>::kName;
  t.tile = kTile;
  t.fn[0] = &K<1>::Run;
  t.fn[1] = &K<2>::Run;
  t.fn[2] = &K<3>::Run;
  t.fn[3] = &K<4>::Run;
  if constexpr (kTile == 8) {
    t.fn[4] = &K<5>::Run;
    t.fn[5] = &K<6>::Run;
    t.fn[6] = &K<7>::Run;
    t.fn[7] = &K<8>::Run;
  }
  return t;
}

template <class L>
struct FloatK {
  template <int T>
  struct K {
    static constexpr const char* kName = "hwy-float";
    static void Run(const uint8_t* w, int64_t n, const uint8_t* const* a, float* o) {
      TileFloat<L, T>(w, n, a, o);
    }
  };
};

// The portable K-format tile (qdot_generic-inl.h).
template <class Block, int T>
struct KGenTile {
  static constexpr const char* kName = "generic";
  static void Run(const uint8_t* w, int64_t n, const uint8_t* const* a, float* o) {
    TileKGeneric<Block, T>(w, n, a, o);
  }
};

#if SNUG_X86_AVX2
// Formats that take block-sum order (qgemm_vnni-inl.h) on this target.
template <class F>
constexpr bool BlockSumOrder() {
  return SNUG_X86_VNNI512 && (std::is_same_v<F, Avx2Q4_0> || std::is_same_v<F, Avx2Q4_1> ||
                              std::is_same_v<F, Avx2Q5_0> || std::is_same_v<F, Avx2Q5_1> ||
                              std::is_same_v<F, Avx2Q8_0>);
}
template <class F>
struct Q32K {
  template <int T>
  struct K {
    // vpdpbusd where AVX512-VNNI is usable (qdot_avx2-inl.h's DotU8I8); the
    // formats with a row-block kernel in its block-sum order
    static constexpr const char* kName = BlockSumOrder<F>() ? "avx512vnni-blocksum"
                                         : SNUG_X86_VNNI512 ? "avx512vnni-int8"
                                                            : "avx2-int8";
    static void Run(const uint8_t* w, int64_t n, const uint8_t* const* a, float* o) {
#if SNUG_X86_VNNI512
      if constexpr (BlockSumOrder<F>()) {
        TileQ32Sum<F, T>(w, n, a, o);
        return;
      }
#endif
      TileQ32Avx2<F, T>(w, n, a, o);
    }
  };
};
#if !SNUG_X86_VNNI512
// Block-sum order on AVX2 and AVX3 (qsum_avx2-inl.h): the bits AVX3_DL gives.
template <class F>
struct Q32SumK {
  template <int T>
  struct K {
    static constexpr const char* kName = "avx2-blocksum";
    static void Run(const uint8_t* w, int64_t n, const uint8_t* const* a, float* o) {
      TileQ32Sum<F, T>(w, n, a, o);
    }
  };
};
#endif
// q4_K and q6_K in super-block-sum order on every target from AVX2 up
// (qgemm_k_vnni-inl.h where AVX512-VNNI is usable, else qgemm_k_avx2-inl.h):
// the same bits on all of them.
template <int T>
struct Q4KK {
  static constexpr const char* kName = SNUG_X86_VNNI512 ? "avx512vnni-blocksum" : "avx2-blocksum";
  static void Run(const uint8_t* w, int64_t n, const uint8_t* const* a, float* o) {
#if SNUG_X86_VNNI512
    TileQ4KSum<T>(w, n, a, o);
#else
    TileQ4KSumAvx2<T>(w, n, a, o);
#endif
  }
};
template <int T>
struct Q5KK {
  static constexpr const char* kName = "avx2-int8";
  static void Run(const uint8_t* w, int64_t n, const uint8_t* const* a, float* o) {
    TileQ45KAvx2<BlockQ5_K, true, T>(w, n, a, o);
  }
};
template <int T>
struct Q6KK {
  static constexpr const char* kName = SNUG_X86_VNNI512 ? "avx512vnni-blocksum" : "avx2-blocksum";
  static void Run(const uint8_t* w, int64_t n, const uint8_t* const* a, float* o) {
#if SNUG_X86_VNNI512
    TileQ6KSum<T>(w, n, a, o);
#else
    TileQ6KSumAvx2<T>(w, n, a, o);
#endif
  }
};
template <int T>
struct Q2KK {
  static constexpr const char* kName = "avx2-int8";
  static void Run(const uint8_t* w, int64_t n, const uint8_t* const* a, float* o) {
    TileQ2KAvx2<T>(w, n, a, o);
  }
};
template <int T>
struct Q3KK {
  static constexpr const char* kName = "avx2-int8";
  static void Run(const uint8_t* w, int64_t n, const uint8_t* const* a, float* o) {
    TileQ3KAvx2<T>(w, n, a, o);
  }
};
using Q4_0Fmt = Avx2Q4_0;
using Q4_1Fmt = Avx2Q4_1;
using Q5_0Fmt = Avx2Q5_0;
using Q5_1Fmt = Avx2Q5_1;
using Q8_0Fmt = Avx2Q8_0;
#else
template <class F>
struct Q32K {
  template <int T>
  struct K {
    static constexpr const char* kName = "generic";
    static void Run(const uint8_t* w, int64_t n, const uint8_t* const* a, float* o) {
      TileQ32Generic<F, T>(w, n, a, o);
    }
  };
};
template <int T>
using Q2KK = KGenTile<BlockQ2_K, T>;
template <int T>
using Q3KK = KGenTile<BlockQ3_K, T>;
template <int T>
using Q4KK = KGenTile<BlockQ4_K, T>;
template <int T>
using Q5KK = KGenTile<BlockQ5_K, T>;
template <int T>
using Q6KK = KGenTile<BlockQ6_K, T>;
using Q4_0Fmt = GenQ4_0;
using Q4_1Fmt = GenQ4_1;
using Q5_0Fmt = GenQ5_0;
using Q5_1Fmt = GenQ5_1;
using Q8_0Fmt = GenQ8_0;
#endif

// N:M-sparse weights (quant_blocks.h) for the rows the VNNI kernels do not
// take, and on every other target: the row expanded to its dense blocks on
// the stack, then the dense type's tile of this target, so the results are
// the dense type's bits. kNmMaxBlocks bounds the columns (dtype.h).
template <DType kSparse, class Dense, bool kSum = false>
struct NmK {
  template <int T>
  struct K {
    static constexpr const char* kName = SNUG_X86_VNNI512 ? "avx512vnni-nm"
                                         : kSum           ? "avx2-blocksum-nm"
                                         : SNUG_X86_AVX2  ? "avx2-int8-nm"
                                                          : "generic-nm";
    static void Run(const uint8_t* w, int64_t n, const uint8_t* const* a, float* o) {
      constexpr int64_t kDenseBytes = kSparse == DType::kQ8_0NM ? 34 : 18;
      alignas(64) uint8_t dense[kNmMaxBlocks * kDenseBytes];
      SNUG_CHECK(n / kQK <= kNmMaxBlocks);
      ExpandNmRow(kSparse, w, dense, n / kQK);
      Dense::template K<T>::Run(dense, n, a, o);
    }
  };
};

// The tiles for weight type t; with `ggml` (tensor::ggml_order()), on AVX2
// and AVX3 the types of Avx2SumType in ggml's order rather than block-sum
// order.
constexpr Tiles TilesFor(DType t, bool ggml = false) {
#if SNUG_X86_AVX2 && !SNUG_X86_VNNI512
  if (!ggml) {
    switch (t) {
      case DType::kQ4_1:
        return MakeTiles<Q32SumK<Q4_1Fmt>::K, kTokTileWide>();
      case DType::kQ5_0:
        return MakeTiles<Q32SumK<Q5_0Fmt>::K, kTokTileWide>();
      case DType::kQ5_1:
        return MakeTiles<Q32SumK<Q5_1Fmt>::K, kTokTileWide>();
      case DType::kQ8_0:
        return MakeTiles<Q32SumK<Q8_0Fmt>::K, kTokTileWide>();
      case DType::kQ8_0NM:
        return MakeTiles<NmK<DType::kQ8_0NM, Q32SumK<Q8_0Fmt>, true>::K, kTokTileWide>();
      default:
        break;
    }
  }
#else
  (void)ggml;
#endif
  switch (t) {
    case DType::kF32:
      return MakeTiles<FloatK<LoadF32>::K>();
    case DType::kF16:
      return MakeTiles<FloatK<LoadF16>::K>();
    case DType::kBF16:
      return MakeTiles<FloatK<LoadBF16>::K>();
    case DType::kQ4_0:
      return MakeTiles<Q32K<Q4_0Fmt>::K, kTokTileWide>();
    case DType::kQ4_1:
      return MakeTiles<Q32K<Q4_1Fmt>::K, kTokTileWide>();
    case DType::kQ5_0:
      return MakeTiles<Q32K<Q5_0Fmt>::K, kTokTileWide>();
    case DType::kQ5_1:
      return MakeTiles<Q32K<Q5_1Fmt>::K, kTokTileWide>();
    case DType::kQ8_0:
      return MakeTiles<Q32K<Q8_0Fmt>::K, kTokTileWide>();
    case DType::kQ8_0NM:
      return MakeTiles<NmK<DType::kQ8_0NM, Q32K<Q8_0Fmt>>::K, kTokTileWide>();
    case DType::kQ4_0NM:
      return MakeTiles<NmK<DType::kQ4_0NM, Q32K<Q4_0Fmt>>::K, kTokTileWide>();
    case DType::kQ2_K:
      return MakeTiles<Q2KK>();
    case DType::kQ3_K:
      return MakeTiles<Q3KK>();
    case DType::kQ4_K:
      return MakeTiles<Q4KK>();
    case DType::kQ5_K:
      return MakeTiles<Q5KK>();
    case DType::kQ6_K:
      return MakeTiles<Q6KK>();
    default:
      return {};
  }
}

#if SNUG_X86_AVX2
// Every quantized format runs x86 int8 code on every target from AVX2 up,
// including targets the build machine cannot execute (tests/tensor/
// dispatch_test checks the ones the CPU at hand runs).
constexpr bool NoGenericKernel() {
  for (DType t : {DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kQ8_0,
                  DType::kQ2_K, DType::kQ3_K, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K}) {
    if (std::string_view(TilesFor(t).name) == "generic") return false;
  }
  return true;
}
static_assert(NoGenericKernel(), "a quantized format falls to the portable kernel on x86");
#endif

const char* MatmulKernel(DType t) {
  return TilesFor(t, ggml_order()).name;
}

const char* MatmulKernelOf(const MatView& w) {
#if SNUG_X86_AVX2 && !SNUG_X86_VNNI512
  if (Avx2RepackOrder(w.type, w.rows)) {
    return w.type == DType::kQ4_0 ? "avx2-int8-repack-order" : "avx2-int8-nm-repack-order";
  }
#endif
  return TilesFor(w.type, ggml_order()).name;
}

void MatmulRows(const MatView& w, const void* qx, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                int64_t y_stride) {
  const bool ggml = ggml_order();
  const Tiles tl = TilesFor(w.type, ggml);
  const std::array<TileFn, kTokTile>& tiles = tl.fn;
  const int tile = tl.tile;
  SNUG_CHECK(tiles[0] != nullptr);
  const size_t act_bytes = ref::activation_row_bytes(w.type, w.cols);
  const auto* act = static_cast<const uint8_t*>(qx);
  const auto* wd = static_cast<const uint8_t*>(w.data);
#if SNUG_X86_VNNI512
  // One token of q4_0/q4_1/q8_0 by the one-row block-sum kernel; whole 16-row
  // blocks of q4_0/q4_1/q8_0 by the row-block kernel; the rest by the tiles
  // (the same arithmetic per format, so the same bits whichever runs a row).
  // A packed matrix (MatView::packed) goes to the row-block kernel at any
  // batch size: one stream per 16 rows, nothing to repack.
  const bool packed = w.packed != nullptr && r0 % 16 == 0;
  // Short rows ending in a partial group of eight blocks may take the
  // eight-row kernel instead (one_token_kernel(): the same bits); the rows
  // past its last group of eight go on to the one-row kernel.
  const int64_t nb = w.cols / kQK;
  if (n_tok == 1 && !packed && nb < 32 && nb % 8 != 0 &&
      (w.type == DType::kQ4_1 || w.type == DType::kQ8_0) &&
      one_token_kernel() == OneTokenKernel::kEightRows) {
    r0 = MatmulAvx2SumRows(w.type, wd, static_cast<int64_t>(w.row_bytes), w.cols, act,
                           static_cast<int64_t>(act_bytes), n_tok, r0, r1, y, y_stride);
  }
  if (n_tok == 1 && !packed) {
    r0 = MatmulVnniRowSum(w.type, wd, static_cast<int64_t>(w.row_bytes), w.cols, act, r0, r1, y);
    r0 = MatmulVnniKRowSum(w.type, wd, static_cast<int64_t>(w.row_bytes), w.cols, act, r0, r1, y);
  }
  if (r0 < r1) {
    r0 = MatmulVnniRows(w.type, wd, static_cast<int64_t>(w.row_bytes), w.cols, act,
                        static_cast<int64_t>(act_bytes), n_tok, r0, r1, y, y_stride,
                        packed ? static_cast<const uint8_t*>(w.packed) : nullptr, w.rows / 16 * 16);
  }
  // q4_K and q6_K: several tokens by the row-block kernel, one or two by the
  // tiles (each row read as one stream), all in super-block-sum order; a
  // packed matrix by the row-block kernel at any number.
  if (n_tok >= kKRowBlockTokens || packed) {
    r0 = MatmulVnniKRows(w.type, wd, static_cast<int64_t>(w.row_bytes), w.cols, act,
                         static_cast<int64_t>(act_bytes), n_tok, r0, r1, y, y_stride,
                         packed ? static_cast<const uint8_t*>(w.packed) : nullptr);
  }
#elif SNUG_X86_AVX2
  // q4_0 matrices of whole groups of eight rows: llama.cpp's repack order at
  // any batch size (qseq_avx2-inl.h), every row of them.
  if (MatmulAvx2Repack(w.type, w.rows, wd, static_cast<int64_t>(w.row_bytes), w.cols, act,
                       static_cast<int64_t>(act_bytes), n_tok, r0, r1, y, y_stride)) {
    return;
  }
  // q4_1, q5_0, q5_1 and q8_0 in block-sum order (qsum_avx2-inl.h) unless
  // ggml's is asked for; whole groups of eight rows by its row kernels.
  // Otherwise several tokens of the 32-element formats by the eight-row
  // kernel in ggml's order, a few by the four-row kernel; q4_K and q6_K by
  // the eight-row kernel in super-block-sum order (the tiles' bits every
  // way); the rows past the last whole group by the tiles.
  if (!ggml && Avx2SumType(w.type)) {
    r0 = MatmulAvx2SumRows(w.type, wd, static_cast<int64_t>(w.row_bytes), w.cols, act,
                           static_cast<int64_t>(act_bytes), n_tok, r0, r1, y, y_stride);
  } else {
    r0 = MatmulAvx2Rows(w.type, wd, static_cast<int64_t>(w.row_bytes), w.cols, act,
                        static_cast<int64_t>(act_bytes), n_tok, r0, r1, y, y_stride);
    r0 = MatmulAvx2FewRows(w.type, wd, static_cast<int64_t>(w.row_bytes), w.cols, act,
                           static_cast<int64_t>(act_bytes), n_tok, r0, r1, y, y_stride);
  }
  r0 = MatmulAvx2KRows(w.type, wd, static_cast<int64_t>(w.row_bytes), w.cols, act,
                       static_cast<int64_t>(act_bytes), n_tok, r0, r1, y, y_stride);
#endif
  for (int64_t rb = r0; rb < r1; rb += kRowBlock) {
    const int64_t re = rb + kRowBlock < r1 ? rb + kRowBlock : r1;
    for (int64_t t0 = 0; t0 < n_tok; t0 += tile) {
      const int nt = static_cast<int>(n_tok - t0 < tile ? n_tok - t0 : tile);
      const uint8_t* acts[kTokTile];
      for (int t = 0; t < nt; ++t) acts[t] = act + (t0 + t) * act_bytes;
      for (int64_t r = rb; r < re; ++r) {
        float out[kTokTile];
        tiles[nt - 1](wd + r * w.row_bytes, w.cols, acts, out);
        for (int t = 0; t < nt; ++t) y[(t0 + t) * y_stride + r] = out[t];
      }
    }
  }
}

int64_t MatmulPackedBytes(const MatView& w, int64_t* packed_rows) {
#if SNUG_X86_VNNI512
  const int64_t k = VnniKPackedBytes(w.type, w.rows, w.cols, packed_rows);
  return k > 0 ? k : VnniPackedBytes(w.type, w.rows, w.cols, packed_rows);
#else
  (void)w;
  *packed_rows = 0;
  return 0;
#endif
}

void MatmulPack(const MatView& w, void* out) {
#if SNUG_X86_VNNI512
  PackVnniRows(w.type, static_cast<const uint8_t*>(w.data), static_cast<int64_t>(w.row_bytes),
               w.cols, w.rows, static_cast<uint8_t*>(out));
  PackVnniKRows(w.type, static_cast<const uint8_t*>(w.data), static_cast<int64_t>(w.row_bytes),
                w.cols, w.rows, static_cast<uint8_t*>(out));
#else
  (void)w;
  (void)out;
#endif
}

void MatmulUnpackRow(const MatView& w, int64_t r, int64_t b0, int64_t b1, void* out) {
#if SNUG_X86_VNNI512
  const auto* p = static_cast<const uint8_t*>(w.packed);
  UnpackVnniRow(w.type, p, w.cols, r, b0, b1, static_cast<uint8_t*>(out));
  UnpackVnniKRow(w.type, p, w.cols, r, b0, b1, static_cast<uint8_t*>(out));
#else
  (void)w;
  (void)r;
  (void)b0;
  (void)b1;
  (void)out;
#endif
}

}  // namespace snug::tensor::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace snug::tensor::simd {

HWY_EXPORT(MatmulRows);
HWY_EXPORT(MatmulKernel);
HWY_EXPORT(MatmulKernelOf);
HWY_EXPORT(MatmulPackedBytes);
HWY_EXPORT(MatmulPack);
HWY_EXPORT(MatmulUnpackRow);

void matmul_unpack_row(const MatView& w, int64_t r, int64_t b0, int64_t b1, void* out) {
  HWY_DYNAMIC_DISPATCH(MatmulUnpackRow)(w, r, b0, b1, out);
}

int64_t matmul_packed_bytes(const MatView& w, int64_t* packed_rows) {
  return HWY_DYNAMIC_DISPATCH(MatmulPackedBytes)(w, packed_rows);
}
void matmul_pack(const MatView& w, void* out) {
  HWY_DYNAMIC_DISPATCH(MatmulPack)(w, out);
}

void matmul_rows(const MatView& w, const void* qx, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                 int64_t y_stride) {
  HWY_DYNAMIC_DISPATCH(MatmulRows)(w, qx, n_tok, r0, r1, y, y_stride);
}

// Activation conversion: the 32-element formats' BlockQ8A rows through the
// dispatched ggml-order kernel (same values on every target); q8_K rows through
// the scalar reference, as ggml does on x86.
void quantize_activations(DType w, const float* x, int64_t x_stride, int64_t cols, int64_t n_tok,
                          void* scratch) {
  if (activation_type(w) != DType::kQ8_0) {
    ref::quantize_activations(w, x, x_stride, cols, n_tok, scratch);
    return;
  }
  quantize_rows_q8a(x, x_stride, scratch, static_cast<int64_t>(ref::activation_row_bytes(w, cols)),
                    cols, n_tok);
}

}  // namespace snug::tensor::simd

namespace snug::tensor {
const char* matmul_kernel(DType w) {
  using namespace simd;  // NOLINT(google-build-using-namespace): the dispatch table
  return HWY_DYNAMIC_DISPATCH(MatmulKernel)(w);
}
const char* matmul_kernel(const MatView& w) {
  using namespace simd;  // NOLINT(google-build-using-namespace): the dispatch table
  return HWY_DYNAMIC_DISPATCH(MatmulKernelOf)(w);
}
}  // namespace snug::tensor
#endif  // HWY_ONCE
