// snug prune: the row rule against a brute-force reference (which weights go,
// for unstructured and N:M patterns, with and without Wanda's column scales),
// whole files on tiny models (only the decoder's matrices change, the zeros
// survive packing in q8_0, --keep protects, the output loads and runs), and
// every class of bad input refused with one line and no file left behind:
// unknown method or pattern, sparsity outside [0, 1), N >= M, an output that
// is the input, a calibration text too short, a type whose blocks do not fit
// the rows, a full disk.
#include "compress/prune.h"
#include "compress/structured.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>
#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>

#include "base/thread_pool.h"
#include "gguf/gguf.h"
#include "kv/kv_cache.h"
#include "model/model.h"
#include "run_binary.h"
#include "tensor/kernels.h"
#include "text/tokenizer.h"
#include "tiny_model.h"

namespace snug::compress {
namespace {

namespace fs = std::filesystem;
using tensor::DType;

fs::path temp_dir() {
  return testing::scratch_dir("prune_test");
}

std::vector<float> random_row(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> w(static_cast<size_t>(n));
  for (float& x : w) x = d(rng);
  return w;
}

// The reference: sort a group's columns by (score, column) and zero the
// lowest `drop` of them.
void reference_drop(std::vector<float>& w, const std::vector<float>& scale, size_t from, size_t n,
                    size_t drop) {
  std::vector<size_t> idx(n);
  std::iota(idx.begin(), idx.end(), from);
  auto score = [&](size_t i) { return std::fabs(w[i]) * (scale.empty() ? 1.f : scale[i]); };
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    return score(a) < score(b) || (score(a) == score(b) && a > b);
  });
  for (size_t k = 0; k < drop; ++k) w[idx[k]] = 0.f;
}

TEST(PruneRow, UnstructuredRemovesTheLowestScoresOfTheRow) {
  std::vector<int32_t> order;
  for (double sparsity : {0.0, 0.25, 0.5, 0.9}) {
    for (bool scaled : {false, true}) {
      std::vector<float> w = random_row(576, 1), want = w;
      std::vector<float> scale = scaled ? random_row(576, 2) : std::vector<float>{};
      for (float& s : scale) s = std::fabs(s);
      const auto drop = static_cast<size_t>(std::floor(sparsity * 576));
      reference_drop(want, scale, 0, 576, drop);
      EXPECT_EQ(prune_row(w.data(), 576, scaled ? scale.data() : nullptr, sparsity, {}, order),
                static_cast<int64_t>(drop));
      EXPECT_EQ(w, want) << "sparsity " << sparsity << (scaled ? ", scaled" : "");
    }
  }
}

TEST(PruneRow, NmKeepsNOfEveryMAndTheTailInProportion) {
  std::vector<int32_t> order;
  for (NmPattern p : {NmPattern{2, 4}, NmPattern{4, 8}, NmPattern{1, 4}}) {
    const int64_t cols = 70;  // a last partial group for every pattern
    std::vector<float> w = random_row(cols, 3), want = w;
    std::vector<float> scale = random_row(cols, 4);
    for (float& s : scale) s = std::fabs(s);
    for (int64_t g0 = 0; g0 < cols; g0 += p.m) {
      const int64_t g = std::min<int64_t>(p.m, cols - g0);
      const int64_t keep = (g * p.n + p.m - 1) / p.m;
      reference_drop(want, scale, static_cast<size_t>(g0), static_cast<size_t>(g),
                     static_cast<size_t>(g - keep));
    }
    prune_row(w.data(), cols, scale.data(), 0.0, p, order);
    EXPECT_EQ(w, want) << p.n << ":" << p.m;
    for (int64_t g0 = 0; g0 + p.m <= cols; g0 += p.m) {
      EXPECT_EQ(std::count_if(w.begin() + g0, w.begin() + g0 + p.m, [](float x) { return x != 0; }),
                p.n);
    }
  }
}

TEST(PruneRow, WandaScalesChangeWhichWeightsGo) {
  std::vector<int32_t> order;
  // Equal magnitudes: the column whose inputs are largest keeps its weight.
  std::vector<float> w = {1.f, -1.f, 1.f, -1.f};
  const std::vector<float> scale = {0.1f, 5.f, 0.2f, 3.f};
  prune_row(w.data(), 4, scale.data(), 0.5, {}, order);
  EXPECT_EQ(w, (std::vector<float>{0.f, -1.f, 0.f, -1.f}));
  // Ties keep the lower column.
  std::vector<float> t = {2.f, 2.f, 2.f, 2.f};
  prune_row(t.data(), 4, nullptr, 0.5, {}, order);
  EXPECT_EQ(t, (std::vector<float>{2.f, 2.f, 0.f, 0.f}));
}

TEST(Prune, PatternsAndMethodsParseOrSayWhyNot) {
  EXPECT_TRUE(parse_nm_pattern("unstructured")->unstructured());
  EXPECT_EQ(parse_nm_pattern("2:4")->n, 2);
  EXPECT_DOUBLE_EQ(parse_nm_pattern("4:8")->sparsity(), 0.5);
  for (const char* bad : {"4:4", "5:4", "0:4", "2:", ":4", "2:4:8", "two:four", "2:128", ""}) {
    auto p = parse_nm_pattern(bad);
    EXPECT_FALSE(p.ok()) << bad;
  }
  EXPECT_EQ(parse_prune_method("wanda"), PruneMethod::kWanda);
  EXPECT_FALSE(parse_prune_method("sparsegtp"));
  EXPECT_TRUE(is_prunable("blk.3.ffn_down.weight"));
  EXPECT_TRUE(is_prunable("blk.0.attn_q.weight"));
  EXPECT_FALSE(is_prunable("token_embd.weight"));
  EXPECT_FALSE(is_prunable("output.weight"));
  EXPECT_FALSE(is_prunable("blk.0.attn_norm.weight"));
}

