// The public kernel API that model/, kv/ and compress/ use. Every function
// here has a scalar reference (kernels_ref.h) and SIMD paths chosen at run
// time through Highway's dynamic dispatch; tests compare the two per target.
//
// Conventions: a weight matrix has `rows` rows of `cols` elements each, stored
// row-major in its GGUF type (GGUF's ne[0] is cols, ne[1] is rows). Activations
// are f32, token-major: token t's vector starts at x + t * x_stride.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "base/result.h"
#include "base/thread_pool.h"
#include "tensor/dtype.h"

namespace snug::tensor {

struct MatView {
  DType type = DType::kF32;
  const void* data = nullptr;  // rows * row_bytes bytes
  int64_t rows = 0;
  int64_t cols = 0;
  size_t row_bytes = 0;
  // Optional: the same matrix in the row-block kernel's packed form
  // (matmul_pack), which products of any number of tokens read in place of
  // the file layout's rows it covers; null: none.
  const void* packed = nullptr;
};

// ---- conversions --------------------------------------------------------
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);  // round to nearest even
float bf16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f);  // round to nearest even

// Expands n elements (a multiple of the block size) of `type` to f32.
void dequantize_row(DType type, const void* src, float* dst, int64_t n);

// Packs n f32 values into `type` blocks (round-to-nearest, ggml's reference
// quantizers, bit-identical to them). Supported: f32, f16, bf16, q4_0, q4_1, q5_0, q5_1,
// q8_0, q2_K, q3_K, q4_K, q5_K, q6_K, q8_K.
void quantize_row(DType type, const float* src, void* dst, int64_t n);

// Importance-weighted packing of one whole row of n values (ggml's quantize_*
// with quant_weights, bit-identical): weights[c] >= 0 is the importance of
// column c (an imatrix's mean squared activation), and each block's scales are
// chosen to minimise the error weighted by it. Types without a weighted
// quantizer (has_weighted_quantizer false: f32, f16, bf16, q8_0), or weights
// == nullptr, give quantize_row's result. The row must be whole: the 32-element
// formats weigh against the mean square of the full row.
bool has_weighted_quantizer(DType type);
void quantize_row_weighted(DType type, const float* src, void* dst, int64_t n,
                           const float* weights);

// ---- matrix products ----------------------------------------------------
// The type activations are converted to before a dot product with a weight of
// type w (q8_0 for q4_0/q4_1/q5_0/q5_1/q8_0, q8_K for the K formats, f32 for float weights).
DType activation_type(DType w);
// Scratch bytes matmul() needs for n_tok activation vectors of length cols.
size_t matmul_scratch_bytes(DType w, int64_t cols, int64_t n_tok);

// y[t * y_stride + r] = dot(w row r, x token t) for r < w.rows, t < n_tok.
// Splits rows across the pool; `scratch` holds matmul_scratch_bytes().
void matmul(const MatView& w, const float* x, int64_t x_stride, int64_t n_tok, float* y,
            int64_t y_stride, void* scratch, ThreadPool& pool);

// Several products of the same input (e.g. Q, K and V projections): the
// activations are converted once and the rows of all matrices are split over
// the pool in one pass. All matrices need the same cols and activation type;
// outputs[i] gets n_tok rows of mats[i].rows values, stride out_strides[i].
void matmul_multi(const MatView* mats, int count, const float* x, int64_t x_stride, int64_t n_tok,
                  float* const* outputs, const int64_t* out_strides, void* scratch,
                  ThreadPool& pool);
// matmul_multi on activations the caller already converted: token t's row by
// quantize_activations(mats[0].type, x_t, cols, cols, 1, qx + t *
// matmul_scratch_bytes(mats[0].type, cols, 1)), e.g. right after the norm
// that made it, on the thread that made it (one barrier fewer).
void matmul_multi_converted(const MatView* mats, int count, const void* qx, int64_t n_tok,
                            float* const* outputs, const int64_t* out_strides, ThreadPool& pool);

