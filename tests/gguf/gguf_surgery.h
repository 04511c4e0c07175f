// Editing a valid GGUF file at the byte level, for tests that need a file with
// exactly one defect. Layout::parse() splits a trusted, well-formed file into
// its raw key/values, tensor directory and data section; the fields can then be
// changed freely (any type tag, any count, any offset) and bytes() re-encodes the
// file, recomputing only the counts in the header and the padding before data.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace snug::testing {

struct RawKv {
  std::string key;
  uint32_t type = 0;           // GGUF value type tag, written as is
  std::vector<uint8_t> value;  // everything after the type tag
};

struct RawTensor {
  std::string name;
  std::vector<uint64_t> dims;  // dims[0] innermost; the count is written as n_dims
  uint32_t type = 0;
  uint64_t offset = 0;  // relative to the data section
};

struct Layout {
  uint32_t version = 3;
  std::vector<RawKv> kvs;
  std::vector<RawTensor> tensors;
  uint64_t alignment = 32;    // padding used by bytes() before the data section
  std::vector<uint8_t> data;  // the data section as it was

  // Splits a well-formed file (checked: aborts on a malformed one).
  static Layout parse(std::span<const uint8_t> bytes);
  std::vector<uint8_t> bytes() const;

  RawKv* kv(std::string_view key);  // nullptr when absent
  RawTensor* tensor(std::string_view name);
  // Replaces the value of `key` in place, or appends it when absent.
  void set(std::string_view key, uint32_t type, std::vector<uint8_t> value);
  void remove_kv(std::string_view key);
  void remove_tensor(std::string_view name);
};

// Encoders for value payloads (little-endian, as GGUF stores them).
std::vector<uint8_t> enc_u32(uint32_t v);
std::vector<uint8_t> enc_u64(uint64_t v);
std::vector<uint8_t> enc_f32(float v);
std::vector<uint8_t> enc_string(std::string_view s);
// An array payload: element type, count, then the raw element bytes.
std::vector<uint8_t> enc_array(uint32_t elem_type, uint64_t count, std::span<const uint8_t> elems);
std::vector<uint8_t> enc_strings(const std::vector<std::string>& v);

// Value type tags, spelled as in the GGUF specification.
enum Tag : uint32_t {
  kTagU8 = 0,
  kTagI8 = 1,
  kTagU32 = 4,
  kTagI32 = 5,
  kTagF32 = 6,
  kTagBool = 7,
  kTagString = 8,
  kTagArray = 9,
  kTagU64 = 10,
};

// Overwrites bytes at `at` with the little-endian encoding of `v`.
void poke_u32(std::vector<uint8_t>& bytes, size_t at, uint32_t v);
void poke_u64(std::vector<uint8_t>& bytes, size_t at, uint64_t v);

}  // namespace snug::testing
