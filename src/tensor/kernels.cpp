// Public kernel entry points: argument checks, then the Highway-dispatched
// implementation (kernels_simd.h) or, for kernels off the hot path, the
// scalar reference.
#include "tensor/kernels.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include <hwy/targets.h>

#include "base/check.h"
#include "base/log.h"
#include "tensor/fp16.h"
#include "tensor/kernels_ref.h"
#include "tensor/kernels_simd.h"
#include "tensor/quant_blocks.h"

namespace snug::tensor {

void dequantize_row(DType type, const void* src, float* dst, int64_t n) {
  ref::dequantize_row(type, src, dst, n);
}

void quantize_row(DType type, const float* src, void* dst, int64_t n) {
  ref::quantize_row(type, src, dst, n);
}

void quantize_kv_row(DType type, const float* src, void* dst, int64_t n) {
  if (type == DType::kF16) {
    simd::row_f32_to_f16(src, static_cast<uint16_t*>(dst), n);
    return;
  }
  if (type != DType::kQ8_0) {
    ref::quantize_row(type, src, dst, n);
    return;
  }
  SNUG_CHECK(n % kQK == 0);
  constexpr int64_t kChunk = 8;  // blocks converted per step, on the stack
  BlockQ8A tmp[kChunk];
  auto* out = static_cast<BlockQ8_0*>(dst);
  for (int64_t i = 0; i < n; i += kChunk * kQK) {
    const int64_t m = std::min(kChunk * kQK, n - i);
    simd::quantize_row_q8a(src + i, tmp, m);
    for (int64_t b = 0; b < m / kQK; ++b, ++out) {
      out->d = detail::f32_to_f16(tmp[b].d);  // already an f16 value: exact
      std::memcpy(out->qs, tmp[b].qs, kQK);
    }
  }
}

const char* simd_target() {
  // Dynamic dispatch takes the best (lowest-bit) target that is both compiled
  // in and supported by the CPU.
  const int64_t usable = hwy::SupportedTargets() & HWY_TARGETS;
  return hwy::TargetName(usable & -usable);
}

namespace {
// -1: not decided yet (read SNUG_GGML_ORDER); 0 or 1 once decided.
std::atomic<int> g_ggml_order{-1};
}  // namespace

bool ggml_order() {
  int v = g_ggml_order.load(std::memory_order_relaxed);
  if (v < 0) {
    const char* env = std::getenv("SNUG_GGML_ORDER");
    v = env != nullptr && std::string_view(env) == "1" ? 1 : 0;
    int expected = -1;
    if (!g_ggml_order.compare_exchange_strong(expected, v, std::memory_order_relaxed)) v = expected;
  }
  return v == 1;
}

void set_ggml_order(bool on) {
  g_ggml_order.store(on ? 1 : 0, std::memory_order_relaxed);
}

namespace {
// -1: not decided yet; otherwise an OneTokenKernel other than kAuto.
std::atomic<int> g_one_token{-1};

OneTokenKernel decide_one_token_kernel() {
  if (const char* env = std::getenv("SNUG_ONE_TOKEN_KERNEL"); env != nullptr && *env != '\0') {
    const std::string_view v(env);
    if (v == "one-row") return OneTokenKernel::kOneRow;
    if (v == "eight-rows") return OneTokenKernel::kEightRows;
    log_warn("SNUG_ONE_TOKEN_KERNEL={}: expected one-row or eight-rows; the CPU's default is used",
             v);
  }
#if defined(__x86_64__) && defined(__GNUC__)
  if (__builtin_cpu_is("intel")) return OneTokenKernel::kEightRows;
#endif
  return OneTokenKernel::kOneRow;
}
}  // namespace

OneTokenKernel one_token_kernel() {
  int v = g_one_token.load(std::memory_order_relaxed);
  if (v < 0) {
    int expected = -1;
    v = static_cast<int>(decide_one_token_kernel());
    if (!g_one_token.compare_exchange_strong(expected, v, std::memory_order_relaxed)) v = expected;
  }
  return static_cast<OneTokenKernel>(v);
}

void set_one_token_kernel(OneTokenKernel k) {
  g_one_token.store(k == OneTokenKernel::kAuto ? static_cast<int>(decide_one_token_kernel())
                                               : static_cast<int>(k),
                    std::memory_order_relaxed);
}

Status limit_simd_target(std::string_view name) {
  std::string available;
  for (int64_t t : hwy::SupportedAndGeneratedTargets()) {
    if (name == hwy::TargetName(t)) {
      // Dispatch picks the best of the mask: this target and every one below.
      int64_t mask = 0;
      for (int64_t u : hwy::SupportedAndGeneratedTargets()) {
        if (u >= t) mask |= u;
      }
      hwy::SetSupportedTargetsForTest(mask);
      return ok_status();
    }
    available += (available.empty() ? "" : ", ") + std::string(hwy::TargetName(t));
  }
  return make_error("SIMD target '", name,
                    "' is not available on this CPU and build (available: ", available, ")");
}

DType activation_type(DType w) {
  switch (w) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
      return DType::kF32;
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ5_0:
    case DType::kQ5_1:
    case DType::kQ8_0:
    case DType::kQ4_0NM:
    case DType::kQ8_0NM:
      return DType::kQ8_0;
    case DType::kQ2_K:
    case DType::kQ3_K:
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
      return DType::kQ8_K;
    default:
      SNUG_CHECK(false && "activation_type: no matmul kernel for this type");
  }
  return DType::kF32;
}

