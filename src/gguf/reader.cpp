// GGUF layout (v2/v3, little-endian):
//   "GGUF" u32 version, u64 tensor_count, u64 kv_count,
//   kv_count x { string key, u32 type, value }, tensor_count x { string name,
//   u32 n_dims, u64 ne[n_dims], u32 type, u64 offset }, padding to alignment,
//   tensor data (offsets relative to the start of this section).
// A string is u64 length + bytes; an array is u32 element type + u64 count + elements.
#include <algorithm>
#include <cstring>
#include <limits>
#include <unordered_set>

#include "base/checked.h"
#include "gguf/gguf.h"

namespace snug::gguf {
namespace {

constexpr uint64_t kMaxDims = 4;
// Counts in the header are only bounded by the file size; an entry in memory is
// several times larger than its smallest encoding, so reserving the claimed count
// could take ~10x the file. Reserve at most this many and let real entries grow
// the vectors: memory then follows what the file really holds.
constexpr uint64_t kMaxReserve = 4096;

// Reads little-endian values from [pos, end) of untrusted bytes.
class Cursor {
 public:
  Cursor(const uint8_t* base, uint64_t size) : base_(base), size_(size) {}
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  template <typename T>
  bool read(T* out) {
    if (remaining() < sizeof(T)) return false;
    std::memcpy(out, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }
  bool skip(uint64_t n) {
    if (remaining() < n) return false;
    pos_ += n;
    return true;
  }
  bool read_string(std::string_view* out) {
    uint64_t len;
    if (!read(&len)) return false;
    if (len > remaining()) return false;
    *out = std::string_view(reinterpret_cast<const char*>(base_ + pos_), len);
    pos_ += len;
    return true;
  }
  const uint8_t* here() const { return base_ + pos_; }

 private:
  const uint8_t* base_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

uint64_t scalar_size(ValueType t) {
  switch (t) {
    case ValueType::kU8:
    case ValueType::kI8:
    case ValueType::kBool:
      return 1;
    case ValueType::kU16:
    case ValueType::kI16:
      return 2;
    case ValueType::kU32:
    case ValueType::kI32:
    case ValueType::kF32:
      return 4;
    case ValueType::kU64:
    case ValueType::kI64:
    case ValueType::kF64:
      return 8;
    default:
      return 0;
  }
}

bool known_type(uint32_t t) {
  return t <= static_cast<uint32_t>(ValueType::kF64);
}

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

void decode_scalar(ValueType t, const uint8_t* p, Value* v) {
  switch (t) {
    case ValueType::kU8:
      v->u = load<uint8_t>(p);
      v->i = static_cast<int64_t>(v->u);
      break;
    case ValueType::kI8:
      v->i = load<int8_t>(p);  // NOLINT(bugprone-signed-char-misuse): i8 values are signed
      v->u = static_cast<uint64_t>(v->i);
      break;
    case ValueType::kU16:
      v->u = load<uint16_t>(p);
      v->i = static_cast<int64_t>(v->u);
      break;
    case ValueType::kI16:
      v->i = load<int16_t>(p);
      v->u = static_cast<uint64_t>(v->i);
      break;
    case ValueType::kU32:
      v->u = load<uint32_t>(p);
      v->i = static_cast<int64_t>(v->u);
      break;
    case ValueType::kI32:
      v->i = load<int32_t>(p);
      v->u = static_cast<uint64_t>(v->i);
      break;
    case ValueType::kU64:
      v->u = load<uint64_t>(p);
      v->i = static_cast<int64_t>(v->u);
      break;
    case ValueType::kI64:
      v->i = load<int64_t>(p);
      v->u = static_cast<uint64_t>(v->i);
      break;
    case ValueType::kF32:
      v->f = load<float>(p);
      break;
    case ValueType::kF64:
      v->f = load<double>(p);
      break;
    case ValueType::kBool:
      v->u = load<uint8_t>(p);
      v->i = static_cast<int64_t>(v->u);
      break;
    default:
      break;
  }
}

Status read_value(Cursor& c, ValueType type, std::string_view key, Value* v) {
  v->type = type;
  if (type == ValueType::kString) {
    if (!c.read_string(&v->str))
      return make_error("metadata '", printable(key),
                        "': string length runs past the end of the file");
    return ok_status();
  }
  if (type == ValueType::kArray) {
    uint32_t et;
    uint64_t count;
    if (!c.read(&et) || !c.read(&count))
      return make_error("metadata '", printable(key), "': array header is cut off");
    if (!known_type(et))
      return make_error("metadata '", printable(key), "': array of unknown value type ", et);
    v->elem_type = static_cast<ValueType>(et);
    if (v->elem_type == ValueType::kArray)
      return make_error("metadata '", printable(key), "': arrays of arrays are not supported");
    v->count = count;
    if (v->elem_type == ValueType::kString) {
      // Each string needs at least its 8-byte length: bound count before reserving.
      if (count > c.remaining() / 8)
        return make_error("metadata '", printable(key), "': array of ", count,
                          " strings is larger than the file");
      v->strings.reserve(std::min(count, kMaxReserve * 16));
      for (uint64_t k = 0; k < count; ++k) {
        std::string_view s;
        if (!c.read_string(&s))
          return make_error("metadata '", printable(key), "': string ", k,
                            " runs past the end of the file");
        v->strings.push_back(s);
      }
      return ok_status();
    }
    uint64_t es = scalar_size(v->elem_type);
    auto bytes = checked_mul(es, count);
    if (!bytes || *bytes > c.remaining())
      return make_error("metadata '", printable(key), "': array of ", count,
                        " elements runs past the end of the file");
    v->elems = c.here();
    c.skip(*bytes);
    return ok_status();
  }
  uint64_t size = scalar_size(type);
  if (c.remaining() < size) return make_error("metadata '", printable(key), "': value is cut off");
  decode_scalar(type, c.here(), v);
  c.skip(size);
  if (type == ValueType::kBool && v->u > 1)
    return make_error("metadata '", printable(key), "': bool value ", v->u, " is neither 0 nor 1");
  return ok_status();
}

}  // namespace

std::string_view value_type_name(ValueType t) {
  static constexpr std::string_view kNames[] = {"u8",  "i8",  "u16",  "i16",    "u32",
                                                "i32", "f32", "bool", "string", "array",
                                                "u64", "i64", "f64"};
  auto k = static_cast<uint32_t>(t);
  return k < std::size(kNames) ? kNames[k] : "unknown";
}

bool Value::is_integer() const {
  switch (type) {
    case ValueType::kU8:
    case ValueType::kI8:
    case ValueType::kU16:
    case ValueType::kI16:
    case ValueType::kU32:
    case ValueType::kI32:
    case ValueType::kU64:
    case ValueType::kI64:
      return true;
    default:
      return false;
  }
}

double Value::array_f64(uint64_t k) const {
  Value v;
  decode_scalar(elem_type, elems + k * scalar_size(elem_type), &v);
  if (elem_type == ValueType::kF32 || elem_type == ValueType::kF64) return v.f;
  return static_cast<double>(v.i);
}

int64_t Value::array_i64(uint64_t k) const {
  Value v;
  decode_scalar(elem_type, elems + k * scalar_size(elem_type), &v);
  if (elem_type == ValueType::kF32 || elem_type == ValueType::kF64) {
    // Truncated toward zero, saturated to int64's range (a float beyond it,
    // or NaN, converted as is would be undefined behaviour): NaN is INT64_MIN.
    constexpr double kTwo63 = 9223372036854775808.0;
    if (!(v.f > -kTwo63)) return std::numeric_limits<int64_t>::min();
    if (v.f >= kTwo63) return std::numeric_limits<int64_t>::max();
    return static_cast<int64_t>(v.f);
  }
  return v.i;
}

Result<File> File::open(const std::string& path, ReadOptions options) {
  SNUG_ASSIGN_OR_RETURN(MappedFile map, MappedFile::open(path));
  auto shared = std::make_shared<MappedFile>(std::move(map));
  SNUG_ASSIGN_OR_RETURN(File f, parse(shared->bytes(), path, options));
  f.map_ = std::move(shared);
  return f;
}

Result<File> File::parse(std::span<const uint8_t> bytes, std::string name, ReadOptions options) {
  File f;
  f.name_ = std::move(name);
  f.file_size_ = bytes.size();
  const std::string& n = f.name_;
  Cursor c(bytes.data(), bytes.size());

  char magic[4];
  if (bytes.size() < 4 || !c.read(&magic))
    return make_error("'", n, "' is too short to be a GGUF file (", bytes.size(), " bytes)");
  if (std::memcmp(magic, "GGUF", 4) != 0)
    return make_error("'", n, "' is not a GGUF file (bad magic)");
  if (!c.read(&f.version_)) return make_error("'", n, "': GGUF header is cut off");
  if (f.version_ < 2 || f.version_ > 3)
    return make_error("'", n, "': GGUF version ", f.version_, " is not supported (need 2 or 3)");
  uint64_t n_tensors, n_kv;
  if (!c.read(&n_tensors) || !c.read(&n_kv)) return make_error("'", n, "': GGUF header is cut off");
  // Every key/value takes at least 12 bytes, every tensor entry at least 24:
  // bound the counts by the file before reserving anything.
  if (n_kv > c.remaining() / 12)
    return make_error("'", n, "': metadata count ", n_kv, " is larger than the file can hold");
  if (n_tensors > c.remaining() / 24)
    return make_error("'", n, "': tensor count ", n_tensors, " is larger than the file can hold");

  f.kvs_.reserve(std::min(n_kv, kMaxReserve));
  std::unordered_set<std::string_view> keys;
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string_view key;
    if (!c.read_string(&key))
      return make_error("'", n, "': metadata key ", k, " runs past the end of the file");
    if (key.empty()) return make_error("'", n, "': metadata key ", k, " is empty");
    if (!keys.insert(key).second)
      return make_error("'", n, "': duplicate metadata key '", printable(key), "'");
    uint32_t type;
    if (!c.read(&type)) return make_error("'", n, "': metadata '", printable(key), "' is cut off");
    if (!known_type(type))
      return make_error("'", n, "': metadata '", printable(key), "' has unknown value type ", type);
    KeyValue kv;
    kv.key = std::string(key);
    if (auto st = read_value(c, static_cast<ValueType>(type), printable(key), &kv.value); !st.ok())
      return make_error("'", n, "': ", st.error().message);
    f.kvs_.push_back(std::move(kv));
  }

