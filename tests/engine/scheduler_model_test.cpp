// Batch invariance on the real model (SmolLM2-135M-Instruct Q4_1, whose 8-bit
// activations turn a one-ulp difference into a different token): 32 requests
// of mixed prompt lengths served together, in small prompt chunks, and again
// through a KV pool so small that preemption must happen, each give the
// tokens and the bit-identical logprobs of the same request run alone. The
// same holds with a quantized KV cache (q8_0 keys, q4_0 values: both row
// formats of the grouped quantized attention kernel).
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "engine/scheduler.h"
#include "required_file.h"
#include "scheduler_testing.h"
#include "text/tokenizer.h"

namespace snug::engine {
namespace {

constexpr const char* kModel = SNUG_SOURCE_DIR "/models/SmolLM2-135M-Instruct.Q4_1.gguf";

struct Case {
  std::vector<int32_t> prompt;
  testing::Alone want;
};

void serve_all(const model::Model& m, const text::Tokenizer& tok, const SchedulerOptions& o,
               const std::vector<Case>& cases, int n_gen, uint64_t* preemptions) {
  memory::Ledger ledger;
  auto s = Scheduler::create(m, tok, o, &ledger);
  ASSERT_TRUE(s.ok()) << s.error().message;
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const Case& c : cases) {
    RequestParams p;
    p.prompt = c.prompt;
    p.max_tokens = n_gen;
    p.sampler.temperature = 0;
    p.ignore_eos = true;
    p.logprobs = 0;
    Submission sub = (*s)->submit(p);
    ASSERT_TRUE(sub.stream) << sub.message;
    streams.push_back(sub.stream);
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    testing::Outcome got = testing::collect(*streams[i], std::chrono::seconds(600));
    ASSERT_TRUE(got.finished) << "request " << i;
    EXPECT_EQ(got.tokens, cases[i].want.tokens)
        << "request " << i << " (" << cases[i].prompt.size() << " prompt tokens)";
    EXPECT_EQ(got.logprobs, cases[i].want.logprobs)
        << "request " << i << ": same tokens, different arithmetic";
  }
  *preemptions = (*s)->metrics().preemptions;
}

// The model and its tokenizer, or null after a failed assertion.
struct Loaded {
  memory::Ledger ledger;  // outlives the model
  std::unique_ptr<model::Model> model;
  text::Tokenizer tok;
};
std::unique_ptr<Loaded> load_model() {
  auto f = std::make_unique<Loaded>();
  auto m = model::Model::load(kModel, &f->ledger);
  EXPECT_TRUE(m.ok()) << m.error().message;
  if (!m.ok()) return nullptr;
  f->model = std::move(*m);
  auto tok = text::Tokenizer::from_gguf(f->model->file());
  EXPECT_TRUE(tok.ok()) << tok.error().message;
  if (!tok.ok()) return nullptr;
  f->tok = std::move(*tok);
  return f;
}

// Requests in prompt chunks of 80 tokens beside the decodes, at most max_seqs
// at once, in a pool of 8 x 512 tokens.
SchedulerOptions chunked(int32_t max_seqs) {
  SchedulerOptions o;
  o.n_ctx = 512;
  o.n_parallel = 8;
  o.max_seqs = max_seqs;
  o.batch_tokens = 80;
  o.n_threads = 2;
  return o;
}

// n requests of mixed prompt lengths (3 to 242 tokens of the reference
// text), each with its n_gen greedy tokens run alone with these cache types.
std::vector<Case> mixed_cases(const model::Model& m, const text::Tokenizer& tok, int n, int n_gen,
                              tensor::DType k_type, tensor::DType v_type) {
  std::ifstream in(SNUG_SOURCE_DIR "/tests/data/reference.txt");
  std::stringstream text;
  text << in.rdbuf();
  const std::vector<int32_t> all =
      tok.encode(text.str(), /*add_special=*/false, /*parse_special=*/false);
  EXPECT_GT(all.size(), 400u);
  std::vector<Case> cases;
  for (int i = 0; i < n && all.size() > 400u; ++i) {
    const size_t start = static_cast<size_t>(i * 7) % 64;
    const size_t len = 3 + static_cast<size_t>(i * 37) % 240;
    Case c;
    c.prompt.assign(all.begin() + static_cast<ptrdiff_t>(start),
                    all.begin() + static_cast<ptrdiff_t>(start + len));
    c.want = testing::alone_with_logprobs(m, c.prompt, n_gen, 512, k_type, v_type);
    cases.push_back(std::move(c));
  }
  return cases;
}

TEST(SchedulerModel, ConcurrentChunkedAndPreemptedRequestsEqualEachAlone) {
  if (!snug::testing::have_file(kModel, "scripts/fetch-models")) return;
  const std::unique_ptr<Loaded> f = load_model();
  ASSERT_TRUE(f);
  const int n_gen = 24;
  const std::vector<Case> cases =
      mixed_cases(*f->model, f->tok, 32, n_gen, tensor::DType::kF16, tensor::DType::kF16);
  SchedulerOptions o = chunked(32);
  uint64_t preemptions = 0;
  serve_all(*f->model, f->tok, o, cases, n_gen, &preemptions);
  // A pool of 512 tokens for 32 requests of up to 266: preemption must happen.
  o.n_parallel = 1;
  o.prefix_cache = false;
  o.admission = SchedulerOptions::Admission::kPromptOnly;
  serve_all(*f->model, f->tok, o, cases, n_gen, &preemptions);
  EXPECT_GT(preemptions, 0u);
  // Reserving admission: the same requests through the same pool wait their
  // turn instead, and are never preempted.
  o.admission = SchedulerOptions::Admission::kReserve;
  serve_all(*f->model, f->tok, o, cases, n_gen, &preemptions);
  EXPECT_EQ(preemptions, 0u);
}

TEST(SchedulerModel, QuantizedCacheRequestsEqualEachAloneToo) {
  if (!snug::testing::have_file(kModel, "scripts/fetch-models")) return;
  const std::unique_ptr<Loaded> f = load_model();
  ASSERT_TRUE(f);
  const int n_gen = 16;
  const std::vector<Case> cases =
      mixed_cases(*f->model, f->tok, 16, n_gen, tensor::DType::kQ8_0, tensor::DType::kQ4_0);
  SchedulerOptions o = chunked(16);
  o.k_type = tensor::DType::kQ8_0;
  o.v_type = tensor::DType::kQ4_0;
  uint64_t preemptions = 0;
  serve_all(*f->model, f->tok, o, cases, n_gen, &preemptions);
}

}  // namespace
}  // namespace snug::engine
