#include "cli/common.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "base/bytes.h"
#include "base/log.h"
#include "base/sysmem.h"
#include "tensor/kernels.h"

namespace snug::cli {
namespace {

struct KnownModel {
  const char* name;
  const char* file;
};
constexpr KnownModel kKnown[] = {
    {"smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"},
    {"gemma3", "gemma-3-270m-q4_k_m.gguf"},
};

std::filesystem::path executable_dir() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return {};
  buf[n] = 0;
  return std::filesystem::path(buf).parent_path();
}

}  // namespace

Result<std::string> resolve_model_path(const std::string& arg) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (arg.find('/') != std::string::npos || arg.ends_with(".gguf") || fs::exists(arg, ec))
    return arg;
  for (const auto& k : kKnown) {
    if (arg != k.name) continue;
    std::vector<fs::path> dirs;
    if (const char* env = std::getenv("SNUG_MODELS")) dirs.emplace_back(env);
    fs::path exe = executable_dir();
    if (!exe.empty()) dirs.push_back(exe.parent_path() / "models");
    dirs.emplace_back("models");
    for (const auto& d : dirs) {
      fs::path p = d / k.file;
      if (fs::exists(p, ec)) return p.string();
    }
    return make_error("model '", arg, "' (", k.file,
                      ") is not downloaded: run scripts/fetch-models");
  }
  return make_error("no model file or known model named '", arg, "' (known: smollm2, gemma3)");
}

Result<LoadedModel> load_model(const std::string& arg, memory::Ledger* ledger) {
  SNUG_ASSIGN_OR_RETURN(std::string path, resolve_model_path(arg));
  SNUG_ASSIGN_OR_RETURN(gguf::File file, gguf::File::open(path));
  return load_model_file(std::move(file), ledger);
}

void populate_weights(const model::Model& m) {
  if (const MappedFile* pack = m.pack_mapping()) return pack->populate();
  const MappedFile* map = m.file().mapping();
  if (map != nullptr && m.packed_bytes() == 0) map->populate();
}

Result<LoadedModel> load_model_file(gguf::File file, memory::Ledger* ledger,
                                    const RepackFlags& repack) {
  LoadedModel lm;
  SNUG_ASSIGN_OR_RETURN(lm.model, model::Model::from_file(std::move(file), ledger));
  if (!repack.pack_dir.empty()) {
    // A pack file that cannot be made (a full disk, a directory that cannot
    // be written) leaves the model as it was: mapped, unpacked, slower, and
    // within the same plan (the rows take the bytes their packed form would).
    auto shared = lm.model->repack_shared(ledger, repack.pack_dir);
    if (!shared.ok()) {
      log_warn("--pack-dir: {}; the weights stay mapped, unpacked", shared.error().message);
    } else if (shared->bytes == 0) {
      log_warn(
          "--pack-dir: the {} kernels take no packed form of this model's matrices; "
          "the weights stay mapped",
          tensor::simd_target());
    } else if (shared->built) {
      log_info("--pack-dir: {} of matrices packed for the {} kernels into {}{}{}",
               format_bytes(shared->bytes), tensor::simd_target(), shared->path,
               shared->stale_reason.empty()
                   ? ""
                   : " (the file there was stale: " + shared->stale_reason + ")",
               shared->removed_stale == 0
                   ? ""
                   : fmt::format("; removed {} pack file(s) of an earlier version of the model",
                                 shared->removed_stale));
    } else {
      log_info("--pack-dir: {} of packed matrices mapped from {}", format_bytes(shared->bytes),
               shared->path);
    }
  } else if (repack.repack) {
    SNUG_ASSIGN_OR_RETURN(uint64_t packed, lm.model->repack(ledger));
    if (packed > 0) {
      log_info("--repack: {} of matrices packed for the {} kernels", format_bytes(packed),
               tensor::simd_target());
    } else {
      log_warn(
          "--repack: the {} kernels take no packed form of this model's matrices; "
          "the weights stay mapped",
          tensor::simd_target());
    }
  }
  SNUG_ASSIGN_OR_RETURN(text::Tokenizer tok, text::Tokenizer::from_gguf(lm.model->file()));
  for (const std::string& w : tok.warnings()) log_warn("{}", w);
  lm.tokenizer = std::make_unique<text::Tokenizer>(std::move(tok));
  lm.tokenizer_charge =
      memory::Charge(ledger, memory::Category::kTokenizer, lm.tokenizer->memory_bytes());
  return lm;
}

