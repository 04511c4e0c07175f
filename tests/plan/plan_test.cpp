// The planner against the engine: the sizes it prints are the sizes a session
// allocates; the fit chooses the largest context under a budget and refuses
// with what would fit; a header-only 70B Llama is planned in milliseconds; a
// header whose sizes overflow 64 bits is refused.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>

#include "base/bytes.h"
#include "engine/session.h"
#include "llama_header.h"
#include "memory/budget.h"
#include "plan/fit.h"
#include "tiny_model.h"

namespace snug {
namespace {

using tensor::DType;

gguf::File open_header(const std::string& path) {
  auto f = gguf::File::open(path, {.allow_missing_data = true});
  EXPECT_TRUE(f.ok()) << f.error().message;
  return std::move(f).value();
}

TEST(Plan, SessionAllocatesExactlyWhatThePlanSays) {
  const std::string path = testing::write_tiny_model("plan_tiny.gguf");
  memory::Ledger ledger;
  auto m = model::Model::load(path, &ledger);
  ASSERT_TRUE(m.ok()) << m.error().message;
  auto fp = plan::plan_model((*m)->file());
  ASSERT_TRUE(fp.ok()) << fp.error().message;
  EXPECT_EQ(fp->weights_mapped, ledger.current(memory::Category::kWeightsMapped));
  EXPECT_EQ(fp->matrix_types, (*m)->matrix_types());

  engine::SessionOptions o;
  o.n_ctx = 200;
  o.n_batch = 64;
  o.n_threads = 3;
  auto s = engine::Session::create(**m, o, &ledger);
  ASSERT_TRUE(s.ok()) << s.error().message;
  plan::SessionShape shape;
  shape.n_ctx = 200;
  shape.n_batch = 64;
  shape.n_threads = 3;
  auto p = plan::plan_memory(*fp, shape);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->kv, ledger.current(memory::Category::kKvCache));
  EXPECT_EQ(p->workspace, ledger.current(memory::Category::kScratch));
  EXPECT_EQ(p->session.kv_blocks, (*s)->cache().total_blocks());
}

TEST(Plan, SessionReservesFromTheBudgetBeforeAllocating) {
  const std::string path = testing::write_tiny_model("plan_tiny2.gguf");
  memory::Ledger ledger;
  auto m = model::Model::load(path, &ledger);
  ASSERT_TRUE(m.ok());
  engine::SessionOptions o;
  o.n_ctx = 256;
  o.n_threads = 1;
  memory::Budget tiny(4096);
  auto refused = engine::Session::create(**m, o, &ledger, &tiny);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("budget"), std::string::npos) << refused.error().message;
  EXPECT_EQ(ledger.current(memory::Category::kKvCache), 0u);
  EXPECT_EQ(ledger.current(memory::Category::kScratch), 0u);
  EXPECT_EQ(tiny.used(), 0u);

  // Without a context, the session takes the largest that its share of the budget holds.
  memory::Budget some(600 * 1024);
  o.n_ctx = 0;
  auto fitted = engine::Session::create(**m, o, &ledger, &some);
  ASSERT_TRUE(fitted.ok()) << fitted.error().message;
  EXPECT_GT((*fitted)->n_ctx(), 0);
  EXPECT_LE((*fitted)->n_ctx(), 256);
  EXPECT_LE(some.used(), some.limit());
  EXPECT_EQ(some.used(), ledger.current(memory::Category::kKvCache) +
                             ledger.current(memory::Category::kScratch));
}

