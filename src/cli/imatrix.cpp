// snug imatrix MODEL --file TEXT -o FILE: evaluate a model over a calibration
// text and write the importance matrix that `snug quantize --imatrix` (or
// llama-quantize --imatrix) uses. Progress on stderr, then a one-line summary.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "cli/commands.h"
#include "cli/common.h"
#include "compress/calibrate.h"
#include "compress/quantize.h"

namespace snug::cli {
namespace {

struct Flags {
  std::string model, file, out = "imatrix.gguf";
  int32_t ctx = 512;
  int32_t chunks = 0;
  int32_t batch = 512;
  int32_t threads = 0;
  bool process_output = false;
};

// On a terminal, a line redrawn per chunk; otherwise a line for the first
// chunk (with the estimate) and every tenth, so logs stay short.
void print_progress(int32_t done, int32_t total, double seconds, bool tty) {
  const double per_chunk = seconds / done;
  const double eta = per_chunk * (total - done);
  if (tty) {
    std::fprintf(stderr, "\rimatrix: chunk %d/%d, %.2f s per chunk, %.0f s left   ", done, total,
                 per_chunk, eta);
    if (done == total) std::fputc('\n', stderr);
  } else if (done == 1 || done % 10 == 0 || done == total) {
    std::fprintf(stderr, "imatrix: chunk %d/%d, %.2f s per chunk, %.0f s left\n", done, total,
                 per_chunk, eta);
  }
  std::fflush(stderr);
}

int imatrix_main(const Flags& f) {
  auto path = resolve_model_path(f.model);
  if (!path.ok()) return fail(path.error());
  // Before the (long) run starts.
  if (Status s = compress::check_output_path(*path, f.out); !s.ok()) return fail(s.error());
  std::ifstream in(f.file, std::ios::binary);
  if (!in) return fail(make_error("cannot read calibration text '", f.file, "'"));
  std::stringstream text;
  text << in.rdbuf();

  memory::Ledger ledger;
  auto lm = load_model(*path, &ledger);
  if (!lm.ok()) return fail(lm.error());
  const text::Tokenizer& tok = *lm->tokenizer;
  const std::vector<int32_t> tokens = tok.encode(text.str(), /*add_special=*/true,
                                                 /*parse_special=*/false);

  compress::ImatrixOptions opt;
  opt.n_ctx = f.ctx;
  opt.n_batch = f.batch;
  opt.max_chunks = f.chunks;
  opt.n_threads = f.threads > 0
                      ? f.threads
                      : static_cast<int32_t>(std::max(1u, std::thread::hardware_concurrency()));
  opt.process_output = f.process_output;
  opt.dataset = f.file;
  const bool tty = isatty(STDERR_FILENO) != 0;
  opt.on_chunk = [tty](int32_t done, int32_t total, double s) {
    print_progress(done, total, s, tty);
  };
  auto m =
      compress::collect_imatrix(*lm->model, tokens, tok.add_bos() ? tok.bos() : -1, opt, &ledger);
  if (!m.ok()) return fail(m.error());
  if (Status s = compress::save_imatrix(*m, f.out); !s.ok()) return fail(s.error());
  std::fprintf(stderr,
               "imatrix: %zu matrices over %u chunks of %u tokens (%zu tokens in '%s') -> %s\n",
               m->entries.size(), m->chunk_count, m->chunk_size, tokens.size(), f.file.c_str(),
               f.out.c_str());
  return 0;
}

}  // namespace

Action add_imatrix(CLI::App& app) {
  auto f = std::make_shared<Flags>();
  CLI::App* sub = app.add_subcommand(
      "imatrix", "collect activation statistics over a text for importance-weighted quantization");
  sub->add_option("model", f->model, "GGUF file or short name")->required();
  sub->add_option("-f,--file", f->file, "calibration text")->required();
  sub->add_option("-o,--output", f->out, "imatrix file to write (GGUF, as llama-imatrix writes)")
      ->capture_default_str();
  sub->add_option("-c,--ctx", f->ctx, "tokens per chunk")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  sub->add_option("--chunks", f->chunks, "evaluate at most N chunks (default: the whole text)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("-b,--batch", f->batch, "tokens per forward pass (at most --ctx)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  sub->add_option("-t,--threads", f->threads, "worker threads (default: all cores)");
  sub->add_flag("--process-output", f->process_output,
                "also collect output.weight (none when the output is tied to token_embd)");
  return [f, sub]() -> int {
    if (!*sub) return -1;
    return imatrix_main(*f);
  };
}

}  // namespace snug::cli
