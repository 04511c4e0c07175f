// Importance matrices on tiny models the test builds: the file round-trips in
// llama.cpp's layout, collection sees every decoder matrix, the weighted
// quantizers lower the weighted error they are meant to lower, quantize
// --imatrix uses them (and records it), and bad input (a malformed or missing
// file, an imatrix of another model, a text too short) fails in one line and
// leaves no output behind.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "compress/calibrate.h"
#include "compress/imatrix.h"
#include "compress/quantize.h"
#include "gguf/gguf.h"
#include "run_binary.h"
#include "temp_files.h"
#include "tensor/kernels.h"
#include "tiny_model.h"

namespace snug::compress {
namespace {

namespace fs = std::filesystem;
using tensor::DType;

fs::path temp_dir() {
  return testing::scratch_dir("imatrix_test");
}

testing::TinyModelSpec wide_spec(int layers = 2) {
  testing::TinyModelSpec s;
  s.n_layers = layers;
  s.n_embd = 256;
  s.n_ff = 512;
  s.n_heads = 4;
  s.n_kv_heads = 2;
  return s;
}

std::vector<int32_t> random_tokens(size_t n, uint32_t seed = 7) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, testing::kTinyVocab - 1);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = d(rng);
  return t;
}

Result<Imatrix> collect(const std::string& model_path, int32_t n_ctx, size_t n_tokens,
                        bool process_output = false) {
  memory::Ledger ledger;
  auto m = model::Model::load(model_path, &ledger);
  if (!m.ok()) return m.error();
  ImatrixOptions o;
  o.n_ctx = n_ctx;
  o.n_batch = n_ctx / 2;  // two forward calls per chunk
  o.n_threads = 2;
  o.process_output = process_output;
  o.dataset = "random tokens";
  return collect_imatrix(**m, random_tokens(n_tokens), testing::kTinyEndOfText, o, &ledger);
}

std::string save(const Imatrix& m, const std::string& name) {
  const std::string path = (temp_dir() / name).string();
  EXPECT_TRUE(save_imatrix(m, path).ok());
  return path;
}

bool one_line(const std::string& s) {
  return !s.empty() && s.find('\n') == std::string::npos;
}

TEST(Imatrix, FileRoundTripsInLlamaCppLayout) {
  Imatrix m;
  m.datasets = {"calibration.txt"};
  m.chunk_count = 3;
  m.chunk_size = 512;
  m.entries["blk.1.ffn_down.weight"] = {4, {1, 2, 3, 4}, {1536}};
  m.entries["blk.0.ffn_gate_exps.weight"] = {2, {1, 2, 3, 4, 5, 6}, {10, 0, 30}};
  const std::string path = save(m, "roundtrip.imatrix");
  auto back = load_imatrix(path);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->datasets, m.datasets);
  EXPECT_EQ(back->chunk_count, 3u);
  EXPECT_EQ(back->chunk_size, 512u);
  ASSERT_EQ(back->entries.size(), 2u);
  for (const auto& [name, e] : m.entries) {
    const ImatrixEntry& b = back->entries.at(name);
    EXPECT_EQ(b.cols, e.cols);
    EXPECT_EQ(b.in_sum2, e.in_sum2);
    EXPECT_EQ(b.counts, e.counts);
  }
  auto f = gguf::File::open(path);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(*f->get_string("general.type"), "imatrix");
  std::vector<std::string> names;
  for (const auto& t : f->tensors()) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{
                       "blk.0.ffn_gate_exps.weight.in_sum2", "blk.0.ffn_gate_exps.weight.counts",
                       "blk.1.ffn_down.weight.in_sum2", "blk.1.ffn_down.weight.counts"}));
  const gguf::TensorInfo* sums = f->find_tensor("blk.0.ffn_gate_exps.weight.in_sum2");
  EXPECT_EQ(sums->ne[0], 2);
  EXPECT_EQ(sums->ne[1], 3);
  EXPECT_EQ(f->find_tensor("blk.0.ffn_gate_exps.weight.counts")->ne[0], 1);
  // Importance: sums / count per matrix, 1 where a matrix was never seen.
  EXPECT_EQ(importance(back->entries.at("blk.0.ffn_gate_exps.weight")),
            (std::vector<float>{0.1f, 0.2f, 1, 1, 5.f / 30, 6.f / 30}));
}

