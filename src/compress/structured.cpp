#include "compress/structured.h"

#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <set>

#include <Eigen/Dense>

#include "compress/calibrate.h"
#include "compress/quantize.h"
#include "tensor/kernels.h"

namespace snug::compress {
namespace {

using tensor::DType;

// Sums x^2 per input column of every layer's attention output and down projection.
class ColumnSums : public model::ActivationObserver {
 public:
  explicit ColumnSums(int32_t n_layers)
      : o(static_cast<size_t>(n_layers)),
        down(static_cast<size_t>(n_layers)),
        o_sum(static_cast<size_t>(n_layers)),
        down_sum(static_cast<size_t>(n_layers)),
        rows(static_cast<size_t>(n_layers), 0) {}
  std::vector<std::vector<double>> o, down;          // sums of x^2
  std::vector<std::vector<double>> o_sum, down_sum;  // sums of x
  std::vector<int64_t> rows;                         // rows seen by the down projection
  void observe(int32_t layer, model::MatRole role, const float* x, int32_t rows,
               int64_t cols) override {
    if (layer < 0) return;
    std::vector<double>* acc = role == model::MatRole::kO      ? &o[static_cast<size_t>(layer)]
                               : role == model::MatRole::kDown ? &down[static_cast<size_t>(layer)]
                                                               : nullptr;
    if (acc == nullptr) return;
    std::vector<double>* s = role == model::MatRole::kO ? &o_sum[static_cast<size_t>(layer)]
                                                        : &down_sum[static_cast<size_t>(layer)];
    if (acc->empty()) acc->assign(static_cast<size_t>(cols), 0.0);
    if (s->empty()) s->assign(static_cast<size_t>(cols), 0.0);
    if (role == model::MatRole::kDown) this->rows[static_cast<size_t>(layer)] += rows;
    for (int32_t r = 0; r < rows; ++r) {
      const float* row = x + static_cast<int64_t>(r) * cols;
      for (int64_t j = 0; j < cols; ++j) {
        (*acc)[static_cast<size_t>(j)] += double{row[j]} * row[j];
        (*s)[static_cast<size_t>(j)] += row[j];
      }
    }
  }
};

// Squared norm of every column of a matrix.
std::vector<double> column_norms2(const tensor::MatView& m) {
  std::vector<double> n(static_cast<size_t>(m.cols), 0.0);
  std::vector<float> row(static_cast<size_t>(m.cols));
  for (int64_t r = 0; r < m.rows; ++r) {
    tensor::dequantize_row(m.type, static_cast<const uint8_t*>(m.data) + r * m.row_bytes,
                           row.data(), m.cols);
    for (int64_t j = 0; j < m.cols; ++j) n[static_cast<size_t>(j)] += double{row[j]} * row[j];
  }
  return n;
}

// The `keep` highest-scoring indices, sorted; ties keep the lower index.
std::vector<int32_t> top(const std::vector<double>& score, int64_t keep) {
  std::vector<int32_t> idx(score.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) {
    return score[static_cast<size_t>(a)] > score[static_cast<size_t>(b)];
  });
  idx.resize(static_cast<size_t>(keep));
  std::sort(idx.begin(), idx.end());
  return idx;
}

// "blk.12.ffn_up.weight" -> 12 and "ffn_up.weight"; -1 for other names.
int32_t layer_of(const std::string& name, std::string* rest) {
  if (name.rfind("blk.", 0) != 0) return -1;
  const size_t dot = name.find('.', 4);
  if (dot == std::string::npos) return -1;
  int32_t l = -1;
  auto [p, ec] = std::from_chars(name.data() + 4, name.data() + dot, l);
  if (ec != std::errc() || p != name.data() + dot) return -1;
  *rest = name.substr(dot + 1);
  return l;
}

// Indices of the units kept, each `width` rows (or elements, or columns) wide.
std::vector<int64_t> expand(const std::vector<int32_t>& units, int64_t width) {
  std::vector<int64_t> out;
  for (int32_t u : units)
    for (int64_t k = 0; k < width; ++k) out.push_back(int64_t{u} * width + k);
  return out;
}

struct Cut {
  enum Kind { kCopy, kRows, kCols } kind = kCopy;
  std::vector<int64_t> keep;     // rows, elements (1-D) or columns kept
  const float* refit = nullptr;  // kCols: the refitted f32 matrix to take them from
};

// The head indices of the kept KV groups.
std::vector<int32_t> kept_heads(const std::vector<int32_t>& groups, int32_t group) {
  std::vector<int32_t> heads;
  for (int32_t g : groups)
    for (int32_t k = 0; k < group; ++k) heads.push_back(g * group + k);
  return heads;
}

// W (rows x n, f32, row-major) refitted to the kept columns: W_K + W_R X^T
// with (H_KK + damping) X = H_KR, the removed columns zeroed.
Status refit_columns(std::vector<float>& w, int64_t rows, int64_t n, const std::vector<double>& h,
                     const std::vector<int64_t>& keep) {
  using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  std::vector<char> kept(static_cast<size_t>(n), 0);
  for (int64_t j : keep) kept[static_cast<size_t>(j)] = 1;
  std::vector<int64_t> gone;
  for (int64_t j = 0; j < n; ++j)
    if (!kept[static_cast<size_t>(j)]) gone.push_back(j);
  if (gone.empty()) return ok_status();
  const auto k = static_cast<Eigen::Index>(keep.size()), r = static_cast<Eigen::Index>(gone.size());
  const Eigen::Map<const Mat> H(h.data(), n, n);
  Mat hkk(k, k), hkr(k, r);
  double diag = 0;
  for (Eigen::Index a = 0; a < k; ++a) {
    for (Eigen::Index b = 0; b < k; ++b) hkk(a, b) = H(keep[a], keep[b]);
    for (Eigen::Index b = 0; b < r; ++b) hkr(a, b) = H(keep[a], gone[b]);
    diag += hkk(a, a);
  }
  const double damp = 0.01 * diag / static_cast<double>(k);
  hkk.diagonal().array() += damp > 0 ? damp : 1e-8;
  Eigen::LLT<Mat> llt(hkk);
  if (llt.info() != Eigen::Success)
    return make_error("a refit's Hessian is not positive definite even damped");
  const Mat x = llt.solve(hkr);  // k x r
  Eigen::Map<Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> W(w.data(),
                                                                                      rows, n);
  Mat wr(rows, r);
  for (Eigen::Index b = 0; b < r; ++b) wr.col(b) = W.col(gone[b]).cast<double>();
  const Mat delta = wr * x.transpose();  // rows x k
  for (Eigen::Index a = 0; a < k; ++a) W.col(keep[a]) += delta.col(a).cast<float>();
  for (int64_t j : gone) W.col(j).setZero();
  return ok_status();
}

// The damped Hessian's inverse, (H + 1% of its mean diagonal)^-1, as
// refit_columns damps its part of H.
using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic>;
Result<MatD> damped_inverse(const std::vector<double>& h, int64_t n) {
  MatD a = Eigen::Map<const MatD>(h.data(), n, n);
  const double damp = 0.01 * a.diagonal().mean();
  a.diagonal().array() += damp > 0 ? damp : 1e-8;
  Eigen::LLT<Eigen::Ref<MatD>> llt(a);  // factored in place: two n x n at the peak
  if (llt.info() != Eigen::Success)
    return make_error("a refit's Hessian is not positive definite even damped");
  return MatD(llt.solve(MatD::Identity(n, n)));
}

}  // namespace

