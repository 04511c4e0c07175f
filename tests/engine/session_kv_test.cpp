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

// A chat turn on a sliding-window model: the next prompt parts from the
// history a little before its end (within the window slack) and reuses the
// cache; parting from far back, where the windowed layers gave their blocks
// back, it is computed from the start. Either way the logits are those of a
// fresh session fed the whole prompt.
TEST(SessionKv, SlidingWindowTurnsReuseWhatTheWindowKept) {
  testing::TinyModelSpec spec;
  spec.architecture = "gemma3";
  spec.n_layers = 6;
  spec.sliding_window = 8;
  spec.n_ctx = 512;
  memory::Ledger ledger;
  auto m = model::Model::load(testing::write_tiny_model("session_swa.gguf", spec), &ledger);
  ASSERT_TRUE(m.ok()) << m.error().message;
  SessionOptions o;
  o.n_ctx = 512;
  o.n_batch = 32;
  o.n_threads = 2;
  auto fresh_logits = [&](const std::vector<int32_t>& tokens) {
    auto s = Session::create(**m, o, &ledger);
    EXPECT_TRUE(s.ok());
    auto l = (*s)->feed(tokens);
    EXPECT_TRUE(l.ok());
    return std::vector<float>(*l, *l + (*m)->config().n_vocab);
  };
  auto s = Session::create(**m, o, &ledger);
  ASSERT_TRUE(s.ok()) << s.error().message;
  const int32_t slack = (*s)->plan().kv.window_slack;
  ASSERT_GT(slack, 0);
  std::vector<int32_t> history;
  for (int i = 0; i < 400; ++i) history.push_back((i * 37 + 11) % 256);
  ASSERT_TRUE((*s)->feed(history).ok());
  for (int32_t back : {slack / 2, slack + 40}) {
    SCOPED_TRACE(back);
    std::vector<int32_t> turn((*s)->history().begin(), (*s)->history().end() - back);
    for (int i = 0; i < 20; ++i) turn.push_back((i * 13 + back) % 256);
    const int32_t kept = (*s)->truncate((*s)->common_prefix(turn));
    EXPECT_EQ(kept, back < slack ? static_cast<int32_t>(turn.size()) - 20 : 0);
    auto l = (*s)->feed(std::span<const int32_t>(turn).subspan(static_cast<size_t>(kept)));
    ASSERT_TRUE(l.ok()) << l.error().message;
    EXPECT_EQ(std::vector<float>(*l, *l + (*m)->config().n_vocab), fresh_logits(turn));
  }
}

}  // namespace
}  // namespace snug::engine
