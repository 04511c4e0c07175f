// GGUF files: a validating reader and a writer.
//
// The reader trusts nothing in the file: every count, length, offset and size
// is checked against the bytes that are really there before it is used, so a
// truncated or hostile file yields an Error naming the defect, never an
// out-of-bounds read or an allocation larger than the file. Tensor data is not
// copied: TensorInfo::data points into the caller's bytes (normally a mapped file).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/mapped_file.h"
#include "base/result.h"
#include "tensor/dtype.h"

namespace snug::gguf {

enum class ValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};
std::string_view value_type_name(ValueType t);

// One metadata value. Scalars are held decoded; arrays keep a view of their
// elements in the file and decode on access.
struct Value {
  ValueType type = ValueType::kU8;
  // Scalars: integers in i (signed types sign-extended) or u, floats in f, bools in u.
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0;
  std::string_view str;  // kString

  // kArray only.
  ValueType elem_type = ValueType::kU8;
  uint64_t count = 0;
  const uint8_t* elems = nullptr;         // first element in the file (numeric arrays)
  std::vector<std::string_view> strings;  // string arrays, decoded once

  bool is_integer() const;
  bool is_float() const { return type == ValueType::kF32 || type == ValueType::kF64; }
  // Numeric array element k as double / int64 (bounds and type checked by
  // caller); a float element as int64 is truncated and saturated (NaN: INT64_MIN).
  double array_f64(uint64_t k) const;
  int64_t array_i64(uint64_t k) const;
};

struct TensorInfo {
  std::string name;
  tensor::DType type = tensor::DType::kF32;
  int n_dims = 0;
  std::array<int64_t, 4> ne = {1, 1, 1, 1};  // ne[0] is the innermost (contiguous) dimension
  uint64_t offset = 0;                       // absolute offset in the file
  uint64_t bytes = 0;                        // size of the data
  const uint8_t* data = nullptr;             // nullptr for a header-only file
  int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  int64_t rows() const { return ne[1] * ne[2] * ne[3]; }
};

struct KeyValue {
  std::string key;
  Value value;
};

struct ReadOptions {
  // Accept a file whose tensor data is cut off (header only): tensors keep
  // their sizes and offsets but data is nullptr. Used by the planner.
  bool allow_missing_data = false;
};

class File {
 public:
  // Maps `path` and validates it.
  static Result<File> open(const std::string& path, ReadOptions options = {});
  // Validates bytes that the caller keeps alive for the life of the File.
  static Result<File> parse(std::span<const uint8_t> bytes, std::string name,
                            ReadOptions options = {});

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return file_size_; }
  const std::string& name() const { return name_; }
  bool has_data() const { return has_data_; }

  const std::vector<KeyValue>& metadata() const { return kvs_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const Value* find(std::string_view key) const;
  const TensorInfo* find_tensor(std::string_view name) const;

  // Typed getters: an Error names the key and what was expected when the key
  // is missing, has another type, or is out of range.
  Result<uint64_t> get_uint(std::string_view key) const;
  Result<float> get_float(std::string_view key) const;
  Result<std::string> get_string(std::string_view key) const;
  Result<bool> get_bool(std::string_view key) const;
  // Defaults when absent; an Error only when present with the wrong type.
  Result<uint64_t> get_uint_or(std::string_view key, uint64_t fallback) const;
  Result<float> get_float_or(std::string_view key, float fallback) const;
  Result<bool> get_bool_or(std::string_view key, bool fallback) const;

  const MappedFile* mapping() const { return map_.get(); }

 private:
  std::string name_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  uint64_t file_size_ = 0;
  bool has_data_ = false;
  std::vector<KeyValue> kvs_;
  std::vector<TensorInfo> tensors_;
  std::shared_ptr<MappedFile> map_;  // owns the bytes when opened from a path
};

// Builds GGUF files (version 3). Values are encoded as they are set, in order.
class Writer {
 public:
  void set_u32(std::string_view key, uint32_t v);
  void set_i32(std::string_view key, int32_t v);
  void set_u64(std::string_view key, uint64_t v);
  void set_f32(std::string_view key, float v);
  void set_bool(std::string_view key, bool v);
  void set_string(std::string_view key, std::string_view v);
  void set_strings(std::string_view key, const std::vector<std::string>& v);
  void set_f32s(std::string_view key, const std::vector<float>& v);
  void set_i32s(std::string_view key, const std::vector<int32_t>& v);
  // Raw key/value for tests that need unusual encodings: `payload` follows the type tag.
  void set_raw(std::string_view key, uint32_t type_tag, std::span<const uint8_t> payload);
  // A value read from another file, re-encoded as it was (copying metadata).
  void set_value(std::string_view key, const Value& v);

  // dims[0] is the innermost dimension. `data` must hold exactly the tensor's bytes.
  void add_tensor(std::string_view name, tensor::DType type, std::vector<int64_t> dims,
                  std::span<const uint8_t> data);
  // A tensor described in the directory but without data: the file ends after
  // the header and is read with ReadOptions::allow_missing_data (planner tests
  // describe a 70B model this way). Offsets are laid out as if the data were there.
  void add_tensor_info(std::string_view name, tensor::DType type, std::vector<int64_t> dims);
  void set_alignment(uint32_t alignment) { alignment_ = alignment; }

  std::vector<uint8_t> to_bytes() const;
  // Writes to path + ".tmp" and renames on success, so a failure leaves no partial file.
  Status write(const std::string& path) const;

  // Streaming write: the data of tensors declared with add_tensor_info() comes
  // from `produce(index, emit)` in directory order, so only one tensor needs to
  // be in memory at a time. produce must emit exactly the tensor's bytes (in as
  // many pieces as it likes); emit returns an Error when the disk refuses them.
  // Same temporary-name-and-rename contract as write(); a path that exists and
  // is not a regular file (a device such as /dev/null or /dev/full, a pipe) is
  // written in place instead.
  using Emit = std::function<Status(std::span<const uint8_t>)>;
  using Produce = std::function<Status(size_t index, const Emit& emit)>;
  Status write_streaming(const std::string& path, const Produce& produce) const;

 private:
  struct PendingTensor {
    std::string name;
    tensor::DType type;
    std::vector<int64_t> dims;
    std::vector<uint8_t> data;
    uint64_t info_bytes = 0;  // add_tensor_info: the size the data would have
  };
  // The header up to the aligned start of the data, and each tensor's offset in the data.
  std::vector<uint8_t> header_bytes(std::vector<uint64_t>* offsets) const;
  Status write_streaming(const std::string& path, const Produce& produce,
                         const std::vector<uint8_t>* whole) const;

  std::vector<uint8_t> kv_bytes_;
  uint64_t kv_count_ = 0;
  std::vector<PendingTensor> tensors_;
  uint32_t alignment_ = 32;
  bool alignment_written_ = false;
};

}  // namespace snug::gguf
