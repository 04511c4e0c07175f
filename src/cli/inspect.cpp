// snug inspect MODEL: metadata, the tensor table and totals by type.
#include <cstdio>
#include <map>

#include <fmt/format.h>
#include <memory>

#include "base/bytes.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "gguf/gguf.h"

namespace snug::cli {
namespace {

std::string render_value(const gguf::Value& v) {
  using gguf::ValueType;
  switch (v.type) {
    case ValueType::kString: {
      std::string s(v.str.substr(0, 120));
      for (char& ch : s) {
        if (ch == '\n') ch = ' ';
      }
      return "\"" + s + (v.str.size() > 120 ? "...\"" : "\"");
    }
    case ValueType::kBool:
      return v.u ? "true" : "false";
    case ValueType::kF32:
    case ValueType::kF64:
      return fmt::format("{}", v.f);
    case ValueType::kArray:
      return fmt::format("[{} x {}]", v.count, gguf::value_type_name(v.elem_type));
    case ValueType::kU64:
    case ValueType::kU32:
    case ValueType::kU16:
    case ValueType::kU8:
      return std::to_string(v.u);
    default:
      return std::to_string(v.i);
  }
}

int inspect_main(const std::string& model_arg, bool show_tensors) {
  auto path = resolve_model_path(model_arg);
  if (!path.ok()) return fail(path.error());
  auto file = gguf::File::open(*path, {.allow_missing_data = true});
  if (!file.ok()) return fail(file.error());
  std::printf(
      "file: %s\nGGUF version %u, %zu metadata keys, %zu tensors, data at offset %llu, alignment "
      "%llu%s\n\n",
      path->c_str(), file->version(), file->metadata().size(), file->tensors().size(),
      static_cast<unsigned long long>(file->data_offset()),
      static_cast<unsigned long long>(file->alignment()),
      file->has_data() ? "" : " (header only: tensor data absent)");
  std::printf("metadata\n");
  for (const auto& kv : file->metadata())
    std::printf("  %-44s %s\n", kv.key.c_str(), render_value(kv.value).c_str());
  struct Totals {
    int count = 0;
    uint64_t elements = 0, bytes = 0;
  };
  std::map<std::string, Totals> by_type;
  if (show_tensors)
    std::printf("\ntensors\n  %-36s %-6s %-24s %12s\n", "name", "type", "shape", "bytes");
  uint64_t total = 0, elements = 0;
  for (const auto& t : file->tensors()) {
    std::string shape;
    for (int d = 0; d < t.n_dims; ++d) shape += (d ? " x " : "") + std::to_string(t.ne[d]);
    std::string type(tensor::dtype_name(t.type));
    if (show_tensors)
      std::printf("  %-36s %-6s %-24s %12llu\n", t.name.c_str(), type.c_str(), shape.c_str(),
                  static_cast<unsigned long long>(t.bytes));
    auto& tt = by_type[type];
    ++tt.count;
    tt.elements += static_cast<uint64_t>(t.n_elements());
    tt.bytes += t.bytes;
    total += t.bytes;
    elements += static_cast<uint64_t>(t.n_elements());
  }
  std::printf("\ntotals by type\n  %-8s %8s %16s %14s %10s\n", "type", "tensors", "elements",
              "bytes", "bits/w");
  for (const auto& [type, tt] : by_type) {
    std::printf("  %-8s %8d %16llu %14s %10.2f\n", type.c_str(), tt.count,
                static_cast<unsigned long long>(tt.elements), format_bytes(tt.bytes).c_str(),
                8.0 * static_cast<double>(tt.bytes) / static_cast<double>(tt.elements));
  }
  std::printf("  %-8s %8zu %16llu %14s %10.2f\n", "all", file->tensors().size(),
              static_cast<unsigned long long>(elements), format_bytes(total).c_str(),
              8.0 * static_cast<double>(total) / static_cast<double>(elements ? elements : 1));
  for (const auto& t : file->tensors()) {
    if (!tensor::snug_only_type(t.type)) continue;
    std::printf(
        "\nnote: %s is snug's own N:M-sparse type (of every 8 weights 4 are stored, with a "
        "bit mask; 2:4 and 4:8 pruning), not a GGUF standard one: llama.cpp and other GGUF "
        "readers cannot load this file (snug prune --dense writes a standard one)\n",
        std::string(tensor::dtype_name(t.type)).c_str());
    break;
  }
  return 0;
}

}  // namespace

Action add_inspect(CLI::App& app) {
  auto model = std::make_shared<std::string>(kDefaultModel);
  auto tensors = std::make_shared<bool>(true);
  CLI::App* sub =
      app.add_subcommand("inspect", "print a GGUF file's header, tensors, types and sizes");
  sub->add_option("model", *model, "GGUF file or known model name");
  sub->add_flag("!--no-tensors", *tensors, "leave out the per-tensor table");
  return [model, tensors, sub]() -> int {
    if (!*sub) return -1;
    return inspect_main(*model, *tensors);
  };
}

}  // namespace snug::cli
