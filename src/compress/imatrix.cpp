#include "compress/imatrix.h"

#include <cmath>
#include <cstring>
#include <span>

namespace snug::compress {
namespace {

constexpr std::string_view kSums = ".in_sum2";
constexpr std::string_view kCounts = ".counts";

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() > suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::span<const uint8_t> f32_bytes(const std::vector<float>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(float)};
}

std::vector<float> read_f32(const gguf::TensorInfo& t) {
  std::vector<float> v(static_cast<size_t>(t.n_elements()));
  std::memcpy(v.data(), t.data, v.size() * sizeof(float));
  return v;
}

// One entry from its two tensors; `where` prefixes every message.
Result<ImatrixEntry> read_entry(const std::string& where, const std::string& name,
                                const gguf::TensorInfo* sums, const gguf::TensorInfo* counts) {
  if (sums == nullptr || counts == nullptr)
    return make_error(where, "'", name, "' has ",
                      sums ? "sums without counts" : "counts without sums");
  if (sums->type != tensor::DType::kF32 || counts->type != tensor::DType::kF32)
    return make_error(where, "sums and counts of '", name, "' must be f32");
  if (sums->n_dims > 2 || counts->n_dims > 2 || counts->ne[0] != 1 ||
      sums->ne[1] != counts->ne[1] || sums->ne[0] < 1)
    return make_error(where, "'", name, "' has sums of shape [", sums->ne[0], ", ", sums->ne[1],
                      "] and counts of shape [", counts->ne[0], ", ", counts->ne[1],
                      "]; expected [cols, n] and [1, n]");
  ImatrixEntry e;
  e.cols = sums->ne[0];
  e.in_sum2 = read_f32(*sums);
  e.counts = read_f32(*counts);
  for (float v : e.in_sum2) {
    if (!std::isfinite(v) || v < 0)
      return make_error(where, "'", name,
                        "' holds a sum of squares that is negative or not finite");
  }
  for (float c : e.counts) {
    if (!std::isfinite(c) || c < 0)
      return make_error(where, "'", name, "' holds a count that is negative or not finite");
  }
  return e;
}

}  // namespace

Status save_imatrix(const Imatrix& m, const std::string& path) {
  gguf::Writer w;
  w.set_string("general.type", "imatrix");
  w.set_strings("imatrix.datasets", m.datasets);
  w.set_u32("imatrix.chunk_count", m.chunk_count);
  w.set_u32("imatrix.chunk_size", m.chunk_size);
  for (const auto& [name, e] : m.entries) {  // std::map: name order, as llama.cpp sorts
    w.add_tensor(name + std::string(kSums), tensor::DType::kF32, {e.cols, e.n_mat()},
                 f32_bytes(e.in_sum2));
    w.add_tensor(name + std::string(kCounts), tensor::DType::kF32, {1, e.n_mat()},
                 f32_bytes(e.counts));
  }
  return w.write(path);
}

Result<Imatrix> load_imatrix(const std::string& path) {
  const std::string where = "imatrix '" + path + "': ";
  auto file = gguf::File::open(path);
  if (!file.ok()) return make_error("imatrix: ", file.error().message);
  if (auto type = file->get_string("general.type"); type.ok() && *type != "imatrix")
    return make_error(where, "general.type is '", *type, "', not 'imatrix'");

  std::map<std::string, std::pair<const gguf::TensorInfo*, const gguf::TensorInfo*>> parts;
  for (const auto& t : file->tensors()) {
    if (ends_with(t.name, kSums)) {
      parts[t.name.substr(0, t.name.size() - kSums.size())].first = &t;
    } else if (ends_with(t.name, kCounts)) {
      parts[t.name.substr(0, t.name.size() - kCounts.size())].second = &t;
    }
  }
  if (parts.empty())
    return make_error(where, "no '<weight>.in_sum2' tensors: not an importance matrix");

  Imatrix m;
  auto datasets = file->find("imatrix.datasets");
  auto chunk_count = file->get_uint("imatrix.chunk_count");
  auto chunk_size = file->get_uint("imatrix.chunk_size");
  if (datasets == nullptr || !chunk_count.ok() || !chunk_size.ok())
    return make_error(where,
                      "missing imatrix metadata (imatrix.datasets, imatrix.chunk_count, "
                      "imatrix.chunk_size)");
  if (datasets->type != gguf::ValueType::kArray || datasets->elem_type != gguf::ValueType::kString)
    return make_error(where, "imatrix.datasets is not an array of strings");
  for (auto s : datasets->strings) m.datasets.emplace_back(s);
  m.chunk_count = static_cast<uint32_t>(std::min<uint64_t>(*chunk_count, UINT32_MAX));
  m.chunk_size = static_cast<uint32_t>(std::min<uint64_t>(*chunk_size, UINT32_MAX));

  for (const auto& [name, p] : parts) {
    auto e = read_entry(where, name, p.first, p.second);
    if (!e.ok()) return e.error();
    m.entries.emplace(name, std::move(*e));
  }
  return m;
}

Status check_imatrix_fits(const Imatrix& m, const gguf::File& model, const std::string& path) {
  for (const auto& [name, e] : m.entries) {
    const gguf::TensorInfo* t = model.find_tensor(name);
    if (t == nullptr)
      return make_error("imatrix '", path, "' was made for another model: it has an entry for '",
                        name, "', which is not a tensor of '", model.name(), "'");
    if (t->ne[0] != e.cols)
      return make_error("imatrix '", path, "' was made for another model: '", name, "' has ",
                        e.cols, " input columns in the imatrix but ", t->ne[0], " in '",
                        model.name(), "'");
    if (t->ne[2] * t->ne[3] != e.n_mat())
      return make_error("imatrix '", path, "' was made for another model: '", name, "' has ",
                        e.n_mat(), " matrices in the imatrix but ", t->ne[2] * t->ne[3], " in '",
                        model.name(), "'");
  }
  return ok_status();
}

std::vector<float> importance(const ImatrixEntry& e) {
  std::vector<float> w(e.in_sum2.size());
  const auto cols = static_cast<size_t>(e.cols);
  for (size_t j = 0; j < e.counts.size(); ++j) {
    // llama.cpp rounds the stored count to an integer, then divides in f32.
    const auto count = static_cast<float>(std::lround(e.counts[j]));
    for (size_t i = 0; i < cols; ++i)
      w[j * cols + i] = count > 0.0f ? e.in_sum2[j * cols + i] / count : 1.0f;
  }
  return w;
}

}  // namespace snug::compress