// The weighted error sum_c w_c (x_c - q_c)^2 over rows of random data with
// heavy-tailed column importances: each weighted quantizer must beat the
// round-to-nearest one on the measure it optimises.
TEST(Imatrix, WeightedQuantizersLowerTheWeightedError) {
  const int64_t cols = 512, rows = 48;
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(cols * rows)), w(static_cast<size_t>(cols));
  for (auto& v : x) v = normal(rng) * 0.05f;
  for (auto& v : w) v = std::exp(2.5f * normal(rng));
  for (DType t : {DType::kQ2_K, DType::kQ3_K, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K,
                  DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1}) {
    SCOPED_TRACE(tensor::dtype_name(t));
    ASSERT_TRUE(tensor::has_weighted_quantizer(t));
    const uint64_t rb = *tensor::row_bytes(t, cols);
    std::vector<uint8_t> plain(rb), weighted(rb), unw(rb);
    std::vector<float> back(static_cast<size_t>(cols));
    double err_plain = 0, err_weighted = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = x.data() + r * cols;
      tensor::quantize_row(t, row, plain.data(), cols);
      tensor::quantize_row_weighted(t, row, weighted.data(), cols, w.data());
      tensor::quantize_row_weighted(t, row, unw.data(), cols, nullptr);
      EXPECT_EQ(unw, plain);  // no weights: the round-to-nearest result
      for (auto [buf, err] : {std::pair{&plain, &err_plain}, std::pair{&weighted, &err_weighted}}) {
        tensor::dequantize_row(t, buf->data(), back.data(), cols);
        for (int64_t c = 0; c < cols; ++c) {
          const double d = double{row[c]} - back[static_cast<size_t>(c)];
          *err += w[static_cast<size_t>(c)] * d * d;
        }
      }
    }
    EXPECT_LT(err_weighted, 0.9 * err_plain) << err_weighted << " vs " << err_plain;
  }
  // Formats without a weighted quantizer ignore the weights.
  EXPECT_FALSE(tensor::has_weighted_quantizer(DType::kQ8_0));
  std::vector<uint8_t> a(*tensor::row_bytes(DType::kQ8_0, cols)), b(a.size());
  tensor::quantize_row(DType::kQ8_0, x.data(), a.data(), cols);
  tensor::quantize_row_weighted(DType::kQ8_0, x.data(), b.data(), cols, w.data());
  EXPECT_EQ(a, b);
}

