#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
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
void Writer::set_value(std::string_view key, const Value& v) {
  std::vector<uint8_t> payload;
  auto put_scalar = [&](ValueType t, uint64_t u, double f) {
    if (t == ValueType::kF32) {
      put<float>(payload, static_cast<float>(f));
    } else if (t == ValueType::kF64) {
      put<double>(payload, f);
    } else {
      // Integers and bools: u holds the value (signed ones two's-complement), little-endian.
      const size_t size = t == ValueType::kU8 || t == ValueType::kI8 || t == ValueType::kBool ? 1
                          : t == ValueType::kU16 || t == ValueType::kI16                      ? 2
                          : t == ValueType::kU32 || t == ValueType::kI32                      ? 4
                                                                                              : 8;
      for (size_t b = 0; b < size; ++b) payload.push_back(static_cast<uint8_t>(u >> (8 * b)));
    }
  };
  if (v.type == ValueType::kString) {
    put_string(payload, v.str);
  } else if (v.type == ValueType::kArray) {
    put<uint32_t>(payload, static_cast<uint32_t>(v.elem_type));
    put<uint64_t>(payload, v.count);
    if (v.elem_type == ValueType::kString) {
      for (std::string_view s : v.strings) put_string(payload, s);
    } else {
      const uint64_t es = v.elem_type == ValueType::kU8 || v.elem_type == ValueType::kI8 ||
                                  v.elem_type == ValueType::kBool
                              ? 1
                          : v.elem_type == ValueType::kU16 || v.elem_type == ValueType::kI16 ? 2
                          : v.elem_type == ValueType::kU64 || v.elem_type == ValueType::kI64 ||
                                  v.elem_type == ValueType::kF64
                              ? 8
                              : 4;
      if (v.count > 0) payload.insert(payload.end(), v.elems, v.elems + es * v.count);
    }
  } else {
    put_scalar(v.type, v.u, v.f);
  }
  set_raw(key, static_cast<uint32_t>(v.type), payload);
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
  const uint64_t bytes =
      elements / static_cast<uint64_t>(info.block_size) * static_cast<uint64_t>(info.block_bytes);
  tensors_.push_back({std::string(name), type, std::move(dims), {}, bytes});
}

std::vector<uint8_t> Writer::header_bytes(std::vector<uint64_t>* offsets) const {
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
  for (const auto& t : tensors_) {
    put_string(out, t.name);
    put<uint32_t>(out, static_cast<uint32_t>(t.dims.size()));
    for (int64_t d : t.dims) put<uint64_t>(out, static_cast<uint64_t>(d));
    put<uint32_t>(out, static_cast<uint32_t>(t.type));
    put<uint64_t>(out, offset);
    offsets->push_back(offset);
    offset = (offset + t.data.size() + t.info_bytes + align - 1) / align * align;
  }
  out.resize((out.size() + align - 1) / align * align, 0);
  return out;
}

std::vector<uint8_t> Writer::to_bytes() const {
  std::vector<uint64_t> offsets;
  std::vector<uint8_t> out = header_bytes(&offsets);
  const uint64_t base = out.size();
  for (size_t k = 0; k < tensors_.size(); ++k) {
    if (tensors_[k].info_bytes > 0) break;  // header only from here on
    out.resize(base + offsets[k], 0);
    out.insert(out.end(), tensors_[k].data.begin(), tensors_[k].data.end());
  }
  return out;
}

Status Writer::write(const std::string& path) const {
  auto bytes = to_bytes();
  return write_streaming(
      path, [&](size_t, const Emit&) { return ok_status(); }, &bytes);
}

Status Writer::write_streaming(const std::string& path, const Produce& produce) const {
  return write_streaming(path, produce, nullptr);
}

// `whole`, when given, is the complete file (to_bytes()) and produce is not called.
Status Writer::write_streaming(const std::string& path, const Produce& produce,
                               const std::vector<uint8_t>* whole) const {
  struct stat st {};
  const bool in_place = ::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode);
  // A temporary name of this process and call, renamed over `path` once
  // complete: concurrent writers of one path never share a temporary file, and
  // a reader sees the old file or a whole new one.
  static std::atomic<uint64_t> serial{0};
  const std::string target = in_place ? path
                                      : path + ".tmp." + std::to_string(::getpid()) + "." +
                                            std::to_string(serial.fetch_add(1));
  const int fd = in_place ? ::open(target.c_str(), O_WRONLY | O_TRUNC)
                          : ::open(target.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0666);
  std::FILE* f = fd < 0 ? nullptr : ::fdopen(fd, "wb");
  if (!f) {
    const int e = errno;
    if (fd >= 0) ::close(fd);
    if (fd >= 0 && !in_place) std::remove(target.c_str());
    return make_error("cannot create '", target, "': ", std::strerror(e));
  }
  auto discard = [&](int e) {
    std::fclose(f);
    if (!in_place) std::remove(target.c_str());
    return make_error("cannot write '", target, "': ", std::strerror(e));
  };
  int write_errno = 0;
  uint64_t written = 0;
  const Emit emit = [&](std::span<const uint8_t> b) -> Status {
    if (!b.empty() && std::fwrite(b.data(), 1, b.size(), f) != b.size()) {
      write_errno = errno ? errno : EIO;
      return make_error("cannot write '", target, "': ", std::strerror(write_errno));
    }
    written += b.size();
    return ok_status();
  };
  if (whole) {
    if (!emit(*whole).ok()) return discard(write_errno);
  } else {
    std::vector<uint64_t> offsets;
    const std::vector<uint8_t> header = header_bytes(&offsets);
    if (!emit(header).ok()) return discard(write_errno);
    const uint64_t base = header.size();
    static const uint8_t kZeros[256] = {};
    for (size_t k = 0; k < tensors_.size(); ++k) {
      while (written < base + offsets[k]) {
        const uint64_t pad = std::min<uint64_t>(sizeof(kZeros), base + offsets[k] - written);
        if (!emit({kZeros, pad}).ok()) return discard(write_errno);
      }
      const uint64_t start = written;
      const auto& t = tensors_[k];
      Status s = t.info_bytes > 0 ? produce(k, emit) : emit(t.data);
      if (!s.ok()) {
        if (write_errno) return discard(write_errno);
        std::fclose(f);
        if (!in_place) std::remove(target.c_str());
        return s;
      }
      SNUG_CHECK(written - start == t.data.size() + t.info_bytes);
    }
  }
  errno = 0;
  if (std::fflush(f) != 0) return discard(errno ? errno : EIO);
  const int e = errno;
  if (std::fclose(f) != 0) {
    if (!in_place) std::remove(target.c_str());
    return make_error("cannot write '", target, "': ", std::strerror(errno ? errno : e));
  }
  if (in_place) return ok_status();
  if (std::rename(target.c_str(), path.c_str()) != 0) {
    const int re = errno;
    std::remove(target.c_str());
    return make_error("cannot rename '", target, "' to '", path, "': ", std::strerror(re));
  }
  return ok_status();
}

}  // namespace snug::gguf
