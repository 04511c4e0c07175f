#include "tensor/fp16.h"

#include "tensor/kernels.h"

namespace snug::tensor {

float fp16_to_fp32(uint16_t h) {
  return detail::f16_to_f32(h);
}
uint16_t fp32_to_fp16(float f) {
  return detail::f32_to_f16(f);
}
float bf16_to_fp32(uint16_t h) {
  return detail::bf16_to_f32(h);
}
uint16_t fp32_to_bf16(float f) {
  return detail::f32_to_bf16(f);
}

}  // namespace snug::tensor