  if (const Value* a = f.find("general.alignment")) {
    if (a->type != ValueType::kU32)
      return make_error("'", n, "': general.alignment must be u32, not ", value_type_name(a->type));
    if (a->u == 0 || (a->u & (a->u - 1)) != 0)
      return make_error("'", n, "': general.alignment ", a->u, " is not a power of two");
    f.alignment_ = a->u;
  }

  f.tensors_.reserve(std::min(n_tensors, kMaxReserve));
  std::unordered_set<std::string_view> names;
  for (uint64_t k = 0; k < n_tensors; ++k) {
    std::string_view tname;
    if (!c.read_string(&tname))
      return make_error("'", n, "': tensor name ", k, " runs past the end of the file");
    if (!names.insert(tname).second)
      return make_error("'", n, "': duplicate tensor name '", printable(tname), "'");
    TensorInfo t;
    t.name = std::string(tname);
    uint32_t n_dims;
    if (!c.read(&n_dims))
      return make_error("'", n, "': tensor '", printable(tname), "' is cut off");
    if (n_dims == 0 || n_dims > kMaxDims)
      return make_error("'", n, "': tensor '", printable(tname), "' has ", n_dims,
                        " dimensions (1 to 4 allowed)");
    t.n_dims = static_cast<int>(n_dims);
    uint64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t ne;
      if (!c.read(&ne)) return make_error("'", n, "': tensor '", printable(tname), "' is cut off");
      if (ne == 0)
        return make_error("'", n, "': tensor '", printable(tname), "' has a zero dimension");
      if (ne > static_cast<uint64_t>(INT64_MAX))
        return make_error("'", n, "': tensor '", printable(tname), "' dimension ", ne,
                          " is too large");
      auto e = checked_mul(elements, ne);
      if (!e || *e > static_cast<uint64_t>(INT64_MAX))
        return make_error("'", n, "': tensor '", printable(tname), "' element count overflows");
      elements = *e;
      t.ne[d] = static_cast<int64_t>(ne);
    }
    uint32_t type;
    uint64_t offset;
    if (!c.read(&type) || !c.read(&offset))
      return make_error("'", n, "': tensor '", printable(tname), "' is cut off");
    auto info = tensor::dtype_info(type);
    if (!info)
      return make_error("'", n, "': tensor '", printable(tname), "' has unknown type ", type);
    t.type = static_cast<tensor::DType>(type);
    if (t.ne[0] % info->block_size != 0)
      return make_error("'", n, "': tensor '", printable(tname), "' row of ", t.ne[0],
                        " elements is not a multiple of the ", info->name, " block size ",
                        info->block_size);
    auto bytes_ = checked_mul(elements / static_cast<uint64_t>(info->block_size),
                              static_cast<uint64_t>(info->block_bytes));
    if (!bytes_)
      return make_error("'", n, "': tensor '", printable(tname), "' byte size overflows");
    t.bytes = *bytes_;
    if (offset % f.alignment_ != 0)
      return make_error("'", n, "': tensor '", printable(tname), "' offset ", offset,
                        " is not aligned to ", f.alignment_);
    t.offset = offset;  // relative for now
    f.tensors_.push_back(std::move(t));
  }