size_t matmul_scratch_bytes(DType w, int64_t cols, int64_t n_tok) {
  SNUG_CHECK(cols >= 0 && n_tok >= 0);
  return ref::activation_row_bytes(w, cols) * static_cast<size_t>(n_tok);
}

void quantize_activations(DType w, const float* x, int64_t x_stride, int64_t cols, int64_t n_tok,
                          void* scratch) {
  SNUG_CHECK(cols % info(w).block_size == 0 && (n_tok <= 1 || x_stride >= cols));
  simd::quantize_activations(w, x, x_stride, cols, n_tok, scratch);
}

void matmul_rows(const MatView& w, const void* qx, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                 int64_t y_stride) {
  SNUG_DCHECK(0 <= r0 && r0 <= r1 && r1 <= w.rows);
  SNUG_DCHECK(n_tok <= 1 || y_stride >= w.rows);
  simd::matmul_rows(w, qx, n_tok, r0, r1, y, y_stride);
}

int64_t matmul_packed_bytes(const MatView& w) {
  int64_t rows = 0;
  return simd::matmul_packed_bytes(w, &rows);
}
int64_t matmul_packed_rows(const MatView& w) {
  int64_t rows = 0;
  return simd::matmul_packed_bytes(w, &rows) > 0 ? rows : 0;
}
int64_t matmul_pack_slice_rows(const MatView& w) {
  const int64_t all = matmul_packed_rows(w);
  if (all == 0) return 0;
  MatView slice = w;
  slice.rows = std::min<int64_t>(
      all, std::max<int64_t>(
               1, static_cast<int64_t>(kPackSliceBytes / std::max<size_t>(w.row_bytes, 1))));
  const int64_t rows = matmul_packed_rows(slice);  // whole groups
  if (rows > 0) return rows;
  for (int64_t r = 1; r <= all; ++r) {  // a slice shorter than a group: one group
    slice.rows = r;
    if (matmul_packed_rows(slice) == r) return r;
  }
  return all;
}
void matmul_unpack_row(const MatView& w, int64_t r, void* row) {
  SNUG_CHECK(w.packed != nullptr && r >= 0 && r < matmul_packed_rows(w));
  simd::matmul_unpack_row(w, r, 0, w.cols / info(w.type).block_size, row);
}
void matmul_packed_dequantize_row(const MatView& w, int64_t r, float* out) {
  SNUG_CHECK(w.packed != nullptr && r >= 0 && r < matmul_packed_rows(w));
  // A few blocks at a time through a buffer on the stack.
  const DTypeInfo& ti = info(w.type);
  const int64_t nblocks = w.cols / ti.block_size;
  alignas(64) uint8_t buf[4096];
  const int64_t per = std::max<int64_t>(1, static_cast<int64_t>(sizeof(buf) / ti.block_bytes));
  for (int64_t b0 = 0; b0 < nblocks; b0 += per) {
    const int64_t b1 = std::min(nblocks, b0 + per);
    simd::matmul_unpack_row(w, r, b0, b1, buf);
    dequantize_row(w.type, buf, out + b0 * ti.block_size, (b1 - b0) * ti.block_size);
  }
}
void matmul_pack(const MatView& w, void* out) {
  SNUG_CHECK(reinterpret_cast<uintptr_t>(out) % 64 == 0);
  simd::matmul_pack(w, out);
}

namespace {

// Below this many tokens the conversion runs on the calling thread: waking the
// pool costs more than converting a few rows (generation converts one).
constexpr int64_t kParallelConvertTokens = 8;

void convert_activations(const MatView& w, const float* x, int64_t x_stride, int64_t n_tok,
                         void* scratch, ThreadPool& pool) {
  if (n_tok < kParallelConvertTokens) {
    simd::quantize_activations(w.type, x, x_stride, w.cols, n_tok, scratch);
    return;
  }
  const size_t act_bytes = ref::activation_row_bytes(w.type, w.cols);
  pool.run([&](int tid, int nth) {
    for_each_chunk(n_tok, 1, tid, nth, [&](int64_t t0, int64_t t1) {
      simd::quantize_activations(w.type, x + t0 * x_stride, x_stride, w.cols, t1 - t0,
                                 static_cast<char*>(scratch) + t0 * act_bytes);
    });
  });
}

}  // namespace

