#include "scheduler_testing.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <span>

#include "engine/sampler.h"
#include "engine/session.h"

namespace snug::engine::testing {

float logprob_of(const float* logits, int32_t n, int32_t id) {
  float mx = -INFINITY;
  for (int32_t i = 0; i < n; ++i) mx = std::max(mx, logits[i]);
  double sum = 0;
  for (int32_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(logits[i] - mx));
  return static_cast<float>(static_cast<double>(logits[id]) -
                            (static_cast<double>(mx) + std::log(sum)));
}

Alone alone_with_logprobs(const model::Model& m, const std::vector<int32_t>& prompt, int n,
                          int32_t n_ctx, tensor::DType k_type, tensor::DType v_type) {
  memory::Ledger ledger;
  SessionOptions o;
  o.n_ctx = n_ctx;
  o.k_type = k_type;
  o.v_type = v_type;
  o.n_threads = 1;
  auto s = Session::create(m, o, &ledger);
  EXPECT_TRUE(s.ok()) << s.error().message;
  Alone a;
  if (!s.ok()) return a;
  const int32_t nv = m.config().n_vocab;
  auto logits = (*s)->feed(prompt);
  for (int i = 0; i < n && logits.ok(); ++i) {
    const int32_t tok = argmax(*logits, nv);
    a.tokens.push_back(tok);
    a.logprobs.push_back(logprob_of(*logits, nv, tok));
    logits = (*s)->feed(std::span<const int32_t>(&tok, 1), /*generated=*/true);
  }
  EXPECT_TRUE(logits.ok());
  return a;
}

Outcome collect(RequestStream& s, std::chrono::milliseconds limit) {
  Outcome o;
  const auto end = std::chrono::steady_clock::now() + limit;
  RequestStream::Event e;
  while (std::chrono::steady_clock::now() < end) {
    if (!s.next(&e, std::chrono::milliseconds(100))) continue;
    if (e.token) {
      o.tokens.push_back(e.token->id);
      o.logprobs.push_back(e.token->logprob);
      o.text += e.token->text;
    } else {
      o.text += e.finish->text;
      o.fin = *e.finish;
      o.finished = true;
      break;
    }
  }
  return o;
}

}  // namespace snug::engine::testing
