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
  // snug's own N:M-sparse formats (quant_blocks.h), numbered far past ggml's
  // types so that llama.cpp refuses such a file instead of misreading it.
  kQ4_0NM = 1002,
  kQ8_0NM = 1008,
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

// The N:M-sparse form of a dense type (q8_0 -> q8_0_nm, q4_0 -> q4_0_nm), or
// nullopt for a type without one; and back.
std::optional<DType> nm_sparse_type(DType dense);
std::optional<DType> nm_dense_type(DType sparse);
// Most blocks in a row of an N:M-sparse type (columns / 32) that snug's
// kernels take: they expand a row on the stack.
inline constexpr int64_t kNmMaxBlocks = 2048;
// A type that only snug reads (llama.cpp and ggml do not know it).
bool snug_only_type(DType t);

// Bytes of one row of n elements; nullopt when n is not a multiple of the
// block size or the size overflows.
std::optional<uint64_t> row_bytes(DType t, int64_t n);

}  // namespace snug::tensor