TEST(Plan, SessionKvBytesEqualThePlanForEveryKvTypePair) {
  testing::TinyModelSpec spec;
  spec.n_embd = 128;  // heads of 32: a whole q8_0 / q4_0 block
  const std::string path = testing::write_tiny_model("plan_tiny_kv.gguf", spec);
  memory::Ledger weights_ledger;
  auto m = model::Model::load(path, &weights_ledger);
  ASSERT_TRUE(m.ok()) << m.error().message;
  auto fp = plan::plan_model((*m)->file());
  ASSERT_TRUE(fp.ok()) << fp.error().message;
  uint64_t f16_bytes = 0;
  for (DType kt : plan::kKvTypes) {
    for (DType vt : plan::kKvTypes) {
      SCOPED_TRACE(plan::kv_type_label(kt, vt));
      memory::Ledger ledger;
      engine::SessionOptions o;
      o.n_ctx = 100;
      o.n_threads = 2;
      o.k_type = kt;
      o.v_type = vt;
      auto s = engine::Session::create(**m, o, &ledger);
      ASSERT_TRUE(s.ok()) << s.error().message;
      plan::SessionShape shape;
      shape.n_ctx = 100;
      shape.n_threads = 2;
      shape.k_type = kt;
      shape.v_type = vt;
      auto p = plan::plan_memory(*fp, shape);
      ASSERT_TRUE(p.ok()) << p.error().message;
      EXPECT_EQ(p->kv, ledger.current(memory::Category::kKvCache));
      EXPECT_EQ(p->workspace, ledger.current(memory::Category::kScratch));
      EXPECT_EQ((*s)->cache().layout().k_type, kt);
      EXPECT_EQ((*s)->cache().layout().v_type, vt);
      // 7 blocks of 16 tokens, 2 layers x 2 KV heads, rows of 32 elements.
      const uint64_t row_k = *tensor::row_bytes(kt, 32), row_v = *tensor::row_bytes(vt, 32);
      EXPECT_EQ(p->kv, 7u * 16u * 2u * 2u * (row_k + row_v));
      if (kt == DType::kF16 && vt == DType::kF16) f16_bytes = p->kv;
    }
  }
  plan::SessionShape q8;
  q8.n_ctx = 100;
  q8.set_kv_type(DType::kQ8_0);
  EXPECT_EQ(plan::plan_memory(*fp, q8)->kv * 64, f16_bytes * 34);  // 34 bytes per 32 vs 64
}

TEST(Plan, RefusesKvTypesTheHeadSizeCannotHold) {
  memory::Ledger ledger;
  auto m = model::Model::load(testing::write_tiny_model("plan_tiny3.gguf"), &ledger);
  ASSERT_TRUE(m.ok());
  ASSERT_EQ((*m)->config().head_dim_k, 16);  // half a q8_0 block
  engine::SessionOptions o;
  o.n_ctx = 64;
  o.k_type = DType::kQ8_0;
  auto s = engine::Session::create(**m, o, &ledger);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("K cache type q8_0 needs a head size that is a multiple of 32"),
            std::string::npos)
      << s.error().message;
  EXPECT_EQ(ledger.current(memory::Category::kKvCache), 0u);
  // The same refusal when the context is left to the budget.
  memory::Budget budget(64 * kMiB);
  o.n_ctx = 0;
  o.k_type = DType::kF16;
  o.v_type = DType::kQ4_0;
  auto fitted = engine::Session::create(**m, o, &ledger, &budget);
  ASSERT_FALSE(fitted.ok());
  EXPECT_NE(fitted.error().message.find("V cache type q4_0"), std::string::npos);
  // And from the planner.
  auto fp = plan::plan_model((*m)->file());
  ASSERT_TRUE(fp.ok());
  plan::SessionShape shape;
  shape.n_ctx = 64;
  shape.set_kv_type(DType::kQ4_0);
  auto p = plan::plan_memory(*fp, shape);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.error().message.find("multiple of 32"), std::string::npos);
  auto f = plan::fit(*fp, {shape, 64 * kMiB});
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.error().message.find("multiple of 32"), std::string::npos) << f.error().message;

  EXPECT_EQ(*plan::parse_kv_type("q4_0"), DType::kQ4_0);
  EXPECT_FALSE(plan::parse_kv_type("q5_1").has_value());
  for (DType t : plan::kKvTypes) EXPECT_TRUE(plan::engine_supports_kv_type(t));
  EXPECT_EQ(plan::kv_type_label(DType::kQ8_0, DType::kF16), "q8_0/f16");
  EXPECT_EQ(plan::kv_type_label(DType::kQ4_0, DType::kQ4_0), "q4_0");
}