// obs_keep_units (structured.h). A score per unit from the uncut model
// misses what compensation recovers: two units that carry the same signal
// both score high, and either can go.
Result<std::vector<int32_t>> obs_keep_units(const std::vector<float>& w, int64_t rows, int64_t n,
                                            const std::vector<double>& h, int64_t width,
                                            int64_t keep) {
  if (width <= 0 || n % width != 0 || keep < 0 || keep > n / width ||
      static_cast<int64_t>(w.size()) != rows * n || static_cast<int64_t>(h.size()) != n * n)
    return make_error("obs_keep_units: shapes do not agree");
  const int64_t units = n / width;
  std::vector<int32_t> kept;
  if (keep == units) {  // nothing goes: no inverse to take (a cut without heads=)
    for (int64_t u = 0; u < units; ++u) kept.push_back(static_cast<int32_t>(u));
    return kept;
  }
  SNUG_ASSIGN_OR_RETURN(MatD hinv, damped_inverse(h, n));
  MatD W = Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
               w.data(), rows, n)
               .cast<double>();
  std::vector<char> alive(static_cast<size_t>(units), 1);
  for (int64_t left = units; left > keep; --left) {
    int64_t gone = -1;
    double best = std::numeric_limits<double>::infinity();
    for (int64_t u = 0; u < units; ++u) {
      if (!alive[static_cast<size_t>(u)]) continue;
      Eigen::LLT<MatD> llt(hinv.block(u * width, u * width, width, width));
      if (llt.info() != Eigen::Success) continue;
      const double err =
          llt.matrixL().solve(W.middleCols(u * width, width).transpose()).squaredNorm();
      if (err < best) best = err, gone = u;
    }
    if (gone < 0) return make_error("a refit's Hessian is not positive definite even damped");
    const int64_t c0 = gone * width;
    const MatD inv_uu = hinv.block(c0, c0, width, width).inverse();
    const MatD rows_u = inv_uu * hinv.middleRows(c0, width);  // width x n
    const MatD w_u = W.middleCols(c0, width), h_u = hinv.middleCols(c0, width);
    W.noalias() -= w_u * rows_u;
    hinv.noalias() -= h_u * rows_u;
    alive[static_cast<size_t>(gone)] = 0;
  }
  for (int64_t u = 0; u < units; ++u)
    if (alive[static_cast<size_t>(u)]) kept.push_back(static_cast<int32_t>(u));
  return kept;
}

