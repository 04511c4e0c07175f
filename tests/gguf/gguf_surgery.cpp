#include "gguf_surgery.h"

#include <algorithm>
#include <cstring>

#include "base/check.h"

namespace snug::testing {
namespace {

// Reads a trusted file; any inconsistency is a bug in the test, hence SNUG_CHECK.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> b) : b_(b) {}
  template <typename T>
  T get() {
    SNUG_CHECK(pos_ + sizeof(T) <= b_.size());
    T v;
    std::memcpy(&v, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string string() {
    const auto n = get<uint64_t>();
    SNUG_CHECK(n <= b_.size() - pos_);
    std::string s(reinterpret_cast<const char*>(b_.data() + pos_), n);
    pos_ += n;
    return s;
  }
  void skip(uint64_t n) {
    SNUG_CHECK(n <= b_.size() - pos_);
    pos_ += n;
  }
  size_t pos() const { return pos_; }

 private:
  std::span<const uint8_t> b_;
  size_t pos_ = 0;
};

uint64_t scalar_bytes(uint32_t type) {
  switch (type) {
    case 0:
    case 1:
    case 7:
      return 1;
    case 2:
    case 3:
      return 2;
    case 4:
    case 5:
    case 6:
      return 4;
    case 10:
    case 11:
    case 12:
      return 8;
    default:
      SNUG_CHECK(false && "not a scalar type");
      return 0;
  }
}

void skip_value(Reader& r, uint32_t type) {
  if (type == kTagString) {
    r.skip(r.get<uint64_t>());
  } else if (type == kTagArray) {
    const auto et = r.get<uint32_t>();
    const auto n = r.get<uint64_t>();
    for (uint64_t k = 0; k < n; ++k) skip_value(r, et);
  } else {
    r.skip(scalar_bytes(type));
  }
}

template <typename T>
void put(std::vector<uint8_t>& out, T v) {
  uint8_t b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.insert(out.end(), b, b + sizeof(T));
}

}  // namespace

Layout Layout::parse(std::span<const uint8_t> bytes) {
  Reader r(bytes);
  Layout l;
  SNUG_CHECK(r.get<uint32_t>() == 0x46554747);
  l.version = r.get<uint32_t>();
  const auto n_tensors = r.get<uint64_t>();
  const auto n_kv = r.get<uint64_t>();
  for (uint64_t k = 0; k < n_kv; ++k) {
    RawKv kv;
    kv.key = r.string();
    kv.type = r.get<uint32_t>();
    const size_t start = r.pos();
    skip_value(r, kv.type);
    kv.value.assign(bytes.begin() + start, bytes.begin() + r.pos());
    if (kv.key == "general.alignment") {
      uint32_t a;
      std::memcpy(&a, kv.value.data(), 4);
      l.alignment = a;
    }
    l.kvs.push_back(std::move(kv));
  }
  for (uint64_t k = 0; k < n_tensors; ++k) {
    RawTensor t;
    t.name = r.string();
    const auto n_dims = r.get<uint32_t>();
    for (uint32_t d = 0; d < n_dims; ++d) t.dims.push_back(r.get<uint64_t>());
    t.type = r.get<uint32_t>();
    t.offset = r.get<uint64_t>();
    l.tensors.push_back(std::move(t));
  }
  const size_t data_start = (r.pos() + l.alignment - 1) / l.alignment * l.alignment;
  SNUG_CHECK(data_start <= bytes.size());
  l.data.assign(bytes.begin() + data_start, bytes.end());
  return l;
}

std::vector<uint8_t> Layout::bytes() const {
  std::vector<uint8_t> out;
  put<uint32_t>(out, 0x46554747);
  put<uint32_t>(out, version);
  put<uint64_t>(out, tensors.size());
  put<uint64_t>(out, kvs.size());
  for (const RawKv& kv : kvs) {
    auto s = enc_string(kv.key);
    out.insert(out.end(), s.begin(), s.end());
    put<uint32_t>(out, kv.type);
    out.insert(out.end(), kv.value.begin(), kv.value.end());
  }
  for (const RawTensor& t : tensors) {
    auto s = enc_string(t.name);
    out.insert(out.end(), s.begin(), s.end());
    put<uint32_t>(out, static_cast<uint32_t>(t.dims.size()));
    for (uint64_t d : t.dims) put<uint64_t>(out, d);
    put<uint32_t>(out, t.type);
    put<uint64_t>(out, t.offset);
  }
  const uint64_t a = alignment == 0 ? 1 : alignment;
  out.resize((out.size() + a - 1) / a * a, 0);
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

RawKv* Layout::kv(std::string_view key) {
  for (RawKv& kv : kvs)
    if (kv.key == key) return &kv;
  return nullptr;
}

RawTensor* Layout::tensor(std::string_view name) {
  for (RawTensor& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

void Layout::set(std::string_view key, uint32_t type, std::vector<uint8_t> value) {
  if (RawKv* kv = this->kv(key)) {
    kv->type = type;
    kv->value = std::move(value);
    return;
  }
  kvs.push_back({std::string(key), type, std::move(value)});
}

void Layout::remove_kv(std::string_view key) {
  std::erase_if(kvs, [&](const RawKv& kv) { return kv.key == key; });
}

void Layout::remove_tensor(std::string_view name) {
  std::erase_if(tensors, [&](const RawTensor& t) { return t.name == name; });
}

std::vector<uint8_t> enc_u32(uint32_t v) {
  std::vector<uint8_t> out;
  put(out, v);
  return out;
}

std::vector<uint8_t> enc_u64(uint64_t v) {
  std::vector<uint8_t> out;
  put(out, v);
  return out;
}

std::vector<uint8_t> enc_f32(float v) {
  std::vector<uint8_t> out;
  put(out, v);
  return out;
}

std::vector<uint8_t> enc_string(std::string_view s) {
  std::vector<uint8_t> out;
  put<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
  return out;
}

std::vector<uint8_t> enc_array(uint32_t elem_type, uint64_t count, std::span<const uint8_t> elems) {
  std::vector<uint8_t> out;
  put(out, elem_type);
  put(out, count);
  out.insert(out.end(), elems.begin(), elems.end());
  return out;
}

std::vector<uint8_t> enc_strings(const std::vector<std::string>& v) {
  std::vector<uint8_t> elems;
  for (const auto& s : v) {
    auto e = enc_string(s);
    elems.insert(elems.end(), e.begin(), e.end());
  }
  return enc_array(kTagString, v.size(), elems);
}

void poke_u32(std::vector<uint8_t>& bytes, size_t at, uint32_t v) {
  SNUG_CHECK(at + 4 <= bytes.size());
  std::memcpy(bytes.data() + at, &v, 4);
}

void poke_u64(std::vector<uint8_t>& bytes, size_t at, uint64_t v) {
  SNUG_CHECK(at + 8 <= bytes.size());
  std::memcpy(bytes.data() + at, &v, 8);
}

}  // namespace snug::testing
