// snug plan MODEL: what running a model will cost, from its header alone, and
// what fits in the memory budget. Prints a table, or one JSON object with
// --json (schema in docs/PLAN.md). Exit 0 when the requested shape fits, 1
// when it does not (the refusal is the one line on stderr).
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/bytes.h"
#include "cli/budget.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "gguf/gguf.h"
#include "plan/fit.h"

namespace snug::cli {
namespace {

struct Flags : PlanFlags {
  bool json = false;
  CLI::Option* memory_option = nullptr;
};

int32_t windowed_layers(const kv::KvLayout& l) {
  return static_cast<int32_t>(
      std::count_if(l.layer_window.begin(), l.layer_window.end(), [](int32_t w) { return w > 0; }));
}

int32_t largest_window(const kv::KvLayout& l) {
  return l.layer_window.empty() ? 0
                                : *std::max_element(l.layer_window.begin(), l.layer_window.end());
}

std::string kv_label(const kv::KvLayout& l) {
  return plan::kv_type_label(l.k_type, l.v_type);
}

// Per KV type (keys and values both): the largest context and parallel count that fit the budget.
struct TypeFit {
  tensor::DType type;
  int32_t max_ctx = 0;
  uint64_t peak_at_max_ctx = 0;
  int32_t max_parallel = 0;  // at the requested (or fitted) context
};

std::vector<TypeFit> fit_table(const plan::ModelFootprint& fp, const plan::SessionShape& shape,
                               uint64_t budget) {
  std::vector<TypeFit> out;
  for (tensor::DType t : plan::kKvTypes) {
    plan::SessionShape s = shape;
    s.set_kv_type(t);
    TypeFit f{t};
    f.max_ctx = plan::largest_context(fp, s, budget);
    if (f.max_ctx > 0) {
      s.n_ctx = f.max_ctx;
      auto m = plan::plan_memory(fp, s);
      if (m.ok()) f.peak_at_max_ctx = m->predicted_peak_rss;
    }
    s.n_ctx = shape.n_ctx;
    f.max_parallel = plan::largest_parallel(fp, s, budget, 4096);
    out.push_back(f);
  }
  return out;
}

nlohmann::json to_json(const std::string& path, const plan::ModelFootprint& fp,
                       const plan::MemoryPlan& m, bool auto_ctx, const BudgetChoice& budget,
                       const std::vector<TypeFit>& fits, const std::string& refusal) {
  const auto& c = fp.config;
  const auto& s = m.session;
  nlohmann::json j;
  j["schema"] = "snug.plan/1";
  j["model"] = {{"path", path},
                {"name", fp.name},
                {"architecture", c.arch_name},
                {"runnable", fp.runnable},
                {"note", fp.runnable_note},
                {"has_data", fp.has_data},
                {"file_bytes", fp.file_bytes},
                {"header_bytes", fp.header_bytes},
                {"n_layers", c.n_layers},
                {"n_embd", c.n_embd},
                {"n_ff", c.n_ff},
                {"n_heads", c.n_heads},
                {"n_kv_heads", c.n_kv_heads},
                {"head_dim_k", c.head_dim_k},
                {"head_dim_v", c.head_dim_v},
                {"n_vocab", c.n_vocab},
                {"n_ctx_train", c.n_ctx_train}};
  j["request"] = {{"ctx", s.shape.n_ctx},
                  {"ctx_auto", auto_ctx},
                  {"parallel", s.shape.n_parallel},
                  {"batch", s.shape.n_batch},
                  {"threads", s.shape.n_threads},
                  {"kv_type", kv_label(s.kv)},
                  {"k_type", tensor::dtype_name(s.kv.k_type)},
                  {"v_type", tensor::dtype_name(s.kv.v_type)}};
  nlohmann::json by_type = nlohmann::json::array();
  for (const auto& w : fp.weights_by_type)
    by_type.push_back({{"type", tensor::dtype_name(w.type)},
                       {"tensors", w.tensors},
                       {"mapped_bytes", w.mapped_bytes},
                       {"resident_bytes", w.resident_bytes}});
  j["weights"] = {{"by_type", by_type},
                  {"mapped_bytes", fp.weights_mapped},
                  {"resident_bytes", fp.weights_resident},
                  {"touched_bytes", fp.weights_touched},
                  {"as_q4_0_bytes", fp.weights_as_q4_0}};
  j["kv_cache"] = {{"type", kv_label(s.kv)},
                   {"k_type", tensor::dtype_name(s.kv.k_type)},
                   {"v_type", tensor::dtype_name(s.kv.v_type)},
                   {"bytes_per_token", s.kv.bytes_per_token()},
                   {"windowed_layers", windowed_layers(s.kv)},
                   {"window", largest_window(s.kv)},
                   {"window_slack", s.kv.window_slack},
                   {"block_tokens", s.kv.block_tokens},
                   {"blocks", s.kv_blocks},
                   {"bytes", s.kv_bytes},
                   {"engine_supports", plan::engine_supports_kv_type(s.kv.k_type) &&
                                           plan::engine_supports_kv_type(s.kv.v_type)}};
  j["workspace"] = {{"activations_bytes", s.workspace.activations},
                    {"logits_bytes", s.workspace.logits},
                    {"quant_bytes", s.workspace.quant},
                    {"attention_bytes", s.workspace.attention},
                    {"bytes", s.workspace.total()}};
  j["tokenizer_bytes"] = fp.tokenizer_bytes;
  j["process_bytes"] = m.process;
  j["header_bytes"] = m.header;
  j["engine_bytes"] = m.engine;
  j["predicted_peak_rss_bytes"] = m.predicted_peak_rss;
  j["budget"] = {{"bytes", budget.bytes},
                 {"source", budget.source},
                 {"fits", refusal.empty()},
                 {"refusal", refusal}};
  nlohmann::json fit = nlohmann::json::array();
  for (const auto& f : fits)
    fit.push_back({{"kv_type", tensor::dtype_name(f.type)},
                   {"engine_supports", plan::engine_supports_kv_type(f.type)},
                   {"max_ctx", f.max_ctx},
                   {"peak_at_max_ctx_bytes", f.peak_at_max_ctx},
                   {"max_parallel", f.max_parallel}});
  j["fit"] = fit;
  return j;
}

void print_table(const std::string& path, const plan::ModelFootprint& fp, const plan::MemoryPlan& m,
                 bool auto_ctx, const BudgetChoice& budget, const std::vector<TypeFit>& fits,
                 const std::string& refusal) {
  const auto& c = fp.config;
  const auto& s = m.session;
  auto line = [](const std::string& what, uint64_t bytes, const std::string& detail) {
    std::printf("  %-20s %12s  %s\n", what.c_str(), format_bytes(bytes).c_str(), detail.c_str());
  };
  // Names come from the file: escaped so a hostile header cannot write control
  // bytes to the terminal.
  std::printf("model: %s (%s), %s%s\n", printable(fp.name, 200).c_str(),
              printable(c.arch_name).c_str(), path.c_str(), fp.has_data ? "" : " (header only)");
  std::printf(
      "  %d layers, width %d, feed-forward %d, %d heads / %d KV heads of %d, vocabulary %d, "
      "trained context %d\n",
      c.n_layers, c.n_embd, c.n_ff, c.n_heads, c.n_kv_heads, c.head_dim_k, c.n_vocab,
      c.n_ctx_train);
  if (!fp.runnable) std::printf("  note: %s\n", fp.runnable_note.c_str());

  std::printf("\nweights by type      %12s  %12s  %s\n", "mapped", "resident", "tensors");
  for (const auto& w : fp.weights_by_type)
    std::printf("  %-18s %12s  %12s  %d\n", std::string(tensor::dtype_name(w.type)).c_str(),
                format_bytes(w.mapped_bytes).c_str(), format_bytes(w.resident_bytes).c_str(),
                w.tensors);
  std::printf("  %-18s %12s  %12s\n", "total", format_bytes(fp.weights_mapped).c_str(),
              format_bytes(fp.weights_resident).c_str());

  std::printf("\nfor a context of %d tokens%s x %d sequence%s, batch %d, %d threads, KV %s\n",
              s.shape.n_ctx, auto_ctx ? " (auto-fit)" : "", s.shape.n_parallel,
              s.shape.n_parallel > 1 ? "s" : "", s.shape.n_batch, s.shape.n_threads,
              kv_label(s.kv).c_str());
  line("weights touched", m.weights,
       fp.weights_touched < fp.weights_mapped
           ? "mapped pages a step reads (embedding rows on demand)"
           : "mapped pages, all read by one forward pass");
  line("file header", m.header, "metadata and tensor directory, read when parsing");
  const int32_t windowed = windowed_layers(s.kv);
  if (windowed == 0) {
    line("KV cache", m.kv,
         fmt::format("{} per token, {} blocks of {} tokens", format_bytes(s.kv.bytes_per_token()),
                     s.kv_blocks, s.kv.block_tokens));
  } else {
    const uint64_t per_layer = s.kv.bytes_per_token() / static_cast<uint64_t>(s.kv.n_layers);
    line("KV cache", m.kv,
         fmt::format("{} per token on {} global layers; {} sliding-window layers hold a window "
                     "of {}, {} more for rewinding and one batch; {} blocks of {} tokens",
                     format_bytes(per_layer * static_cast<uint64_t>(s.kv.n_layers - windowed)),
                     s.kv.n_layers - windowed, windowed, largest_window(s.kv), s.kv.window_slack,
                     s.kv_blocks, s.kv.block_tokens));
  }
  line("workspace", m.workspace,
       fmt::format("activations {}, logits {}, quantized {}, attention {}",
                   format_bytes(s.workspace.activations), format_bytes(s.workspace.logits),
                   format_bytes(s.workspace.quant), format_bytes(s.workspace.attention)));
  line("tokenizer", m.tokenizer, fp.tokenizer_note);
  line("process", m.process,
       fmt::format("binary, libraries, runtime; {} per thread",
                   format_bytes(plan::kPerThreadBytes)));
  line("engine", m.engine, "token history, block tables, sampler");
  line("predicted peak RSS", m.predicted_peak_rss, "");

  std::printf("\nbudget %s (%s): %s\n", format_bytes(budget.bytes).c_str(), budget.source.c_str(),
              refusal.empty() ? "fits" : "does NOT fit");
  std::printf("  %-8s %12s %14s %22s\n", "KV type", "max context", "peak at max",
              fmt::format("max parallel at {}", s.shape.n_ctx).c_str());
  for (const auto& f : fits)
    std::printf("  %-8s %12d %14s %22d\n", std::string(tensor::dtype_name(f.type)).c_str(),
                f.max_ctx, f.max_ctx ? format_bytes(f.peak_at_max_ctx).c_str() : "-",
                f.max_parallel);
}

int plan_main(const Flags& f) {
  auto budget = resolve_budget(f.memory, f.memory_option->count() > 0);
  if (!budget.ok()) return fail(budget.error());
  auto shape = session_shape(f);
  if (!shape.ok()) return fail(shape.error());
  auto path = resolve_model_path(f.model);
  if (!path.ok()) return fail(path.error());
  auto file = gguf::File::open(*path, {.allow_missing_data = true});
  if (!file.ok()) return fail(file.error());
  auto fp = plan::plan_model(*file, f.repack.packing());
  if (!fp.ok()) return fail(fp.error());

  std::string refusal;
  bool auto_ctx = shape->n_ctx == 0;
  plan::MemoryPlan m;
  auto fitted = plan::fit(*fp, {*shape, budget->bytes});
  if (fitted.ok()) {
    m = fitted->plan;
  } else {
    if (shape->n_ctx > fp->config.n_ctx_train) return fail(fitted.error());
    refusal = fitted.error().message;
    plan::SessionShape shown = *shape;
    if (auto_ctx) shown.n_ctx = std::min(fp->config.n_ctx_train, plan::kContextStep);
    auto planned = plan::plan_memory(*fp, shown);
    if (!planned.ok()) return fail(planned.error());
    m = *planned;
  }
  const auto fits = fit_table(*fp, m.session.shape, budget->bytes);
  if (f.json) {
    std::string out = to_json(*path, *fp, m, auto_ctx, *budget, fits, refusal)
                          .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    std::printf("%s\n", out.c_str());
  } else {
    print_table(*path, *fp, m, auto_ctx, *budget, fits, refusal);
  }
  std::fflush(stdout);
  if (!refusal.empty()) return fail(make_error(refusal));
  return 0;
}

}  // namespace

Action add_plan(CLI::App& app) {
  auto f = std::make_shared<Flags>();
  CLI::App* sub =
      app.add_subcommand("plan", "what running a model will cost, and what fits the budget");
  sub->add_option("model", f->model, "GGUF file (header-only is enough) or known model name")
      ->required();
  sub->add_option("-c,--ctx", f->ctx,
                  "context in tokens per sequence (default: the largest that fits)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--parallel", f->parallel, "sequences held at once")->check(CLI::Range(1, 65536));
  sub->add_option("-b,--batch", f->batch, "prompt tokens per forward pass")
      ->check(CLI::PositiveNumber);
  sub->add_option("--max-seqs", f->seqs,
                  "sequences decoded per forward pass (snug serve --max-seqs; default "
                  "--parallel): the workspace's rows")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("-t,--threads", f->threads, "threads (0: all available cores)")
      ->check(CLI::NonNegativeNumber);
  add_kv_type_options(*sub, &f->kv_type, &f->k_type, &f->v_type);
  f->memory_option =
      sub->add_option("--memory", f->memory, "memory budget (default: the machine's)")
          ->check(memory_size_validator());
  sub->add_flag("--json", f->json, "one JSON object (schema: docs/PLAN.md)");
  add_repack_options(*sub, &f->repack);
  return [f, sub]() -> int {
    if (!*sub) return -1;
    return plan_main(*f);
  };
}

}  // namespace snug::cli