std::vector<double> centred_scatter(const std::vector<double>& h, const std::vector<double>& sum,
                                    int64_t rows) {
  const auto n = static_cast<int64_t>(sum.size());
  std::vector<double> c = h;
  if (rows <= 0 || static_cast<int64_t>(h.size()) != n * n) return c;
  const double inv = 1.0 / static_cast<double>(rows);
  for (int64_t a = 0; a < n; ++a)
    for (int64_t b = 0; b < n; ++b)
      c[static_cast<size_t>(a * n + b)] -=
          sum[static_cast<size_t>(a)] * sum[static_cast<size_t>(b)] * inv;
  return c;
}

Status refit_columns_with_bias(std::vector<float>& w, int64_t rows, int64_t n,
                               const std::vector<double>& c, const std::vector<double>& sum,
                               int64_t count, const std::vector<int64_t>& keep,
                               std::vector<float>& bias) {
  if (static_cast<int64_t>(w.size()) != rows * n || static_cast<int64_t>(c.size()) != n * n ||
      static_cast<int64_t>(sum.size()) != n || count <= 0)
    return make_error("refit_columns_with_bias: shapes do not agree");
  std::vector<double> mean(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j)
    mean[static_cast<size_t>(j)] = sum[static_cast<size_t>(j)] / static_cast<double>(count);
  auto mean_output = [&](std::vector<double>& y) {
    y.assign(static_cast<size_t>(rows), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < n; ++j)
        y[static_cast<size_t>(r)] +=
            double{w[static_cast<size_t>(r * n + j)]} * mean[static_cast<size_t>(j)];
  };
  std::vector<double> before, after;
  mean_output(before);
  SNUG_RETURN_IF_ERROR(refit_columns(w, rows, n, c, keep));
  mean_output(after);
  bias.resize(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r)
    bias[static_cast<size_t>(r)] =
        static_cast<float>(before[static_cast<size_t>(r)] - after[static_cast<size_t>(r)]);
  return ok_status();
}

Result<StructuredCut> parse_structured_cut(std::string_view text) {
  StructuredCut c;
  bool seen[3] = {false, false, false};
  size_t at = 0;
  while (at <= text.size()) {
    const size_t end = std::min(text.find(',', at), text.size());
    const std::string_view item = text.substr(at, end - at);
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos)
      return make_error("structured cut '", item,
                        "' is not KEY=VALUE (ffn=0.25,heads=0.25,layers=2)");
    const std::string_view key = item.substr(0, eq), value = item.substr(eq + 1);
    const int k = key == "ffn" ? 0 : key == "heads" ? 1 : key == "layers" ? 2 : -1;
    if (k < 0) return make_error("structured cut: unknown part '", key, "' (ffn, heads, layers)");
    if (seen[k]) return make_error("structured cut: '", key, "' given twice");
    seen[k] = true;
    if (k == 2) {
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), c.layers);
      if (ec != std::errc() || p != value.data() + value.size() || c.layers < 0)
        return make_error("structured cut: layers=", value, " is not a whole number >= 0");
    } else {
      double v = 0;
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
      if (ec != std::errc() || p != value.data() + value.size() || !(v >= 0.0 && v < 1.0))
        return make_error("structured cut: ", key, "=", value, " is not a share in [0, 1)");
      (k == 0 ? c.ffn : c.heads) = v;
    }
    at = end + 1;
  }
  if (c.empty()) return make_error("structured cut '", text, "' removes nothing");
  return c;
}

