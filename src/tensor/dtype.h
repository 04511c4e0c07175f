// Element and block formats, numbered exactly as GGUF/ggml number them, so a
// tensor type read from a file maps to a DType by value. Block formats store a
// fixed number of elements (block_size) in a fixed number of bytes (block_bytes).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace snug::tensor {

enum class DType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
};

struct DTypeInfo {
  std::string_view name;  // as ggml prints it: "q4_K", "f16"
  int64_t block_size;     // elements per block (1 for plain element types)
  int64_t block_bytes;    // bytes per block
  bool has_kernels;       // snug can dequantize it and multiply with it
};

// Layout of a GGUF type id, or nullopt for an id that GGUF does not define.
std::optional<DTypeInfo> dtype_info(uint32_t type_id);
const DTypeInfo& info(DType t);  // for a known DType; checked
std::string_view dtype_name(DType t);

// Bytes of one row of n elements; nullopt when n is not a multiple of the
// block size or the size overflows.
std::optional<uint64_t> row_bytes(DType t, int64_t n);

}  // namespace snug::tensor