  auto data_start = checked_add(c.pos(), f.alignment_ - 1);
  if (!data_start) return make_error("'", n, "': header size overflows");
  f.data_offset_ = *data_start / f.alignment_ * f.alignment_;

  // Tensor data: inside the file (unless header-only is allowed) and not overlapping.
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  ranges.reserve(f.tensors_.size());
  bool all_present = true;
  for (auto& t : f.tensors_) {
    auto abs = checked_add(f.data_offset_, t.offset);
    auto end = abs ? checked_add(*abs, t.bytes) : std::nullopt;
    if (!end) return make_error("'", n, "': tensor '", printable(t.name), "' offset overflows");
    t.offset = *abs;
    ranges.emplace_back(t.offset, *end);
    if (!range_within(t.offset, t.bytes, f.file_size_)) all_present = false;
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t k = 1; k < ranges.size(); ++k) {
    if (ranges[k].first < ranges[k - 1].second) {
      for (const auto& t : f.tensors_) {
        if (t.offset == ranges[k].first)
          return make_error("'", n, "': tensor '", printable(t.name),
                            "' overlaps another tensor's data");
      }
    }
  }
  if (!all_present && !options.allow_missing_data) {
    for (const auto& t : f.tensors_) {
      if (!range_within(t.offset, t.bytes, f.file_size_))
        return make_error("'", n, "': tensor '", printable(t.name), "' data (", t.bytes,
                          " bytes at offset ", t.offset, ") runs past the end of the file (",
                          f.file_size_, " bytes): file truncated?");
    }
  }
  f.has_data_ = all_present;
  if (all_present) {
    for (auto& t : f.tensors_) t.data = bytes.data() + t.offset;
  }
  return f;
}

const Value* File::find(std::string_view key) const {
  for (const auto& kv : kvs_) {
    if (kv.key == key) return &kv.value;
  }
  return nullptr;
}

const TensorInfo* File::find_tensor(std::string_view name) const {
  for (const auto& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

Result<uint64_t> File::get_uint(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return make_error("'", name_, "': missing metadata '", printable(key), "'");
  if (!v->is_integer())
    return make_error("'", name_, "': metadata '", printable(key), "' must be an integer, not ",
                      value_type_name(v->type));
  if (v->i < 0 && v->type != ValueType::kU64)
    return make_error("'", name_, "': metadata '", printable(key), "' is negative (", v->i, ")");
  return v->u;
}

Result<float> File::get_float(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return make_error("'", name_, "': missing metadata '", printable(key), "'");
  if (v->is_float()) return static_cast<float>(v->f);
  if (v->is_integer()) return static_cast<float>(v->i);
  return make_error("'", name_, "': metadata '", printable(key), "' must be a number, not ",
                    value_type_name(v->type));
}

Result<std::string> File::get_string(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return make_error("'", name_, "': missing metadata '", printable(key), "'");
  if (v->type != ValueType::kString)
    return make_error("'", name_, "': metadata '", printable(key), "' must be a string, not ",
                      value_type_name(v->type));
  return std::string(v->str);
}

Result<bool> File::get_bool(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return make_error("'", name_, "': missing metadata '", printable(key), "'");
  if (v->type != ValueType::kBool)
    return make_error("'", name_, "': metadata '", printable(key), "' must be a bool, not ",
                      value_type_name(v->type));
  return v->u != 0;
}

Result<uint64_t> File::get_uint_or(std::string_view key, uint64_t fallback) const {
  return find(key) ? get_uint(key) : Result<uint64_t>(fallback);
}
Result<float> File::get_float_or(std::string_view key, float fallback) const {
  return find(key) ? get_float(key) : Result<float>(fallback);
}
Result<bool> File::get_bool_or(std::string_view key, bool fallback) const {
  return find(key) ? get_bool(key) : Result<bool>(fallback);
}

}  // namespace snug::gguf
