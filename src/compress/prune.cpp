#include "compress/prune.h"

#include <fnmatch.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <map>
#include <numeric>
#include <set>

namespace snug::compress {
namespace {

constexpr std::string_view kPrunableSuffixes[] = {
    ".attn_q.weight",   ".attn_k.weight", ".attn_v.weight",  ".attn_output.weight",
    ".ffn_gate.weight", ".ffn_up.weight", ".ffn_down.weight"};

// Zeroes the `drop` lowest-scoring entries among idx[0, n) of w.
int64_t drop_lowest(float* w, const float* col_scale, int32_t* idx, int64_t n, int64_t drop) {
  if (drop <= 0) return 0;
  auto score = [&](int32_t i) {
    return std::fabs(w[i]) * (col_scale != nullptr ? col_scale[i] : 1.f);
  };
  // Lowest score first; on a tie the higher column goes first (the lower is kept).
  auto less = [&](int32_t a, int32_t b) {
    const float sa = score(a), sb = score(b);
    return sa < sb || (sa == sb && a > b);
  };
  if (drop < n) std::nth_element(idx, idx + drop, idx + n, less);
  for (int64_t k = 0; k < std::min(drop, n); ++k) w[idx[k]] = 0.f;
  return std::min(drop, n);
}

}  // namespace

std::optional<PruneMethod> parse_prune_method(std::string_view name) {
  if (name == "magnitude") return PruneMethod::kMagnitude;
  if (name == "wanda") return PruneMethod::kWanda;
  if (name == "sparsegpt") return PruneMethod::kSparseGpt;
  return std::nullopt;
}

const char* prune_method_names() {
  return "magnitude, wanda";
}

Result<NmPattern> parse_nm_pattern(std::string_view text) {
  if (text == "unstructured") return NmPattern{};
  const size_t colon = text.find(':');
  NmPattern p;
  auto number = [](std::string_view s, int32_t* v) {
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
    return ec == std::errc() && end == s.data() + s.size();
  };
  if (colon == std::string_view::npos || !number(text.substr(0, colon), &p.n) ||
      !number(text.substr(colon + 1), &p.m))
    return make_error("pattern '", text, "' is not 'unstructured' or N:M (e.g. 2:4)");
  if (p.n <= 0 || p.m > 64 || p.n >= p.m)
    return make_error("pattern ", p.n, ":", p.m, " must keep N of M weights with 0 < N < M <= 64");
  return p;
}

bool is_kept(const std::vector<std::string>& keep, const std::string& name) {
  return std::any_of(keep.begin(), keep.end(), [&](const std::string& g) {
    return fnmatch(g.c_str(), name.c_str(), 0) == 0;
  });
}

bool nm_storable(NmPattern pattern) {
  return !pattern.unstructured() && 8 % pattern.m == 0 && 2 * pattern.n <= pattern.m;
}

tensor::DType pruned_type(tensor::DType from, const PruneOptions& options) {
  const tensor::DType t = options.type.value_or(from);
  if (options.dense || !nm_storable(options.pattern)) return t;
  return tensor::nm_sparse_type(t).value_or(t);
}

bool is_prunable(std::string_view name) {
  if (name.rfind("blk.", 0) != 0) return false;
  return std::any_of(
      std::begin(kPrunableSuffixes), std::end(kPrunableSuffixes), [&](std::string_view s) {
        return name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
      });
}

int64_t prune_row(float* w, int64_t cols, const float* col_scale, double sparsity,
                  NmPattern pattern, std::vector<int32_t>& order) {
  order.resize(static_cast<size_t>(cols));
  std::iota(order.begin(), order.end(), 0);
  if (pattern.unstructured()) {
    const auto drop = static_cast<int64_t>(std::floor(sparsity * static_cast<double>(cols)));
    return drop_lowest(w, col_scale, order.data(), cols, drop);
  }
  int64_t removed = 0;
  for (int64_t g0 = 0; g0 < cols; g0 += pattern.m) {
    const int64_t g = std::min<int64_t>(pattern.m, cols - g0);
    const int64_t keep = (g * pattern.n + pattern.m - 1) / pattern.m;
    removed += drop_lowest(w, col_scale, order.data() + g0, g, g - keep);
  }
  return removed;
}

Result<PruneSummary> prune_file(const std::string& in, const std::string& out,
                                const PruneOptions& options) {
  const double sparsity =
      options.pattern.unstructured() ? options.sparsity : options.pattern.sparsity();
  if (!(options.sparsity >= 0.0 && options.sparsity < 1.0))
    return make_error("sparsity must be in [0, 1), got ", options.sparsity);
  if (!options.pattern.unstructured() &&
      (options.pattern.n <= 0 || options.pattern.n >= options.pattern.m))
    return make_error("pattern ", options.pattern.n, ":", options.pattern.m,
                      " must keep N of M weights with 0 < N < M");
  if (options.method == PruneMethod::kWanda && options.activations == nullptr)
    return make_error("wanda needs the activations of a calibration run (--calib TEXT)");
  if (options.method == PruneMethod::kSparseGpt && options.packed == nullptr)
    return make_error("sparsegpt needs its pruned tensors from a calibration run (--calib TEXT)");

  // Wanda's per-column scale of each tensor: the RMS of its input column.
  std::map<std::string, std::vector<float>> scales;
  std::set<std::string> pruned;
  std::string plan_error;
  ConvertOptions c;
  c.threads = options.threads;
  c.count_zeros = true;
  c.on_progress = options.on_progress;
  c.plan = [&](const gguf::File& file) {
    std::vector<TensorPlan> plans;
    pruned.clear();
    for (const gguf::TensorInfo& t : file.tensors()) {
      TensorPlan p;
      p.src = &t;
      p.type = t.type;
      const bool sparsegpt = options.method == PruneMethod::kSparseGpt;
      if (sparsegpt ? options.packed->count(t.name) > 0
                    : t.n_dims == 2 && is_prunable(t.name) && !is_kept(options.keep, t.name)) {
        p.quantize = true;
        pruned.insert(t.name);
        p.type = pruned_type(t.type, options);
        if (!tensor::row_bytes(p.type, t.ne[0]) && plan_error.empty())
          plan_error = "tensor '" + t.name + "' has " + std::to_string(t.ne[0]) +
                       " columns, not a whole number of " +
                       std::string(tensor::dtype_name(p.type)) + " blocks";
        if (options.method == PruneMethod::kWanda) {
          auto e = options.activations->entries.find(t.name);
          if (e == options.activations->entries.end()) {
            if (plan_error.empty())
              plan_error = "the calibration run saw no input of tensor '" + t.name + "'";
          } else {
            std::vector<float> s = importance(e->second);
            for (float& v : s) v = std::sqrt(v);
            scales[t.name] = std::move(s);
          }
        }
      }
      plans.push_back(p);
    }
    return plans;
  };
  std::atomic<uint64_t> removed{0};
  if (options.method == PruneMethod::kSparseGpt) {
    c.packed = [&](const gguf::TensorInfo& t) -> std::span<const uint8_t> {
      auto it = options.packed->find(t.name);
      if (it == options.packed->end()) return {};
      return it->second;
    };
  }
  c.edit_row = [&](const gguf::TensorInfo& t, int64_t, float* x) {
    thread_local std::vector<int32_t> order;
    const float* scale = nullptr;
    if (options.method == PruneMethod::kWanda) scale = scales.at(t.name).data();
    removed.fetch_add(
        static_cast<uint64_t>(prune_row(x, t.ne[0], scale, sparsity, options.pattern, order)),
        std::memory_order_relaxed);
  };
  {
    // Plan once up front so that a tensor that cannot be written, or
    // activations made for another model, are refused before any output exists.
    auto file = gguf::File::open(in);
    if (!file.ok()) return file.error();
    if (options.method == PruneMethod::kWanda) {
      if (Status s = check_imatrix_fits(*options.activations, *file, "the calibration run");
          !s.ok())
        return s.error();
    }
    (void)c.plan(*file);
    if (!plan_error.empty()) return make_error(plan_error);
  }
  auto sum = convert_file(in, out, c);
  if (!sum.ok()) return sum.error();
  PruneSummary r;
  r.files = std::move(*sum);
  for (size_t k = 0; k < r.files.tensors.size(); ++k) {
    const QuantizedTensor& t = r.files.tensors[k];
    if (pruned.count(t.name) == 0) continue;
    r.pruned.push_back(k);
    r.prunable_weights += t.elements;
    r.zero_weights += t.zeros;
  }
  // SparseGPT removed its weights before packing: what is zero is what it removed.
  r.removed_weights = options.method == PruneMethod::kSparseGpt ? r.zero_weights : removed.load();
  return r;
}

}  // namespace snug::compress