// The logits of a model over the first 64 of `tokens`, all positions.
std::vector<float> logits_over(const std::string& path, const std::vector<int32_t>& tokens) {
  memory::Ledger ledger;
  auto m = model::Model::load(path, &ledger);
  EXPECT_TRUE(m.ok()) << (m.ok() ? "" : m.error().message);
  const kv::KvLayout layout = (*m)->kv_layout(DType::kF16);
  auto cache =
      kv::KvCache::create(layout, static_cast<int32_t>(layout.sequence_blocks(64, 64)), &ledger);
  model::WorkspaceShape shape{.max_tokens = 64, .max_logits = 64, .max_ctx = 64, .n_threads = 1};
  auto ws = model::Workspace::create(
      (*m)->config(), model::plan_workspace((*m)->config(), (*m)->matrix_types(), shape), &ledger);
  ThreadPool pool(1);
  model::Batch b;
  const kv::SeqId s = cache->create_sequence();
  for (int32_t i = 0; i < 64; ++i) b.add(tokens[static_cast<size_t>(i)], s, true);
  EXPECT_TRUE((*m)->forward(b, *cache, *ws, pool).ok());
  const size_t n = 64 * static_cast<size_t>((*m)->config().n_vocab);
  return std::vector<float>(ws->logits, ws->logits + n);
}

// 64 tokens of text like the "quick brown fox" calibration texts below
// (another stretch of it), by the model's tokenizer; empty on failure.
std::vector<int32_t> fox_tokens(const std::string& path) {
  memory::Ledger ledger;
  auto m = model::Model::load(path, &ledger);
  if (!m.ok()) return {};
  auto tok = text::Tokenizer::from_gguf((*m)->file());
  if (!tok.ok()) return {};
  std::string more;
  for (int i = 0; i < 40; ++i)
    more += "the quick brown fox " + std::to_string(i * 5 % 11) + " jumps over ";
  std::vector<int32_t> eval = tok->encode(more, false, false);
  eval.resize(64);
  return eval;
}

double distance(const std::vector<float>& x, const std::vector<float>& y) {
  double d = 0;
  for (size_t i = 0; i < x.size(); ++i) d += (x[i] - y[i]) * (x[i] - y[i]);
  return std::sqrt(d);
}

testing::TinyModelSpec q8_spec() {
  testing::TinyModelSpec s;
  s.matrix_type = DType::kQ8_0;
  s.n_embd = 128;
  s.n_ff = 256;
  s.n_heads = 4;
  s.n_kv_heads = 2;
  return s;
}

std::vector<float> dequantize(const gguf::TensorInfo& t) {
  std::vector<float> out(static_cast<size_t>(t.n_elements()));
  const uint64_t rb = *tensor::row_bytes(t.type, t.ne[0]);
  for (int64_t r = 0; r < t.rows(); ++r)
    tensor::dequantize_row(t.type, t.data + static_cast<uint64_t>(r) * rb, out.data() + r * t.ne[0],
                           t.ne[0]);
  return out;
}

TEST(Prune, FileChangesOnlyTheDecoderMatricesAndTheZerosSurvive) {
  const std::string in = testing::write_tiny_model("prune_in.gguf", q8_spec());
  const std::string out = (temp_dir() / "pruned.gguf").string();
  PruneOptions o;
  o.sparsity = 0.5;
  o.keep = {"blk.1.ffn_*"};
  o.threads = 2;
  auto sum = prune_file(in, out, o);
  ASSERT_TRUE(sum.ok()) << sum.error().message;
  EXPECT_EQ(sum->pruned.size(), 7u * 2 - 3);  // two layers of seven, blk.1's three ffn kept
  EXPECT_EQ(sum->removed_weights, sum->prunable_weights / 2);
  EXPECT_GE(sum->zero_weights, sum->removed_weights);  // q8_0 holds 0 exactly
  auto a = gguf::File::open(in), b = gguf::File::open(out);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->tensors().size(), b->tensors().size());
  for (const gguf::TensorInfo& t : a->tensors()) {
    const gguf::TensorInfo* u = b->find_tensor(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    EXPECT_EQ(u->type, t.type) << t.name;
    const bool pruned = is_prunable(t.name) && t.name.rfind("blk.1.ffn_", 0) != 0;
    const bool same = t.bytes == u->bytes && std::equal(t.data, t.data + t.bytes, u->data);
    EXPECT_EQ(same, !pruned) << t.name;
    if (!pruned) continue;
    // Every row lost half its weights, the largest ones kept exactly.
    const std::vector<float> x = dequantize(t), y = dequantize(*u);
    for (int64_t r = 0; r < t.rows(); ++r) {
      int64_t zeros = 0;
      for (int64_t i = 0; i < t.ne[0]; ++i) {
        const float v = y[static_cast<size_t>(r * t.ne[0] + i)];
        zeros += v == 0.f ? 1 : 0;
      }
      EXPECT_GE(zeros, t.ne[0] / 2) << t.name << " row " << r;
    }
    // Kept weights are requantized in blocks whose scale may change: close, not equal.
    double err = 0, ref = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      if (y[i] == 0.f) continue;
      err += (x[i] - y[i]) * (x[i] - y[i]);
      ref += x[i] * x[i];
    }
    EXPECT_LT(std::sqrt(err / ref), 0.02) << t.name;
  }
  // The output is a model snug loads and runs.
  memory::Ledger ledger;
  auto m = model::Model::load(out, &ledger);
  ASSERT_TRUE(m.ok()) << m.error().message;
}

