#include "compress/quant_types.h"

#include <fnmatch.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>

#include "tensor/kernels.h"

namespace snug::compress {
namespace {

using tensor::DType;

// llama_ftype values (llama.h), written to general.file_type.
constexpr std::array<QuantKind, 17> kKinds = {{
    {"F32", 0, DType::kF32},
    {"F16", 1, DType::kF16},
    {"BF16", 32, DType::kBF16},
    {"Q8_0", 7, DType::kQ8_0},
    {"Q6_K", 18, DType::kQ6_K},
    {"Q5_K_M", 17, DType::kQ5_K},
    {"Q5_K_S", 16, DType::kQ5_K},
    {"Q5_0", 8, DType::kQ5_0},
    {"Q5_1", 9, DType::kQ5_1},
    {"Q4_K_M", 15, DType::kQ4_K},
    {"Q4_K_S", 14, DType::kQ4_K},
    {"Q4_0", 2, DType::kQ4_0},
    {"Q4_1", 3, DType::kQ4_1},
    {"Q3_K_L", 13, DType::kQ3_K},
    {"Q3_K_M", 12, DType::kQ3_K},
    {"Q3_K_S", 11, DType::kQ3_K},
    {"Q2_K", 10, DType::kQ2_K},
}};

// Types quantize_row() can produce.
constexpr std::array<DType, 14> kTargets = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ8_0,
                                            DType::kQ6_K, DType::kQ5_K, DType::kQ5_0, DType::kQ5_1,
                                            DType::kQ4_K, DType::kQ4_0, DType::kQ4_1, DType::kQ3_K,
                                            DType::kQ2_K, DType::kQ8_K};

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

bool has(std::string_view s, std::string_view part) {
  return s.find(part) != std::string_view::npos;
}

bool is_quantized(DType t) {
  return t != DType::kF32 && t != DType::kF16 && t != DType::kBF16;
}

int64_t block(DType t) {
  return tensor::info(t).block_size;
}

int layer_of(const std::string& name) {
  int layer = -1;
  std::sscanf(name.c_str(), "blk.%d.", &layer);
  return layer;
}

enum class Cat { kTokenEmbd, kOutput, kAttnV, kAttnK, kAttnOut, kFfnDown, kOther };

Cat category(const std::string& n) {
  if (n == "output.weight") return Cat::kOutput;
  if (n == "token_embd.weight" || n == "per_layer_token_embd.weight") return Cat::kTokenEmbd;
  if (has(n, "attn_qkv.weight") || has(n, "attn_kv_b.weight") || has(n, "attn_v.weight"))
    return Cat::kAttnV;
  if (has(n, "attn_k.weight")) return Cat::kAttnK;
  if (has(n, "attn_output.weight")) return Cat::kAttnOut;
  if (has(n, "ffn_down")) return Cat::kFfnDown;
  return Cat::kOther;
}

// llama.cpp's tensor_allows_quantization for the architectures snug knows.
bool allows_quantization(const gguf::TensorInfo& t) {
  const std::string& n = t.name;
  if (t.n_dims < 2) return false;
  if (n.size() < 6 || n.compare(n.size() - 6, 6, "weight") != 0) return false;
  return !has(n, "_norm.weight") && !has(n, "ffn_gate_inp.weight") && !has(n, "position_embd") &&
         !has(n, "token_types") && !has(n, "ssm_conv1d") && !has(n, "attn_rel_b.weight");
}

// More bits for the first and last eighth of the layers and every third between.
bool use_more_bits(int i, int n) {
  return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

struct Counters {
  int i_attn_v = 0, n_attn_v = 0, i_ffn_down = 0;
};

// The mix rule (llama_tensor_get_type_impl) for the file types snug offers.
DType mix_type(const QuantKind& kind, const gguf::TensorInfo& t, Cat cat, const MixModel& m,
               bool has_imatrix, Counters& c) {
  const std::string_view k = kind.name;
  const bool falcon = m.arch == "falcon";
  DType type = kind.base;
  if (cat == Cat::kOutput || (m.tied_output && cat == Cat::kTokenEmbd)) {
    if (falcon || t.ne[0] % block(type) != 0) return DType::kQ8_0;
    return type == DType::kQ8_0 ? type : DType::kQ6_K;
  }
  if (cat == Cat::kAttnV) {
    if (k == "Q2_K")
      type = m.n_gqa >= 4 ? DType::kQ4_K : DType::kQ3_K;
    else if (k == "Q3_K_M")
      type = c.i_attn_v < 2 ? DType::kQ5_K : DType::kQ4_K;
    else if (k == "Q3_K_L")
      type = DType::kQ5_K;
    else if ((k == "Q4_K_M" || k == "Q5_K_M") && use_more_bits(c.i_attn_v, c.n_attn_v))
      type = DType::kQ6_K;
    else if (k == "Q4_K_S" && c.i_attn_v < 4)
      type = DType::kQ5_K;
    if (m.n_expert == 8) type = DType::kQ8_0;
    ++c.i_attn_v;
  } else if (cat == Cat::kAttnK) {
    if (m.n_expert == 8) type = DType::kQ8_0;
  } else if (cat == Cat::kFfnDown) {
    int i = c.i_ffn_down;
    if (m.n_expert > 1) i = std::max(0, layer_of(t.name));
    const int n = m.n_layer;
    if (k == "Q2_K")
      type = DType::kQ3_K;
    else if (k == "Q3_K_M")
      type = i < n / 16                       ? DType::kQ5_K
             : !falcon || use_more_bits(i, n) ? DType::kQ4_K
                                              : DType::kQ3_K;
    else if (k == "Q3_K_L")
      type = falcon ? DType::kQ4_K : DType::kQ5_K;
    else if (k == "Q4_K_M") {
      if (falcon)
        type = i < n / 16 ? DType::kQ6_K : use_more_bits(i, n) ? DType::kQ5_K : DType::kQ4_K;
      else if (use_more_bits(i, n))
        type = DType::kQ6_K;
    } else if (k == "Q5_K_M" && use_more_bits(i, n))
      type = DType::kQ6_K;
    else if (k == "Q4_K_S" && !falcon && i < n / 8)
      type = DType::kQ5_K;
    else if ((k == "Q4_0" || k == "Q5_0") && has_imatrix && i < n / 8)
      type = k == "Q4_0" ? DType::kQ4_1 : DType::kQ5_1;
    ++c.i_ffn_down;
  } else if (cat == Cat::kAttnOut) {
    if (falcon) {
      if (k == "Q3_K_L") type = DType::kQ4_K;
    } else if (m.n_expert == 8) {
      if (k == "Q2_K" || k == "Q3_K_S" || k == "Q3_K_M" || k == "Q4_K_S" || k == "Q4_K_M")
        type = DType::kQ5_K;
    } else if (k == "Q2_K")
      type = DType::kQ3_K;
    else if (k == "Q3_K_M")
      type = DType::kQ4_K;
    else if (k == "Q3_K_L")
      type = DType::kQ5_K;
  }
  return type;
}

// llama.cpp's tensor_type_fallback: a compatible 32-element type, else F16.
DType fallback(DType want, int64_t cols) {
  if (cols % block(want) == 0) return want;
  DType t = want;
  switch (want) {
    case DType::kQ2_K:
    case DType::kQ3_K:
      t = DType::kQ4_0;
      break;
    case DType::kQ4_K:
      t = DType::kQ5_0;
      break;
    case DType::kQ5_K:
      t = DType::kQ5_1;
      break;
    case DType::kQ6_K:
      t = DType::kQ8_0;
      break;
    default:
      break;
  }
  return cols % block(t) == 0 ? t : DType::kF16;
}

std::string fmt_fallback(int64_t cols, DType want, DType got) {
  return std::to_string(cols) + " columns not a multiple of " + std::to_string(block(want)) + " (" +
         std::string(tensor::dtype_name(want)) + "): " + std::string(tensor::dtype_name(got)) +
         " instead";
}

}  // namespace

std::optional<QuantKind> find_quant_kind(std::string_view name) {
  for (const auto& k : kKinds) {
    if (iequals(k.name, name)) return k;
  }
  return std::nullopt;
}

std::string quant_kind_names() {
  std::string s;
  for (const auto& k : kKinds) s += (s.empty() ? "" : ", ") + std::string(k.name);
  return s;
}

std::optional<DType> find_tensor_type(std::string_view name) {
  for (DType t : kTargets) {
    if (iequals(tensor::dtype_name(t), name)) return t;
  }
  return std::nullopt;
}

Result<KeepRule> parse_keep_rule(std::string_view spec) {
  const size_t eq = spec.rfind('=');
  if (eq == std::string_view::npos || eq == 0 || eq + 1 == spec.size())
    return make_error("--keep expects PATTERN=TYPE, got '", spec, "'");
  auto type = find_tensor_type(spec.substr(eq + 1));
  if (!type)
    return make_error("--keep: unknown tensor type '", spec.substr(eq + 1),
                      "' (f32, f16, bf16, q8_0, q6_K, q5_K, q5_1, q5_0, q4_K, q4_1, q4_0, q3_K, "
                      "q2_K)");
  return KeepRule{std::string(spec.substr(0, eq)), *type};
}

Result<MixModel> read_mix_model(const gguf::File& file) {
  MixModel m;
  auto arch = file.get_string("general.architecture");
  if (!arch.ok()) return arch.error();
  m.arch = *arch;
  auto layers = file.get_uint_or(m.arch + ".block_count", 0);
  auto heads = file.get_uint_or(m.arch + ".attention.head_count", 0);
  if (!layers.ok()) return layers.error();
  if (!heads.ok()) return heads.error();
  auto kv_heads = file.get_uint_or(m.arch + ".attention.head_count_kv", *heads);
  auto experts = file.get_uint_or(m.arch + ".expert_count", 0);
  if (!kv_heads.ok()) return kv_heads.error();
  if (!experts.ok()) return experts.error();
  m.n_layer = static_cast<int>(std::min<uint64_t>(*layers, 1 << 20));
  m.n_gqa = *kv_heads > 0 ? static_cast<int>(*heads / *kv_heads) : 0;
  m.n_expert = static_cast<int>(std::min<uint64_t>(*experts, 1 << 20));
  m.tied_output = file.find_tensor("output.weight") == nullptr;
  return m;
}

std::vector<TensorPlan> plan_tensor_types(const gguf::File& file, const MixModel& model,
                                          const QuantKind& kind, const std::vector<KeepRule>& keep,
                                          bool has_imatrix) {
  std::vector<const gguf::TensorInfo*> order;
  for (const auto& t : file.tensors()) order.push_back(&t);
  std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    const int la = layer_of(a->name), lb = layer_of(b->name);
    return la != lb ? la < lb : a->name < b->name;
  });
  Counters c;
  for (const auto* t : order) c.n_attn_v += category(t->name) == Cat::kAttnV ? 1 : 0;

  std::vector<TensorPlan> plans;
  for (const auto* t : order) {
    TensorPlan p{t, t->type, false, {}};
    if (allows_quantization(*t)) {
      const KeepRule* rule = nullptr;
      for (const auto& r : keep) {
        if (fnmatch(r.pattern.c_str(), t->name.c_str(), 0) == 0) {
          rule = &r;
          break;
        }
      }
      DType want = kind.base;
      if (rule) {
        want = rule->type;
        p.note = "--keep " + rule->pattern;
      } else if (is_quantized(kind.base)) {
        want = mix_type(kind, *t, category(t->name), model, has_imatrix, c);
      }
      p.type = fallback(want, t->ne[0]);
      if (p.type != want) {
        p.note = fmt_fallback(t->ne[0], want, p.type);
      }
    }
    p.quantize = p.type != t->type;
    plans.push_back(std::move(p));
  }
  return plans;
}

}  // namespace snug::compress
