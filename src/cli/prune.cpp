// snug prune IN.gguf OUT.gguf --method magnitude|wanda|sparsegpt --sparsity S [--pattern N:M]
// [--calib TEXT] [--keep GLOB] [--type T]: a copy of a model with the least
// important weights of its decoder matrices set to zero. Wanda first runs the
// model over the calibration text to learn each input column's activation
// norm (the same run as `snug imatrix`). A summary on stderr: sizes, the
// share removed, and the share that is exactly zero in the written file.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "base/bytes.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "compress/calibrate.h"
#include "compress/prune.h"
#include "compress/quant_types.h"
#include "compress/sparsegpt.h"
#include "compress/structured.h"

namespace snug::cli {
namespace {

struct Flags {
  std::string in, out, method = "magnitude", pattern = "unstructured", calib, type, structured;
  bool method_given = false, pattern_given = false, dense = false, no_refit = false;
  double sparsity = 0.5;
  bool sparsity_given = false;
  std::vector<std::string> keep;
  int32_t calib_chunks = 64;
  int32_t calib_ctx = 512;
  int32_t threads = 0;
};

int usage(const std::string& message) {
  std::fprintf(stderr, "snug: error: %s\n", message.c_str());
  return kExitUsage;
}

// --structured: whole channels, head groups and layers, scored over --calib.
int structured_main(const Flags& f) {
  auto cut = compress::parse_structured_cut(f.structured);
  if (!cut.ok()) return usage(cut.error().message);
  if (f.method_given || f.pattern_given || f.sparsity_given || !f.type.empty() || !f.keep.empty() ||
      f.dense)
    return usage(
        "--structured removes whole channels, heads and layers; it takes no --method, "
        "--sparsity, --pattern, --type, --keep or --dense");
  if (f.calib.empty()) return usage("--structured needs a calibration text (--calib TEXT)");
  std::ifstream in(f.calib, std::ios::binary);
  if (!in) return fail(make_error("cannot read calibration text '", f.calib, "'"));
  std::stringstream text;
  text << in.rdbuf();
  memory::Ledger ledger;
  auto lm = load_model(f.in, &ledger);
  if (!lm.ok()) return fail(lm.error());
  const text::Tokenizer& tok = *lm->tokenizer;
  const std::vector<int32_t> tokens = tok.encode(text.str(), /*add_special=*/true,
                                                 /*parse_special=*/false);
  const int32_t threads =
      f.threads > 0 ? f.threads
                    : static_cast<int32_t>(std::max(1u, std::thread::hardware_concurrency()));
  const model::ModelConfig& c = lm->model->config();
  // The cut is checked before the calibration run: a zero-score plan has the same shape.
  compress::StructuredScores shape_only;
  shape_only.influence.assign(static_cast<size_t>(c.n_layers), 0.0);
  shape_only.ffn.assign(static_cast<size_t>(c.n_layers),
                        std::vector<double>(static_cast<size_t>(c.n_ff)));
  shape_only.heads.assign(static_cast<size_t>(c.n_layers),
                          std::vector<double>(static_cast<size_t>(c.n_kv_heads)));
  if (auto p = compress::plan_structured(c, shape_only, *cut); !p.ok()) return fail(p.error());
  auto scores = compress::structured_scores(*lm->model, tokens, tok.add_bos() ? tok.bos() : -1,
                                            f.calib_ctx, f.calib_chunks, threads, &ledger,
                                            /*about_mean=*/!f.no_refit && c.output_biases);
  if (!scores.ok()) return fail(make_error("calibration: ", scores.error().message));
  auto plan = compress::plan_structured(c, *scores, *cut);
  if (!plan.ok()) return fail(plan.error());
  compress::StructuredRefit refit;
  if (!f.no_refit) {
    const int64_t chunks =
        compress::LayerStreams::chunk_count(tokens.size(), f.calib_ctx, f.calib_chunks);
    std::fprintf(stderr,
                 "prune: refitting the attention output and down projection over %lld "
                 "chunks, working memory %s\n",
                 static_cast<long long>(chunks),
                 format_bytes(compress::refit_structured_bytes(c, f.calib_ctx, chunks)).c_str());
    const int64_t rows = chunks * f.calib_ctx;
    const int64_t width = std::max<int64_t>(c.n_ff, int64_t{c.n_heads} * c.head_dim_v);
    if (rows < 4 * width)
      std::fprintf(stderr,
                   "prune: note: %lld calibration rows for inputs %lld wide; a refit over so few "
                   "can fit noise (more --calib-chunks, or --no-refit)\n",
                   static_cast<long long>(rows), static_cast<long long>(width));
    auto r = compress::refit_structured(*lm->model, *plan, tokens, tok.add_bos() ? tok.bos() : -1,
                                        f.calib_ctx, f.calib_chunks, threads, &ledger);
    if (!r.ok()) return fail(make_error("refit: ", r.error().message));
    refit = std::move(*r);
  }
  auto sum = compress::write_structured(f.in, f.out, c, *plan, f.no_refit ? nullptr : &refit);
  if (!sum.ok()) return fail(sum.error());
  std::string gone;
  for (int32_t l = 0, k = 0; l < c.n_layers; ++l) {
    if (k < static_cast<int32_t>(plan->layers.size()) &&
        plan->layers[static_cast<size_t>(k)] == l) {
      ++k;
    } else {
      gone += (gone.empty() ? "" : ", ") + std::to_string(l);
    }
  }
  std::fprintf(stderr,
               "prune: %s (%s) -> %s (%s): %d of %d layers%s%s%s, feed-forward %d of %lld, heads "
               "%d/%d of %d/%d; %.2f%% of the weights left\n",
               f.in.c_str(), format_bytes(sum->input_bytes).c_str(), f.out.c_str(),
               format_bytes(sum->output_bytes).c_str(), static_cast<int>(plan->layers.size()),
               c.n_layers, gone.empty() ? "" : " (removed ", gone.c_str(), gone.empty() ? "" : ")",
               plan->n_ff, static_cast<long long>(c.n_ff), plan->n_heads, plan->n_kv_heads,
               c.n_heads, c.n_kv_heads,
               100.0 * static_cast<double>(sum->output_weights) /
                   static_cast<double>(std::max<uint64_t>(sum->input_weights, 1)));
  return 0;
}

int prune_main(const Flags& f) {
  // Before a (long) calibration run.
  if (Status s = compress::check_output_path(f.in, f.out); !s.ok()) return fail(s.error());
  if (!f.structured.empty()) return structured_main(f);
  if (f.no_refit) return usage("--no-refit is for --structured");
  const auto method = compress::parse_prune_method(f.method);
  if (!method)
    return usage("unknown pruning method '" + f.method +
                 "' (methods: " + compress::prune_method_names() + ")");
  auto pattern = compress::parse_nm_pattern(f.pattern);
  if (!pattern.ok()) return usage(pattern.error().message);
  if (!(f.sparsity >= 0.0 && f.sparsity < 1.0))
    return usage("--sparsity must be in [0, 1), got " + std::to_string(f.sparsity));
  if (!pattern->unstructured() && f.sparsity_given &&
      std::abs(f.sparsity - pattern->sparsity()) > 1e-9)
    return usage("--sparsity " + std::to_string(f.sparsity) + " contradicts --pattern " +
                 f.pattern + " (which removes " + std::to_string(pattern->sparsity()) + ")");
  compress::PruneOptions opt;
  opt.method = *method;
  opt.sparsity = f.sparsity;
  opt.pattern = *pattern;
  opt.keep = f.keep;
  opt.dense = f.dense;
  if (f.dense && !compress::nm_storable(*pattern))
    return usage(
        "--dense is for N:M patterns that keep at most 4 of every 8 (2:4, 4:8); "
        "other pruning is always written dense");
  if (!f.type.empty()) {
    opt.type = compress::find_tensor_type(f.type);
    if (!opt.type) return usage("unknown tensor type '" + f.type + "' for --type");
  }
  opt.threads = f.threads > 0 ? f.threads
                              : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (*method == compress::PruneMethod::kMagnitude && !f.calib.empty())
    return usage("--calib is for wanda and sparsegpt; magnitude needs no calibration text");

  compress::Imatrix activations;
  std::map<std::string, std::vector<uint8_t>> packed;
  memory::Ledger ledger;
  LoadedModel lm;  // kept alive while SparseGPT's tensors point into it
  if (*method != compress::PruneMethod::kMagnitude) {
    if (f.calib.empty()) return usage(f.method + " needs a calibration text (--calib TEXT)");
    std::ifstream in(f.calib, std::ios::binary);
    if (!in) return fail(make_error("cannot read calibration text '", f.calib, "'"));
    std::stringstream text;
    text << in.rdbuf();
    auto loaded = load_model(f.in, &ledger);
    if (!loaded.ok()) return fail(loaded.error());
    lm = std::move(*loaded);
    const text::Tokenizer& tok = *lm.tokenizer;
    const std::vector<int32_t> tokens = tok.encode(text.str(), /*add_special=*/true,
                                                   /*parse_special=*/false);
    const int32_t bos = tok.add_bos() ? tok.bos() : -1;
    if (*method == compress::PruneMethod::kWanda) {
      compress::ImatrixOptions io;
      io.max_chunks = f.calib_chunks;
      io.n_ctx = f.calib_ctx;
      io.n_batch = f.calib_ctx;
      io.n_threads = opt.threads;
      io.dataset = f.calib;
      auto m = compress::collect_imatrix(*lm.model, tokens, bos, io, &ledger);
      if (!m.ok()) return fail(make_error("calibration: ", m.error().message));
      activations = std::move(*m);
      opt.activations = &activations;
      std::fprintf(stderr, "prune: calibration over %u chunks of %u tokens of '%s'\n",
                   activations.chunk_count, activations.chunk_size, f.calib.c_str());
    } else {
      compress::SparseGptRun run;
      run.max_chunks = f.calib_chunks;
      run.n_ctx = f.calib_ctx;
      run.n_threads = opt.threads;
      run.matrix.sparsity = pattern->unstructured() ? f.sparsity : 0.0;
      run.matrix.pattern = *pattern;
      run.on_plan = [](const std::string& plan) {
        std::fprintf(stderr, "prune: sparsegpt over %s\n", plan.c_str());
      };
      const bool tty = isatty(STDERR_FILENO) != 0;
      run.on_layer = [tty](int32_t done, int32_t total, double s) {
        if (tty || done == total || done % 10 == 0)
          std::fprintf(stderr, "%sprune: layer %d/%d, %.0f s%s", tty ? "\r" : "", done, total, s,
                       tty && done < total ? "" : "\n");
      };
      auto p = compress::sparsegpt_model(*lm.model, tokens, bos, opt, run, &ledger);
      if (!p.ok()) return fail(make_error("sparsegpt: ", p.error().message));
      packed = std::move(*p);
      opt.packed = &packed;
    }
  }
  auto sum = compress::prune_file(f.in, f.out, opt);
  if (!sum.ok()) return fail(sum.error());
  const auto share = [&](uint64_t n) {
    return 100.0 * static_cast<double>(n) /
           static_cast<double>(std::max<uint64_t>(sum->prunable_weights, 1));
  };
  std::fprintf(stderr,
               "prune: %s (%s) -> %s (%s) in %.2f s: %s %s over %zu tensors; %.2f%% of their "
               "%llu weights removed, %.2f%% exactly zero as written\n",
               f.in.c_str(), format_bytes(sum->files.input_bytes).c_str(), f.out.c_str(),
               format_bytes(sum->files.output_bytes).c_str(), sum->files.seconds, f.method.c_str(),
               pattern->unstructured() ? std::to_string(f.sparsity).c_str() : f.pattern.c_str(),
               sum->pruned.size(), share(sum->removed_weights),
               static_cast<unsigned long long>(sum->prunable_weights), share(sum->zero_weights));
  std::set<std::string> sparse_types, dense_types;
  size_t sparse = 0;
  for (size_t k : sum->pruned) {
    const tensor::DType to = sum->files.tensors[k].to;
    if (tensor::snug_only_type(to)) {
      ++sparse;
      sparse_types.insert(std::string(tensor::dtype_name(to)));
    } else if (compress::nm_storable(*pattern) && !f.dense) {
      dense_types.insert(std::string(tensor::dtype_name(to)));
    }
  }
  const auto join = [](const std::set<std::string>& names) {
    std::string r;
    for (const std::string& n : names) r += (r.empty() ? "" : ", ") + n;
    return r;
  };
  if (sparse > 0)
    std::fprintf(stderr,
                 "prune: %zu tensors stored N:M-sparse as %s, snug's own types (llama.cpp cannot "
                 "read this file; --dense writes the zeros in the standard type)\n",
                 sparse, join(sparse_types).c_str());
  if (!dense_types.empty())
    std::fprintf(stderr,
                 "prune: %s has no N:M-sparse form, so those tensors hold their zeros dense "
                 "(--type q8_0 or q4_0 stores them sparse)\n",
                 join(dense_types).c_str());
  return 0;
}

}  // namespace

Action add_prune(CLI::App& app) {
  auto f = std::make_shared<Flags>();
  CLI::App* sub = app.add_subcommand(
      "prune", "write a copy of a GGUF model with its least important weights set to zero");
  sub->add_option("input", f->in, "GGUF file to read")->required();
  sub->add_option("output", f->out, "GGUF file to write")->required();
  sub->add_option("--method", f->method,
                  "magnitude (no calibration), wanda (|weight| x activation norm) or sparsegpt "
                  "(second-order, layer by layer); wanda and sparsegpt need --calib");
  CLI::Option* method = sub->get_option("--method");
  CLI::Option* sparsity = sub->add_option("--sparsity", f->sparsity,
                                          "share of each row removed, in [0, 1) "
                                          "(default 0.5; with N:M, the pattern's)");
  CLI::Option* pattern =
      sub->add_option("--pattern", f->pattern,
                      "unstructured (default) or N:M: keep N of every M weights (2:4, 4:8)");
  sub->add_option("--calib", f->calib, "calibration text for wanda and sparsegpt");
  sub->add_option("--calib-chunks", f->calib_chunks,
                  "calibration chunks evaluated (default 64; 0: the whole text)");
  sub->add_option("--calib-ctx", f->calib_ctx, "tokens per calibration chunk (default 512)");
  sub->add_option("--keep", f->keep,
                  "glob of tensor names never pruned (repeatable); embeddings and the output "
                  "head are never pruned");
  sub->add_option("--type", f->type, "type of the pruned tensors (default: each one's own)");
  sub->add_flag("--dense", f->dense,
                "with 2:4 or 4:8, write q8_0/q4_0 tensors with their zeros in the standard type "
                "(llama.cpp reads it) instead of snug's smaller, faster N:M-sparse form");
  sub->add_option("--structured", f->structured,
                  "ffn=F,heads=H,layers=N: remove whole feed-forward channels, KV head groups and "
                  "layers (scored over --calib), writing a GGUF of smaller dimensions");
  sub->add_flag("--no-refit", f->no_refit,
                "with --structured: cut only, without refitting the attention output and down "
                "projection to the kept channels' inputs by least squares");
  sub->add_option("-t,--threads", f->threads, "worker threads (default: all cores)");
  return [f, sub, method, sparsity, pattern]() -> int {
    if (!*sub) return -1;
    f->sparsity_given = sparsity->count() > 0;
    f->method_given = method->count() > 0;
    f->pattern_given = pattern->count() > 0;
    return prune_main(*f);
  };
}

}  // namespace snug::cli