TEST(Imatrix, CollectsEveryDecoderMatrix) {
  const std::string in = testing::write_tiny_model("imatrix_collect.gguf");  // 2 layers, 64 / 128
  auto m = collect(in, 32, 100, /*process_output=*/true);
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(m->chunk_count, 3u);  // 100 tokens: three whole chunks of 32
  EXPECT_EQ(m->chunk_size, 32u);
  EXPECT_EQ(m->datasets, std::vector<std::string>{"random tokens"});
  ASSERT_EQ(m->entries.size(), 14u);  // tied output: no output.weight, as llama-imatrix
  for (int l = 0; l < 2; ++l) {
    for (const char* stem :
         {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"}) {
      const std::string name = "blk." + std::to_string(l) + "." + stem + ".weight";
      ASSERT_EQ(m->entries.count(name), 1u) << name;
      const ImatrixEntry& e = m->entries.at(name);
      EXPECT_EQ(e.cols, std::string_view(stem) == "ffn_down" ? 128 : 64) << name;
      EXPECT_EQ(e.counts, std::vector<float>{96});
      double total = 0;
      for (float v : e.in_sum2) total += v;
      EXPECT_GT(total, 0) << name;
    }
  }
  // An untied output head is collected with process_output.
  testing::TinyModelSpec untied;
  untied.tied_output = false;
  auto u = collect(testing::write_tiny_model("imatrix_untied.gguf", untied), 32, 64, true);
  ASSERT_TRUE(u.ok()) << u.error().message;
  ASSERT_EQ(u->entries.count("output.weight"), 1u);
  EXPECT_EQ(u->entries.at("output.weight").counts, std::vector<float>{64});
  auto short_text = collect(in, 32, 20);
  ASSERT_FALSE(short_text.ok());
  EXPECT_TRUE(one_line(short_text.error().message));
  EXPECT_NE(short_text.error().message.find("20 tokens"), std::string::npos);
}

TEST(Imatrix, QuantizeUsesAndRecordsIt) {
  const std::string in = testing::write_tiny_model("imatrix_q.gguf", wide_spec(8));
  auto m = collect(in, 32, 64);
  ASSERT_TRUE(m.ok()) << m.error().message;
  const std::string im = save(*m, "q.imatrix");
  auto loaded = load_imatrix(im);
  ASSERT_TRUE(loaded.ok());
  const std::string plain = (temp_dir() / "plain.gguf").string();
  const std::string weighted = (temp_dir() / "weighted.gguf").string();
  QuantizeOptions o;
  o.kind = *find_quant_kind("Q4_0");
  o.threads = 2;
  ASSERT_TRUE(quantize_file(in, plain, o).ok());
  o.imatrix = &*loaded;
  o.imatrix_path = im;
  auto sum = quantize_file(in, weighted, o);
  ASSERT_TRUE(sum.ok()) << sum.error().message;
  auto p = gguf::File::open(plain);
  auto w = gguf::File::open(weighted);
  ASSERT_TRUE(p.ok() && w.ok());
  EXPECT_EQ(*w->get_string("quantize.imatrix.file"), im);
  EXPECT_EQ(*w->get_string("quantize.imatrix.dataset"), "random tokens");
  EXPECT_EQ(*w->get_uint("quantize.imatrix.entries_count"), 56u);
  EXPECT_EQ(*w->get_uint("quantize.imatrix.chunks_count"), 2u);
  EXPECT_EQ(p->find("quantize.imatrix.file"), nullptr);
  // llama.cpp's guard: with an imatrix, Q4_0 gives the first eighth of ffn_down q4_1.
  EXPECT_EQ(w->find_tensor("blk.0.ffn_down.weight")->type, DType::kQ4_1);
  EXPECT_EQ(p->find_tensor("blk.0.ffn_down.weight")->type, DType::kQ4_0);
  EXPECT_EQ(w->find_tensor("blk.1.ffn_down.weight")->type, DType::kQ4_0);
  // Every row of a weighted tensor is quantize_row_weighted of the f32 source.
  const char* name = "blk.3.attn_q.weight";
  auto in_file = gguf::File::open(in);
  ASSERT_TRUE(in_file.ok());
  const gguf::TensorInfo* src = in_file->find_tensor(name);
  const gguf::TensorInfo* dst = w->find_tensor(name);
  ASSERT_EQ(src->type, DType::kF32);
  const std::vector<float> imp = importance(loaded->entries.at(name));
  const uint64_t rb = *tensor::row_bytes(DType::kQ4_0, src->ne[0]);
  std::vector<uint8_t> row(rb);
  for (int64_t r = 0; r < src->rows(); ++r) {
    tensor::quantize_row_weighted(DType::kQ4_0,
                                  reinterpret_cast<const float*>(src->data) + r * src->ne[0],
                                  row.data(), src->ne[0], imp.data());
    ASSERT_EQ(0, std::memcmp(row.data(), dst->data + r * rb, rb)) << "row " << r;
  }
  EXPECT_NE(0, std::memcmp(dst->data, p->find_tensor(name)->data, dst->bytes));
  size_t n_weighted = 0;
  for (const auto& t : sum->tensors) n_weighted += t.weighted;
  EXPECT_EQ(n_weighted, 56u);
}

TEST(Imatrix, AnotherModelsImatrixIsRefused) {
  const std::string narrow = testing::write_tiny_model("imatrix_narrow.gguf");  // n_embd 64
  const std::string wide = testing::write_tiny_model("imatrix_wide.gguf", wide_spec(2));
  auto m = collect(narrow, 32, 32);
  ASSERT_TRUE(m.ok()) << m.error().message;
  const std::string out = (temp_dir() / "refused.gguf").string();
  QuantizeOptions o;
  o.kind = *find_quant_kind("Q4_K_M");
  o.imatrix = &*m;
  o.imatrix_path = "narrow.imatrix";
  auto r = quantize_file(wide, out, o);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(one_line(r.error().message));
  EXPECT_NE(r.error().message.find("made for another model"), std::string::npos)
      << r.error().message;
  EXPECT_FALSE(fs::exists(out));
  // Same widths, but a layer the model does not have.
  Imatrix deeper = *m;
  deeper.entries["blk.7.attn_q.weight"] = deeper.entries.at("blk.0.attn_q.weight");
  QuantizeOptions opt;
  opt.kind = *find_quant_kind("Q4_0");
  opt.imatrix = &deeper;
  r = quantize_file(narrow, out, opt);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("blk.7.attn_q.weight"), std::string::npos);
  EXPECT_FALSE(fs::exists(out));
}