// The two halves of matmul for callers that schedule threads themselves:
// convert activations once, then any thread computes a row range.
void quantize_activations(DType w, const float* x, int64_t x_stride, int64_t cols, int64_t n_tok,
                          void* scratch);
void matmul_rows(const MatView& w, const void* qx, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                 int64_t y_stride);

// The packed form of a matrix (MatView::packed) for the dispatched target's
// row-block kernel: its size in bytes, 0 where that target or the type takes
// none (only AVX512-VNNI's q4_0, q4_1, q5_0, q5_1, q8_0, q4_K and q6_K do);
// and the packing, into
// matmul_packed_bytes(w) bytes at out, 64-byte aligned. A packed matrix gives
// the same bits as the matrix it came from.
int64_t matmul_packed_bytes(const MatView& w);
void matmul_pack(const MatView& w, void* out);
// The leading rows the packed form covers (whole groups of the kernel's
// rows), 0 where there is none; the products read the rest from w.data.
int64_t matmul_packed_rows(const MatView& w);
// Rows a loader packs at a time (Model::repack, and the plan's load-time
// peak): whole groups of about kPackSliceBytes of the file's rows, at least
// one group; 0 where w takes no packed form. A slice of rows [r0, r0 + n)
// packs, as the MatView of those rows, to the bytes at matmul_packed_bytes
// of the first r0 rows.
inline constexpr uint64_t kPackSliceBytes = uint64_t{4} << 20;
int64_t matmul_pack_slice_rows(const MatView& w);
// Row r (< matmul_packed_rows(w)) of a packed matrix (w.packed, made by
// matmul_pack for the dispatched target) read back from the packed form: its
// bytes in the file's layout, or its values. A tied embedding table's lookups
// take this once the file's pages of its rows are let go (Model::repack).
void matmul_unpack_row(const MatView& w, int64_t r, void* row);
void matmul_packed_dequantize_row(const MatView& w, int64_t r, float* out);

// ---- what runs on this CPU -----------------------------------------------
// The Highway target that dynamic dispatch picks for the kernels on this CPU
// (or the one a test forced): "AVX3_DL", "AVX3", "AVX2", "SSE4" or "EMU128".
const char* simd_target();
// The implementation matmul() runs for weight type w on that target:
// "avx512vnni-int8", "avx2-int8" (x86 int8 instructions in ggml's order),
// "avx2-blocksum" / "avx512vnni-blocksum" (block-sum order), "hwy-float" (float
// weights) or "generic" (portable integer dots, for targets without x86 int8
// instructions); nullptr for a type with no matmul kernel.
const char* matmul_kernel(DType w);
// The implementation for matrix w, where its shape matters: on AVX2 and AVX3
// a q4_0 (or N:M-sparse q4_0) matrix of whole groups of eight rows takes
// llama.cpp's order for the q4_0 matrices it repacks, "avx2-int8-repack-order"
// ("avx2-int8-nm-repack-order"); otherwise matmul_kernel(w.type).
const char* matmul_kernel(const MatView& w);
// Whether q4_1, q5_0, q5_1 and q8_0 (and the N:M-sparse q8_0) take ggml's
// summation order on AVX2 and AVX3, llama.cpp's AVX2 bits, rather than the
// block-sum order AVX3_DL takes (qsum_avx2-inl.h: fewer roundings, and a batch
// of tokens 2-4x faster). Off unless SNUG_GGML_ORDER=1 is in the environment
// when first asked, or set_ggml_order() says otherwise. On AVX2 it also
// keeps f16 attention in llama.cpp's order (attention_f16_heads). Other
// targets and types have one order each and ignore it.
bool ggml_order();
// Sets it for the whole process (tests, and tools comparing with llama.cpp).
// Not while a matmul runs: every kernel of a forward pass must take one order.
void set_ggml_order(bool on);
// The kernel AVX3_DL gives one token of q4_1 and q8_0 rows that are short
// and end in a partial group of eight blocks (fewer than 32 blocks, not a
// multiple of 8: SmolLM2's 576-wide rows have 18). kOneRow: the one-row
// kernel (qrow_vnni-inl.h), eight blocks of a row per step, so 18 blocks take
// 24 blocks' work and a horizontal sum per row. kEightRows: qsum_avx2-inl.h's
// few-token kernel with vpdpbusd, eight rows in the lanes, block by block, one
// sum tree per eight rows. Both take block-sum order: the same bits. kAuto
// (the default): kEightRows on Intel CPUs, where it measured 1.2-1.6x faster
// on these rows (Emerald Rapids, docs/BENCHMARKS.md; q5_0 measured 0.85x, so
// it keeps the one-row kernel), kOneRow elsewhere (it was tuned on Zen 4);
// SNUG_ONE_TOKEN_KERNEL=one-row or eight-rows in the environment when first
// asked overrides it. Other targets ignore it.
enum class OneTokenKernel { kAuto, kOneRow, kEightRows };
// The kernel in use, never kAuto.
OneTokenKernel one_token_kernel();
// Sets it for the whole process (tests, benchmarks); kAuto decides again. Not
// while a matmul runs.
void set_one_token_kernel(OneTokenKernel k);
// Restricts dispatch to the named target and those below it ("AVX2" on an
// AVX-512 CPU runs the AVX2 kernels), for the whole process: comparing the
// code paths of one machine, or reproducing another machine's arithmetic.
// An unknown name, or a target this CPU lacks or this build did not compile,
// is an error naming the ones available.
Status limit_simd_target(std::string_view name);
// The implementation that scores keys of KV type kv, named as matmul_kernel()
// names them: for f16, attention_f16_heads's ("avx512-f16-heads",
// "avx2-f16-heads", or "f16-ggml" for llama.cpp's order); for q8_0 and q4_0,
// attention_kv_heads's ("avx512-dequant-heads", "avx2-dequant-heads", or
// with ggml's order asked for attention_flash_ggml's).
const char* attention_kernel(DType kv);