TEST(Plan, FitsTheLargestContextAndRefusesWithWhatFits) {
  testing::TinyModelSpec spec;
  spec.n_ctx = 2048;
  spec.n_embd = 128;  // heads of 32: a whole q8_0 / q4_0 block
  const gguf::File f = open_header(testing::write_tiny_model("plan_tiny4.gguf", spec));
  auto fp = plan::plan_model(f);
  ASSERT_TRUE(fp.ok());
  plan::SessionShape shape;
  shape.n_ctx = 2048;
  const uint64_t full = plan::plan_memory(*fp, shape)->predicted_peak_rss;
  // Roomy budget: the trained context.
  auto roomy = plan::fit(*fp, {{.n_ctx = 0}, full + kMiB});
  ASSERT_TRUE(roomy.ok()) << roomy.error().message;
  EXPECT_EQ(roomy->plan.session.shape.n_ctx, 2048);
  EXPECT_TRUE(roomy->auto_context);
  // A budget that holds part of the KV cache: a shorter context, and never over budget.
  const uint64_t budget = full - 1000 * roomy->plan.session.kv.bytes_per_token();
  auto part = plan::fit(*fp, {{.n_ctx = 0}, budget});
  ASSERT_TRUE(part.ok()) << part.error().message;
  EXPECT_EQ(part->plan.session.shape.n_ctx, 1024);  // ~1048 fit, rounded down to 256s
  EXPECT_LE(part->plan.predicted_peak_rss, budget);
  // The same context asked for explicitly is refused, naming need, budget and alternatives.
  auto refused = plan::fit(*fp, {{.n_ctx = 2048}, budget});
  ASSERT_FALSE(refused.ok());
  const std::string& msg = refused.error().message;
  EXPECT_NE(msg.find("needs"), std::string::npos) << msg;
  EXPECT_NE(msg.find("budget is"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--ctx "), std::string::npos) << msg;
  EXPECT_NE(msg.find("--kv-type q8_0"), std::string::npos) << msg;
  // Beyond the trained context.
  auto beyond = plan::fit(*fp, {{.n_ctx = 100000}, full});
  ASSERT_FALSE(beyond.ok());
  EXPECT_NE(beyond.error().message.find("trained context"), std::string::npos);
}

TEST(Plan, DefaultBudgetKeepsHeadroom) {
  MemoryLimits l;
  l.physical_total = 16 * kGiB;
  l.physical_available = 16 * kGiB;
  auto b = plan::default_budget(l, 10 * kMiB);
  EXPECT_EQ(b.headroom, kGiB);  // 10%, capped at 1 GiB
  EXPECT_EQ(b.bytes, 16 * kGiB + 10 * kMiB - kGiB);
  l.cgroup_limit = 300 * kMiB;
  l.cgroup_usage = 20 * kMiB;
  l.cgroup_reclaimable = 10 * kMiB;
  l.cgroup_version = 2;
  b = plan::default_budget(l, 0);
  EXPECT_EQ(b.available, 290 * kMiB);
  EXPECT_EQ(b.headroom, 32 * kMiB);  // 10% of 290 MiB is below the 32 MiB floor
  EXPECT_EQ(b.bytes, 258 * kMiB);
  EXPECT_NE(b.source.find("cgroup v2"), std::string::npos);
}

TEST(Plan, HeaderOnly70BInMilliseconds) {
  const std::string path = testing::write_llama_header("plan_70b.gguf");
  EXPECT_LT(std::filesystem::file_size(path), 1u << 20);
  const auto t0 = std::chrono::steady_clock::now();
  const gguf::File f = open_header(path);
  auto fp = plan::plan_model(f);
  ASSERT_TRUE(fp.ok()) << fp.error().message;
  auto fitted = plan::fit(*fp, {{.n_ctx = 0, .n_threads = 16}, 64 * kGiB});
  [[maybe_unused]] const double ms =  // not bounded under the sanitizers (below)
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(fitted.ok()) << fitted.error().message;
  EXPECT_FALSE(fp->has_data);
  EXPECT_EQ(fp->tokenizer_note, "no tokenizer in the file");
  // 80 layers x 8 KV heads x (128 + 128) f16 elements = 320 KiB per token.
  EXPECT_EQ(fitted->plan.session.kv.bytes_per_token(), 327680u);
  EXPECT_GT(fp->weights_mapped, 39 * kGiB);
  EXPECT_LT(fp->weights_mapped, 45 * kGiB);
  EXPECT_LT(fitted->plan.session.shape.n_ctx, 131072);
  EXPECT_LE(fitted->plan.predicted_peak_rss, 64 * kGiB);
#ifndef SNUG_SANITIZE
  EXPECT_LT(ms, 100.0);
#endif
  // 16 GiB holds not even the weights: the refusal says so and names a smaller weight type.
  auto refused = plan::fit(*fp, {{.n_ctx = 0}, 16 * kGiB});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("the weights take"), std::string::npos)
      << refused.error().message;
}

TEST(Plan, SizesThatOverflowAreRefused) {
  // 512 layers x 4096 KV heads x 512-wide f16 heads: 4 GiB per token, within
  // read_config's bounds; 2^17 tokens x 2^16 sequences of it overflows 64 bits.
  const gguf::File f =
      open_header(testing::write_llama_header("plan_overflow.gguf", 512, 4096, 512, 4096, 256));
  auto fp = plan::plan_model(f);
  ASSERT_TRUE(fp.ok()) << fp.error().message;
  plan::SessionShape s;
  s.n_ctx = 131072;
  s.n_parallel = 65536;
  auto p = plan::plan_memory(*fp, s);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.error().message.find("overflows"), std::string::npos) << p.error().message;
}

}  // namespace
}  // namespace snug
