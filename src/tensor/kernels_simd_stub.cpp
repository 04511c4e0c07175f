#include "tensor/kernels_ref.h"
#include "tensor/kernels_simd.h"
namespace snug::tensor::simd {
void rms_norm(const float* x, const float* weight, float* y, int64_t n, float eps) {
  ref::rms_norm(x, weight, y, n, eps);
}
void softmax(float* x, int64_t n) {
  ref::softmax(x, n);
}
void gelu_mul(float* gate, const float* up, int64_t n) {
  ref::gelu_mul(gate, up, n);
}
float dot_f32(const float* a, const float* b, int64_t n) {
  return ref::dot_f32(a, b, n);
}
void axpy(float a, const float* x, float* y, int64_t n) {
  ref::axpy(a, x, y, n);
}
float dot_f16_f32(const uint16_t* a, const float* b, int64_t n) {
  return ref::dot_f16_f32(a, b, n);
}
void axpy_f16(float a, const uint16_t* x, float* y, int64_t n) {
  ref::axpy_f16(a, x, y, n);
}
}  // namespace snug::tensor::simd