// ---- element-wise and reductions ----------------------------------------
// These follow llama.cpp's CPU arithmetic operation for operation (order of
// roundings, its exp approximation): models that quantize activations to 8
// bits between layers amplify one-ulp differences into different tokens, and
// snug's greedy output is checked token for token against llama.cpp.

// ggml's AVX2 expf approximation (ggml_v_expf), evaluated for one value.
float exp_ggml(float x);

// y = (x * (1 / sqrt(mean(x^2) + eps))) * weight, mean summed in double and
// rounded to float as ggml's rms_norm followed by mul; y may alias x.
void rms_norm(const float* x, const float* weight, float* y, int64_t n, float eps);
// rms_norm of `rows` consecutive rows of n (row r at x + r * n, y + r * n),
// four rows' sums interleaved so that their double additions overlap instead
// of waiting on one another: each row is summed and scaled exactly as
// rms_norm does it.
void rms_norm_rows(const float* x, const float* weight, float* y, int64_t n, int64_t rows,
                   float eps);
// gate[i] = silu(gate[i]) * up[i], silu(x) = x / (1 + exp_ggml(-x)) (ggml's swiglu)
void silu_mul(float* gate, const float* up, int64_t n);
// gate[i] = gelu(gate[i]) * up[i] as llama.cpp's CPU geglu computes it: the
// tanh-approximate GELU read from a table indexed by gate[i] rounded to f16
// (0 at or below -10, the identity at or above 10), the table built with one
// fused multiply-add as ggml's is when compiled for an FMA machine.
void gelu_mul(float* gate, const float* up, int64_t n);

// Attention arithmetic in the order of llama.cpp's kernels. kGemm is tinyBLAS
// (one 8-lane FMA accumulator, used by llama.cpp for batches of 2+ tokens),
// kVecDot is ggml_vec_dot_f16 (4 x 8 accumulators, used for single tokens).
enum class SumOrder { kGemm, kVecDot };
// Dot product of an f16 row with f32 values (which the caller rounded to f16).
float dot_f16_ordered(const uint16_t* a, const float* b, int64_t n, SumOrder order);
// acc[i] = fma(f16 x[i], s, acc[i]): one accumulation slot of an f16 product.
void fma_f16(float s, const uint16_t* x, float* acc, int64_t n);
// x[i] = exp_ggml(x[i] - max); returns the sum as ggml_vec_soft_max_f32 forms it
// (in double over chunks of 8 summed in register order).
double exp_sum_ggml(float* x, int64_t n, float max);

