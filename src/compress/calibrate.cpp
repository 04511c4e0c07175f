#include "compress/calibrate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <vector>

#include <Eigen/Dense>

#include "kv/kv_cache.h"

namespace snug::compress {
namespace {

constexpr int kRoles = 8;  // model::MatRole values

// Sums x^2 per input column for every weight matrix the forward pass reports.
class Collector : public model::ActivationObserver {
 public:
  Collector(const model::Model& m, bool process_output)
      : n_layers_(m.config().n_layers),
        output_(process_output && m.file().find_tensor("output.weight") != nullptr),
        acc_(static_cast<size_t>(n_layers_ + 1) * kRoles) {}

  void observe(int32_t layer, model::MatRole role, const float* x, int32_t rows,
               int64_t cols) override {
    if (layer < 0 && !(role == model::MatRole::kOutput && output_)) return;
    if (layer >= n_layers_) return;
    Acc& a = acc_[index(layer, role)];
    if (a.sum.empty()) {
      a.name = layer < 0
                   ? std::string("output.weight")
                   : "blk." + std::to_string(layer) + "." + model::mat_role_stem(role) + ".weight";
      a.sum.assign(static_cast<size_t>(cols), 0.0);
    }
    if (static_cast<int64_t>(a.sum.size()) != cols) {
      bad_ = a.name;  // a matrix changed shape: cannot happen with one model
      return;
    }
    for (int32_t r = 0; r < rows; ++r) {
      const float* row = x + static_cast<int64_t>(r) * cols;
      for (int64_t j = 0; j < cols; ++j) a.sum[static_cast<size_t>(j)] += double{row[j]} * row[j];
    }
    a.count += rows;
  }

  // The name of a matrix whose sums stopped being finite, or empty.
  std::string check() {
    if (!bad_.empty()) return bad_;
    for (const Acc& a : acc_) {
      for (double v : a.sum) {
        if (!std::isfinite(v)) return a.name;
      }
    }
    return {};
  }

  void fill(Imatrix& m) const {
    for (const Acc& a : acc_) {
      if (a.count == 0) continue;
      ImatrixEntry e;
      e.cols = static_cast<int64_t>(a.sum.size());
      e.in_sum2.assign(a.sum.begin(), a.sum.end());
      e.counts = {static_cast<float>(a.count)};
      m.entries.emplace(a.name, std::move(e));
    }
  }

 private:
  struct Acc {
    std::string name;
    std::vector<double> sum;  // [cols]
    int64_t count = 0;        // rows
  };
  size_t index(int32_t layer, model::MatRole role) const {
    return static_cast<size_t>(layer + 1) * kRoles + static_cast<size_t>(role);
  }

