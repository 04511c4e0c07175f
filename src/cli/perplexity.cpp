// snug perplexity MODEL --file TEXT [--ctx N] [--kl-base BASE.gguf]: how well
// a model predicts a text, and how far a quantized model's next-token
// distributions drift from a base model's. The method is llama.cpp's
// perplexity tool's (windows of --ctx tokens, second halves scored), so the
// figures compare with its output. Progress on stderr, the table on stdout,
// and with --json the same figures as JSON.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "engine/perplexity.h"
#include "gguf/gguf.h"
#include "plan/session_plan.h"
#include "text/tokenizer.h"

namespace snug::cli {
namespace {

struct Flags {
  std::string model = kDefaultModel;
  std::string file;
  std::string kl_base;
  std::string json;
  std::string kv_type = "f16", k_type, v_type;
  int32_t ctx = 512;
  int32_t batch = 0;
  int32_t chunks = 0;
  int threads = 0;
  bool memory_report = false;
};

Result<std::string> read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error("cannot open the text file '", path, "'");
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) return make_error("cannot read the text file '", path, "'");
  return s.str();
}

Result<tensor::DType> kv_type_flag(const std::string& name, const char* flag) {
  auto t = plan::parse_kv_type(name);
  if (!t) return make_error("unknown ", flag, " '", name, "' (f16, q8_0, q4_0)");
  if (!plan::engine_supports_kv_type(*t))
    return make_error("KV type ", name, " is not stored by the engine yet (use f16)");
  return *t;
}

nlohmann::json estimate_json(const engine::Estimate& e) {
  return {{"value", e.value}, {"error", e.error}};
}

nlohmann::json result_json(const Flags& f, const engine::PerplexityResult& r) {
  nlohmann::json j = {{"model", f.model},
                      {"file", f.file},
                      {"n_ctx", r.n_ctx},
                      {"n_chunks", r.n_chunks},
                      {"n_tokens", r.n_tokens},
                      {"n_scored", r.n_scored},
                      {"ppl", estimate_json(r.ppl)},
                      {"chunk_ppl", r.chunk_ppl},
                      {"seconds", r.seconds},
                      {"tokens_per_second", r.tokens_per_second}};
  if (r.has_base) {
    const engine::KlStats& k = r.kl;
    j["base"] = f.kl_base;
    j["ppl_base"] = estimate_json(k.ppl_base);
    j["ln_ppl_ratio"] = estimate_json(k.ln_ppl_ratio);
    j["kld"] = estimate_json(k.kld);
    j["kld_median"] = k.kld_median;
    j["kld_p90"] = k.kld_p90;
    j["kld_p99"] = k.kld_p99;
    j["kld_p999"] = k.kld_p999;
    j["kld_max"] = k.kld_max;
    j["same_top"] = estimate_json(k.same_top);
    j["rms_p_diff"] = estimate_json(k.rms_p_diff);
  }
  return j;
}

void print_table(const engine::PerplexityResult& r) {
  std::printf(
      "perplexity: %d windows of %d tokens, %lld positions scored, %.1f s (%.0f tokens/s)\n",
      r.n_chunks, r.n_ctx, static_cast<long long>(r.n_scored), r.seconds, r.tokens_per_second);
  std::printf("%-28s %12.4f +/- %.5f\n", "PPL", r.ppl.value, r.ppl.error);
  if (!r.has_base) return;
  const engine::KlStats& k = r.kl;
  std::printf("%-28s %12.4f +/- %.5f\n", "PPL (base)", k.ppl_base.value, k.ppl_base.error);
  std::printf("%-28s %12.6f +/- %.6f\n", "ln(PPL / PPL base)", k.ln_ppl_ratio.value,
              k.ln_ppl_ratio.error);
  std::printf("%-28s %12.6f +/- %.6f\n", "KL divergence, mean", k.kld.value, k.kld.error);
  std::printf("%-28s %12.6f\n", "KL divergence, median", k.kld_median);
  std::printf("%-28s %12.6f\n", "KL divergence, 99th pct", k.kld_p99);
  std::printf("%-28s %12.6f\n", "KL divergence, maximum", k.kld_max);
  std::printf("%-28s %11.3f%% +/- %.3f%%\n", "same top token", 100 * k.same_top.value,
              100 * k.same_top.error);
  std::printf("%-28s %11.3f%% +/- %.3f%%\n", "RMS delta p(next token)", 100 * k.rms_p_diff.value,
              100 * k.rms_p_diff.error);
}

