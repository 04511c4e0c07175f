// plan::one_shot_context: the context a run with -n takes, and why.
#include <gtest/gtest.h>

#include "plan/fit.h"

namespace snug::plan {
namespace {

TEST(OneShotContext, PromptPlusNRoundedUpToWholeBlocks) {
  ContextChoice c = one_shot_context(39, 96, 16, 8192, 8192);
  EXPECT_EQ(c.n_ctx, 144);
  EXPECT_EQ(c.reason, "prompt 39 + -n 96, rounded to blocks of 16");
  EXPECT_EQ(one_shot_context(16, 16, 16, 8192, 8192).n_ctx, 32);  // already whole blocks
}

TEST(OneShotContext, NoTokensToGenerateStillEvaluatesThePrompt) {
  ContextChoice c = one_shot_context(32, 0, 16, 8192, 8192);
  EXPECT_EQ(c.n_ctx, 48);  // the prompt must be shorter than the context
  EXPECT_EQ(c.reason, "prompt 32 + -n 0 + 1, rounded to blocks of 16");
}

TEST(OneShotContext, NeverAboveTheTrainedContext) {
  ContextChoice c = one_shot_context(39, 9000, 16, 8192, 8192);
  EXPECT_EQ(c.n_ctx, 8192);
  EXPECT_EQ(c.reason, "prompt 39 + -n 9000 = 9039, capped at the model's trained context");
  // A trained context that is not a whole number of blocks.
  EXPECT_EQ(one_shot_context(100, 100, 16, 200, 200).n_ctx, 200);
}

TEST(OneShotContext, NeverAboveWhatFitsTheBudget) {
  ContextChoice c = one_shot_context(39, 3000, 16, 8192, 2048);
  EXPECT_EQ(c.n_ctx, 2048);
  EXPECT_EQ(c.reason, "prompt 39 + -n 3000 = 3039, capped at the largest that fits the budget");
}

}  // namespace
}  // namespace snug::plan
