// The converter-style tiny models (tests/common/tiny_model.h, converter_style_spec): F32
// weights everywhere, a feed-forward width that is not a multiple of 32, special ids of -1
// and one past the vocabulary. They load, plan and run; the odd feed-forward width computes
// what the same weights zero-padded to a multiple of 32 compute; `snug run` prints one
// warning for the unused out-of-range id and generates.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "model/model.h"
#include "run_binary.h"
#include "tiny_model.h"

namespace snug::model {
namespace {

using testing::converter_style_spec;
using testing::TinyModelSpec;
using testing::TinyVocab;

// Logits of every position of `tokens`, fed as one batch to a fresh sequence.
std::vector<float> logits_of(const TinyModelSpec& spec, const std::vector<int32_t>& tokens) {
  const std::vector<uint8_t> bytes = testing::build_tiny_model(spec).to_bytes();
  memory::Ledger ledger;
  auto f = gguf::File::parse(bytes, "tiny");
  EXPECT_TRUE(f.ok()) << f.error().message;
  if (!f.ok()) return {};
  auto m = Model::from_file(std::move(f).value(), &ledger);
  EXPECT_TRUE(m.ok()) << m.error().message;
  if (!m.ok()) return {};
  const Model& model = **m;
  const auto n = static_cast<int32_t>(tokens.size());
  auto cache = kv::KvCache::create(model.kv_layout(tensor::DType::kF16), 8, &ledger);
  const WorkspaceShape shape{.max_tokens = n, .max_logits = n, .max_ctx = 64, .n_threads = 2};
  auto ws = Workspace::create(model.config(),
                              plan_workspace(model.config(), model.matrix_types(), shape), &ledger);
  EXPECT_TRUE(cache.ok() && ws.ok());
  if (!cache.ok() || !ws.ok()) return {};
  ThreadPool pool(2);
  Batch b;
  const kv::SeqId seq = cache->create_sequence();
  for (int32_t t : tokens) b.add(t, seq, true);
  const Status st = (*m)->forward(b, *cache, *ws, pool);
  EXPECT_TRUE(st.ok()) << st.error().message;
  if (!st.ok()) return {};
  return {ws->logits, ws->logits + static_cast<size_t>(n) * model.config().n_vocab};
}

TEST(ConverterFixtures, OddFeedForwardWidthEqualsZeroPaddedWidth) {
  const std::vector<int32_t> tokens = {1, 40, 7, 200, 13, 99, 256, 3, 150, 42, 11, 260};
  for (int32_t n_ff : {100, 97, 33, 1}) {
    TinyModelSpec odd = converter_style_spec(TinyVocab::kBpe);
    odd.n_ff = n_ff;
    TinyModelSpec padded = odd;
    padded.n_ff_stored = 128;
    const std::vector<float> a = logits_of(odd, tokens), b = logits_of(padded, tokens);
    ASSERT_EQ(a.size(), b.size());
    ASSERT_FALSE(a.empty());
    // Only the summation order over the feed-forward width differs: float32 rounding of
    // ~100-term sums of O(1) products, far below the effect of one lost unit (~1e-2).
    float max_diff = 0, max_abs = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      ASSERT_TRUE(std::isfinite(a[i])) << "n_ff " << n_ff << " logit " << i;
      max_diff = std::max(max_diff, std::fabs(a[i] - b[i]));
      max_abs = std::max(max_abs, std::fabs(b[i]));
    }
    EXPECT_LT(max_diff, 1e-4f * std::max(1.f, max_abs)) << "n_ff " << n_ff;
  }
}

TEST(ConverterFixtures, SnugRunWarnsOnceAndGenerates) {
  for (TinyVocab vocab : {TinyVocab::kBpe, TinyVocab::kSpm}) {
    const std::string name = vocab == TinyVocab::kBpe ? "conv-bpe.gguf" : "conv-spm.gguf";
    const std::string path = testing::write_scratch_file(
        "converter_fixture_test", name,
        testing::build_tiny_model(converter_style_spec(vocab)).to_bytes());
    const auto r = testing::run_binary(
        SNUG_BIN, "run " + path + " -p hello -n 4 --no-chat --temp 0", "converter_fixture_test");
    EXPECT_EQ(r.code, 0) << r.err;
    const std::string want = "snug: warning: '" + path + "': tokenizer.ggml.padding_token_id = " +
                             std::to_string(testing::tiny_vocab_size(converter_style_spec(vocab))) +
                             " is outside the vocabulary of " +
                             std::to_string(testing::tiny_vocab_size(converter_style_spec(vocab))) +
                             " tokens; ignored\n";
    EXPECT_NE(r.err.find(want), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(r.out.empty());
  }
}

}  // namespace
}  // namespace snug::model