namespace {
// Matrices that may share one converted input: same cols and activation type.
void check_shared_input(const MatView* mats, int count) {
  SNUG_CHECK(count > 0);
  for (int i = 0; i < count; ++i) {
    SNUG_CHECK(mats[i].cols % info(mats[i].type).block_size == 0);
    SNUG_CHECK(*row_bytes(mats[i].type, mats[i].cols) == mats[i].row_bytes);
    SNUG_CHECK(mats[i].cols == mats[0].cols &&
               activation_type(mats[i].type) == activation_type(mats[0].type));
  }
}
}  // namespace

void matmul(const MatView& w, const float* x, int64_t x_stride, int64_t n_tok, float* y,
            int64_t y_stride, void* scratch, ThreadPool& pool) {
  matmul_multi(&w, 1, x, x_stride, n_tok, &y, &y_stride, scratch, pool);
}

void matmul_multi(const MatView* mats, int count, const float* x, int64_t x_stride, int64_t n_tok,
                  float* const* outputs, const int64_t* out_strides, void* scratch,
                  ThreadPool& pool) {
  check_shared_input(mats, count);
  convert_activations(mats[0], x, x_stride, n_tok, scratch, pool);
  matmul_multi_converted(mats, count, scratch, n_tok, outputs, out_strides, pool);
}

void matmul_multi_converted(const MatView* mats, int count, const void* qx, int64_t n_tok,
                            float* const* outputs, const int64_t* out_strides, ThreadPool& pool) {
  check_shared_input(mats, count);
  // One row space over all matrices, handed out in whole 16-row blocks
  // (register tiles, qgemm_vnni-inl.h's row blocks) as one contiguous share
  // per thread (ShareQueue). An owner claims its share front to back, half of
  // what is left at a time with several tokens, all of it with one, so its
  // rows are one stream, and the row-block kernel asks for the 16 rows after
  // a claim's last as it would within one (the next claim's, where the owner
  // keeps going). A thread done early takes single blocks from the back of
  // the others' shares, so one slowed by a neighbour (a shared core, a busy
  // hypervisor) holds up no one for long: with equal static shares, the
  // others waited at every product (16 streams: 14% of the threads' time).
  // kernels_bench step/q4_1/smollm2/tok16/mapped/2MiB/threads2, Zen 4:
  // 7.2-7.7 ms against 7.7-8.4 with the guided claims before (each claim
  // then starting its stream afresh, alternating between the threads);
  // one thread takes 13.7.
  int64_t total = 0;
  for (int i = 0; i < count; ++i) total += mats[i].rows;
  ShareQueue queue(total, 16, pool.size(), n_tok == 1 ? 1 : 2);
  pool.run([&](int tid, int) {
    queue.drain(tid, [&](int64_t b, int64_t e) {
      int64_t base = 0;
      for (int i = 0; i < count && b < e; ++i) {
        const int64_t r0 = std::max<int64_t>(b - base, 0),
                      r1 = std::min<int64_t>(e - base, mats[i].rows);
        if (r0 < r1) simd::matmul_rows(mats[i], qx, n_tok, r0, r1, outputs[i], out_strides[i]);
        base += mats[i].rows;
      }
    });
  });
}

// ggml's rms_norm is a scalar loop summing squares in double, so the scalar
// reference is llama.cpp's arithmetic on every target; a vector sum would only
// change its rounding. Several rows keep that order with a row in each lane
// (simd::rms_norm_rows).
void rms_norm(const float* x, const float* weight, float* y, int64_t n, float eps) {
  ref::rms_norm(x, weight, y, n, eps);
}
void rms_norm_rows(const float* x, const float* weight, float* y, int64_t n, int64_t rows,
                   float eps) {
  simd::rms_norm_rows(x, weight, y, n, rows, eps);
}
void silu_mul(float* gate, const float* up, int64_t n) {
  simd::silu_mul(gate, up, n);
}
// ggml's geglu: a table lookup at the f16 rounding of each value (F16C
// rounds eight at a time on AVX2, simd::gelu_mul).
void gelu_mul(float* gate, const float* up, int64_t n) {
  simd::gelu_mul(gate, up, n);
}
void rope(float* x, int64_t head_dim, int64_t rot_dim, int64_t pos, float freq_base,
          float freq_scale, RopeMode mode) {
  SNUG_CHECK(rot_dim % 2 == 0 && rot_dim <= head_dim);
  SNUG_CHECK(rot_dim <= 1024);
  float cs[1024];
  ref::rope_cache(pos, rot_dim, freq_base, freq_scale, cs);
  simd::rope_apply(x, rot_dim, cs, mode);
  (void)head_dim;  // elements past rot_dim are left as they are
}
void rope_cache(int64_t pos, int64_t rot_dim, float freq_base, float freq_scale, float* cs) {
  SNUG_CHECK(rot_dim % 2 == 0);
  ref::rope_cache(pos, rot_dim, freq_base, freq_scale, cs);
}
void rope_apply(float* x, int64_t rot_dim, const float* cs, RopeMode mode) {
  SNUG_DCHECK(rot_dim % 2 == 0);
  simd::rope_apply(x, rot_dim, cs, mode);
}

}  // namespace snug::tensor