void print_memory_report(const memory::Ledger& ledger, const PlannedMemory* planned) {
  std::fprintf(stderr, "\nmemory report\n");
  if (planned && planned->n_ctx > 0)
    std::fprintf(stderr, "  context %d tokens: %s\n", planned->n_ctx,
                 planned->context_reason.c_str());
  std::fprintf(stderr, "  %-28s %14s %14s %14s\n", "category", "now", "peak",
               planned ? "planned" : "");
  for (int k = 0; k < static_cast<int>(memory::Category::kCount); ++k) {
    auto c = static_cast<memory::Category>(k);
    std::fprintf(stderr, "  %-28s %14s %14s %14s\n", std::string(memory::category_name(c)).c_str(),
                 format_bytes(ledger.current(c)).c_str(), format_bytes(ledger.peak(c)).c_str(),
                 planned ? format_bytes(planned->category[k]).c_str() : "");
  }
  std::fprintf(stderr, "  %-28s %14s\n", "total (ledger)", format_bytes(ledger.total()).c_str());
  std::fprintf(stderr, "  %-28s %14s\n", "total without mapped weights",
               format_bytes(ledger.total(false)).c_str());
  ProcessMemory pm = probe_process_memory();
  std::fprintf(stderr, "  %-28s %14s\n", "process RSS now", format_bytes(pm.rss).c_str());
  if (planned && planned->predicted_peak_rss > 0) {
    const double err =
        (static_cast<double>(planned->predicted_peak_rss) - static_cast<double>(pm.peak_rss)) /
        static_cast<double>(std::max<uint64_t>(pm.peak_rss, 1)) * 100.0;
    std::fprintf(stderr, "  %-28s %14s %14s %14s (%+.1f%%)\n", "process peak RSS (VmHWM)", "",
                 format_bytes(pm.peak_rss).c_str(),
                 format_bytes(planned->predicted_peak_rss).c_str(), err);
  } else {
    std::fprintf(stderr, "  %-28s %14s\n", "process peak RSS (VmHWM)",
                 format_bytes(pm.peak_rss).c_str());
  }
}

int fail(const Error& e) {
  std::fprintf(stderr, "snug: error: %s\n", e.message.c_str());
  return kExitFailure;
}

int apply_kernel_env() {
  if (const char* target = std::getenv("SNUG_SIMD_TARGET"); target != nullptr && *target != 0) {
    Status st = tensor::limit_simd_target(target);
    if (!st.ok()) {
      std::fprintf(stderr, "snug: error: SNUG_SIMD_TARGET: %s\n", st.error().message.c_str());
      return kExitUsage;
    }
  }
  if (const char* order = std::getenv("SNUG_GGML_ORDER"); order != nullptr && *order != 0) {
    const std::string_view v(order);
    if (v != "0" && v != "1") {
      std::fprintf(stderr,
                   "snug: error: SNUG_GGML_ORDER: '%s' is neither 1 (ggml's summation order) nor "
                   "0 (block-sum order)\n",
                   order);
      return kExitUsage;
    }
    tensor::set_ggml_order(v == "1");
  }
  return 0;
}

namespace {

// The matmul kernel per distinct weight type of the model's matrices.
std::map<std::string, std::string> matmul_kernels(const model::Model& m) {
  std::map<std::string, std::string> out;
  auto add = [&](const tensor::MatView& v) {
    if (v.data == nullptr) return;
    const char* k = tensor::matmul_kernel(v);
    const std::string name = k != nullptr ? k : "none";
    std::string& have = out[std::string(tensor::dtype_name(v.type))];
    // Matrices of one type may take different kernels by shape: both named.
    if (have.empty()) {
      have = name;
    } else if (("+" + have + "+").find("+" + name + "+") == std::string::npos) {
      have += "+" + name;
    }
  };
  const model::Weights& w = m.weights();
  add(w.output);
  for (const model::LayerWeights& l : w.layers) {
    for (const tensor::MatView* v : {&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down}) add(*v);
  }
  return out;
}

}  // namespace

std::string describe_kernels(const model::Model& m) {
  std::string s = tensor::simd_target();
  const char* sep = ": ";
  const auto kernels = matmul_kernels(m);
  for (const auto& [type, kernel] : kernels) {
    s.append(sep).append(type).append(" ").append(kernel);
    sep = ", ";
  }
  // Speed figures name these too: packed matrices take the row-block kernel
  // at any batch; the eight-row kernel sets one stream's speed on short rows.
  if (m.packed_bytes() > 0) {
    s.append("; matrices packed at load");
  } else if (std::string_view(tensor::simd_target()) == "AVX3_DL" &&
             (kernels.count("q4_1") > 0 || kernels.count("q8_0") > 0) &&
             tensor::one_token_kernel() == tensor::OneTokenKernel::kEightRows) {
    s.append("; one token of short q4_1/q8_0 rows: eight-row kernel");
  }
  return s;
}

std::string pack_hint(const model::Model& m) {
  const uint64_t packable = m.unpacked_packable_bytes();
  if (packable == 0) return "";
  return fmt::format(
      "the {} kernels repack the file's rows of {} of matrices on every step; --pack-dir DIR packs "
      "them once into a file every snug process maps shared (faster products with many streams: "
      "docs/SERVING.md)",
      tensor::simd_target(), format_bytes(packable));
}

std::string describe_weight_pages(const model::Model& m) {
  if (m.pack_mapping() == nullptr && m.packed_bytes() > 0) return "";  // packed into private memory
  const MappedFile* map = m.pack_mapping() != nullptr ? m.pack_mapping() : m.file().mapping();
  if (map == nullptr) return "";
  const std::optional<uint64_t> huge = pmd_mapped_bytes(map->data(), map->size());
  if (!huge) return "";
  return fmt::format("{} of the {} file in 2 MiB pages", format_bytes(*huge),
                     format_bytes(map->size()));
}

nlohmann::json kernels_json(const model::Model& m) {
  return {{"simd_target", tensor::simd_target()}, {"matmul_kernels", matmul_kernels(m)}};
}

}  // namespace snug::cli