// One head's rows in a paged KV cache: row t (an f16 vector) starts at
// blocks[t / block_tokens] + (t % block_tokens) * row_elems.
struct PagedRows {
  const uint16_t* const* blocks;
  int32_t block_tokens = 0;
  int64_t row_elems = 0;
  int32_t first = 0;  // position 0 is row `first` of blocks[0] (a window's start; K and V alike)
};
// Floats of scratch attention_f16_ggml needs for n positions and head sizes dk, dv.
int64_t attention_scratch_floats(int64_t n, int64_t dk, int64_t dv);
// out[0..dv) = sum_t softmax_t(scale * q.k_t) v_t over positions [0, n), with
// llama.cpp's rounding: q and the probabilities rounded to f16, dots and value
// sums in `order`, exp_ggml, the softmax sum in double over chunks of 8.
void attention_f16_ggml(const float* q, const PagedRows& k, const PagedRows& v, int64_t n,
                        int64_t dk, int64_t dv, float scale, SumOrder order, float* out,
                        float* scratch);

// attention_f16_ggml for the nh query heads q[h * dk ...] sharing one K and V
// head, into out[h * dv ...]: the same bits head by head, with each K and V
// row read once for up to four heads (AVX2 and up, dk % 32 == 0 and
// dv % 16 == 0; head by head elsewhere). Scratch:
// attention_ggml_heads_scratch_floats(n, nh, dk, dv).
int64_t attention_ggml_heads_scratch_floats(int64_t n, int64_t nh, int64_t dk, int64_t dv);
void attention_f16_ggml_heads(const float* q, int64_t nh, const PagedRows& k, const PagedRows& v,
                              int64_t n, int64_t dk, int64_t dv, float scale, SumOrder order,
                              float* out, float* scratch);

// Floats of scratch attention_f16_heads needs for nh heads over n positions.
int64_t attention_heads_scratch_floats(int64_t n, int64_t nh, int64_t dk, int64_t dv);
// attention_f16_ggml for the nh query heads q[h * dk ...] that share one f16
// K and V head (grouped-query attention), into out[h * dv ...]. On AVX-512,
// and on AVX2 unless ggml's order is asked for (ggml_order(): there snug
// keeps llama.cpp's bits), for head sizes of multiples of 16, one pass over
// the rows serves four heads at a time: scores are f32 dot products of the
// f32 query, the values are summed in f32 with the unnormalised weights and
// divided once, and `order` does not matter, so a token's attention is the
// same arithmetic in a prompt and in generation. AVX2 takes AVX-512's
// operations in its order (two registers for one), so the same bits.
// Elsewhere it is attention_f16_ggml_heads.
void attention_f16_heads(const float* q, int64_t nh, const PagedRows& k, const PagedRows& v,
                         int64_t n, int64_t dk, int64_t dv, float scale, SumOrder order, float* out,
                         float* scratch);

// One head's rows in a paged KV cache of any KV type (f16, q8_0, q4_0): row t
// (row_bytes bytes, a whole number of the type's blocks) starts at
// blocks[t / block_tokens] + (t % block_tokens) * row_bytes.
struct PagedKvRows {
  const uint8_t* const* blocks;
  int32_t block_tokens = 0;
  uint64_t row_bytes = 0;
  DType type = DType::kF16;
  int32_t first = 0;  // position 0 is row `first` of blocks[0] (a window's start; K and V alike)
};
// Floats of scratch attention_flash_ggml needs for head sizes dk, dv.
int64_t attention_flash_scratch_floats(int64_t dk, int64_t dv);
// out[0..dv) = sum_t softmax_t(scale * q.k_t) v_t over positions [0, n) for
// K and V of any KV type, as llama.cpp's flash-attention CPU kernel computes
// it (ggml_compute_forward_flash_attn_ext_f16_one_chunk): q converted to K's
// dot type (q8_0 activations for quantized K, f16 for f16 K), each score by
// K's integer or f16 dot product, an online softmax in positional order
// (running max and sum, the accumulator rescaled when the max grows, expf),
// each value row dequantized to f32 and multiply-added. For q8_0/q4_0 K and
// V on AVX2 this is llama.cpp's arithmetic; f16 V is accumulated in f32
// where llama.cpp accumulates in f16.
void attention_flash_ggml(const float* q, const PagedKvRows& k, const PagedKvRows& v, int64_t n,
                          int64_t dk, int64_t dv, float scale, float* out, float* scratch);