Result<StructuredScores> structured_scores(const model::Model& m, std::span<const int32_t> tokens,
                                           int32_t bos, int32_t n_ctx, int32_t max_chunks,
                                           int32_t n_threads, memory::Ledger* ledger,
                                           bool about_mean) {
  const model::ModelConfig& c = m.config();
  SNUG_ASSIGN_OR_RETURN(std::unique_ptr<LayerStreams> streams,
                        LayerStreams::create(m, tokens, bos, n_ctx, max_chunks, n_threads, ledger));
  ColumnSums sums(c.n_layers);
  StructuredScores s;
  s.influence.assign(static_cast<size_t>(c.n_layers), 0.0);
  const int64_t E = c.n_embd;
  for (int32_t l = 0; l < c.n_layers; ++l) {
    double cos_sum = 0;
    int64_t n = 0;
    SNUG_RETURN_IF_ERROR(
        streams->run_layer(l, &sums, /*advance=*/true, [&](const float* in, const float* out) {
          for (int64_t t = 0; t < streams->n_ctx(); ++t) {
            double dot = 0, a = 0, b = 0;
            for (int64_t i = 0; i < E; ++i) {
              dot += double{in[t * E + i]} * out[t * E + i];
              a += double{in[t * E + i]} * in[t * E + i];
              b += double{out[t * E + i]} * out[t * E + i];
            }
            cos_sum += a > 0 && b > 0 ? dot / std::sqrt(a * b) : 1.0;
            ++n;
          }
        }));
    s.influence[static_cast<size_t>(l)] =
        1.0 - cos_sum / static_cast<double>(std::max<int64_t>(n, 1));
  }
  const int32_t group = c.n_heads / c.n_kv_heads;
  for (int32_t l = 0; l < c.n_layers; ++l) {
    const model::LayerWeights& L = m.weights().layers[static_cast<size_t>(l)];
    const std::vector<double> down = column_norms2(L.down), o = column_norms2(L.wo);
    auto xd = sums.down[static_cast<size_t>(l)];
    auto xo = sums.o[static_cast<size_t>(l)];
    if (xd.empty() || xo.empty()) return make_error("the calibration run did not reach layer ", l);
    if (about_mean) {  // sums of squares about the mean
      const double nr =
          static_cast<double>(std::max<int64_t>(sums.rows[static_cast<size_t>(l)], 1));
      const auto centre = [&](std::vector<double>& sq, const std::vector<double>& x) {
        for (size_t j = 0; j < sq.size(); ++j) sq[j] = std::max(0.0, sq[j] - x[j] * x[j] / nr);
      };
      centre(xd, sums.down_sum[static_cast<size_t>(l)]);
      centre(xo, sums.o_sum[static_cast<size_t>(l)]);
    }
    std::vector<double> ffn(static_cast<size_t>(c.n_ff));
    for (int64_t j = 0; j < c.n_ff; ++j)
      ffn[static_cast<size_t>(j)] =
          std::sqrt(down[static_cast<size_t>(j)] * xd[static_cast<size_t>(j)]);
    std::vector<double> heads(static_cast<size_t>(c.n_kv_heads), 0.0);
    for (int32_t h = 0; h < c.n_heads; ++h) {
      for (int64_t k = 0; k < c.head_dim_v; ++k) {
        const auto j = static_cast<size_t>(int64_t{h} * c.head_dim_v + k);
        heads[static_cast<size_t>(h / group)] += o[j] * xo[j];
      }
    }
    for (double& v : heads) v = std::sqrt(v);
    s.ffn.push_back(std::move(ffn));
    s.heads.push_back(std::move(heads));
  }
  return s;
}