  int32_t n_layers_;
  bool output_;
  std::vector<Acc> acc_;  // [layer + 1][role]
  std::string bad_;
};

}  // namespace

Result<Imatrix> collect_imatrix(const model::Model& m, std::span<const int32_t> tokens, int32_t bos,
                                const ImatrixOptions& o, memory::Ledger* ledger) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.n_ctx < 1) return make_error("--ctx must be at least 1, got ", o.n_ctx);
  int32_t n_chunks = static_cast<int32_t>(std::min<size_t>(tokens.size() / o.n_ctx, INT32_MAX));
  if (n_chunks == 0)
    return make_error("the calibration text has ", tokens.size(), " tokens; a chunk of --ctx ",
                      o.n_ctx, " needs at least ", o.n_ctx);
  if (o.max_chunks > 0) n_chunks = std::min(n_chunks, o.max_chunks);

  const model::ModelConfig& c = m.config();
  const int32_t n_batch = std::clamp(o.n_batch, 1, o.n_ctx);
  kv::KvLayout layout = m.kv_layout(tensor::DType::kF16);
  auto cache = kv::KvCache::create(
      layout, static_cast<int32_t>(layout.sequence_blocks(o.n_ctx, n_batch)), ledger);
  if (!cache.ok()) return cache.error();
  model::WorkspaceShape shape{.max_tokens = n_batch,
                              .max_logits = o.process_output ? n_batch : 1,
                              .max_ctx = o.n_ctx,
                              .n_threads = std::max(1, o.n_threads)};
  auto ws = model::Workspace::create(c, model::plan_workspace(c, m.matrix_types(), shape), ledger);
  if (!ws.ok()) return ws.error();
  Collector collector(m, o.process_output);
  ws->observer = &collector;
  ThreadPool pool(shape.n_threads);

  model::Batch batch;
  for (int32_t i = 0; i < n_chunks; ++i) {
    const kv::SeqId seq = cache->create_sequence();
    const size_t start = static_cast<size_t>(i) * static_cast<size_t>(o.n_ctx);
    for (int32_t off = 0; off < o.n_ctx; off += n_batch) {
      const int32_t len = std::min(n_batch, o.n_ctx - off);
      batch.clear();
      for (int32_t k = 0; k < len; ++k) {
        int32_t tok = tokens[start + static_cast<size_t>(off + k)];
        if (off + k == 0 && bos >= 0) tok = bos;
        // Only the output head needs logits; one row keeps the forward pass whole.
        batch.add(tok, seq, o.process_output || k == len - 1);
      }
      if (Status s = m.forward(batch, *cache, *ws, pool); !s.ok()) return s.error();
    }
    cache->free_sequence(seq);
    if (std::string bad = collector.check(); !bad.empty())
      return make_error("activations of '", bad, "' are not finite in chunk ", i + 1,
                        ": the model's weights are broken");
    if (o.on_chunk)
      o.on_chunk(i + 1, n_chunks,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }

  Imatrix result;
  collector.fill(result);
  result.datasets = {o.dataset};
  result.chunk_count = static_cast<uint32_t>(n_chunks);
  result.chunk_size = static_cast<uint32_t>(o.n_ctx);
  return result;
}

int32_t LayerStreams::chunk_count(size_t tokens, int32_t n_ctx, int32_t max_chunks) {
  if (n_ctx <= 0) return 0;
  const auto n = static_cast<int32_t>(tokens / static_cast<size_t>(n_ctx));
  return max_chunks > 0 ? std::min(n, max_chunks) : n;
}

Result<std::unique_ptr<LayerStreams>> LayerStreams::create(
    const model::Model& m, std::span<const int32_t> tokens, int32_t bos, int32_t n_ctx,
    int32_t max_chunks, int32_t n_threads, memory::Ledger* ledger,
    std::span<const tensor::DType> swapped_in) {
  const int32_t n = chunk_count(tokens.size(), n_ctx, max_chunks);
  if (n == 0)
    return make_error("the calibration text has ", tokens.size(), " tokens; a chunk of ", n_ctx,
                      " needs at least ", std::max(n_ctx, 1));
  std::unique_ptr<LayerStreams> s(new LayerStreams(m));
  s->tokens_ = tokens;
  s->bos_ = bos;
  s->n_ctx_ = n_ctx;
  const model::ModelConfig& c = m.config();
  const kv::KvLayout layout = m.kv_layout(tensor::DType::kF16);
  SNUG_ASSIGN_OR_RETURN(
      s->cache_, kv::KvCache::create(
                     layout, static_cast<int32_t>(layout.sequence_blocks(n_ctx, n_ctx)), ledger));
  const model::WorkspaceShape shape{
      .max_tokens = n_ctx, .max_logits = 1, .max_ctx = n_ctx, .n_threads = std::max(1, n_threads)};
  std::vector<tensor::DType> types = m.matrix_types();
  types.insert(types.end(), swapped_in.begin(), swapped_in.end());
  SNUG_ASSIGN_OR_RETURN(
      s->ws_, model::Workspace::create(c, model::plan_workspace(c, types, shape), ledger));
  s->pool_ = std::make_unique<ThreadPool>(shape.n_threads);
  s->streams_.resize(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) SNUG_RETURN_IF_ERROR(s->pass(i, 0, 0, true, {}));
  return s;
}

