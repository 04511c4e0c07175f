// snug quantize on tiny models the test builds: every file type round-trips
// (values within a per-type error bound, metadata copied, loads and runs in
// snug), the mixes pick llama.cpp's types, fallbacks and --keep apply, and bad
// input fails with one line and leaves no file behind.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "compress/quantize.h"
#include "kv/kv_cache.h"
#include "model/model.h"
#include "run_binary.h"
#include "temp_files.h"
#include "tensor/kernels.h"
#include "tiny_model.h"

namespace snug::compress {
namespace {

namespace fs = std::filesystem;
using tensor::DType;

fs::path temp_dir() {
  return testing::scratch_dir("quantize_test");
}

// n_embd 256 so that every K format applies without fallback.
testing::TinyModelSpec wide_spec() {
  testing::TinyModelSpec s;
  s.n_embd = 256;
  s.n_ff = 512;
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

// Root-mean-square error relative to the RMS of the original values.
double relative_rmse(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    err += (a[i] - b[i]) * (a[i] - b[i]);
    ref += a[i] * a[i];
  }
  return std::sqrt(err / std::max(ref, 1e-30));
}

double error_bound(DType t) {
  switch (t) {
    case DType::kF32:
      return 0;
    case DType::kF16:
      return 1e-3;
    case DType::kBF16:
      return 5e-3;
    case DType::kQ8_0:
      return 0.01;
    case DType::kQ6_K:
      return 0.03;
    case DType::kQ5_0:
    case DType::kQ5_1:
    case DType::kQ5_K:
      return 0.06;
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ4_K:
      return 0.12;
    case DType::kQ3_K:
      return 0.25;
    default:
      return 0.5;  // q2_K
  }
}

Result<QuantizeSummary> quantize(const std::string& in, const std::string& out,
                                 std::string_view kind, std::vector<KeepRule> keep = {}) {
  QuantizeOptions o;
  o.kind = *find_quant_kind(kind);
  o.keep = std::move(keep);
  o.threads = 2;
  return quantize_file(in, out, o);
}

// Top token of the last position after feeding a short prompt, or -1 on failure.
int top_token(const std::string& path) {
  memory::Ledger ledger;
  auto m = model::Model::load(path, &ledger);
  if (!m.ok()) return -1;
  const auto& c = (*m)->config();
  auto cache = kv::KvCache::create((*m)->kv_layout(DType::kF16, 4), 16, &ledger);
  model::WorkspaceShape shape{8, 8, 64, 1};
  auto ws =
      model::Workspace::create(c, model::plan_workspace(c, (*m)->matrix_types(), shape), &ledger);
  if (!cache.ok() || !ws.ok()) return -1;
  ThreadPool pool(1);
  model::Batch b;
  const kv::SeqId seq = cache->create_sequence();
  for (int32_t t : {1, 70, 80, 90, 100}) b.add(t, seq, t == 100);
  if (!(*m)->forward(b, *cache, *ws, pool).ok()) return -1;
  int best = 0;
  for (int v = 0; v < c.n_vocab; ++v) {
    if (!std::isfinite(ws->logits[v])) return -1;
    if (ws->logits[v] > ws->logits[best]) best = v;
  }
  return best;
}

TEST(Quantize, EveryTypeRoundTripsAndLoads) {
  const std::string in = testing::write_tiny_model("quant_src.gguf", wide_spec());
  auto src = gguf::File::open(in);
  ASSERT_TRUE(src.ok());
  const int reference_top = top_token(in);
  ASSERT_GE(reference_top, 0);
  for (const char* kind : {"F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_0", "Q5_1",
                           "Q4_K_M", "Q4_K_S", "Q4_0", "Q4_1", "Q3_K_M", "Q2_K"}) {
    SCOPED_TRACE(kind);
    const std::string out = (temp_dir() / (std::string(kind) + ".gguf")).string();
    auto sum = quantize(in, out, kind);
    ASSERT_TRUE(sum.ok()) << sum.error().message;
    auto f = gguf::File::open(out);
    ASSERT_TRUE(f.ok()) << f.error().message;
    EXPECT_EQ(*f->get_uint("general.file_type"), find_quant_kind(kind)->file_type);
    EXPECT_EQ(*f->get_uint("llama.block_count"), 2u);
    EXPECT_EQ(f->tensors().size(), src->tensors().size());
    bool saw_base = false;
    for (const auto& t : f->tensors()) {
      const gguf::TensorInfo* s = src->find_tensor(t.name);
      ASSERT_NE(s, nullptr) << t.name;
      if (t.n_dims == 1) {
        EXPECT_EQ(t.type, DType::kF32) << t.name;
      }
      saw_base = saw_base || t.type == find_quant_kind(kind)->base;
      EXPECT_LE(relative_rmse(dequantize(*s), dequantize(t)), error_bound(t.type))
          << t.name << " " << tensor::dtype_name(t.type);
    }
    EXPECT_TRUE(saw_base);
    EXPECT_EQ(sum->output_bytes, fs::file_size(out));
    const int top = top_token(out);
    EXPECT_GE(top, 0) << "snug cannot run the quantized model";
    if (std::string_view(kind) == "Q8_0" || kind[0] == 'F' || kind[0] == 'B') {
      EXPECT_EQ(top, reference_top);
    }
    fs::remove(out);
  }
}

TEST(Quantize, MixesFollowLlamaCpp) {
  const std::string in = testing::write_tiny_model("quant_mix.gguf", wide_spec());
  const std::string out = (temp_dir() / "mix.gguf").string();
  // Two layers: use_more_bits() is true for layer 1 only.
  ASSERT_TRUE(quantize(in, out, "Q4_K_M").ok());
  auto f = gguf::File::open(out);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->find_tensor("token_embd.weight")->type, DType::kQ6_K);  // tied output
  EXPECT_EQ(f->find_tensor("blk.0.attn_v.weight")->type, DType::kQ4_K);
  EXPECT_EQ(f->find_tensor("blk.1.attn_v.weight")->type, DType::kQ6_K);
  EXPECT_EQ(f->find_tensor("blk.1.ffn_down.weight")->type, DType::kQ6_K);
  EXPECT_EQ(f->find_tensor("blk.0.attn_q.weight")->type, DType::kQ4_K);
  ASSERT_TRUE(quantize(in, out, "Q2_K").ok());
  f = gguf::File::open(out);
  EXPECT_EQ(f->find_tensor("blk.0.attn_v.weight")->type, DType::kQ3_K);  // gqa 2 < 4
  EXPECT_EQ(f->find_tensor("blk.0.ffn_down.weight")->type, DType::kQ3_K);
  EXPECT_EQ(f->find_tensor("blk.0.attn_output.weight")->type, DType::kQ3_K);
  EXPECT_EQ(f->find_tensor("blk.0.ffn_up.weight")->type, DType::kQ2_K);
  // Output order is llama.cpp's: by layer, then by name.
  EXPECT_EQ(f->tensors().front().name, "output_norm.weight");
}

TEST(Quantize, NarrowRowsFallBackAndKeepRulesApply) {
  const std::string in = testing::write_tiny_model("quant_narrow.gguf");  // n_embd 64
  const std::string out = (temp_dir() / "narrow.gguf").string();
  auto sum = quantize(in, out, "Q4_K_S", {*parse_keep_rule("blk.*.attn_q.weight=q8_0")});
  ASSERT_TRUE(sum.ok()) << sum.error().message;
  auto f = gguf::File::open(out);
  EXPECT_EQ(f->find_tensor("blk.1.ffn_up.weight")->type, DType::kQ5_0);
  EXPECT_EQ(f->find_tensor("blk.0.attn_q.weight")->type, DType::kQ8_0);
  EXPECT_EQ(f->find_tensor("token_embd.weight")->type, DType::kQ8_0);
  int notes = 0;
  for (const auto& t : sum->tensors) notes += t.note.find("q5_0 instead") != std::string::npos;
  EXPECT_GT(notes, 0);
  EXPECT_FALSE(parse_keep_rule("attn_q").ok());
  EXPECT_FALSE(parse_keep_rule("attn_q=q9_9").ok());
  EXPECT_FALSE(find_quant_kind("Q4_K_X").has_value());
  EXPECT_TRUE(find_quant_kind("q4_k_m").has_value());
}

TEST(Quantize, BadInputLeavesNothingBehind) {
  const std::string in = testing::write_tiny_model("quant_bad.gguf");
  auto same = quantize(in, in, "Q8_0");
  ASSERT_FALSE(same.ok());
  EXPECT_NE(same.error().message.find("is the input"), std::string::npos);
  auto nodir = quantize(in, (temp_dir() / "no/such/dir/out.gguf").string(), "Q8_0");
  ASSERT_FALSE(nodir.ok());
  EXPECT_NE(nodir.error().message.find("does not exist"), std::string::npos);
  const fs::path text = temp_dir() / "not.gguf";
  std::ofstream(text) << "hello, not a model\n";
  const std::string out = (temp_dir() / "never.gguf").string();
  EXPECT_FALSE(quantize(text.string(), out, "Q8_0").ok());
  EXPECT_FALSE(fs::exists(out));
  auto full = quantize(in, "/dev/full", "Q8_0");
  ASSERT_FALSE(full.ok());
  EXPECT_NE(full.error().message.find("No space"), std::string::npos) << full.error().message;
  EXPECT_FALSE(snug::testing::temp_file_left("/dev/full"));
  for (const auto& e : fs::directory_iterator(temp_dir()))
    EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << e.path();
}

// The command line: unknown TYPE is a usage error, a full disk a failure; one line each.
TEST(Quantize, CommandLineErrorsAreOneLine) {
  const std::string in = testing::write_tiny_model("quant_cli.gguf");
  const fs::path err = temp_dir() / "err";
  auto run = [&](const std::string& args) {
    const std::string cmd = std::string(SNUG_BIN) + " quantize " + args + " 2>" + err.string();
    const int status = std::system(cmd.c_str());
    std::ifstream e(err);
    std::stringstream ss;
    ss << e.rdbuf();
    return std::make_pair(WIFEXITED(status) ? WEXITSTATUS(status) : -1, ss.str());
  };
  auto [code, text] = run(in + " " + (temp_dir() / "x.gguf").string() + " Q4_Z");
  EXPECT_EQ(code, 2);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
  EXPECT_NE(text.find("unknown quantization type 'Q4_Z'"), std::string::npos) << text;
  std::tie(code, text) = run(in + " /dev/full Q8_0");
  EXPECT_EQ(code, 1);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
  EXPECT_EQ(text.rfind("snug: error: ", 0), 0u) << text;
  std::tie(code, text) = run(in + " " + (temp_dir() / "ok.gguf").string() + " Q4_0");
  EXPECT_EQ(code, 0) << text;
}

}  // namespace
}  // namespace snug::compress