// attention_flash_ggml's result for the nh query heads q[h * dk ...] that
// share one K and V head of any KV types, into out[h * dv ...]. On AVX2 and
// up, unless ggml's order is asked for (ggml_order(): there it is
// attention_flash_ggml head by head, llama.cpp's flash arithmetic), one pass
// over the rows serves four heads at a time with attention_f16_heads's
// grouped arithmetic on the rows as stored (dequantize_row's f32 values):
// the f32 query, not one quantized to q8_0, a softmax over all the scores
// with one exp per position and head, not an online one, and each K and V
// row read and dequantized once for the group. Scratch:
// attention_kv_heads_scratch_floats(n, nh, dk, dv).
int64_t attention_kv_heads_scratch_floats(int64_t n, int64_t nh, int64_t dk, int64_t dv);
void attention_kv_heads(const float* q, int64_t nh, const PagedKvRows& k, const PagedKvRows& v,
                        int64_t n, int64_t dk, int64_t dv, float scale, float* out, float* scratch);

// Packs one key or value row (n elements) into the KV cache's type as
// llama.cpp's CPU backend stores it: q8_0 with ggml's x86 quantizer (scale
// 127/amax, ties to even: the values quantize_row_q8a gives activations),
// which can differ from quantize_row's reference q8_0 by one level where a
// value sits on a rounding boundary; f16 and q4_0 exactly as quantize_row.
void quantize_kv_row(DType type, const float* src, void* dst, int64_t n);

// Rotary position embedding on one head of head_dim values, rotating the first
// rot_dim. kNorm pairs (x[2i], x[2i+1]) as llama.cpp's LLAMA_ROPE_TYPE_NORM;
// kNeox pairs (x[i], x[i + rot_dim/2]). theta_i = pos * freq_scale * base^(-2i/rot_dim).
enum class RopeMode { kNorm, kNeox };
void rope(float* x, int64_t head_dim, int64_t rot_dim, int64_t pos, float freq_base,
          float freq_scale, RopeMode mode);
// rope() in two steps, so that the angles of a position are computed once for
// all heads and layers: cs receives rot_dim floats (cos, sin per pair).
void rope_cache(int64_t pos, int64_t rot_dim, float freq_base, float freq_scale, float* cs);

// Rope scaled the ways llama.cpp reads from metadata (ggml_rope_ext's
// arguments): per-pair frequency divisors (Llama 3's rope_freqs), YaRN's
// blend of interpolated and extrapolated angles over corr_dims with
// ext_factor, and a magnitude attn_factor. With no divisors, ext_factor 0 and
// attn_factor 1 it is rope_cache.
struct RopeScaling {
  float freq_base = 10000.f;
  float freq_scale = 1.f;               // 1 / linear factor
  const float* freq_factors = nullptr;  // [rot_dim / 2], or null
  float ext_factor = 0.f;               // YaRN: 1; else 0
  float attn_factor = 1.f;
  float corr_dims[2] = {0.f, 0.f};  // rope_yarn_corr_dims
};
// ggml_rope_yarn_corr_dims: the pair range YaRN blends over.
void rope_yarn_corr_dims(int64_t rot_dim, int64_t n_ctx_orig, float freq_base, float beta_fast,
                         float beta_slow, float dims[2]);
void rope_cache_scaled(int64_t pos, int64_t rot_dim, const RopeScaling& s, float* cs);
void rope_apply(float* x, int64_t rot_dim, const float* cs, RopeMode mode);

}  // namespace snug::tensor