Status LayerStreams::pass(int32_t i, int32_t first, int32_t last, bool keep,
                          const std::function<void(const float* in, const float* out)>& each) {
  const kv::SeqId seq = cache_.create_sequence();
  batch_.clear();
  const size_t start = static_cast<size_t>(i) * static_cast<size_t>(n_ctx_);
  for (int32_t k = 0; k < n_ctx_; ++k) {
    int32_t tok = tokens_[start + static_cast<size_t>(k)];
    if (k == 0 && bos_ >= 0) tok = bos_;
    batch_.add(tok, seq, false);
  }
  std::vector<float>& s = streams_[static_cast<size_t>(i)];
  if (first > 0) std::memcpy(ws_.x, s.data(), s.size() * sizeof(float));
  Status st = m_.forward_layers(batch_, cache_, ws_, *pool_, first, last);
  cache_.free_sequence(seq);
  if (!st.ok()) return st;
  if (each) each(s.data(), ws_.x);
  if (keep)
    s.assign(ws_.x, ws_.x + static_cast<size_t>(n_ctx_) * static_cast<size_t>(m_.config().n_embd));
  return ok_status();
}

Status LayerStreams::run_layer(int32_t l, model::ActivationObserver* observer, bool advance,
                               const std::function<void(const float* in, const float* out)>& each) {
  ws_.observer = observer;
  Status st = ok_status();
  for (int32_t i = 0; i < chunks() && st.ok(); ++i) {
    st = pass(i, l, l + 1, advance, each);
  }
  ws_.observer = nullptr;
  return st;
}

int input_of(model::MatRole role) {
  switch (role) {
    case model::MatRole::kQ:
    case model::MatRole::kK:
    case model::MatRole::kV:
      return 0;
    case model::MatRole::kO:
      return 1;
    case model::MatRole::kGate:
    case model::MatRole::kUp:
      return 2;
    case model::MatRole::kDown:
      return 3;
    case model::MatRole::kOutput:
      break;
  }
  return -1;
}

void HessianCollector::observe(int32_t l, model::MatRole role, const float* x, int32_t n_rows,
                               int64_t n) {
  using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const int g = input_of(role);
  // q, k and v see the same rows (so do gate and up): count them once.
  if (l != layer || g < 0 || role == model::MatRole::kK || role == model::MatRole::kV ||
      role == model::MatRole::kUp)
    return;
  auto& acc = h[static_cast<size_t>(g)];
  auto& s = sum[static_cast<size_t>(g)];
  if (acc.empty()) {
    acc.assign(static_cast<size_t>(n * n), 0.0);
    s.assign(static_cast<size_t>(n), 0.0);
    cols[static_cast<size_t>(g)] = n;
    rows[static_cast<size_t>(g)] = 0;
  }
  rows[static_cast<size_t>(g)] += n_rows;
  for (int32_t r = 0; r < n_rows; ++r) {
    const float* row = x + static_cast<int64_t>(r) * n;
    for (int64_t j = 0; j < n; ++j) s[static_cast<size_t>(j)] += row[j];
  }
  // Only the lower triangle (a symmetric rank-k update, half the work of
  // the full product); finish() mirrors it.
  const Eigen::Map<const MatF> X(x, n_rows, n);
  g_.assign(static_cast<size_t>(n * n), 0.f);
  Eigen::Map<MatF> G(g_.data(), n, n);
  G.selfadjointView<Eigen::Lower>().rankUpdate(X.transpose());
  Eigen::Map<Mat> A(acc.data(), n, n);
  A.triangularView<Eigen::Lower>() += G.cast<double>();
}

void HessianCollector::finish() {
  using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  for (size_t g = 0; g < h.size(); ++g) {
    if (h[g].empty()) continue;
    Eigen::Map<Mat> A(h[g].data(), cols[g], cols[g]);
    A.triangularView<Eigen::StrictlyUpper>() = A.transpose();
  }
}

void HessianCollector::clear() {
  for (auto& m : h) m.clear();
  for (auto& m : sum) m.clear();
}

}  // namespace snug::compress
