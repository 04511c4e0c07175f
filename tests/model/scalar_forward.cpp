#include "scalar_forward.h"

#include <cmath>
#include <string>

#include "tensor/kernels.h"

namespace snug::testing {
namespace {

using Vec = std::vector<double>;

// The tensor `name` decoded to double, [rows][cols]; an error when it is
// missing or is not `rows` x `cols`.
Result<Vec> read_matrix(const gguf::File& f, const std::string& name, int64_t rows, int64_t cols) {
  const gguf::TensorInfo* t = f.find_tensor(name);
  if (t == nullptr) return make_error("scalar forward: no tensor '", name, "'");
  if (t->ne[0] != cols || t->rows() != rows)
    return make_error("scalar forward: '", name, "' is ", t->ne[0], " x ", t->rows(), ", expected ",
                      cols, " x ", rows);
  const uint64_t row_bytes = *tensor::row_bytes(t->type, cols);
  std::vector<float> row(static_cast<size_t>(cols));
  Vec out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    tensor::dequantize_row(t->type, t->data + static_cast<uint64_t>(r) * row_bytes, row.data(),
                           cols);
    for (int64_t c = 0; c < cols; ++c) out[static_cast<size_t>(r * cols + c)] = row[c];
  }
  return out;
}

// y[r] = sum_c w[r][c] x[c]
Vec matvec(const Vec& w, const Vec& x) {
  const size_t cols = x.size(), rows = w.size() / cols;
  Vec y(rows, 0.0);
  for (size_t r = 0; r < rows; ++r) {
    double s = 0;
    for (size_t c = 0; c < cols; ++c) s += w[r * cols + c] * x[c];
    y[r] = s;
  }
  return y;
}

Vec rms_norm(const Vec& x, const Vec& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w[i];
  return y;
}

// Rotates the first rope_dim elements of each head of `x` for position `pos`.
void rotate(Vec& x, int32_t n_heads, const ScalarModel& m, int32_t pos, ScalarRope mode,
            double base) {
  const int32_t half = m.rope_dim / 2;
  for (int32_t h = 0; h < n_heads; ++h) {
    double* v = x.data() + static_cast<size_t>(h) * static_cast<size_t>(m.head_dim);
    for (int32_t i = 0; i < half; ++i) {
      const double theta = pos * std::pow(base, -2.0 * i / m.rope_dim);
      const int32_t i0 = mode == ScalarRope::kNorm ? 2 * i : i;
      const int32_t i1 = mode == ScalarRope::kNorm ? 2 * i + 1 : i + half;
      const double x0 = v[i0], x1 = v[i1];
      v[i0] = x0 * std::cos(theta) - x1 * std::sin(theta);
      v[i1] = x0 * std::sin(theta) + x1 * std::cos(theta);
    }
  }
}

// RMS norm of each head of `x` (head_dim elements) with the shared weights `w`.
void norm_heads(Vec& x, const Vec& w, double eps) {
  const size_t D = w.size();
  for (size_t h = 0; h * D < x.size(); ++h) {
    const Vec head(x.begin() + static_cast<ptrdiff_t>(h * D),
                   x.begin() + static_cast<ptrdiff_t>((h + 1) * D));
    const Vec y = rms_norm(head, w, eps);
    std::copy(y.begin(), y.end(), x.begin() + static_cast<ptrdiff_t>(h * D));
  }
}

double gelu_tanh(double x) {
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

}  // namespace

Result<ScalarModel> load_scalar_model(const gguf::File& f) {
  ScalarModel m;
  SNUG_ASSIGN_OR_RETURN(std::string arch, f.get_string("general.architecture"));
  const std::string a = arch + ".";
  auto u32 = [&](const std::string& key) -> Result<int32_t> {
    SNUG_ASSIGN_OR_RETURN(uint64_t v, f.get_uint(a + key));
    return static_cast<int32_t>(v);
  };
  SNUG_ASSIGN_OR_RETURN(m.n_layers, u32("block_count"));
  SNUG_ASSIGN_OR_RETURN(m.n_embd, u32("embedding_length"));
  SNUG_ASSIGN_OR_RETURN(m.n_ff, u32("feed_forward_length"));
  SNUG_ASSIGN_OR_RETURN(m.n_heads, u32("attention.head_count"));
  SNUG_ASSIGN_OR_RETURN(m.n_kv_heads, u32("attention.head_count_kv"));
  SNUG_ASSIGN_OR_RETURN(float base, f.get_float_or(a + "rope.freq_base", 10000.f));
  SNUG_ASSIGN_OR_RETURN(float eps, f.get_float_or(a + "attention.layer_norm_rms_epsilon", 1e-5f));
  m.rope_base = base;
  m.rms_eps = eps;
  m.gemma3 = arch == "gemma3";
  m.neox = m.gemma3 || arch == "qwen2" || arch == "qwen3";
  if (m.gemma3) {
    SNUG_ASSIGN_OR_RETURN(m.window, u32("attention.sliding_window"));
  }
  m.head_dim = m.n_embd / m.n_heads;
  SNUG_ASSIGN_OR_RETURN(uint64_t rope_dim, f.get_uint_or(a + "rope.dimension_count",
                                                         static_cast<uint64_t>(m.head_dim)));
  m.rope_dim = static_cast<int32_t>(rope_dim);
  const gguf::TensorInfo* emb = f.find_tensor("token_embd.weight");
  if (emb == nullptr) return make_error("scalar forward: no token_embd.weight");
  m.n_vocab = static_cast<int32_t>(emb->rows());

  const int64_t E = m.n_embd, F = m.n_ff, V = m.n_vocab;
  const int64_t QD = int64_t{m.n_heads} * m.head_dim, KD = int64_t{m.n_kv_heads} * m.head_dim;
  SNUG_ASSIGN_OR_RETURN(m.token_embd, read_matrix(f, "token_embd.weight", V, E));
  SNUG_ASSIGN_OR_RETURN(m.output_norm, read_matrix(f, "output_norm.weight", 1, E));
  if (f.find_tensor("output.weight") != nullptr) {
    SNUG_ASSIGN_OR_RETURN(m.output, read_matrix(f, "output.weight", V, E));
  } else {
    m.output = m.token_embd;
  }
  for (int32_t l = 0; l < m.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    ScalarModel::Layer L;
    SNUG_ASSIGN_OR_RETURN(L.attn_norm, read_matrix(f, p + "attn_norm.weight", 1, E));
    SNUG_ASSIGN_OR_RETURN(L.wq, read_matrix(f, p + "attn_q.weight", QD, E));
    SNUG_ASSIGN_OR_RETURN(L.wk, read_matrix(f, p + "attn_k.weight", KD, E));
    SNUG_ASSIGN_OR_RETURN(L.wv, read_matrix(f, p + "attn_v.weight", KD, E));
    SNUG_ASSIGN_OR_RETURN(L.wo, read_matrix(f, p + "attn_output.weight", E, QD));
    SNUG_ASSIGN_OR_RETURN(L.ffn_norm, read_matrix(f, p + "ffn_norm.weight", 1, E));
    SNUG_ASSIGN_OR_RETURN(L.gate, read_matrix(f, p + "ffn_gate.weight", F, E));
    SNUG_ASSIGN_OR_RETURN(L.up, read_matrix(f, p + "ffn_up.weight", F, E));
    SNUG_ASSIGN_OR_RETURN(L.down, read_matrix(f, p + "ffn_down.weight", E, F));
    if (f.find_tensor(p + "attn_q_norm.weight") != nullptr) {
      SNUG_ASSIGN_OR_RETURN(L.q_norm, read_matrix(f, p + "attn_q_norm.weight", 1, m.head_dim));
      SNUG_ASSIGN_OR_RETURN(L.k_norm, read_matrix(f, p + "attn_k_norm.weight", 1, m.head_dim));
    }
    if (f.find_tensor(p + "attn_q.bias") != nullptr) {
      SNUG_ASSIGN_OR_RETURN(L.bq, read_matrix(f, p + "attn_q.bias", 1, QD));
      SNUG_ASSIGN_OR_RETURN(L.bk, read_matrix(f, p + "attn_k.bias", 1, KD));
      SNUG_ASSIGN_OR_RETURN(L.bv, read_matrix(f, p + "attn_v.bias", 1, KD));
    }
    if (f.find_tensor(p + "attn_output.bias") != nullptr) {
      SNUG_ASSIGN_OR_RETURN(L.bo, read_matrix(f, p + "attn_output.bias", 1, E));
    }
    if (f.find_tensor(p + "ffn_down.bias") != nullptr) {
      SNUG_ASSIGN_OR_RETURN(L.b_down, read_matrix(f, p + "ffn_down.bias", 1, E));
    }
    if (m.gemma3) {
      SNUG_ASSIGN_OR_RETURN(L.post_attn_norm,
                            read_matrix(f, p + "post_attention_norm.weight", 1, E));
      SNUG_ASSIGN_OR_RETURN(L.post_ffn_norm, read_matrix(f, p + "post_ffw_norm.weight", 1, E));
    }
    m.layers.push_back(std::move(L));
  }
  return m;
}

std::vector<double> scalar_forward(const ScalarModel& m, const std::vector<int32_t>& tokens,
                                   ScalarRope rope) {
  const size_t T = tokens.size(), E = static_cast<size_t>(m.n_embd);
  const size_t D = static_cast<size_t>(m.head_dim);
  const int32_t group = m.n_heads / m.n_kv_heads;
  std::vector<Vec> x(T);
  for (size_t t = 0; t < T; ++t) {
    const auto* row = m.token_embd.data() + static_cast<size_t>(tokens[t]) * E;
    x[t].assign(row, row + E);
    // Gemma 3: embeddings times sqrt(width).
    if (m.gemma3)
      for (double& e : x[t]) e *= std::sqrt(static_cast<double>(E));
  }
  // Gemma 3: every sixth layer is global; the others attend over the last
  // `window` positions with rope base 10000, halves rotated; per-head RMS
  // norms of q and k; RMS norms of both sub-layer outputs; GELU (tanh form).
  if (m.neox) rope = ScalarRope::kNeox;
  for (size_t l = 0; l < m.layers.size(); ++l) {
    const ScalarModel::Layer& L = m.layers[l];
    const bool local = m.gemma3 && l % 6 < 5;
    const double base = local ? 10000.0 : m.rope_base;
    std::vector<Vec> q(T), k(T), v(T);
    for (size_t t = 0; t < T; ++t) {
      const Vec h = rms_norm(x[t], L.attn_norm, m.rms_eps);
      q[t] = matvec(L.wq, h);
      k[t] = matvec(L.wk, h);
      v[t] = matvec(L.wv, h);
      for (auto [x, b] : {std::pair{&q[t], &L.bq}, {&k[t], &L.bk}, {&v[t], &L.bv}}) {
        for (size_t i = 0; i < b->size(); ++i) (*x)[i] += (*b)[i];
      }
      if (!L.q_norm.empty()) {
        norm_heads(q[t], L.q_norm, m.rms_eps);
        norm_heads(k[t], L.k_norm, m.rms_eps);
      }
      rotate(q[t], m.n_heads, m, static_cast<int32_t>(t), rope, base);
      rotate(k[t], m.n_kv_heads, m, static_cast<int32_t>(t), rope, base);
    }
    for (size_t t = 0; t < T; ++t) {
      Vec att(static_cast<size_t>(m.n_heads) * D, 0.0);
      for (int32_t h = 0; h < m.n_heads; ++h) {
        const size_t qo = static_cast<size_t>(h) * D, ko = static_cast<size_t>(h / group) * D;
        // Visible: positions p <= t, and on a local layer t - p < window.
        const size_t first = local && t + 1 > static_cast<size_t>(m.window) ? t + 1 - m.window : 0;
        Vec w(t + 1, 0.0);
        double mx = -INFINITY, sum = 0;
        for (size_t p = first; p <= t; ++p) {
          double s = 0;
          for (size_t d = 0; d < D; ++d) s += q[t][qo + d] * k[p][ko + d];
          w[p] = s / std::sqrt(static_cast<double>(D));
          mx = std::max(mx, w[p]);
        }
        for (size_t p = first; p <= t; ++p) sum += (w[p] = std::exp(w[p] - mx));
        for (size_t p = first; p <= t; ++p) {
          for (size_t d = 0; d < D; ++d) att[qo + d] += w[p] / sum * v[p][ko + d];
        }
      }
      Vec o = matvec(L.wo, att);
      for (size_t i = 0; i < L.bo.size(); ++i) o[i] += L.bo[i];
      if (m.gemma3) o = rms_norm(o, L.post_attn_norm, m.rms_eps);
      for (size_t i = 0; i < E; ++i) x[t][i] += o[i];
    }
    for (size_t t = 0; t < T; ++t) {
      const Vec h = rms_norm(x[t], L.ffn_norm, m.rms_eps);
      Vec g = matvec(L.gate, h);
      const Vec u = matvec(L.up, h);
      for (size_t i = 0; i < g.size(); ++i)
        g[i] = (m.gemma3 ? gelu_tanh(g[i]) : g[i] / (1.0 + std::exp(-g[i]))) * u[i];
      Vec d = matvec(L.down, g);
      for (size_t i = 0; i < L.b_down.size(); ++i) d[i] += L.b_down[i];
      if (m.gemma3) d = rms_norm(d, L.post_ffn_norm, m.rms_eps);
      for (size_t i = 0; i < E; ++i) x[t][i] += d[i];
    }
  }
  std::vector<double> logits;
  logits.reserve(T * static_cast<size_t>(m.n_vocab));
  for (size_t t = 0; t < T; ++t) {
    const Vec l = matvec(m.output, rms_norm(x[t], m.output_norm, m.rms_eps));
    logits.insert(logits.end(), l.begin(), l.end());
  }
  return logits;
}

}  // namespace snug::testing