TEST(Prune, WandaNeedsActivationsForTheSameModel) {
  const std::string in = testing::write_tiny_model("prune_wanda.gguf", q8_spec());
  const std::string out = (temp_dir() / "wanda.gguf").string();
  PruneOptions o;
  o.method = PruneMethod::kWanda;
  auto none = prune_file(in, out, o);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.error().message.find("calibration"), std::string::npos);
  // Activations of every prunable matrix, all columns equal but column 0 huge:
  // column 0's weights survive in every row.
  auto file = gguf::File::open(in);
  ASSERT_TRUE(file.ok());
  Imatrix acts;
  acts.chunk_count = 1;
  acts.chunk_size = 8;
  for (const gguf::TensorInfo& t : file->tensors()) {
    if (!is_prunable(t.name)) continue;
    ImatrixEntry e;
    e.cols = t.ne[0];
    e.in_sum2.assign(static_cast<size_t>(t.ne[0]), 1.f);
    e.in_sum2[0] = 1e8f;
    e.counts = {1.f};
    acts.entries[t.name] = e;
  }
  o.activations = &acts;
  o.sparsity = 0.9;
  auto sum = prune_file(in, out, o);
  ASSERT_TRUE(sum.ok()) << sum.error().message;
  auto b = gguf::File::open(out);
  ASSERT_TRUE(b.ok());
  const gguf::TensorInfo* t = b->find_tensor("blk.0.ffn_up.weight");
  ASSERT_NE(t, nullptr);
  const std::vector<float> y = dequantize(*t);
  const std::vector<float> x = dequantize(*file->find_tensor("blk.0.ffn_up.weight"));
  for (int64_t r = 0; r < t->rows(); ++r) {
    if (x[static_cast<size_t>(r * t->ne[0])] != 0.f) {
      EXPECT_NE(y[static_cast<size_t>(r * t->ne[0])], 0.f) << "row " << r;
    }
  }
  // Activations of another model (other column counts) are refused.
  acts.entries.begin()->second.cols += 1;
  acts.entries.begin()->second.in_sum2.push_back(1.f);
  fs::remove(out);
  auto other = prune_file(in, out, o);
  ASSERT_FALSE(other.ok());
  EXPECT_FALSE(fs::exists(out));
}

TEST(Prune, BadOptionsWriteNothing) {
  const std::string in = testing::write_tiny_model("prune_bad.gguf", q8_spec());
  const std::string out = (temp_dir() / "never.gguf").string();
  auto refused = [&](const PruneOptions& o, const char* what) {
    auto r = prune_file(in, out, o);
    EXPECT_FALSE(r.ok()) << what;
    if (!r.ok()) {
      EXPECT_EQ(r.error().message.find('\n'), std::string::npos) << r.error().message;
    }
    EXPECT_FALSE(fs::exists(out)) << what;
  };
  PruneOptions o;
  o.sparsity = 1.0;
  refused(o, "sparsity 1");
  o.sparsity = -0.1;
  refused(o, "negative sparsity");
  o.sparsity = std::nan("");
  refused(o, "NaN sparsity");
  o = PruneOptions{};
  o.pattern = {4, 4};
  refused(o, "N = M");
  o = PruneOptions{};
  o.type = DType::kQ4_K;  // rows of 128 are not whole 256-element super-blocks
  refused(o, "type whose blocks do not fit");
  o = PruneOptions{};
  auto same = prune_file(in, in, o);
  EXPECT_FALSE(same.ok());
  EXPECT_NE(same.error().message.find("is the input"), std::string::npos);
  auto full = prune_file(in, "/dev/full", o);
  EXPECT_FALSE(full.ok());
}

// The command line: each bad input one line on stderr, exit 2 for usage and 1
// for a failure, and no output file.
TEST(Prune, CommandLineErrorsAreOneLine) {
  const std::string in = testing::write_tiny_model("prune_cli.gguf", q8_spec());
  const fs::path out = temp_dir() / "cli.gguf";
  const fs::path err = temp_dir() / "err";
  const fs::path short_text = temp_dir() / "short.txt";
  std::ofstream(short_text) << "too short to calibrate on";
  auto run = [&](const std::string& args) {
    const std::string cmd =
        std::string(SNUG_BIN) + " prune " + in + " " + args + " 2>" + err.string();
    const int status = std::system(cmd.c_str());
    std::ifstream e(err);
    std::stringstream ss;
    ss << e.rdbuf();
    return std::make_pair(WIFEXITED(status) ? WEXITSTATUS(status) : -1, ss.str());
  };
  const std::string o = out.string();
  struct Bad {
    std::string args;
    int code;
    const char* says;
  };
  for (const Bad& b : std::vector<Bad>{
           {o + " --method sparsest", 2, "unknown pruning method 'sparsest'"},
           {o + " --pattern 2-4", 2, "is not 'unstructured' or N:M"},
           {o + " --pattern 4:2", 2, "0 < N < M"},
           {o + " --sparsity 1", 2, "--sparsity must be in [0, 1)"},
           {o + " --pattern 2:4 --sparsity 0.3", 2, "contradicts --pattern"},
           {o + " --method wanda", 2, "needs a calibration text"},
           {o + " --method magnitude --calib x.txt", 2, "--calib is for wanda"},
           {o + " --method wanda --calib " + short_text.string(), 1, "calibration"},
           {o + " --type q9_9", 2, "unknown tensor type 'q9_9'"},
           {o + " --dense", 2, "--dense is for N:M patterns"},
           {o + " --pattern 3:4 --dense", 2, "--dense is for N:M patterns"},
           {o + " --no-refit", 2, "--no-refit is for --structured"},
           {in, 1, "is the input"},
           {"/dev/full", 1, "snug: error: "},
       }) {
    auto [code, text] = run(b.args);
    EXPECT_EQ(code, b.code) << b.args << ": " << text;
    EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << b.args << ": " << text;
    EXPECT_NE(text.find(b.says), std::string::npos) << b.args << ": " << text;
    EXPECT_FALSE(fs::exists(out)) << b.args;
  }
  auto [code, text] = run(o + " --pattern 2:4");
  EXPECT_EQ(code, 0) << text;
  EXPECT_NE(text.find("50.00% of their"), std::string::npos) << text;
}

