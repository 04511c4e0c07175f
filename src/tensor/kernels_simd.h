// The Highway-dispatched kernels (internal to tensor/). Each call picks the
// best target the CPU supports (or the one a test forced with
// hwy::SetSupportedTargetsForTest) through HWY_DYNAMIC_DISPATCH. Contracts are
// those of the same-named functions in kernels.h; scalar twins in kernels_ref.h.
#pragma once

#include <cstdint>

#include "tensor/kernels.h"

namespace snug::tensor::simd {

void quantize_activations(DType w, const float* x, int64_t x_stride, int64_t cols, int64_t n_tok,
                          void* scratch);
void matmul_rows(const MatView& w, const void* qx, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                 int64_t y_stride);
int64_t matmul_packed_bytes(const MatView& w, int64_t* packed_rows);
void matmul_pack(const MatView& w, void* out);
void matmul_unpack_row(const MatView& w, int64_t r, int64_t b0, int64_t b1, void* out);

// One row of BlockQ8A activations (the 32-element formats' activation type).
void quantize_row_q8a(const float* x, void* dst, int64_t n);
// rows such rows, at x + r * x_stride (floats) into dst + r * dst_stride (bytes).
void quantize_rows_q8a(const float* x, int64_t x_stride, void* dst, int64_t dst_stride, int64_t n,
                       int64_t rows);
// ref::rms_norm_rows's bits (each row's squares summed in double in order).
void rms_norm_rows(const float* x, const float* weight, float* y, int64_t n, int64_t rows,
                   float eps);
void silu_mul(float* gate, const float* up, int64_t n);
// ref::gelu_mul's bits (the f16 rounding by F16C, the table lookup scalar).
void gelu_mul(float* gate, const float* up, int64_t n);
void rope_apply(float* x, int64_t rot_dim, const float* cs, RopeMode mode);
// y[i] = detail::f32_to_f16(x[i]), the same bits.
void row_f32_to_f16(const float* x, uint16_t* y, int64_t n);

}  // namespace snug::tensor::simd
