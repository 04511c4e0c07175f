#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <random>

#include "engine/sampler.h"

namespace snug::engine {
namespace {

TEST(Sampler, GreedyPicksArgmax) {
  std::vector<float> l = {0.1f, 3.f, 2.f, -1.f};
  Sampler s({.temperature = 0.f}, 4);
  EXPECT_EQ(s.sample(l.data(), {}), 1);
}

// argmax's vector scan against the scalar rule it replaces (first index of
// the largest; NaN never chosen unless first; -0 and +0 equal), over lengths
// around the 16-wide steps, with ties, NaN, infinities and signed zeros.
TEST(Sampler, ArgmaxMatchesTheScalarRule) {
  const auto scalar = [](const std::vector<float>& l) {
    int32_t best = 0;
    for (int32_t i = 1; i < static_cast<int32_t>(l.size()); ++i) {
      if (l[static_cast<size_t>(i)] > l[static_cast<size_t>(best)]) best = i;
    }
    return best;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> small(-3, 3);
  std::uniform_int_distribution<int> kind(0, 19);
  for (int n : {1, 2, 15, 16, 17, 31, 32, 33, 100, 49152}) {
    for (int rep = 0; rep < 40; ++rep) {
      std::vector<float> l(static_cast<size_t>(n));
      for (float& v : l) {
        const int k = kind(rng);
        v = k == 0 ? nan : k == 1 ? -inf : k == 2 ? -0.f : k == 3 ? 0.f : float(small(rng));
      }
      if (rep % 4 == 1) l[static_cast<size_t>(n - 1)] = inf;
      if (rep % 4 == 2) l[0] = nan;
      if (rep % 4 == 3) std::fill(l.begin(), l.end(), rep % 8 == 3 ? -0.f : nan);
      ASSERT_EQ(argmax(l.data(), n), scalar(l)) << "n " << n << " rep " << rep;
    }
  }
}

TEST(Sampler, RepetitionPenaltyDemotesSeenTokens) {
  std::vector<float> l = {0.f, 3.f, 2.9f, -1.f};
  Sampler s({.temperature = 0.f, .repeat_penalty = 1.5f}, 4);
  std::vector<int32_t> hist = {1, 1, 1};
  EXPECT_EQ(s.sample(l.data(), hist), 2);
}

TEST(Sampler, TopKOneIsGreedy) {
  std::vector<float> l = {0.f, 1.f, 5.f, 4.9f};
  Sampler s({.temperature = 1.f, .top_k = 1, .top_p = 1.f, .min_p = 0.f}, 4);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(s.sample(l.data(), {}), 2);
}

TEST(Sampler, SeedMakesDrawsRepeatable) {
  std::vector<float> l(100);
  for (int i = 0; i < 100; ++i) l[i] = static_cast<float>(i % 7);
  SamplerParams p{.temperature = 1.f, .top_k = 0, .top_p = 1.f, .min_p = 0.f, .seed = 42};
  Sampler a(p, 100), b(p, 100);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(a.sample(l.data(), {}), b.sample(l.data(), {}));
}

TEST(Sampler, MinPAndTopPCutTheTail) {
  // p ~ [0.64, 0.24, 0.09, 0.03]: min_p 0.2 keeps the first two, top_p 0.5 only the first.
  std::vector<float> l = {3.f, 2.f, 1.f, 0.f};
  std::map<int, int> seen;
  Sampler s({.temperature = 1.f, .top_k = 0, .top_p = 1.f, .min_p = 0.2f, .seed = 7}, 4);
  for (int i = 0; i < 400; ++i) ++seen[s.sample(l.data(), {})];
  EXPECT_EQ(seen.count(2) + seen.count(3), 0u);
  EXPECT_GT(seen[1], 0);
  Sampler t({.temperature = 1.f, .top_k = 0, .top_p = 0.5f, .min_p = 0.f, .seed = 7}, 4);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(t.sample(l.data(), {}), 0);
}

}  // namespace
}  // namespace snug::engine