Result<StructuredPlan> plan_structured(const model::ModelConfig& c, const StructuredScores& s,
                                       const StructuredCut& cut) {
  StructuredPlan p;
  // Kept channels: a whole number of 32-element blocks, so most types keep their format.
  int64_t n_ff = c.n_ff - static_cast<int64_t>(std::llround(cut.ffn * static_cast<double>(c.n_ff)));
  if (cut.ffn > 0) n_ff = n_ff / 32 * 32;
  if (n_ff <= 0)
    return make_error("structured cut ffn=", cut.ffn,
                      " would remove every feed-forward channel of ", c.n_ff,
                      " (keeping whole blocks of 32)");
  const int32_t n_kv = c.n_kv_heads - static_cast<int32_t>(std::llround(cut.heads * c.n_kv_heads));
  if (n_kv <= 0)
    return make_error("structured cut heads=", cut.heads,
                      " would remove every head group of a "
                      "layer (",
                      c.n_kv_heads, " KV heads)");
  if (cut.layers >= c.n_layers)
    return make_error("structured cut layers=", cut.layers, " would remove every layer of ",
                      c.n_layers);
  if (cut.layers > 0) {
    for (const model::LayerConfig& lc : c.layers) {
      if (lc.window != c.layers[0].window || lc.rope_set != c.layers[0].rope_set)
        return make_error("structured cut layers=", cut.layers, ": this ", c.arch_name,
                          " model's layers differ by position (sliding windows), so removing one "
                          "would change the others");
    }
  }
  p.n_ff = static_cast<int32_t>(n_ff);
  p.n_kv_heads = n_kv;
  p.n_heads = n_kv * (c.n_heads / c.n_kv_heads);
  p.layers = top(s.influence, c.n_layers - cut.layers);
  for (int32_t l = 0; l < c.n_layers; ++l) {
    p.channels.push_back(top(s.ffn[static_cast<size_t>(l)], n_ff));
    p.groups.push_back(top(s.heads[static_cast<size_t>(l)], n_kv));
  }
  return p;
}

uint64_t StructuredRefit::bytes() const {
  uint64_t n = 0;
  for (const auto& v : o) n += v.size() * sizeof(float);
  for (const auto& v : down) n += v.size() * sizeof(float);
  for (const auto& v : bo) n += v.size() * sizeof(float);
  for (const auto& v : b_down) n += v.size() * sizeof(float);
  return n;
}

uint64_t refit_structured_bytes(const model::ModelConfig& c, int32_t n_ctx, int64_t chunks) {
  const auto e = static_cast<uint64_t>(c.n_embd), f = static_cast<uint64_t>(c.n_ff),
             o = static_cast<uint64_t>(c.n_heads) * static_cast<uint64_t>(c.head_dim_v);
  // The refitted matrices and their output biases.
  const uint64_t matrices = static_cast<uint64_t>(c.n_layers) * e * (f + o + 2) * sizeof(float);
  // The sums (x x^T and x), the centred copy of one of them, then the larger
  // of the solver's copy and what OBS holds for the attention output (the
  // inverse with its factor, W in f64 and a product).
  const uint64_t hessians = 8 * (f * f + o * o) + 8 * (f + o + 2 * e) + 8 * std::max(f * f, o * o) +
                            8 * std::max(f * f, 2 * o * o + 2 * e * o);
  return matrices + hessians + LayerStreams::stream_bytes(c, n_ctx, chunks);
}

