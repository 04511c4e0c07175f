#include "engine/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>

#include "base/thread_pool.h"
#include "engine/session.h"
#include "kv/kv_cache.h"
#include "model/workspace.h"

namespace snug::engine {
namespace {

// One model's cache and workspace for evaluating windows of n_ctx tokens.
class WindowEvaluator {
 public:
  static Result<std::unique_ptr<WindowEvaluator>> create(const model::Model& m,
                                                         const PerplexityOptions& o, int threads,
                                                         memory::Ledger* ledger) {
    std::unique_ptr<WindowEvaluator> e(new WindowEvaluator(m));
    const auto& c = m.config();
    kv::KvLayout layout = m.kv_layout(o.k_type);
    layout.v_type = o.v_type;
    const auto blocks = static_cast<int32_t>(layout.sequence_blocks(o.n_ctx, o.n_batch));
    SNUG_ASSIGN_OR_RETURN(e->cache_, kv::KvCache::create(layout, blocks, ledger));
    model::WorkspaceShape shape{
        .max_tokens = o.n_batch, .max_logits = o.n_batch, .max_ctx = o.n_ctx, .n_threads = threads};
    SNUG_ASSIGN_OR_RETURN(
        e->ws_,
        model::Workspace::create(c, model::plan_workspace(c, m.matrix_types(), shape), ledger));
    SNUG_RETURN_IF_ERROR(e->cache_.commit());
    e->n_batch_ = o.n_batch;
    return e;
  }

  // Evaluates `window` from an empty cache; for each forward call whose
  // tokens reach position `first`, on_rows(p0, n, logits) gets the logits of
  // positions p0 .. p0+n-1 (n rows of n_vocab floats).
  template <typename F>
  Status run(std::span<const int32_t> window, int32_t first, ThreadPool& pool, F&& on_rows) {
    if (seq_ >= 0) cache_.free_sequence(seq_);
    seq_ = cache_.create_sequence();
    const auto n = static_cast<int32_t>(window.size());
    for (int32_t off = 0; off < n; off += n_batch_) {
      const int32_t len = std::min(n_batch_, n - off);
      batch_.clear();
      int32_t p0 = -1;
      for (int32_t i = 0; i < len; ++i) {
        const bool want = off + i >= first;
        if (want && p0 < 0) p0 = off + i;
        batch_.add(window[static_cast<size_t>(off) + static_cast<size_t>(i)], seq_, want);
      }
      SNUG_RETURN_IF_ERROR(model_.forward(batch_, cache_, ws_, pool));
      if (p0 >= 0) on_rows(p0, off + len - p0, static_cast<const float*>(ws_.logits));
    }
    return Status{};
  }

