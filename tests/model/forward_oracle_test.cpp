// The real forward pass against the scalar double-precision one
// (scalar_forward.h) on tiny models: three sequences fed together in ragged
// batches of prefill chunks and single decode tokens, every position's logits
// compared.
//
// Error measure: per position, max |logit - oracle| / rms(oracle logits), the
// worst over all positions. Bounds, from the arithmetic each configuration
// really does (measured on an AVX-512 machine: 2.6e-4, 5.4e-3, 3.0e-2):
//   f32 weights, f16 KV: float32 sums (~1e-6) and llama.cpp's f16 attention,
//     which rounds keys, values, queries and softmax weights to f16 (2^-11 =
//     4.9e-4 relative each, partly averaging out over a head). Bound 2e-3.
//   f32 weights, q8_0 KV: keys, values and queries rounded to 8 bits per block
//     of 32 (up to 1/254 of the block's largest, ~4e-3 relative). Bound 2e-2.
//   q4_1 weights (the oracle reads the same 4-bit values, so weight rounding
//     cancels): every matrix input, the output head's too, rounded to 8 bits
//     per block of 32, about 4e-3 relative per element, which the worst of
//     ~27,000 logits compounds to a few per cent. Bound 6e-2.
// A real defect is far above these: a wrong rotation mode, a position off by
// one, a KV head mapped to the wrong query heads or a missing attention scale
// moves logits by tens of per cent (WrongRopeModeIsFarOutsideTheBound: the
// first moves them by 0.31, five times the loosest bound).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "model/model.h"
#include "scalar_forward.h"
#include "tiny_model.h"