Result<StructuredRefit> refit_structured(model::Model& m, StructuredPlan& plan,
                                         std::span<const int32_t> tokens, int32_t bos,
                                         int32_t n_ctx, int32_t max_chunks, int32_t n_threads,
                                         memory::Ledger* ledger) {
  const model::ModelConfig& c = m.config();
  // Each refitted matrix goes back into the model as f32 before the streams
  // move on through its layer.
  const DType refitted[] = {DType::kF32};
  SNUG_ASSIGN_OR_RETURN(
      std::unique_ptr<LayerStreams> streams,
      LayerStreams::create(m, tokens, bos, n_ctx, max_chunks, n_threads, ledger, refitted));
  StructuredRefit out;
  out.o.resize(static_cast<size_t>(c.n_layers));
  out.down.resize(static_cast<size_t>(c.n_layers));
  out.bo.resize(static_cast<size_t>(c.n_layers));
  out.b_down.resize(static_cast<size_t>(c.n_layers));
  const int32_t group = c.n_heads / c.n_kv_heads;
  HessianCollector hc;
  for (int32_t l = 0; l < c.n_layers; ++l) {
    // A layer that goes: its input passes on unchanged.
    if (!std::binary_search(plan.layers.begin(), plan.layers.end(), l)) continue;
    hc.layer = l;
    hc.clear();
    SNUG_RETURN_IF_ERROR(streams->run_layer(l, &hc, /*advance=*/false));
    hc.finish();
    const auto li = static_cast<size_t>(l);
    for (model::MatRole role : {model::MatRole::kO, model::MatRole::kDown}) {
      const tensor::MatView v = *model::layer_matrix(m.weights().layers[li], role);
      std::vector<float>& w = role == model::MatRole::kO ? out.o[li] : out.down[li];
      w.resize(static_cast<size_t>(v.rows * v.cols));
      for (int64_t r = 0; r < v.rows; ++r)
        tensor::dequantize_row(v.type, static_cast<const uint8_t*>(v.data) + r * v.row_bytes,
                               w.data() + r * v.cols, v.cols);
      const auto g = static_cast<size_t>(input_of(role));
      if (hc.h[g].empty()) return make_error("the calibration run did not reach layer ", l);
      // The inputs' scatter about their mean: the refit's constant term (the
      // output bias) takes the mean, the kept columns what varies.
      // (A family whose llama.cpp graph takes no output bias keeps the plain
      // second moments and no constant term.)
      const std::vector<double> h =
          c.output_biases ? centred_scatter(hc.h[g], hc.sum[g], hc.rows[g]) : hc.h[g];
      // The plan's head-group count stays; which groups go, OBS chooses on
      // this layer's inputs. (For feed-forward channels it was no better
      // than the scores: PPL 8.81 against 8.63 at ffn=0.125, 9.91 against
      // 9.97 at ffn=0.25.)
      if (role == model::MatRole::kO) {
        std::vector<int32_t>& units = plan.groups[li];
        SNUG_ASSIGN_OR_RETURN(units,
                              obs_keep_units(w, v.rows, v.cols, h, int64_t{group} * c.head_dim_v,
                                             static_cast<int64_t>(units.size())));
      }
      const std::vector<int64_t> keep =
          role == model::MatRole::kO ? expand(kept_heads(plan.groups[li], group), c.head_dim_v)
                                     : expand(plan.channels[li], 1);
      if (!c.output_biases) {
        SNUG_RETURN_IF_ERROR(refit_columns(w, v.rows, v.cols, h, keep));
      } else {
        std::vector<float>& bias = role == model::MatRole::kO ? out.bo[li] : out.b_down[li];
        SNUG_RETURN_IF_ERROR(
            refit_columns_with_bias(w, v.rows, v.cols, h, hc.sum[g], hc.rows[g], keep, bias));
        const model::LayerWeights& L = m.weights().layers[li];
        if (const float* had = role == model::MatRole::kO ? L.bo : L.b_down; had != nullptr) {
          for (int64_t r = 0; r < v.rows; ++r)
            bias[static_cast<size_t>(r)] += had[r];  // the file's own
        }
        SNUG_RETURN_IF_ERROR(m.replace_bias(l, role, bias.data()));
      }
      SNUG_RETURN_IF_ERROR(
          m.replace_matrix(l, role,
                           tensor::MatView{DType::kF32, w.data(), v.rows, v.cols,
                                           static_cast<size_t>(v.cols) * sizeof(float)}));
    }
    // The streams move on through the pruned layer (removed columns zero).
    SNUG_RETURN_IF_ERROR(streams->run_layer(l, nullptr, /*advance=*/true));
  }
  return out;
}

