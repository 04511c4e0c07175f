// Shared pieces of the subcommands: finding the model file, loading a model
// with its tokenizer, and the memory report.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "base/result.h"
#include "memory/ledger.h"
#include "model/model.h"
#include "plan/footprint.h"
#include "text/tokenizer.h"

namespace snug::cli {

// The default model and the short names the project can fetch (scripts/fetch-models).
constexpr const char* kDefaultModel = "smollm2";

// Resolves a model argument: an existing path, or a short name ("smollm2",
// "gemma3") looked up in $SNUG_MODELS, <executable>/../models and ./models.
Result<std::string> resolve_model_path(const std::string& arg);

struct LoadedModel {
  std::unique_ptr<model::Model> model;
  std::unique_ptr<text::Tokenizer> tokenizer;
  memory::Charge tokenizer_charge;
};

// --repack and --pack-dir, for every command that loads or plans a model.
struct RepackFlags {
  bool repack = false;   // --repack: private packed copies (Model::repack)
  std::string pack_dir;  // --pack-dir DIR: in a shared pack file there (Model::repack_shared)
  plan::Packing packing() const {
    if (!pack_dir.empty()) return plan::Packing::kShared;
    return repack ? plan::Packing::kPrivate : plan::Packing::kNone;
  }
};

Result<LoadedModel> load_model(const std::string& arg, memory::Ledger* ledger);
// The same for a file already opened (and planned) by the caller, packed as
// `repack` asks after loading, saying what it packed.
Result<LoadedModel> load_model_file(gguf::File file, memory::Ledger* ledger,
                                    const RepackFlags& repack = {});
// Maps every weight page of a loaded model now (MappedFile::populate), so the
// first request pays no page faults: the model file's, or where the model was
// packed, the pack file's (a private copy was written while packing).
void populate_weights(const model::Model& m);

// Planned bytes per ledger category and the predicted peak RSS, for the report.
struct PlannedMemory {
  uint64_t category[static_cast<int>(memory::Category::kCount)] = {};
  uint64_t predicted_peak_rss = 0;
  int32_t n_ctx = 0;           // the session's context, tokens (0: not printed)
  std::string context_reason;  // why it is that (plan::Fit::context_reason)
};

// Prints the ledger by category and the process's peak RSS to stderr; with a
// plan, planned beside actual for each category and for the peak.
void print_memory_report(const memory::Ledger& ledger, const PlannedMemory* planned = nullptr);

// Exit codes: 0 success, 1 a runtime failure (bad file, budget), 2 bad usage.
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

// The SIMD target the kernels dispatched to on this CPU and, per weight type of
// the model's matrices, the matmul kernel it runs: "AVX3: q4_1 avx2-int8, q8_0
// avx2-int8". Speed figures quote it so that they name the code that made them.
std::string describe_kernels(const model::Model& m);
// How much of the mapped weights file this process maps in 2 MiB pages
// ("86.0 MiB of the 94.1 MiB file in 2 MiB pages"), or "" where that cannot be
// read (no /proc) or the weights were packed into private memory. A file
// the page cache held in 4 KiB folios before snug mapped it stays in them,
// and one stream decodes about 8% slower over it (README).
std::string describe_weight_pages(const model::Model& m);
// For a server or batch job whose matrices the dispatched kernels could read
// packed but repack on every call (a model mapped as the file has it): the
// startup log's pointer to --pack-dir; "" otherwise.
std::string pack_hint(const model::Model& m);
// The same as JSON: {"simd_target": "AVX3", "matmul_kernels": {"q4_1": "avx2-int8"}}.
nlohmann::json kernels_json(const model::Model& m);

int fail(const Error& e);  // prints "snug: error: ..." and returns kExitFailure

// The environment's say over the kernels, read before anything runs:
// SNUG_SIMD_TARGET=AVX2 runs that Highway target's kernels and those below
// it (to compare code paths on one machine, or reproduce another's
// arithmetic); SNUG_GGML_ORDER=1 (0) asks for (against) ggml's summation
// order (tensor::set_ggml_order). A bad value prints one line naming it and
// returns kExitUsage; 0 otherwise.
int apply_kernel_env();

}  // namespace snug::cli