int perplexity_main(const Flags& f) {
  engine::PerplexityOptions o;
  o.n_ctx = f.ctx;
  o.n_batch = f.batch;
  o.max_chunks = f.chunks;
  o.n_threads = f.threads;
  {
    auto both = kv_type_flag(f.kv_type, "--kv-type");
    if (!both.ok()) return fail(both.error());
    o.k_type = o.v_type = *both;
    if (!f.k_type.empty()) {
      auto k = kv_type_flag(f.k_type, "--k-type");
      if (!k.ok()) return fail(k.error());
      o.k_type = *k;
    }
    if (!f.v_type.empty()) {
      auto v = kv_type_flag(f.v_type, "--v-type");
      if (!v.ok()) return fail(v.error());
      o.v_type = *v;
    }
  }
  auto text = read_text(f.file);
  if (!text.ok()) return fail(text.error());
  memory::Ledger ledger;
  auto m = load_model(f.model, &ledger);
  if (!m.ok()) return fail(m.error());
  const bool add_bos = m->tokenizer->add_bos();
  const std::vector<int32_t> tokens = m->tokenizer->encode(*text, true, false);

  LoadedModel base;
  if (!f.kl_base.empty()) {
    // The vocabularies are compared before the base's weights are bound, so a
    // base from another family is refused for what it is.
    auto path = resolve_model_path(f.kl_base);
    if (!path.ok()) return fail(path.error());
    auto file = gguf::File::open(*path);
    if (!file.ok()) return fail(file.error());
    auto tok = text::Tokenizer::from_gguf(*file);
    if (!tok.ok()) return fail(tok.error());
    if (tok->n_vocab() != m->tokenizer->n_vocab() || tok->encode(*text, true, false) != tokens)
      return fail(Error{"the base model '" + f.kl_base +
                        "' has another vocabulary than the model: their predictions cannot be "
                        "compared"});
    auto b = load_model_file(std::move(*file), &ledger);
    if (!b.ok()) return fail(b.error());
    base = std::move(*b);
  }

  // The JSON file is opened before the evaluation, so a bad path fails at once.
  std::ofstream json_out;
  if (!f.json.empty() && f.json != "-") {
    json_out.open(f.json, std::ios::binary | std::ios::trunc);
    if (!json_out) return fail(Error{"cannot write the JSON file '" + f.json + "'"});
  }
  const bool tty = isatty(STDERR_FILENO) != 0;
  o.on_chunk = [tty](int32_t done, int32_t total, double ppl) {
    if (tty) {
      std::fprintf(stderr, "\rperplexity: window %d/%d, PPL %.4f", done, total, ppl);
      if (done == total) std::fputc('\n', stderr);
    } else {
      std::fprintf(stderr, "[%d]%.4f%s", done, ppl, done == total ? "\n" : ",");
    }
    std::fflush(stderr);
  };
  auto r = engine::evaluate_perplexity(*m->model, base.model.get(), tokens,
                                       add_bos ? m->tokenizer->bos() : -1, o, &ledger);
  if (!r.ok()) return fail(r.error());
  print_table(*r);
  if (!f.json.empty()) {
    const std::string doc = result_json(f, *r).dump(2) + "\n";
    if (f.json == "-") {
      std::fputs(doc.c_str(), stdout);
    } else {
      json_out << doc;
      json_out.flush();
      if (!json_out) return fail(Error{"cannot write the JSON file '" + f.json + "'"});
    }
  }
  if (f.memory_report) print_memory_report(ledger);
  return 0;
}

}  // namespace

Action add_perplexity(CLI::App& app) {
  auto f = std::make_shared<Flags>();
  CLI::App* sub = app.add_subcommand(
      "perplexity",
      "perplexity of a text and KL divergence from a base model (llama.cpp's method)");
  sub->add_option("model", f->model, "GGUF file or known model name (default: smollm2)");
  sub->add_option("-f,--file", f->file, "text to evaluate")->required();
  sub->add_option("-c,--ctx", f->ctx, "window size in tokens (default 512, as llama.cpp)")
      ->check(CLI::PositiveNumber);
  sub->add_option("-b,--batch", f->batch, "tokens per forward pass (default: the window)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--chunks", f->chunks, "evaluate at most this many windows (0: all)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--kl-base", f->kl_base,
                  "base model (same vocabulary): adds KL divergence and top-token agreement");
  sub->add_option("--kv-type", f->kv_type, "KV cache type for both K and V: f16, q8_0, q4_0");
  sub->add_option("--k-type", f->k_type, "KV cache type of the keys (overrides --kv-type)");
  sub->add_option("--v-type", f->v_type, "KV cache type of the values (overrides --kv-type)");
  sub->add_option("-t,--threads", f->threads, "threads (0: all available cores)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--json", f->json, "also write the results as JSON to this file ('-': stdout)");
  sub->add_flag("--memory-report", f->memory_report, "print memory by category at the end");
  return [f, sub]() -> int {
    if (!*sub) return -1;
    return perplexity_main(*f);
  };
}

}  // namespace snug::cli
