// Sessions with a quantized KV cache against the f16 one on the same tiny
// model: the logits after a prompt stay close (q8_0 within 0.2% of the
// logits' spread, measured ~0.01%; q4_0 within 1%, measured ~0.1%), and greedy
// continuations agree (q8_0 on every one of 24 tokens, q4_0 on at least half).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/session.h"
#include "tiny_model.h"

namespace snug::engine {
namespace {

using tensor::DType;

struct Outcome {
  std::vector<float> prompt_logits;
  std::vector<int32_t> greedy;
};

Outcome run(const model::Model& m, DType k, DType v, const std::vector<int32_t>& prompt,
            int n_gen) {
  memory::Ledger ledger;
  SessionOptions o;
  o.n_ctx = 128;
  o.n_batch = 16;  // several forward passes for the prompt
  o.n_threads = 2;
  o.k_type = k;
  o.v_type = v;
  auto s = Session::create(m, o, &ledger);
  EXPECT_TRUE(s.ok()) << s.error().message;
  Outcome r;
  auto logits = (*s)->feed(prompt);
  EXPECT_TRUE(logits.ok());
  const int32_t n_vocab = m.config().n_vocab;
  r.prompt_logits.assign(*logits, *logits + n_vocab);
  for (int i = 0; i < n_gen; ++i) {
    const auto tok = static_cast<int32_t>(std::max_element(*logits, *logits + n_vocab) - *logits);
    r.greedy.push_back(tok);
    logits = (*s)->feed(std::span<const int32_t>(&tok, 1));
    EXPECT_TRUE(logits.ok());
  }
  return r;
}

TEST(SessionKv, QuantizedCachesFollowTheF16One) {
  testing::TinyModelSpec spec;
  spec.n_embd = 128;  // heads of 32
  memory::Ledger ledger;
  auto m = model::Model::load(testing::write_tiny_model("session_kv.gguf", spec), &ledger);
  ASSERT_TRUE(m.ok()) << m.error().message;
  std::vector<int32_t> prompt;
  for (int i = 0; i < 40; ++i) prompt.push_back((i * 37 + 11) % 256);
  const int n_gen = 24;
  const Outcome base = run(**m, DType::kF16, DType::kF16, prompt, n_gen);
  float lo = base.prompt_logits[0], hi = lo;
  for (float x : base.prompt_logits) lo = std::min(lo, x), hi = std::max(hi, x);
  const float spread = hi - lo;
  struct Want {
    DType k, v;
    float logit_tol;  // fraction of the spread
    int min_equal;    // greedy tokens equal to f16's
  };
  for (const Want& w : {Want{DType::kQ8_0, DType::kQ8_0, 0.002f, n_gen},
                        Want{DType::kQ8_0, DType::kF16, 0.002f, n_gen},
                        Want{DType::kF16, DType::kQ8_0, 0.002f, n_gen},
                        Want{DType::kQ4_0, DType::kQ4_0, 0.01f, n_gen / 2},
                        Want{DType::kQ8_0, DType::kQ4_0, 0.01f, n_gen / 2}}) {
    const Outcome r = run(**m, w.k, w.v, prompt, n_gen);
    float max_diff = 0;
    for (size_t i = 0; i < r.prompt_logits.size(); ++i)
      max_diff = std::max(max_diff, std::fabs(r.prompt_logits[i] - base.prompt_logits[i]));
    int equal = 0;
    while (equal < n_gen && r.greedy[equal] == base.greedy[equal]) ++equal;
    std::printf(
        "K %s V %s: max |logit diff| %.4f of spread %.3f; first %d of %d greedy tokens equal\n",
        std::string(tensor::dtype_name(w.k)).c_str(), std::string(tensor::dtype_name(w.v)).c_str(),
        max_diff, spread, equal, n_gen);
    EXPECT_LE(max_diff, w.logit_tol * spread);
    EXPECT_GE(equal, w.min_equal);
  }
}

}  // namespace
}  // namespace snug::engine
