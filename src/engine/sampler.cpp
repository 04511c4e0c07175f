#include "engine/sampler.h"

#include <algorithm>
#include <cmath>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace snug::engine {

// The first index of the largest logit, NaN never chosen (as the scalar loop
// `if (l[i] > l[best]) best = i` from best = 0 gives): the maximum in
// vectors, then the first index that equals it. It runs for every sequence
// of every step (a 49152-logit vocabulary: the compare chain was 1.5% of a
// 16-stream step, on one thread while the pool's others waited).
int32_t argmax(const float* logits, int32_t n) {
  if (n <= 0 || std::isnan(logits[0])) return 0;
  float mx = logits[0];
  int32_t i = 1;
#if defined(__SSE2__)
  if (n >= 16) {
    // maxps(x, m) keeps m where x is NaN or not greater.
    __m128 m0 = _mm_set1_ps(mx), m1 = m0, m2 = m0, m3 = m0;
    for (; i + 16 <= n; i += 16) {
      m0 = _mm_max_ps(_mm_loadu_ps(logits + i), m0);
      m1 = _mm_max_ps(_mm_loadu_ps(logits + i + 4), m1);
      m2 = _mm_max_ps(_mm_loadu_ps(logits + i + 8), m2);
      m3 = _mm_max_ps(_mm_loadu_ps(logits + i + 12), m3);
    }
    alignas(16) float lanes[16];
    _mm_store_ps(lanes, m0);
    _mm_store_ps(lanes + 4, m1);
    _mm_store_ps(lanes + 8, m2);
    _mm_store_ps(lanes + 12, m3);
    for (float v : lanes) mx = v > mx ? v : mx;
  }
#endif
  for (; i < n; ++i) mx = logits[i] > mx ? logits[i] : mx;
  int32_t best = 0;
  while (!(logits[best] == mx)) ++best;  // -0 equals +0, as `>` orders them
  return best;
}

Sampler::Sampler(const SamplerParams& params, int32_t n_vocab)
    : p_(params), n_vocab_(n_vocab), rng_(params.seed) {
  cands_.reserve(static_cast<size_t>(n_vocab));
}

int32_t Sampler::sample(const float* logits, std::span<const int32_t> history) {
  const float* l = logits;
  if (p_.repeat_penalty != 1.f && !history.empty()) {
    penalised_.assign(logits, logits + n_vocab_);
    size_t start = history.size() > static_cast<size_t>(p_.repeat_last_n) && p_.repeat_last_n >= 0
                       ? history.size() - static_cast<size_t>(p_.repeat_last_n)
                       : 0;
    recent_.assign(history.begin() + static_cast<ptrdiff_t>(start), history.end());
    std::sort(recent_.begin(), recent_.end());
    recent_.erase(std::unique(recent_.begin(), recent_.end()), recent_.end());
    for (int32_t id : recent_) {
      if (id < 0 || id >= n_vocab_) continue;
      float& v = penalised_[static_cast<size_t>(id)];
      v = v > 0 ? v / p_.repeat_penalty : v * p_.repeat_penalty;
    }
    l = penalised_.data();
  }
  if (p_.temperature <= 0.f) return argmax(l, n_vocab_);

  cands_.clear();
  for (int32_t i = 0; i < n_vocab_; ++i) cands_.push_back({i, l[i], 0.f});
  auto by_logit = [](const Cand& a, const Cand& b) { return a.logit > b.logit; };
  size_t k = cands_.size();
  if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < k) k = static_cast<size_t>(p_.top_k);
  std::partial_sort(cands_.begin(), cands_.begin() + static_cast<ptrdiff_t>(k), cands_.end(),
                    by_logit);
  cands_.resize(k);

  const float mx = cands_[0].logit;
  double sum = 0;
  for (auto& c : cands_) {
    c.p = std::exp((c.logit - mx) / p_.temperature);
    sum += c.p;
  }
  for (auto& c : cands_) c.p = static_cast<float>(c.p / sum);

  if (p_.top_p < 1.f) {
    double cum = 0;
    size_t keep = cands_.size();
    for (size_t i = 0; i < cands_.size(); ++i) {
      cum += cands_[i].p;
      if (cum >= p_.top_p) {
        keep = i + 1;
        break;
      }
    }
    cands_.resize(keep);
  }
  if (p_.min_p > 0.f) {
    const float floor = cands_[0].p * p_.min_p;
    size_t keep = 1;
    while (keep < cands_.size() && cands_[keep].p >= floor) ++keep;
    cands_.resize(keep);
  }
  double total = 0;
  for (const auto& c : cands_) total += c.p;
  std::uniform_real_distribution<double> u(0.0, total);
  double r = u(rng_);
  for (const auto& c : cands_) {
    r -= c.p;
    if (r <= 0) return c.id;
  }
  return cands_.back().id;
}

}  // namespace snug::engine