// 2:4 and 4:8 are stored in snug's N:M-sparse types (q8_0 -> q8_0_nm, q4_0
// -> q4_0_nm) unless --dense: a smaller file that loads, whose weights the
// plan and ledger count at their sparse size, and that computes exactly the
// logits of the dense pruned file (the sparse kernels give the dense bits).
// SparseGPT's 2:4 is stored sparse too; `snug inspect` says the file is
// snug's own.
TEST(Prune, NmPatternsAreStoredSparseWithTheDenseResults) {
  for (DType type : {DType::kQ8_0, DType::kQ4_0}) {
    testing::TinyModelSpec spec = q8_spec();
    spec.matrix_type = type;
    const std::string in = testing::write_tiny_model("prune_nm.gguf", spec);
    const DType sparse = *tensor::nm_sparse_type(type);
    for (const char* pat : {"2:4", "4:8"}) {
      const std::string sp = (temp_dir() / "nm_sparse.gguf").string();
      const std::string dn = (temp_dir() / "nm_dense.gguf").string();
      PruneOptions o;
      o.pattern = *parse_nm_pattern(pat);
      o.threads = 2;
      auto s = prune_file(in, sp, o);
      ASSERT_TRUE(s.ok()) << s.error().message;
      o.dense = true;
      auto d = prune_file(in, dn, o);
      ASSERT_TRUE(d.ok()) << d.error().message;
      EXPECT_EQ(s->removed_weights, d->removed_weights);
      EXPECT_EQ(s->zero_weights, d->zero_weights);  // the same values, held two ways
      uint64_t sparse_bytes = 0, dense_bytes = 0;
      for (size_t k : s->pruned) {
        EXPECT_EQ(s->files.tensors[k].to, sparse) << s->files.tensors[k].name;
        sparse_bytes += s->files.tensors[k].bytes;
      }
      for (size_t k : d->pruned) {
        EXPECT_EQ(d->files.tensors[k].to, type);
        dense_bytes += d->files.tensors[k].bytes;
      }
      const double want = type == DType::kQ8_0 ? 22.0 / 34 : 14.0 / 18;
      EXPECT_DOUBLE_EQ(static_cast<double>(sparse_bytes) / static_cast<double>(dense_bytes), want);
      auto logits = [](const std::string& path, uint64_t* weight_bytes) {
        memory::Ledger ledger;
        auto m = model::Model::load(path, &ledger);
        EXPECT_TRUE(m.ok()) << (m.ok() ? "" : m.error().message);
        *weight_bytes = (*m)->weights().bytes;
        const kv::KvLayout layout = (*m)->kv_layout(DType::kF16);
        auto cache = kv::KvCache::create(
            layout, static_cast<int32_t>(layout.sequence_blocks(48, 40)), &ledger);
        model::WorkspaceShape shape{
            .max_tokens = 40, .max_logits = 40, .max_ctx = 48, .n_threads = 2};
        auto ws = model::Workspace::create(
            (*m)->config(), model::plan_workspace((*m)->config(), (*m)->matrix_types(), shape),
            &ledger);
        ThreadPool pool(2);
        const kv::SeqId seq = cache->create_sequence();
        model::Batch b;
        for (int32_t i = 0; i < 40; ++i) b.add((i * 37 + 11) % (*m)->config().n_vocab, seq, true);
        EXPECT_TRUE((*m)->forward(b, *cache, *ws, pool).ok());
        std::vector<float> out(ws->logits, ws->logits + 40 * (*m)->config().n_vocab);
        // One more token alone: the one-row kernels.
        model::Batch one;
        one.add(5, seq, true);
        EXPECT_TRUE((*m)->forward(one, *cache, *ws, pool).ok());
        out.insert(out.end(), ws->logits, ws->logits + (*m)->config().n_vocab);
        return out;
      };
      uint64_t wb_sparse = 0, wb_dense = 0;
      EXPECT_EQ(logits(sp, &wb_sparse), logits(dn, &wb_dense)) << dtype_name(type) << " " << pat;
      EXPECT_EQ(wb_dense - wb_sparse, dense_bytes - sparse_bytes);
    }
  }
  // The command line: SparseGPT 2:4 stored sparse, said so, and inspect says whose type it is.
  const std::string in = testing::write_tiny_model("prune_nm_cli.gguf", q8_spec());
  const fs::path text = temp_dir() / "nm_calib.txt";
  {
    std::ofstream t(text);
    for (int i = 0; i < 300; ++i) t << "a sparse sentence " << i * 7 % 13 << " of calibration ";
  }
  const std::string out = (temp_dir() / "nm_sgpt.gguf").string();
  const fs::path log = temp_dir() / "nm_log";
  const std::string cmd = std::string(SNUG_BIN) + " prune " + in + " " + out +
                          " --method sparsegpt --pattern 2:4 --calib-chunks 8 --calib-ctx 64 "
                          "--calib " +
                          text.string() + " 2>" + log.string() + " && " + SNUG_BIN + " inspect " +
                          out + " >>" + log.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::stringstream ss;
  ss << std::ifstream(log).rdbuf();
  EXPECT_NE(ss.str().find("14 tensors stored N:M-sparse as q8_0_nm"), std::string::npos)
      << ss.str();
  EXPECT_NE(ss.str().find("q8_0_nm is snug's own N:M-sparse type"), std::string::npos) << ss.str();
  auto f = gguf::File::open(out);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->find_tensor("blk.0.ffn_down.weight")->type, DType::kQ8_0NM);
  EXPECT_FALSE(tensor::snug_only_type(f->find_tensor("token_embd.weight")->type));
}