// GGUF files that are not valid imatrices: each gives a one-line error.
TEST(Imatrix, MalformedFilesAreRefused) {
  auto write = [](const std::string& name, const gguf::Writer& w) {
    const std::string path = (temp_dir() / name).string();
    EXPECT_TRUE(w.write(path).ok());
    return path;
  };
  auto meta = [](gguf::Writer& w) {
    w.set_string("general.type", "imatrix");
    w.set_strings("imatrix.datasets", {"x"});
    w.set_u32("imatrix.chunk_count", 1);
    w.set_u32("imatrix.chunk_size", 4);
  };
  auto f32 = [](std::vector<float> v) {
    std::vector<uint8_t> b(v.size() * 4);
    std::memcpy(b.data(), v.data(), b.size());
    return b;
  };
  std::vector<std::pair<std::string, std::string>> cases;  // path, expected fragment
  cases.emplace_back((temp_dir() / "missing.imatrix").string(), "cannot open");
  {
    const std::string p = (temp_dir() / "text.imatrix").string();
    std::ofstream(p) << "not an imatrix at all\n";
    cases.emplace_back(p, "GGUF");
  }
  cases.emplace_back(testing::write_tiny_model("imatrix_model_as_imatrix.gguf"),
                     "not an importance matrix");
  {
    gguf::Writer w;
    meta(w);
    w.add_tensor("blk.0.attn_q.weight.in_sum2", DType::kF32, {2, 1}, f32({1, 2}));
    cases.emplace_back(write("nocounts.imatrix", w), "sums without counts");
  }
  {
    gguf::Writer w;
    meta(w);
    w.add_tensor("blk.0.attn_q.weight.in_sum2", DType::kF32, {2, 1}, f32({1, 2}));
    w.add_tensor("blk.0.attn_q.weight.counts", DType::kF32, {2, 1}, f32({1, 2}));
    cases.emplace_back(write("shape.imatrix", w), "shape");
  }
  {
    gguf::Writer w;
    meta(w);
    w.add_tensor("blk.0.attn_q.weight.in_sum2", DType::kF32, {2, 1}, f32({1, NAN}));
    w.add_tensor("blk.0.attn_q.weight.counts", DType::kF32, {1, 1}, f32({4}));
    cases.emplace_back(write("nan.imatrix", w), "not finite");
  }
  {
    gguf::Writer w;
    meta(w);
    const std::vector<uint8_t> zeros(4, 0);
    w.add_tensor("blk.0.attn_q.weight.in_sum2", DType::kF16, {2, 1}, zeros);
    w.add_tensor("blk.0.attn_q.weight.counts", DType::kF32, {1, 1}, f32({4}));
    cases.emplace_back(write("f16.imatrix", w), "must be f32");
  }
  {
    gguf::Writer w;
    w.add_tensor("blk.0.attn_q.weight.in_sum2", DType::kF32, {2, 1}, f32({1, 2}));
    w.add_tensor("blk.0.attn_q.weight.counts", DType::kF32, {1, 1}, f32({4}));
    cases.emplace_back(write("nometa.imatrix", w), "missing imatrix metadata");
  }
  for (const auto& [path, fragment] : cases) {
    auto m = load_imatrix(path);
    ASSERT_FALSE(m.ok()) << path;
    EXPECT_TRUE(one_line(m.error().message)) << m.error().message;
    EXPECT_NE(m.error().message.find(fragment), std::string::npos) << m.error().message;
  }
}

// The command line: bad input is one line on stderr, exit 1, and no output file.
TEST(Imatrix, CommandLineBadInputLeavesNoFile) {
  const std::string tag = "imatrix_cli";
  const fs::path dir = testing::scratch_dir(tag);
  const std::string model = testing::write_tiny_model("imatrix_cli.gguf");
  const std::string wide = testing::write_tiny_model("imatrix_cli_wide.gguf", wide_spec(2));
  const std::string text = (dir / "calib.txt").string();
  {
    std::ofstream t(text);
    for (int i = 0; i < 200; ++i) t << "the quick brown fox jumps over the lazy dog " << i << "\n";
  }
  const std::string im = (dir / "ok.imatrix").string();
  auto ok = testing::run_binary(
      SNUG_BIN, "imatrix " + model + " --file " + text + " -o " + im + " --ctx 64 --chunks 3 -t 2",
      tag);
  ASSERT_EQ(ok.code, 0) << ok.err;
  auto loaded = load_imatrix(im);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  EXPECT_EQ(loaded->chunk_count, 3u);
  EXPECT_EQ(loaded->datasets, std::vector<std::string>{text});

  const std::string out = (dir / "never.out").string();
  const std::string bad = (dir / "bad.imatrix").string();
  std::ofstream(bad) << "garbage";
  const std::vector<std::string> failing = {
      "imatrix " + model + " --file " + (dir / "no-such.txt").string() + " -o " + out,
      "imatrix " + model + " --file " + text + " -o " + out + " --ctx 100000",
      "imatrix " + model + " --file " + text + " -o " + (dir / "no/dir/x").string(),
      "quantize " + model + " " + out + " Q4_K_M --imatrix " + (dir / "no-such.imatrix").string(),
      "quantize " + model + " " + out + " Q4_K_M --imatrix " + bad,
      "quantize " + wide + " " + out + " Q4_K_M --imatrix " + im,
  };
  for (const auto& args : failing) {
    auto r = testing::run_binary(SNUG_BIN, args, tag);
    EXPECT_EQ(r.code, 1) << args << "\n" << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << args << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("snug: error: ", 0), 0u) << r.err;
    EXPECT_FALSE(fs::exists(out)) << args;
    EXPECT_FALSE(snug::testing::temp_file_left(out)) << args;
  }
  auto r = testing::run_binary(SNUG_BIN, "quantize " + wide + " " + out + " Q4_K_M --imatrix " + im,
                               tag);
  EXPECT_NE(r.err.find("made for another model"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace snug::compress