 private:
  explicit WindowEvaluator(const model::Model& m) : model_(m) {}
  const model::Model& model_;
  kv::KvCache cache_;
  model::Workspace ws_;
  model::Batch batch_;
  kv::SeqId seq_ = -1;  // none yet
  int32_t n_batch_ = 1;
};

// log-softmax pieces of one row, as llama.cpp's perplexity computes them:
// the maximum in float, the sum of exponentials in double.
struct RowSoftmax {
  float max = 0;
  int32_t argmax = 0;
  double log_sum_exp = 0;
};

RowSoftmax row_softmax(const float* logits, int32_t n_vocab) {
  RowSoftmax r;
  r.max = logits[0];
  for (int32_t i = 1; i < n_vocab; ++i) {
    if (logits[i] > r.max) {
      r.max = logits[i];
      r.argmax = i;
    }
  }
  double sum = 0;
  for (int32_t i = 0; i < n_vocab; ++i) sum += std::exp(logits[i] - r.max);
  r.log_sum_exp = std::log(sum);
  return r;
}

// Per scored position.
struct Scored {
  double nll = 0;
  double nll_base = 0;
  double kld = 0;
  double p_diff = 0;
  bool same_top = false;
};

Estimate mean_and_error(double sum, double sum2, size_t count) {
  if (count < 1) return {};
  const double f = sum / static_cast<double>(count);
  double df = sum2 / static_cast<double>(count) - f * f;
  df = df > 0 && count > 10 ? std::sqrt(df / static_cast<double>(count - 1)) : 0.;
  return {f, df};
}

// Linear interpolation between the neighbouring order statistics (llama.cpp's).
double percentile(const std::vector<double>& sorted, double fraction) {
  if (fraction <= 0) return sorted.front();
  if (fraction >= 1) return sorted.back();
  double p = fraction * static_cast<double>(sorted.size() - 1);
  const auto ip = static_cast<size_t>(p);
  p -= static_cast<double>(ip);
  return (1 - p) * sorted[ip] + p * sorted[std::min(ip + 1, sorted.size() - 1)];
}

void summarize(const std::vector<Scored>& s, bool has_base, PerplexityResult& r) {
  double nll = 0, nll2 = 0;
  for (const Scored& x : s) {
    nll += x.nll;
    nll2 += x.nll * x.nll;
  }
  const Estimate log_ppl = mean_and_error(nll, nll2, s.size());
  r.ppl = {std::exp(log_ppl.value), std::exp(log_ppl.value) * log_ppl.error};
  if (!has_base) return;

  double b = 0, b2 = 0, cross = 0, k = 0, k2 = 0, d2 = 0, d4 = 0;
  size_t same = 0;
  std::vector<double> kld;
  kld.reserve(s.size());
  for (const Scored& x : s) {
    b += x.nll_base;
    b2 += x.nll_base * x.nll_base;
    cross += x.nll * x.nll_base;
    k += x.kld;
    k2 += x.kld * x.kld;
    d2 += x.p_diff * x.p_diff;
    d4 += x.p_diff * x.p_diff * x.p_diff * x.p_diff;
    same += x.same_top ? 1 : 0;
    kld.push_back(x.kld);
  }
  const auto n = static_cast<double>(s.size());
  KlStats& kl = r.kl;
  const Estimate log_base = mean_and_error(b, b2, s.size());
  kl.ppl_base = {std::exp(log_base.value), std::exp(log_base.value) * log_base.error};
  // The two log-likelihoods are correlated: the error of their difference
  // subtracts the covariance of the means.
  const double cov = s.size() > 1 ? (cross / n - (nll / n) * (b / n)) / (n - 1) : 0;
  const double var = log_ppl.error * log_ppl.error + log_base.error * log_base.error - 2 * cov;
  kl.ln_ppl_ratio = {log_ppl.value - log_base.value, var > 0 ? std::sqrt(var) : 0};
  kl.kld = mean_and_error(k, k2, s.size());
  const Estimate msd = mean_and_error(d2, d4, s.size());
  const double rms = std::sqrt(msd.value);
  kl.rms_p_diff = {rms, rms > 0 ? 0.5 / rms * msd.error : 0};
  const double top = static_cast<double>(same) / n;
  kl.same_top = {top, s.size() > 1 ? std::sqrt(top * (1 - top) / (n - 1)) : 0};
  std::sort(kld.begin(), kld.end());
  kl.kld_median = percentile(kld, 0.5);
  kl.kld_p90 = percentile(kld, 0.9);
  kl.kld_p99 = percentile(kld, 0.99);
  kl.kld_p999 = percentile(kld, 0.999);
  kl.kld_max = kld.back();
}

}  // namespace

Result<PerplexityResult> evaluate_perplexity(const model::Model& model, const model::Model* base,
                                             std::span<const int32_t> tokens, int32_t bos,
                                             const PerplexityOptions& options,
                                             memory::Ledger* ledger) {
  PerplexityOptions o = options;
  const int32_t n_vocab = model.config().n_vocab;
  if (o.n_ctx < 4)
    return make_error("the perplexity window must hold at least 4 tokens, got ", o.n_ctx);
  if (o.n_ctx > model.config().n_ctx_train)
    return make_error("window of ", o.n_ctx, " tokens is longer than the model's trained context (",
                      model.config().n_ctx_train, ")");
  if (o.n_batch <= 0 || o.n_batch > o.n_ctx) o.n_batch = o.n_ctx;
  if (o.max_chunks < 0) return make_error("the number of windows must not be negative");
  const auto n_tokens = static_cast<int64_t>(tokens.size());
  if (n_tokens < 2 * int64_t{o.n_ctx})
    return make_error("the text has ", n_tokens, " tokens; a window of ", o.n_ctx,
                      " needs at least ", 2 * int64_t{o.n_ctx},
                      " (a longer text or a smaller --ctx)");
  if (base != nullptr && base->config().n_vocab != n_vocab)
    return make_error("the base model's vocabulary has ", base->config().n_vocab,
                      " tokens and the model's ", n_vocab, ": they cannot be compared");
  for (int32_t t : tokens) {
    if (t < 0 || t >= n_vocab) return make_error("token id ", t, " is outside the vocabulary");
  }

  int32_t n_chunks = static_cast<int32_t>(n_tokens / o.n_ctx);
  if (o.max_chunks > 0) n_chunks = std::min(n_chunks, o.max_chunks);
  const int threads = o.n_threads > 0 ? o.n_threads : default_thread_count();
  ThreadPool pool(threads);

  SNUG_ASSIGN_OR_RETURN(auto eval, WindowEvaluator::create(model, o, threads, ledger));
  std::unique_ptr<WindowEvaluator> base_eval;
  if (base != nullptr) {
    // The base is the reference: its cache stays f16 whatever the model's is.
    PerplexityOptions bo = o;
    bo.k_type = bo.v_type = tensor::DType::kF16;
    SNUG_ASSIGN_OR_RETURN(base_eval, WindowEvaluator::create(*base, bo, threads, ledger));
  }

  const int32_t first = o.n_ctx / 2;
  const int32_t per_chunk = o.n_ctx - 1 - first;  // scored positions of a window
  // The base's log-probabilities for the scored positions of the current window.
  std::vector<float> base_lp;
  memory::Charge base_lp_charge;
  if (base != nullptr) {
    base_lp.resize(static_cast<size_t>(per_chunk) * static_cast<size_t>(n_vocab));
    base_lp_charge =
        memory::Charge(ledger, memory::Category::kScratch, base_lp.size() * sizeof(float));
  }
  std::vector<Scored> scored(static_cast<size_t>(n_chunks) * static_cast<size_t>(per_chunk));
  std::vector<int32_t> window(static_cast<size_t>(o.n_ctx));

  PerplexityResult r;
  r.n_ctx = o.n_ctx;
  r.n_chunks = n_chunks;
  r.n_tokens = n_tokens;
  r.has_base = base != nullptr;
  double model_seconds = 0;
  const auto t0 = std::chrono::steady_clock::now();

  for (int32_t c = 0; c < n_chunks; ++c) {
    const size_t start = static_cast<size_t>(c) * static_cast<size_t>(o.n_ctx);
    std::copy_n(tokens.begin() + static_cast<std::ptrdiff_t>(start), o.n_ctx, window.begin());
    if (bos >= 0) window[0] = bos;
    // The token each scored position predicts: window position p predicts text token start+p+1.
    const int32_t* next = tokens.data() + start + 1;
    Scored* out = scored.data() + static_cast<size_t>(c) * static_cast<size_t>(per_chunk);

    if (base_eval) {
      SNUG_RETURN_IF_ERROR(
          base_eval->run(window, first, pool, [&](int32_t p0, int32_t n, const float* logits) {
            pool.run([&](int tid, int nth) {
              for (int32_t i = tid; i < n; i += nth) {
                const int32_t p = p0 + i;
                if (p >= o.n_ctx - 1) continue;  // the last position predicts past the window
                const float* row = logits + int64_t{i} * n_vocab;
                const RowSoftmax sm = row_softmax(row, n_vocab);
                float* lp =
                    base_lp.data() + static_cast<size_t>(p - first) * static_cast<size_t>(n_vocab);
                for (int32_t v = 0; v < n_vocab; ++v)
                  lp[v] = static_cast<float>(row[v] - sm.max - sm.log_sum_exp);
                out[p - first].nll_base = sm.max + sm.log_sum_exp - row[next[p]];
              }
            });
          }));
    }

    const auto m0 = std::chrono::steady_clock::now();
    SNUG_RETURN_IF_ERROR(
        eval->run(window, first, pool, [&](int32_t p0, int32_t n, const float* logits) {
          pool.run([&](int tid, int nth) {
            for (int32_t i = tid; i < n; i += nth) {
              const int32_t p = p0 + i;
              if (p >= o.n_ctx - 1) continue;
              const float* row = logits + int64_t{i} * n_vocab;
              const RowSoftmax sm = row_softmax(row, n_vocab);
              Scored& s = out[p - first];
              s.nll = sm.max + sm.log_sum_exp - row[next[p]];
              if (!base_eval) continue;
              const float* lp =
                  base_lp.data() + static_cast<size_t>(p - first) * static_cast<size_t>(n_vocab);
              double kld = 0;
              int32_t base_top = 0;
              for (int32_t v = 0; v < n_vocab; ++v) {
                if (lp[v] > lp[base_top]) base_top = v;
                const double lq = row[v] - sm.max - sm.log_sum_exp;
                kld += std::exp(static_cast<double>(lp[v])) * (lp[v] - lq);
              }
              s.kld = kld;
              s.same_top = base_top == sm.argmax;
              s.p_diff = std::exp(-s.nll) - std::exp(-s.nll_base);
            }
          });
        }));
    model_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - m0).count();

    // Running perplexity over the windows so far, as llama.cpp prints it.
    double nll = 0;
    const size_t done = static_cast<size_t>(c + 1) * static_cast<size_t>(per_chunk);
    for (size_t i = 0; i < done; ++i) nll += scored[i].nll;
    r.chunk_ppl.push_back(std::exp(nll / static_cast<double>(done)));
    if (o.on_chunk) o.on_chunk(c + 1, n_chunks, r.chunk_ppl.back());
  }

  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.n_scored = static_cast<int64_t>(scored.size());
  r.tokens_per_second =
      model_seconds > 0 ? static_cast<double>(n_chunks) * o.n_ctx / model_seconds : 0;
  summarize(scored, base != nullptr, r);
  return r;
}

}  // namespace snug::engine