// SparseGPT through the command line on a tiny model: layer by layer over a
// calibration text, half of the weights zero in q8_0, a file snug loads, and
// logits on text like the calibration text closer to the dense model's than
// magnitude pruning's at the same sparsity (the kept weights make up for the
// removed ones; measured 47.5 against 111.5); too short a text is one line.
TEST(Prune, SparseGptBeatsMagnitudeOnATinyModel) {
  testing::TinyModelSpec spec = q8_spec();
  spec.n_ctx = 512;
  const std::string in = testing::write_tiny_model("prune_sgpt.gguf", spec);
  const fs::path text = temp_dir() / "calib.txt";
  {
    std::ofstream t(text);
    for (int i = 0; i < 400; ++i) t << "the quick brown fox " << i * 7 % 13 << " jumps over ";
  }
  const fs::path err = temp_dir() / "sgpt_err";
  auto run = [&](const std::string& args) {
    const std::string cmd =
        std::string(SNUG_BIN) + " prune " + in + " " + args + " 2>" + err.string();
    const int status = std::system(cmd.c_str());
    std::ifstream e(err);
    std::stringstream ss;
    ss << e.rdbuf();
    return std::make_pair(WIFEXITED(status) ? WEXITSTATUS(status) : -1, ss.str());
  };
  const std::string sgpt = (temp_dir() / "sgpt.gguf").string();
  const std::string mag = (temp_dir() / "mag.gguf").string();
  auto [code, msg] = run(sgpt + " --method sparsegpt --sparsity 0.5 --calib " + text.string() +
                         " --calib-chunks 16 --calib-ctx 64");
  ASSERT_EQ(code, 0) << msg;
  EXPECT_NE(msg.find("working memory"), std::string::npos) << msg;
  EXPECT_NE(msg.find("% exactly zero"), std::string::npos) << msg;
  std::tie(code, msg) = run(mag + " --method magnitude --sparsity 0.5");
  ASSERT_EQ(code, 0) << msg;
  // Logits over text like the calibration text (another stretch of it),
  // dense against pruned.
  const std::vector<int32_t> eval = fox_tokens(in);
  ASSERT_EQ(eval.size(), 64u);
  auto logits = [&eval](const std::string& path) { return logits_over(path, eval); };
  const std::vector<float> dense = logits(in), a = logits(sgpt), b = logits(mag);
  auto dist = [&](const std::vector<float>& x) { return distance(x, dense); };
  std::printf("logit distance to the dense model: sparsegpt %.4g, magnitude %.4g\n", dist(a),
              dist(b));
  EXPECT_LT(dist(a), dist(b));
  const fs::path short_text = temp_dir() / "sgpt_short.txt";
  std::ofstream(short_text) << "short";
  std::tie(code, msg) = run((temp_dir() / "never.gguf").string() + " --method sparsegpt --calib " +
                            short_text.string());
  EXPECT_EQ(code, 1);
  EXPECT_EQ(std::count(msg.begin(), msg.end(), '\n'), 1) << msg;
  EXPECT_NE(msg.find("sparsegpt: the calibration text has"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(temp_dir() / "never.gguf"));
}

TEST(Structured, CutsParseOrSayWhyNot) {
  auto c = parse_structured_cut("ffn=0.25,heads=0.5,layers=2");
  ASSERT_TRUE(c.ok());
  EXPECT_DOUBLE_EQ(c->ffn, 0.25);
  EXPECT_DOUBLE_EQ(c->heads, 0.5);
  EXPECT_EQ(c->layers, 2);
  EXPECT_TRUE(parse_structured_cut("layers=1").ok());
  for (const char* bad : {"", "ffn", "ffn=1", "ffn=-0.1", "heads=x", "layers=-1", "layers=1.5",
                          "ffn=0.2,ffn=0.3", "mlp=0.2", "ffn=0", "ffn=0.2,"}) {
    EXPECT_FALSE(parse_structured_cut(bad).ok()) << bad;
  }
}

// With scores chosen by hand: each layer keeps its highest-scoring channels
// and head groups (the same number in every layer), the least influential
// layers go, and cuts that would empty a layer, or remove layers that differ
// by position, are refused.
TEST(Structured, PlanKeepsTheHighestScores) {
  model::ModelConfig c;
  c.arch_name = "llama";
  c.n_layers = 3;
  c.n_ff = 128;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.layers.assign(3, model::LayerConfig{});
  StructuredScores s;
  s.influence = {0.5, 0.1, 0.9};
  for (int32_t l = 0; l < 3; ++l) {
    std::vector<double> f(128);
    for (int32_t j = 0; j < 128; ++j) f[static_cast<size_t>(j)] = (j * 37 + l * 11) % 128;
    s.ffn.push_back(f);
    s.heads.push_back(l == 1 ? std::vector<double>{2, 1} : std::vector<double>{1, 2});
  }
  auto p = plan_structured(c, s, {0.25, 0.5, 1});
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ(p->layers, (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(p->n_ff, 96);
  EXPECT_EQ(p->n_kv_heads, 1);
  EXPECT_EQ(p->n_heads, 2);
  EXPECT_EQ(p->groups[0], (std::vector<int32_t>{1}));
  EXPECT_EQ(p->groups[1], (std::vector<int32_t>{0}));
  for (int32_t l = 0; l < 3; ++l) {
    ASSERT_EQ(p->channels[static_cast<size_t>(l)].size(), 96u);
    for (int32_t j : p->channels[static_cast<size_t>(l)])
      EXPECT_GE(s.ffn[static_cast<size_t>(l)][static_cast<size_t>(j)], 32) << l << " " << j;
  }
  EXPECT_FALSE(plan_structured(c, s, {0, 0.9, 0}).ok());  // both groups
  EXPECT_FALSE(plan_structured(c, s, {0, 0, 3}).ok());    // every layer
  EXPECT_FALSE(plan_structured(c, s, {0.9, 0, 0}).ok());  // 13 channels: no whole block of 32
  c.layers[1].window = 8;                                 // Gemma-like: layers differ by position
  auto g = plan_structured(c, s, {0, 0, 1});
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.error().message.find("differ by position"), std::string::npos);
  EXPECT_TRUE(plan_structured(c, s, {0.25, 0.5, 0}).ok());
}

namespace obs {
// H = sum x x^T over `samples` of inputs drawn by `draw` (n wide).
template <class F>
std::vector<double> hessian(int64_t n, int samples, F draw) {
  std::vector<double> h(static_cast<size_t>(n * n), 0.0);
  std::vector<double> x(static_cast<size_t>(n));
  for (int s = 0; s < samples; ++s) {
    draw(s, x.data());
    for (int64_t a = 0; a < n; ++a)
      for (int64_t b = 0; b < n; ++b)
        h[static_cast<size_t>(a * n + b)] += x[static_cast<size_t>(a)] * x[static_cast<size_t>(b)];
  }
  return h;
}
}  // namespace obs

// Greedy OBS removal on inputs where a per-unit score is wrong: columns 0
// and 1 carry the same signal with large weights, column 2 an independent one
// with smaller weights. ||W_j|| x RMS(x_j) would drop column 2; with least
// squares compensating, dropping 0 or 1 costs nothing, so OBS keeps 2. With
// units of two columns it drops the duplicated pair's partner in the same
// way, and on random inputs its choice of one unit out of four is the one
// a brute-force least-squares search finds best. Bad shapes are refused.
TEST(Structured, ObsRemovesWhatTheOthersCanRebuild) {
  std::mt19937 rng(7);
  std::normal_distribution<double> nd;
  std::vector<double> z(400), y(400);
  for (auto& v : z) v = nd(rng);
  for (auto& v : y) v = nd(rng);
  const auto h3 = obs::hessian(3, 400, [&](int s, double* x) {
    x[0] = x[1] = z[static_cast<size_t>(s)];
    x[2] = y[static_cast<size_t>(s)];
  });
  // 2 rows x 3. Scores: 5, 5 and 1.8; removing column 2 costs 3.25 x 404,
  // removing 0 with 1 compensating about 25 x 8 (the 1% damping's share).
  const std::vector<float> w3 = {4, 4, 1.5F, -3, -3, 1};
  auto k = obs_keep_units(w3, 2, 3, h3, 1, 2);
  ASSERT_TRUE(k.ok()) << k.error().message;
  ASSERT_EQ(k->size(), 2u);
  EXPECT_EQ((*k)[1], 2);

  // Units of two columns: (0,1) and (2,3); columns 2 and 3 copy 0 and 1.
  std::vector<double> u(800);
  for (auto& v : u) v = nd(rng);
  const auto h4 = obs::hessian(4, 400, [&](int s, double* x) {
    x[0] = x[2] = u[2 * static_cast<size_t>(s)];
    x[1] = x[3] = u[2 * static_cast<size_t>(s) + 1];
  });
  const std::vector<float> w4 = {5, 1, 1, 0.5F};  // unit 0 scores far higher
  auto g = obs_keep_units(w4, 1, 4, h4, 2, 1);
  ASSERT_TRUE(g.ok()) << g.error().message;
  EXPECT_EQ(*g, (std::vector<int32_t>{0}));  // unit 1 rebuilt from unit 0, error ~0

  // Random: the unit whose removal leaves the least least-squares error.
  const int64_t n = 8, rows = 3;
  std::vector<double> a(static_cast<size_t>(n * n));
  for (auto& v : a) v = nd(rng);  // correlated inputs x = A e
  std::vector<double> e(static_cast<size_t>(n));
  const auto h8 = obs::hessian(n, 500, [&](int, double* x) {
    for (auto& v : e) v = nd(rng);
    for (int64_t i = 0; i < n; ++i) {
      x[i] = 0;
      for (int64_t j = 0; j < n; ++j)
        x[i] += a[static_cast<size_t>(i * n + j)] * e[static_cast<size_t>(j)];
    }
  });
  std::vector<float> w8(static_cast<size_t>(rows * n));
  for (auto& v : w8) v = static_cast<float>(nd(rng));
  // The oracle: error of W x - W' x_K, minimised over W', is
  // tr(W_R (H_RR - H_RK H_KK^-1 H_KR) W_R^T) with the same damping as OBS.
  std::vector<double> hd = h8;
  double diag = 0;
  for (int64_t i = 0; i < n; ++i) diag += hd[static_cast<size_t>(i * n + i)];
  for (int64_t i = 0; i < n; ++i) hd[static_cast<size_t>(i * n + i)] += 0.01 * diag / n;
  const auto lsq_error = [&](int gone) {
    Eigen::MatrixXd H = Eigen::Map<Eigen::MatrixXd>(hd.data(), n, n);
    std::vector<int> kk, rr;
    for (int i = 0; i < n; ++i) (i / 2 == gone ? rr : kk).push_back(i);
    Eigen::MatrixXd hkk(kk.size(), kk.size()), hkr(kk.size(), rr.size()), hrr(rr.size(), rr.size());
    for (size_t i = 0; i < kk.size(); ++i) {
      for (size_t j = 0; j < kk.size(); ++j) hkk(i, j) = H(kk[i], kk[j]);
      for (size_t j = 0; j < rr.size(); ++j) hkr(i, j) = H(kk[i], rr[j]);
    }
    for (size_t i = 0; i < rr.size(); ++i)
      for (size_t j = 0; j < rr.size(); ++j) hrr(i, j) = H(rr[i], rr[j]);
    const Eigen::MatrixXd schur = hrr - hkr.transpose() * hkk.llt().solve(hkr);
    double err = 0;
    for (int64_t r = 0; r < rows; ++r) {
      Eigen::VectorXd wr(rr.size());
      for (size_t j = 0; j < rr.size(); ++j) wr(j) = w8[static_cast<size_t>(r * n + rr[j])];
      err += wr.dot(schur * wr);
    }
    return err;
  };
  int oracle = 0;
  for (int gone = 1; gone < 4; ++gone)
    if (lsq_error(gone) < lsq_error(oracle)) oracle = gone;
  auto r = obs_keep_units(w8, rows, n, h8, 2, 3);
  ASSERT_TRUE(r.ok()) << r.error().message;
  std::vector<int32_t> want;
  for (int32_t i = 0; i < 4; ++i)
    if (i != oracle) want.push_back(i);
  EXPECT_EQ(*r, want);

  auto all = obs_keep_units(w8, rows, n, h8, 2, 4);  // nothing to remove
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(*all, (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_FALSE(obs_keep_units(w8, rows, n, h8, 3, 1).ok());  // width does not divide n
  EXPECT_FALSE(obs_keep_units(w8, rows, n, h8, 2, 5).ok());  // more kept than there are
  EXPECT_FALSE(obs_keep_units(w3, 2, 3, h8, 1, 2).ok());     // H of the wrong size
}

// The refit with an output bias: a removed input that is constant goes into
// the bias exactly (the kept columns untouched); a random case equals
// least squares over the kept inputs and a constant, with the kept part
// damped, solved from the rows themselves rather than from their centred
// scatter.
TEST(Structured, RefitBiasTakesWhatTheRemovedColumnsGaveOnAverage) {
  std::mt19937 rng(11);
  std::normal_distribution<double> nd;
  const int64_t n = 6, rows = 3, N = 300;
  Eigen::MatrixXd X(N, n);
  for (int64_t t = 0; t < N; ++t) {
    for (int64_t j = 0; j < n; ++j) X(t, j) = nd(rng) + (j % 3 == 0 ? 2.0 : 0.0);
    X(t, 5) = 3.0;  // a constant input
  }
  // (A random mix of the first inputs also leans on the constant's means.)
  for (int64_t t = 0; t < N; ++t) X(t, 4) = 0.5 * X(t, 0) - X(t, 1) + 0.2 * nd(rng);
  const auto stats = [&](std::vector<double>& h, std::vector<double>& sum) {
    h.assign(static_cast<size_t>(n * n), 0.0);
    sum.assign(static_cast<size_t>(n), 0.0);
    for (int64_t a = 0; a < n; ++a) {
      sum[static_cast<size_t>(a)] = X.col(a).sum();
      for (int64_t b = 0; b < n; ++b) h[static_cast<size_t>(a * n + b)] = X.col(a).dot(X.col(b));
    }
  };
  std::vector<double> h, sum;
  stats(h, sum);
  const std::vector<double> c = centred_scatter(h, sum, N);
  std::vector<float> w0(static_cast<size_t>(rows * n));
  for (auto& v : w0) v = static_cast<float>(nd(rng));

  // Only the constant goes: the bias is W[:, 5] x 3, nothing else moves.
  {
    std::vector<float> w = w0, bias;
    ASSERT_TRUE(refit_columns_with_bias(w, rows, n, c, sum, N, {0, 1, 2, 3, 4}, bias).ok());
    for (int64_t r = 0; r < rows; ++r) {
      EXPECT_NEAR(bias[static_cast<size_t>(r)], 3.0 * w0[static_cast<size_t>(r * n + 5)], 1e-4);
      EXPECT_EQ(w[static_cast<size_t>(r * n + 5)], 0.f);
      for (int64_t j = 0; j < 5; ++j)
        EXPECT_NEAR(w[static_cast<size_t>(r * n + j)], w0[static_cast<size_t>(r * n + j)], 1e-4);
    }
  }
  // Columns 1, 4 and 5 go: the oracle solves the damped normal equations of
  // [X_K, 1] against the removed part W_R x_R.
  const std::vector<int64_t> keep = {0, 2, 3}, gone = {1, 4, 5};
  std::vector<float> w = w0, bias;
  ASSERT_TRUE(refit_columns_with_bias(w, rows, n, c, sum, N, keep, bias).ok());
  const auto k = static_cast<int64_t>(keep.size());
  Eigen::MatrixXd A(N, k + 1);
  for (int64_t a = 0; a < k; ++a) A.col(a) = X.col(keep[static_cast<size_t>(a)]);
  A.col(k).setOnes();
  Eigen::MatrixXd ckk(k, k);
  for (int64_t a = 0; a < k; ++a)
    for (int64_t b = 0; b < k; ++b)
      ckk(a, b) =
          c[static_cast<size_t>(keep[static_cast<size_t>(a)] * n + keep[static_cast<size_t>(b)])];
  Eigen::MatrixXd M = A.transpose() * A;
  M.topLeftCorner(k, k).diagonal().array() += 0.01 * ckk.diagonal().mean();
  for (int64_t r = 0; r < rows; ++r) {
    Eigen::VectorXd target = Eigen::VectorXd::Zero(N);
    for (int64_t j : gone) target += double{w0[static_cast<size_t>(r * n + j)]} * X.col(j);
    const Eigen::VectorXd sol = M.ldlt().solve(A.transpose() * target);
    for (int64_t a = 0; a < k; ++a) {
      const auto j = static_cast<size_t>(r * n + keep[static_cast<size_t>(a)]);
      EXPECT_NEAR(w[j], w0[j] + sol(a), 1e-4)
          << "row " << r << " column " << keep[static_cast<size_t>(a)];
    }
    EXPECT_NEAR(bias[static_cast<size_t>(r)], sol(k), 1e-4) << "row " << r;
    for (int64_t j : gone) EXPECT_EQ(w[static_cast<size_t>(r * n + j)], 0.f);
  }
  std::vector<float> b2;
  EXPECT_FALSE(refit_columns_with_bias(w, rows, n + 1, c, sum, N, keep, b2).ok());  // shapes
  EXPECT_FALSE(refit_columns_with_bias(w, rows, n, c, sum, 0, keep, b2).ok());      // no rows
}

// The command line on a tiny three-layer model: the output has the new
// shape in its metadata and tensors, every kept row of a row-cut matrix is
// one of the input's rows unchanged, snug loads and runs it; bad cuts and
// flag mixes are one line each with no file.
TEST(Structured, CommandLineWritesASmallerModelThatRuns) {
  testing::TinyModelSpec spec = q8_spec();
  spec.n_layers = 3;
  spec.n_ctx = 512;
  const std::string in = testing::write_tiny_model("structured_in.gguf", spec);
  const fs::path text = temp_dir() / "structured_calib.txt";
  {
    std::ofstream t(text);
    for (int i = 0; i < 300; ++i) t << "a calibration line " << i % 17 << " of words. ";
  }
  const fs::path out = temp_dir() / "structured.gguf";
  const fs::path err = temp_dir() / "structured_err";
  auto run = [&](const std::string& args) {
    const std::string cmd = std::string(SNUG_BIN) + " prune " + in + " " + out.string() + " " +
                            args + " 2>" + err.string();
    const int status = std::system(cmd.c_str());
    std::ifstream e(err);
    std::stringstream ss;
    ss << e.rdbuf();
    return std::make_pair(WIFEXITED(status) ? WEXITSTATUS(status) : -1, ss.str());
  };
  const std::string calib = " --calib " + text.string() + " --calib-chunks 4 --calib-ctx 64";
  struct Bad {
    std::string args;
    int code;
    const char* says;
  };
  for (const Bad& b : std::vector<Bad>{
           {"--structured heads=0.9" + calib, 1, "every head group"},
           {"--structured layers=3" + calib, 1, "every layer"},
           {"--structured mlp=0.5" + calib, 2, "unknown part 'mlp'"},
           {"--structured ffn=0.25", 2, "needs a calibration text"},
           {"--structured ffn=0.25 --method wanda" + calib, 2, "takes no --method"},
       }) {
    auto [code, msg] = run(b.args);
    EXPECT_EQ(code, b.code) << b.args << ": " << msg;
    EXPECT_EQ(std::count(msg.begin(), msg.end(), '\n'), 1) << b.args << ": " << msg;
    EXPECT_NE(msg.find(b.says), std::string::npos) << b.args << ": " << msg;
    EXPECT_FALSE(fs::exists(out)) << b.args;
  }
  auto [code, msg] = run("--structured ffn=0.25,heads=0.5,layers=1" + calib);
  ASSERT_EQ(code, 0) << msg;
  auto a = gguf::File::open(in), b = gguf::File::open(out.string());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*b->get_uint("llama.block_count"), 2u);
  EXPECT_EQ(*b->get_uint("llama.feed_forward_length"), 192u);
  EXPECT_EQ(*b->get_uint("llama.attention.head_count"), 2u);
  EXPECT_EQ(*b->get_uint("llama.attention.head_count_kv"), 1u);
  EXPECT_EQ(*b->get_uint("llama.attention.key_length"), 32u);
  EXPECT_EQ(b->find_tensor("blk.2.attn_q.weight"), nullptr);
  const gguf::TensorInfo* q = b->find_tensor("blk.0.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->ne[1], 2 * 32);
  EXPECT_EQ(b->find_tensor("blk.1.ffn_down.weight")->ne[0], 192);
  EXPECT_EQ(b->find_tensor("blk.1.ffn_up.weight")->ne[1], 192);
  // Row cuts copy rows: each kept ffn_up row is a row of one of the input's layers.
  const gguf::TensorInfo* up = b->find_tensor("blk.0.ffn_up.weight");
  const uint64_t rb = *tensor::row_bytes(up->type, up->ne[0]);
  for (int64_t r = 0; r < up->rows(); ++r) {
    bool found = false;
    for (int32_t l = 0; l < 3 && !found; ++l) {
      const gguf::TensorInfo* src = a->find_tensor("blk." + std::to_string(l) + ".ffn_up.weight");
      for (int64_t k = 0; k < src->rows() && !found; ++k)
        found = std::equal(up->data + r * rb, up->data + (r + 1) * rb, src->data + k * rb);
    }
    EXPECT_TRUE(found) << "row " << r;
  }
  memory::Ledger ledger;
  auto m = model::Model::load(out.string(), &ledger);
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ((*m)->config().n_layers, 2);
  EXPECT_EQ((*m)->config().head_dim_k, 32);
  fs::remove(out);
  // Gemma's layers differ by position: no whole layer can go.
  testing::TinyModelSpec g = q8_spec();
  g.architecture = "gemma3";
  g.n_layers = 6;
  g.n_ctx = 512;
  const std::string gin = testing::write_tiny_model("structured_gemma.gguf", g);
  const std::string cmd = std::string(SNUG_BIN) + " prune " + gin + " " + out.string() +
                          " --structured layers=1" + calib + " 2>" + err.string();
  EXPECT_NE(std::system(cmd.c_str()), 0);
  EXPECT_FALSE(fs::exists(out));
}

// The refit (least squares over the calibration text, layer by layer) brings
// a cut model closer to the uncut one than the cut alone, on text like the
// calibration text; --no-refit is refused without --structured.
TEST(Structured, RefitBringsTheCutModelCloser) {
  testing::TinyModelSpec spec = q8_spec();
  spec.n_ctx = 512;
  const std::string in = testing::write_tiny_model("refit_in.gguf", spec);
  const fs::path text = temp_dir() / "refit_calib.txt";
  {
    std::ofstream t(text);
    for (int i = 0; i < 400; ++i) t << "the quick brown fox " << i * 7 % 13 << " jumps over ";
  }
  const std::string with = (temp_dir() / "refit.gguf").string();
  const std::string without = (temp_dir() / "norefit.gguf").string();
  const std::string args = " --structured ffn=0.5,heads=0.5 --calib " + text.string() +
                           " --calib-chunks 16 --calib-ctx 64 2>/dev/null";
  ASSERT_EQ(std::system((std::string(SNUG_BIN) + " prune " + in + " " + with + args).c_str()), 0);
  ASSERT_EQ(
      std::system(
          (std::string(SNUG_BIN) + " prune " + in + " " + without + args + " --no-refit").c_str()),
      0);
  const std::vector<int32_t> eval = fox_tokens(in);
  ASSERT_EQ(eval.size(), 64u);
  const std::vector<float> dense = logits_over(in, eval);
  const double d_with = distance(logits_over(with, eval), dense);
  const double d_without = distance(logits_over(without, eval), dense);
  std::printf("logit distance to the uncut model: refit %.4g, cut alone %.4g\n", d_with, d_without);
  EXPECT_LT(d_with, d_without);
  // The refit writes an output bias after every kept layer's attention
  // output and down projection, as F32 vectors llama.cpp reads; the cut
  // alone writes none.
  auto refit_file = gguf::File::open(with);
  auto cut_file = gguf::File::open(without);
  ASSERT_TRUE(refit_file.ok() && cut_file.ok());
  for (int l = 0; l < spec.n_layers; ++l) {
    for (const char* stem : {"attn_output", "ffn_down"}) {
      const std::string name = "blk." + std::to_string(l) + "." + stem + ".bias";
      const gguf::TensorInfo* t = refit_file->find_tensor(name);
      ASSERT_NE(t, nullptr) << name;
      EXPECT_EQ(t->type, tensor::DType::kF32);
      EXPECT_EQ(t->ne[0], spec.n_embd);
      EXPECT_EQ(cut_file->find_tensor(name), nullptr) << name;
    }
  }
  // Gemma 3's llama.cpp graph reads no output biases (and refuses a file
  // with tensors it does not read): its refitted cut carries none.
  testing::TinyModelSpec gspec = q8_spec();
  gspec.architecture = "gemma3";
  gspec.n_ctx = 512;
  const std::string gin = testing::write_tiny_model("refit_gemma_in.gguf", gspec);
  const std::string gout = (temp_dir() / "refit_gemma.gguf").string();
  ASSERT_EQ(std::system((std::string(SNUG_BIN) + " prune " + gin + " " + gout + args).c_str()), 0);
  auto gemma_file = gguf::File::open(gout);
  ASSERT_TRUE(gemma_file.ok());
  for (const gguf::TensorInfo& t : gemma_file->tensors())
    EXPECT_EQ(t.name.find(".bias"), std::string::npos) << t.name;
  EXPECT_FALSE(logits_over(gout, fox_tokens(gin)).empty());  // and snug runs it
  EXPECT_NE(std::system((std::string(SNUG_BIN) + " prune " + in + " " +
                         (temp_dir() / "x.gguf").string() + " --no-refit 2>/dev/null")
                            .c_str()),
            0);
}

}  // namespace
}  // namespace snug::compress