Result<StructuredSummary> write_structured(const std::string& in, const std::string& out,
                                           const model::ModelConfig& c, const StructuredPlan& plan,
                                           const StructuredRefit* refit) {
  SNUG_RETURN_IF_ERROR(check_output_path(in, out));
  SNUG_ASSIGN_OR_RETURN(gguf::File file, gguf::File::open(in));
  const int32_t group = c.n_heads / c.n_kv_heads;
  std::map<int32_t, int32_t> renumber;
  for (size_t k = 0; k < plan.layers.size(); ++k)
    renumber[plan.layers[k]] = static_cast<int32_t>(k);

  gguf::Writer w;
  const std::string a = c.arch_name + ".";
  auto as_int = [](const gguf::Value& v, uint64_t n) {
    gguf::Value out = v;
    out.u = n;
    out.i = static_cast<int64_t>(n);
    return out;
  };
  bool have_k = false, have_v = false;
  for (const auto& kv : file.metadata()) {
    const bool shape_key = kv.key == a + "block_count" || kv.key == a + "feed_forward_length" ||
                           kv.key == a + "attention.head_count" ||
                           kv.key == a + "attention.head_count_kv";
    if (shape_key && !kv.value.is_integer())
      return make_error("'", kv.key, "' is not one number (per-layer sizes are not supported)");
    if (kv.key == "general.alignment" || kv.key.rfind("split.", 0) == 0) continue;
    if (kv.key == a + "block_count") {
      w.set_value(kv.key, as_int(kv.value, plan.layers.size()));
    } else if (kv.key == a + "feed_forward_length") {
      w.set_value(kv.key, as_int(kv.value, static_cast<uint64_t>(plan.n_ff)));
    } else if (kv.key == a + "attention.head_count") {
      w.set_value(kv.key, as_int(kv.value, static_cast<uint64_t>(plan.n_heads)));
    } else if (kv.key == a + "attention.head_count_kv") {
      w.set_value(kv.key, as_int(kv.value, static_cast<uint64_t>(plan.n_kv_heads)));
    } else {
      have_k = have_k || kv.key == a + "attention.key_length";
      have_v = have_v || kv.key == a + "attention.value_length";
      w.set_value(kv.key, kv.value);
    }
  }
  if (!have_k) w.set_u32(a + "attention.key_length", static_cast<uint32_t>(c.head_dim_k));
  if (!have_v) w.set_u32(a + "attention.value_length", static_cast<uint32_t>(c.head_dim_v));
  w.set_alignment(static_cast<uint32_t>(file.alignment()));

  struct Out {
    const gguf::TensorInfo* src;  // null: a bias the refit adds
    DType type;
    Cut cut;
    const float* bias = nullptr;  // an f32 output bias written instead of src's data
  };
  std::vector<Out> outs;
  StructuredSummary sum;
  for (const gguf::TensorInfo& t : file.tensors()) {
    sum.input_weights += static_cast<uint64_t>(t.n_elements());
    std::string rest;
    const int32_t l = layer_of(t.name, &rest);
    std::string name = t.name;
    Out o{&t, t.type, {}};
    const float* added = nullptr;  // an output bias to add after this tensor
    std::string added_name;
    if (l >= 0) {
      auto it = renumber.find(l);
      if (it == renumber.end()) continue;  // a layer that goes
      name = "blk." + std::to_string(it->second) + "." + rest;
      const auto& ch = plan.channels[static_cast<size_t>(l)];
      const auto& gr = plan.groups[static_cast<size_t>(l)];
      const std::vector<int32_t> heads = kept_heads(gr, group);
      const auto from = [&](const std::vector<std::vector<float>>& v) -> const float* {
        return refit && !v[static_cast<size_t>(l)].empty() ? v[static_cast<size_t>(l)].data()
                                                           : nullptr;
      };
      if (rest == "attn_q.weight" || rest == "attn_q.bias") {
        o.cut = {Cut::kRows, expand(heads, c.head_dim_k)};
      } else if (rest == "attn_k.weight" || rest == "attn_k.bias") {
        o.cut = {Cut::kRows, expand(gr, c.head_dim_k)};
      } else if (rest == "attn_v.weight" || rest == "attn_v.bias") {
        o.cut = {Cut::kRows, expand(gr, c.head_dim_v)};
      } else if (rest == "attn_output.weight") {
        o.cut = {Cut::kCols, expand(heads, c.head_dim_v), refit ? from(refit->o) : nullptr};
      } else if (rest == "ffn_gate.weight" || rest == "ffn_up.weight") {
        o.cut = {Cut::kRows, expand(ch, 1)};
      } else if (rest == "ffn_down.weight") {
        o.cut = {Cut::kCols, expand(ch, 1), refit ? from(refit->down) : nullptr};
      }
      // The refit's output bias of the attention output or the down
      // projection: in place of the file's own, or right after the matrix
      // where the file has none.
      const std::string stem = rest.substr(0, rest.rfind('.'));
      const float* bias = !refit                  ? nullptr
                          : stem == "attn_output" ? from(refit->bo)
                          : stem == "ffn_down"    ? from(refit->b_down)
                                                  : nullptr;
      if (bias != nullptr && rest == stem + ".bias") {
        o.bias = bias;
        o.type = DType::kF32;
      } else if (bias != nullptr && rest == stem + ".weight" &&
                 file.find_tensor("blk." + std::to_string(l) + "." + stem + ".bias") == nullptr) {
        added = bias;
        added_name = "blk." + std::to_string(it->second) + "." + stem + ".bias";
      }
    }
    std::vector<int64_t> dims(t.ne.begin(), t.ne.begin() + std::max(1, t.n_dims));
    if (o.cut.kind == Cut::kRows) {
      // 1-D (a bias): its elements; 2-D: its rows (dims[1]).
      dims[t.n_dims <= 1 ? 0 : 1] = static_cast<int64_t>(o.cut.keep.size());
    } else if (o.cut.kind == Cut::kCols) {
      dims[0] = static_cast<int64_t>(o.cut.keep.size());
      if (!tensor::row_bytes(o.type, dims[0]) || !tensor::info(o.type).has_kernels)
        o.type = dims[0] % 32 == 0 ? DType::kQ8_0 : DType::kF32;
    }
    if (t.n_dims <= 1 && o.cut.kind == Cut::kRows && t.type != DType::kF32)
      return make_error("tensor '", t.name, "' is a ", tensor::dtype_name(t.type),
                        " vector; snug cuts f32 ones only");
    int64_t elems = 1;
    for (int64_t d : dims) elems *= d;
    sum.output_weights += static_cast<uint64_t>(elems);
    w.add_tensor_info(name, o.type, dims);
    outs.push_back(std::move(o));
    if (added != nullptr) {
      w.add_tensor_info(added_name, DType::kF32, {c.n_embd});
      sum.output_weights += static_cast<uint64_t>(c.n_embd);
      outs.push_back(Out{nullptr, DType::kF32, {}, added});
    }
  }

  std::vector<uint8_t> buf;
  std::vector<float> row, kept;
  auto produce = [&](size_t k, const gguf::Writer::Emit& emit) -> Status {
    const Out& o = outs[k];
    if (o.bias != nullptr)
      return emit({reinterpret_cast<const uint8_t*>(o.bias),
                   static_cast<size_t>(c.n_embd) * sizeof(float)});
    const gguf::TensorInfo& t = *o.src;
    if (o.cut.kind == Cut::kCopy) return emit({t.data, t.bytes});
    if (t.n_dims <= 1) {  // an f32 vector
      buf.resize(o.cut.keep.size() * sizeof(float));
      auto* dst = reinterpret_cast<float*>(buf.data());
      const auto* src = reinterpret_cast<const float*>(t.data);
      for (size_t i = 0; i < o.cut.keep.size(); ++i) dst[i] = src[o.cut.keep[i]];
      return emit(buf);
    }
    const uint64_t rb = *tensor::row_bytes(t.type, t.ne[0]);
    if (o.cut.kind == Cut::kRows) {
      buf.resize(o.cut.keep.size() * rb);
      for (size_t i = 0; i < o.cut.keep.size(); ++i)
        std::copy_n(t.data + static_cast<uint64_t>(o.cut.keep[i]) * rb, rb, buf.data() + i * rb);
      return emit(buf);
    }
    const auto cols = static_cast<int64_t>(o.cut.keep.size());
    const uint64_t out_rb = *tensor::row_bytes(o.type, cols);
    buf.resize(static_cast<size_t>(t.rows()) * out_rb);
    row.resize(static_cast<size_t>(t.ne[0]));
    kept.resize(static_cast<size_t>(cols));
    for (int64_t r = 0; r < t.rows(); ++r) {
      if (o.cut.refit) {
        std::copy_n(o.cut.refit + r * t.ne[0], t.ne[0], row.data());
      } else {
        tensor::dequantize_row(t.type, t.data + static_cast<uint64_t>(r) * rb, row.data(), t.ne[0]);
      }
      for (int64_t j = 0; j < cols; ++j)
        kept[static_cast<size_t>(j)] = row[static_cast<size_t>(o.cut.keep[static_cast<size_t>(j)])];
      tensor::quantize_row(o.type, kept.data(), buf.data() + static_cast<uint64_t>(r) * out_rb,
                           cols);
    }
    return emit(buf);
  };
  SNUG_RETURN_IF_ERROR(w.write_streaming(out, produce));
  sum.input_bytes = file.file_size();
  struct stat st {};
  sum.output_bytes = ::stat(out.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  return sum;
}

}  // namespace snug::compress
