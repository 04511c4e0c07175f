// snug quantize IN.gguf OUT.gguf TYPE: lower a model's precision into a new
// GGUF file that llama.cpp reads too. A progress bar on stderr when it is a
// terminal, then a summary: sizes, bits per weight, time, and the tensors that
// fell back to another type.
#include <unistd.h>

#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "base/bytes.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "compress/quantize.h"

namespace snug::cli {
namespace {

struct Flags {
  std::string in, out, type;
  std::vector<std::string> keep;
  std::string imatrix;
  int threads = 0;
  bool verbose = false;
};

// A bar redrawn in place on a terminal; nothing when stderr is a file or a
// pipe, so scripts see only the summary (or the one-line error).
void print_progress(size_t index, size_t count, const std::string& name) {
  const int width = 30;
  const int filled = count ? static_cast<int>(width * index / count) : width;
  std::fprintf(stderr, "\r[%s%s] %4zu/%zu %-40.40s", std::string(filled, '#').c_str(),
               std::string(width - filled, '.').c_str(), index, count, name.c_str());
  if (index == count) std::fputc('\n', stderr);
  std::fflush(stderr);
}

int quantize_main(const Flags& f) {
  auto kind = compress::find_quant_kind(f.type);
  if (!kind) {
    std::fprintf(stderr, "snug: error: unknown quantization type '%s' (types: %s)\n",
                 f.type.c_str(), compress::quant_kind_names().c_str());
    return kExitUsage;
  }
  compress::QuantizeOptions opt;
  opt.kind = *kind;
  for (const auto& spec : f.keep) {
    auto rule = compress::parse_keep_rule(spec);
    if (!rule.ok()) {
      std::fprintf(stderr, "snug: error: %s\n", rule.error().message.c_str());
      return kExitUsage;
    }
    opt.keep.push_back(*rule);
  }
  opt.threads = f.threads > 0 ? f.threads
                              : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  compress::Imatrix imatrix;
  if (!f.imatrix.empty()) {
    auto m = compress::load_imatrix(f.imatrix);
    if (!m.ok()) return fail(m.error());
    imatrix = std::move(*m);
    opt.imatrix = &imatrix;
    opt.imatrix_path = f.imatrix;
  }
  const bool tty = isatty(STDERR_FILENO) != 0;
  if (tty) opt.on_progress = print_progress;
  auto sum = compress::quantize_file(f.in, f.out, opt);
  if (!sum.ok()) {
    if (tty) std::fputc('\n', stderr);
    return fail(sum.error());
  }

  // Fallbacks grouped by (from, to) so a model with hundreds of them stays readable.
  std::map<std::string, std::vector<std::string>> notes;
  std::map<std::string, uint64_t> types;
  size_t weighted = 0;
  for (const auto& t : sum->tensors) {
    if (!t.note.empty()) notes[t.note].push_back(t.name);
    types[std::string(tensor::dtype_name(t.to))] += 1;
    weighted += t.weighted ? 1 : 0;
  }
  if (opt.imatrix != nullptr) {
    std::fprintf(
        stderr,
        "quantize: %zu tensors weighted by the importance matrix '%s' (%zu entries, %u chunks)\n",
        weighted, f.imatrix.c_str(), imatrix.entries.size(), imatrix.chunk_count);
  }
  for (const auto& [note, names] : notes) {
    std::fprintf(stderr, "quantize: %zu tensor%s: %s", names.size(), names.size() == 1 ? "" : "s",
                 note.c_str());
    if (f.verbose || names.size() <= 3) {
      std::fprintf(stderr, " (");
      for (size_t k = 0; k < names.size(); ++k)
        std::fprintf(stderr, "%s%s", k ? ", " : "", names[k].c_str());
      std::fprintf(stderr, ")");
    }
    std::fputc('\n', stderr);
  }
  std::string mix;
  for (const auto& [name, n] : types)
    mix += fmt::format("{}{} {}", mix.empty() ? "" : ", ", n, name);
  std::fprintf(stderr,
               "quantize: %s (%s) -> %s (%s, %s, %.2f bits/weight; tensors: %s) in %.2f s\n",
               f.in.c_str(), format_bytes(sum->input_bytes).c_str(), f.out.c_str(),
               format_bytes(sum->output_bytes).c_str(), std::string(kind->name).c_str(),
               8.0 * static_cast<double>(sum->weight_bytes) /
                   static_cast<double>(std::max<uint64_t>(sum->weight_elements, 1)),
               mix.c_str(), sum->seconds);
  return 0;
}

}  // namespace

Action add_quantize(CLI::App& app) {
  auto f = std::make_shared<Flags>();
  CLI::App* sub = app.add_subcommand(
      "quantize", "write a copy of a GGUF model at lower precision (llama.cpp-compatible)");
  sub->add_option("input", f->in, "GGUF file to read")->required();
  sub->add_option("output", f->out, "GGUF file to write")->required();
  sub->add_option("type", f->type,
                  "F32, F16, BF16, Q8_0, Q6_K, Q5_K_M, Q5_K_S, Q5_1, Q5_0, Q4_K_M, Q4_K_S, Q4_1, "
                  "Q4_0, Q3_K_L, Q3_K_M, Q3_K_S, Q2_K")
      ->required();
  sub->add_option("--keep", f->keep,
                  "PATTERN=TYPE: tensors matching the glob get TYPE (e.g. output.weight=q8_0); "
                  "repeatable, first match wins");
  sub->add_option("--imatrix", f->imatrix,
                  "importance matrix from 'snug imatrix' (or llama-imatrix): choose scales "
                  "that minimise the activation-weighted error");
  sub->add_option("-t,--threads", f->threads, "worker threads (default: all cores)");
  sub->add_flag("-v,--verbose", f->verbose, "name every tensor that fell back");
  return [f, sub]() -> int {
    if (!*sub) return -1;
    return quantize_main(*f);
  };
}

}  // namespace snug::cli
