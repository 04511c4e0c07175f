#include <cerrno>
#include <cstdio>
#include <cstring>

#include "base/check.h"
#include "gguf/gguf.h"

namespace snug::gguf {
namespace {

template <typename T>
void put(std::vector<uint8_t>& out, T v) {
  uint8_t b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.insert(out.end(), b, b + sizeof(T));
}

void put_string(std::vector<uint8_t>& out, std::string_view s) {
  put<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

}  // namespace

#define SNUG_KV_HEADER(key, tag)                        \
  put_string(kv_bytes_, key);                           \
  put<uint32_t>(kv_bytes_, static_cast<uint32_t>(tag)); \
  ++kv_count_

void Writer::set_u32(std::string_view key, uint32_t v) {
  SNUG_KV_HEADER(key, ValueType::kU32);
  put(kv_bytes_, v);
  if (key == "general.alignment") alignment_written_ = true;
}
void Writer::set_i32(std::string_view key, int32_t v) {
  SNUG_KV_HEADER(key, ValueType::kI32);
  put(kv_bytes_, v);
}
void Writer::set_u64(std::string_view key, uint64_t v) {
  SNUG_KV_HEADER(key, ValueType::kU64);
  put(kv_bytes_, v);
}
void Writer::set_f32(std::string_view key, float v) {
  SNUG_KV_HEADER(key, ValueType::kF32);
  put(kv_bytes_, v);
}
void Writer::set_bool(std::string_view key, bool v) {
  SNUG_KV_HEADER(key, ValueType::kBool);
  put<uint8_t>(kv_bytes_, v ? 1 : 0);
}
void Writer::set_string(std::string_view key, std::string_view v) {
  SNUG_KV_HEADER(key, ValueType::kString);
  put_string(kv_bytes_, v);
}
void Writer::set_strings(std::string_view key, const std::vector<std::string>& v) {
  SNUG_KV_HEADER(key, ValueType::kArray);
  put<uint32_t>(kv_bytes_, static_cast<uint32_t>(ValueType::kString));
  put<uint64_t>(kv_bytes_, v.size());
  for (const auto& s : v) put_string(kv_bytes_, s);
}
void Writer::set_f32s(std::string_view key, const std::vector<float>& v) {
  SNUG_KV_HEADER(key, ValueType::kArray);
  put<uint32_t>(kv_bytes_, static_cast<uint32_t>(ValueType::kF32));
  put<uint64_t>(kv_bytes_, v.size());
  for (float x : v) put(kv_bytes_, x);
}
void Writer::set_i32s(std::string_view key, const std::vector<int32_t>& v) {
  SNUG_KV_HEADER(key, ValueType::kArray);
  put<uint32_t>(kv_bytes_, static_cast<uint32_t>(ValueType::kI32));
  put<uint64_t>(kv_bytes_, v.size());
  for (int32_t x : v) put(kv_bytes_, x);
}
void Writer::set_raw(std::string_view key, uint32_t type_tag, std::span<const uint8_t> payload) {
  SNUG_KV_HEADER(key, type_tag);
  kv_bytes_.insert(kv_bytes_.end(), payload.begin(), payload.end());
}
#undef SNUG_KV_HEADER

void Writer::add_tensor(std::string_view name, tensor::DType type, std::vector<int64_t> dims,
                        std::span<const uint8_t> data) {
  SNUG_CHECK(!dims.empty() && dims.size() <= 4);
  tensors_.push_back({std::string(name), type, std::move(dims), {data.begin(), data.end()}});
}

void Writer::add_tensor_info(std::string_view name, tensor::DType type, std::vector<int64_t> dims) {
  SNUG_CHECK(!dims.empty() && dims.size() <= 4);
  uint64_t elements = 1;
  for (int64_t d : dims) elements *= static_cast<uint64_t>(d);
  const auto& info = tensor::info(type);
  const uint64_t bytes = elements / static_cast<uint64_t>(info.block_size) *
                         static_cast<uint64_t>(info.block_bytes);
  tensors_.push_back({std::string(name), type, std::move(dims), {}, bytes});
}

std::vector<uint8_t> Writer::to_bytes() const {
  std::vector<uint8_t> out;
  put<uint32_t>(out, 0x46554747);  // "GGUF"
  put<uint32_t>(out, 3);
  put<uint64_t>(out, tensors_.size());
  put<uint64_t>(out, kv_count_ + (alignment_ != 32 && !alignment_written_ ? 1 : 0));
  out.insert(out.end(), kv_bytes_.begin(), kv_bytes_.end());
  if (alignment_ != 32 && !alignment_written_) {
    put_string(out, "general.alignment");
    put<uint32_t>(out, static_cast<uint32_t>(ValueType::kU32));
    put<uint32_t>(out, alignment_);
  }
  const uint64_t align = alignment_ == 0 ? 32 : alignment_;
  uint64_t offset = 0;
  std::vector<uint64_t> offsets;
  for (const auto& t : tensors_) {
    put_string(out, t.name);
    put<uint32_t>(out, static_cast<uint32_t>(t.dims.size()));
    for (int64_t d : t.dims) put<uint64_t>(out, static_cast<uint64_t>(d));
    put<uint32_t>(out, static_cast<uint32_t>(t.type));
    put<uint64_t>(out, offset);
    offsets.push_back(offset);
    offset = (offset + t.data.size() + t.info_bytes + align - 1) / align * align;
  }
  out.resize((out.size() + align - 1) / align * align, 0);
  const uint64_t base = out.size();
  for (size_t k = 0; k < tensors_.size(); ++k) {
    if (tensors_[k].info_bytes > 0) break;  // header only from here on
    out.resize(base + offsets[k], 0);
    out.insert(out.end(), tensors_[k].data.begin(), tensors_[k].data.end());
  }
  return out;
}

Status Writer::write(const std::string& path) const {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return make_error("cannot create '", tmp, "': ", std::strerror(errno));
  auto bytes = to_bytes();
  bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  ok = (std::fflush(f) == 0) && ok;
  int e = errno;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    return make_error("cannot write '", tmp, "': ", std::strerror(e));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    e = errno;
    std::remove(tmp.c_str());
    return make_error("cannot rename '", tmp, "' to '", path, "': ", std::strerror(e));
  }
  return ok_status();
}

}  // namespace snug::gguf
