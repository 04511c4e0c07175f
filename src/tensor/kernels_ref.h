// The scalar reference of every kernel: plain loops, written for clarity and
// used as the oracle that the SIMD paths are tested against. The quantizers
// and dequantizers are bit-identical to ggml's reference code (same operation
// order, no FMA contraction: this library builds with -ffp-contract=off).
//
// Also exposed for tests and tools: the activation layouts that matmul's
// scratch holds (kernels.h keeps them opaque).
#pragma once

#include <cstddef>
#include <cstdint>

#include "tensor/dtype.h"
#include "tensor/kernels.h"

namespace snug::tensor::ref {

void dequantize_row(DType type, const void* src, float* dst, int64_t n);
void quantize_row(DType type, const float* src, void* dst, int64_t n);
void quantize_row_weighted(DType type, const float* src, void* dst, int64_t n,
                           const float* weights);  // quantize_weighted.cpp

// The activation row matmul_rows reads for one token of `cols` values when the
// weight type is w: f32 copy (float weights), BlockQ8A (32-element formats),
// BlockQ8_K (K formats).
size_t activation_row_bytes(DType w, int64_t cols);
void quantize_activation_row(DType w, const float* x, void* dst, int64_t cols);

// Dot product of one weight row of `type` with one activation row as written by
// quantize_activation_row(type, ...), n elements.
float vec_dot(DType type, const void* w_row, const void* act_row, int64_t n);

void quantize_activations(DType w, const float* x, int64_t x_stride, int64_t cols, int64_t n_tok,
                          void* scratch);
void matmul_rows(const MatView& w, const void* qx, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                 int64_t y_stride);

void rms_norm(const float* x, const float* weight, float* y, int64_t n, float eps);
void rms_norm_rows(const float* x, const float* weight, float* y, int64_t n, int64_t rows,
                   float eps);
void silu_mul(float* gate, const float* up, int64_t n);
// gate[i] = GELU(gate[i]) x up[i] as ggml's geglu with GGML_GELU_FP16: 0 at
// or below -10, gate[i] x up[i] at or above 10, else the table's value at
// gate[i] rounded to f16.
void gelu_mul(float* gate, const float* up, int64_t n);
// ggml_table_gelu_f16: GELU of every f16 value (indexed by its bits), rounded
// to f16. Built on first use (128 KiB), then shared.
const uint16_t* gelu_f16_table();
void rope_cache(int64_t pos, int64_t rot_dim, float freq_base, float freq_scale, float* cs);
void rope_apply(float* x, int64_t rot_dim, const float* cs, RopeMode mode);
void rope(float* x, int64_t head_dim, int64_t rot_dim, int64_t pos, float freq_base,
          float freq_scale, RopeMode mode);

}  // namespace snug::tensor::ref