namespace snug::model {
namespace {

using testing::ScalarModel;
using testing::TinyModelSpec;

TinyModelSpec oracle_spec(tensor::DType weights, const char* arch = "llama",
                          bool output_biases = false) {
  TinyModelSpec s;
  s.architecture = arch;
  s.output_biases = output_biases;
  if (s.architecture == "gemma3") {
    // Layers 0-4 and 6 attend over the last 8 positions, layer 5 over all:
    // sequences of 27-40 tokens leave most keys outside the window.
    s.n_layers = 7;
    s.sliding_window = 8;
    s.rope_base = 1e6f;
  }
  s.n_embd = 128;  // 4 heads of 32: q8_0 KV rows need a multiple of 32
  s.n_heads = 4;
  s.n_kv_heads = 2;
  s.n_ff = 160;
  s.qk_scale = 2;  // attention that depends on position: a rotation defect shows
  s.matrix_type = weights;
  s.tied_output = weights == tensor::DType::kF32;  // one tied head, one separate
  return s;
}

// Worst over positions of max |a - b| / rms(b) for rows of n_vocab.
double worst_relative_error(const std::vector<float>& got, const std::vector<double>& want,
                            size_t n_vocab) {
  double worst = 0;
  for (size_t r = 0; r * n_vocab < want.size(); ++r) {
    double ss = 0, md = 0;
    for (size_t i = r * n_vocab; i < (r + 1) * n_vocab; ++i) {
      ss += want[i] * want[i];
      md = std::max(md, std::fabs(got[i] - want[i]));
    }
    worst = std::max(worst, md / std::sqrt(ss / static_cast<double>(n_vocab)));
  }
  return worst;
}

struct OracleRun {
  std::vector<std::vector<int32_t>> tokens;  // per sequence
  std::vector<std::vector<float>> logits;    // per sequence, [position][n_vocab]
  ScalarModel oracle;
};

// Feeds three sequences of 40, 27 and 33 tokens through the real forward in
// ragged batches: each step takes the next chunk of every unfinished sequence,
// chunk sizes cycling through prefill-sized and single-token steps, and the
// order of the sequences in the batch rotating.
OracleRun run_ragged(const TinyModelSpec& spec, tensor::DType kv_type) {
  OracleRun out;
  std::vector<uint8_t> bytes = testing::build_tiny_model(spec).to_bytes();
  auto file = gguf::File::parse(bytes, "tiny");
  EXPECT_TRUE(file.ok());
  auto oracle = testing::load_scalar_model(*file);
  EXPECT_TRUE(oracle.ok()) << oracle.error().message;
  out.oracle = std::move(oracle).value();
  memory::Ledger ledger;
  auto model = Model::from_file(std::move(file).value(), &ledger);
  EXPECT_TRUE(model.ok()) << model.error().message;
  const int32_t V = (*model)->config().n_vocab;
  // Exactly the blocks the plan counts for three sequences of up to 40
  // positions in chunks of up to 11: windowed layer groups must give blocks
  // back as they go for these to suffice.
  const kv::KvLayout layout = (*model)->kv_layout(kv_type, 4);
  auto cache = kv::KvCache::create(layout, 3 * static_cast<int32_t>(layout.sequence_blocks(40, 11)),
                                   &ledger);
  EXPECT_TRUE(cache.ok()) << cache.error().message;
  const WorkspaceShape shape{32, 32, 64, 2};
  auto ws = Workspace::create((*model)->config(),
                              plan_workspace((*model)->config(), (*model)->matrix_types(), shape),
                              &ledger);
  EXPECT_TRUE(ws.ok());
  ThreadPool pool(2);

  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> tok(0, V - 1);
  std::vector<kv::SeqId> seqs;
  for (int32_t n : {40, 27, 33}) {
    out.tokens.emplace_back(static_cast<size_t>(n));
    for (int32_t& t : out.tokens.back()) t = tok(rng);
    out.logits.emplace_back();
    seqs.push_back(cache->create_sequence());
  }
  const int32_t chunks[] = {11, 1, 6, 1, 1, 9, 3, 1};
  Batch b;
  for (int step = 0;; ++step) {
    b.clear();
    std::vector<std::pair<size_t, int32_t>> fed;  // sequence, tokens in this batch
    for (size_t k = 0; k < seqs.size(); ++k) {
      const size_t s = (k + static_cast<size_t>(step)) % seqs.size();
      const int32_t at = cache->length(seqs[s]);
      const int32_t n = std::min(chunks[(static_cast<size_t>(step) + s) % std::size(chunks)],
                                 static_cast<int32_t>(out.tokens[s].size()) - at);
      for (int32_t i = 0; i < n; ++i)
        b.add(out.tokens[s][static_cast<size_t>(at + i)], seqs[s], true);
      if (n > 0) fed.emplace_back(s, n);
    }
    if (b.size() == 0) break;
    Status st = (*model)->forward(b, *cache, *ws, pool);
    EXPECT_TRUE(st.ok()) << st.error().message;
    if (!st.ok()) break;
    const float* row = ws->logits;
    for (auto [s, n] : fed) {
      out.logits[s].insert(out.logits[s].end(), row, row + static_cast<size_t>(n) * V);
      row += static_cast<size_t>(n) * V;
    }
  }
  return out;
}

struct OracleCase {
  const char* name;
  tensor::DType weights;
  tensor::DType kv;
  double bound;
  const char* arch = "llama";
  bool output_biases = false;  // attn_output.bias and ffn_down.bias
};

void PrintTo(const OracleCase& c, std::ostream* os) {
  *os << c.name;
}

class ForwardOracle : public ::testing::TestWithParam<OracleCase> {};

TEST_P(ForwardOracle, LogitsOfEveryPositionMatchTheScalarForward) {
  const OracleCase& c = GetParam();
  OracleRun run = run_ragged(oracle_spec(c.weights, c.arch, c.output_biases), c.kv);
  const size_t V = static_cast<size_t>(run.oracle.n_vocab);
  double worst = 0;
  for (size_t s = 0; s < run.tokens.size(); ++s) {
    ASSERT_EQ(run.logits[s].size(), run.tokens[s].size() * V) << "sequence " << s;
    const double e =
        worst_relative_error(run.logits[s], testing::scalar_forward(run.oracle, run.tokens[s]), V);
    EXPECT_LT(e, c.bound) << "sequence " << s;
    worst = std::max(worst, e);
  }
  std::printf("%s: worst max|logit error| / rms(logits) = %.2e (bound %.0e)\n", c.name, worst,
              c.bound);
}

INSTANTIATE_TEST_SUITE_P(
    WeightsAndKv, ForwardOracle,
    ::testing::Values(
        OracleCase{"f32_f16kv", tensor::DType::kF32, tensor::DType::kF16, 2e-3},
        OracleCase{"f32_q8_0kv", tensor::DType::kF32, tensor::DType::kQ8_0, 2e-2},
        OracleCase{"q4_1_f16kv", tensor::DType::kQ4_1, tensor::DType::kF16, 6e-2},
        // GELU from ggml's f16 table costs Gemma about 1e-3 relative.
        OracleCase{"gemma3_f32_f16kv", tensor::DType::kF32, tensor::DType::kF16, 3e-3, "gemma3"},
        OracleCase{"gemma3_q8_0_q8_0kv", tensor::DType::kQ8_0, tensor::DType::kQ8_0, 6e-2,
                   "gemma3"},
        OracleCase{"qwen2_f32_f16kv", tensor::DType::kF32, tensor::DType::kF16, 2e-3, "qwen2"},
        OracleCase{"llama_output_biases_q4_1_f16kv", tensor::DType::kQ4_1, tensor::DType::kF16,
                   6e-2, "llama", true},
        OracleCase{"qwen3_q4_1_f16kv", tensor::DType::kQ4_1, tensor::DType::kF16, 6e-2, "qwen3"}),
    [](const ::testing::TestParamInfo<OracleCase>& i) { return std::string(i.param.name); });

TEST(ForwardOracle, WrongRopeModeIsFarOutsideTheBound) {
  OracleRun run = run_ragged(oracle_spec(tensor::DType::kF32), tensor::DType::kF16);
  const size_t V = static_cast<size_t>(run.oracle.n_vocab);
  const double e = worst_relative_error(
      run.logits[0], testing::scalar_forward(run.oracle, run.tokens[0], testing::ScalarRope::kNeox),
      V);
  std::printf("NEOX rotation against NORM logits: %.2e\n", e);
  EXPECT_GT(e, 0.2);
}

// The output biases matter: against an oracle that drops them, the logits
// of a model that has them are far off.
TEST(ForwardOracle, OutputBiasesAreFarOutsideTheBoundWhenLeftOut) {
  OracleRun run = run_ragged(oracle_spec(tensor::DType::kF32, "llama", true), tensor::DType::kF16);
  const size_t V = static_cast<size_t>(run.oracle.n_vocab);
  for (auto& L : run.oracle.layers) L.bo.clear(), L.b_down.clear();
  const double e =
      worst_relative_error(run.logits[0], testing::scalar_forward(run.oracle, run.tokens[0]), V);
  std::printf("output biases left out: %.2e\n", e);
  EXPECT_GT(e, 0.1);
}

// The sliding window matters: against an oracle that lets the local layers
// see every position, Gemma's logits past the window are far off.
TEST(ForwardOracle, GemmaWithoutItsWindowIsFarOutsideTheBound) {
  OracleRun run = run_ragged(oracle_spec(tensor::DType::kF32, "gemma3"), tensor::DType::kF16);
  const size_t V = static_cast<size_t>(run.oracle.n_vocab);
  run.oracle.window = 1 << 20;
  const double e =
      worst_relative_error(run.logits[0], testing::scalar_forward(run.oracle, run.tokens[0]), V);
  std::printf("Gemma 3 without its window: %.2e\n", e);
  EXPECT_GT(e, 0.1);
}

}  // namespace
}  // namespace snug::model
