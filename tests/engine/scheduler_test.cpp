// The continuous-batching scheduler on tiny models: batch invariance (every
// request's greedy tokens equal the same request run alone through a Session,
// whatever the concurrency, the chunking, preemptions or prefix-cache hits),
// admission and preemption under a small KV pool, the prefix cache and its
// per-scope salt, cancellation, timeouts, the bounded queue and bad requests.
#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <thread>

#include "engine/generate.h"
#include "engine/session.h"
#include "scheduler_testing.h"
#include "tiny_model.h"

namespace snug::engine {
namespace {

using testing::alone_with_logprobs;
using testing::collect;
using testing::Outcome;

using namespace std::chrono_literals;
using tensor::DType;

TEST(RequestStream, AZeroTimeoutTakesWhatIsThereAndOtherwiseReturnsAtOnce) {
  RequestStream s(7);
  RequestStream::Event e;
  EXPECT_FALSE(s.next(&e, 0ms));
  s.push({TokenEvent{42, "a", 0.f, {}}, std::nullopt});
  s.push({std::nullopt, Finish{}});
  ASSERT_TRUE(s.next(&e, 0ms));
  ASSERT_TRUE(e.token.has_value());
  EXPECT_EQ(e.token->id, 42);
  ASSERT_TRUE(s.next(&e, 0ms));
  EXPECT_TRUE(e.finish.has_value());
  EXPECT_FALSE(s.next(&e, 0ms));
  EXPECT_FALSE(s.next(&e, 5ms));  // a real wait that times out
}

struct Fixture {
  memory::Ledger ledger;
  std::unique_ptr<model::Model> model;
  std::unique_ptr<text::Tokenizer> tok;
};

// `arch` "gemma3": twelve layers, ten of them windowed over the last 8
// positions (two layer groups of each kind per block), so prompts of up to
// 70 tokens leave most of the window behind.
std::unique_ptr<Fixture> load(DType type, const char* name, const char* arch = "llama") {
  auto f = std::make_unique<Fixture>();
  snug::testing::TinyModelSpec spec;
  spec.architecture = arch;
  if (spec.architecture == "gemma3") {
    spec.n_layers = 12;
    spec.sliding_window = 8;
  }
  spec.matrix_type = type;
  if (tensor::info(type).block_size == 256) spec.n_embd = spec.n_ff = 256;  // K-quant super-blocks
  spec.qk_scale = 4.f;  // attention that depends on position, so order matters
  spec.n_ctx = 512;
  auto m = model::Model::load(snug::testing::write_tiny_model(name, spec), &f->ledger);
  EXPECT_TRUE(m.ok()) << m.error().message;
  if (!m.ok()) return nullptr;
  f->model = std::move(*m);
  auto t = text::Tokenizer::from_gguf(f->model->file());
  EXPECT_TRUE(t.ok()) << t.error().message;
  if (!t.ok()) return nullptr;
  f->tok = std::make_unique<text::Tokenizer>(std::move(*t));
  return f;
}

std::vector<int32_t> make_prompt(int len, int seed) {
  std::vector<int32_t> p;
  for (int i = 0; i < len; ++i) p.push_back((i * 37 + seed * 101 + 11) % 256);
  return p;
}

RequestParams greedy(std::vector<int32_t> prompt, int n) {
  RequestParams r;
  r.prompt = std::move(prompt);
  r.max_tokens = n;
  r.sampler.temperature = 0;
  r.ignore_eos = true;
  return r;
}

// Through generate(), the function `snug run` calls.
std::vector<int32_t> alone(const Fixture& f, const std::vector<int32_t>& prompt, int n) {
  memory::Ledger ledger;
  SessionOptions o;
  o.n_ctx = 256;
  o.n_threads = 1;
  auto s = Session::create(*f.model, o, &ledger);
  EXPECT_TRUE(s.ok()) << s.error().message;
  GenerateOptions g;
  g.max_tokens = n;
  g.sampler.temperature = 0;
  g.ignore_eos = true;
  auto r = generate(**s, *f.tok, prompt, g, nullptr);
  EXPECT_TRUE(r.ok()) << r.error().message;
  return r.ok() ? r->tokens : std::vector<int32_t>{};
}

SchedulerOptions small_options() {
  SchedulerOptions o;
  o.n_ctx = 256;
  o.n_parallel = 4;
  o.n_threads = 2;
  o.max_queue = 256;
  return o;
}

void expect_invariant(DType type, const char* name, SchedulerOptions opt, int n_requests,
                      uint64_t* preemptions = nullptr, const char* arch = "llama") {
  auto f = load(type, name, arch);
  ASSERT_TRUE(f);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<testing::Alone> want;
  const int n_gen = 24;
  for (int i = 0; i < n_requests; ++i) {
    prompts.push_back(make_prompt(1 + (i * 29) % 70, i));
    want.push_back(alone_with_logprobs(*f->model, prompts.back(), n_gen, 256));
    if (i == 0) {
      EXPECT_EQ(want.back().tokens, alone(*f, prompts.back(), n_gen));
    }
  }
  auto s = Scheduler::create(*f->model, *f->tok, opt, &f->ledger);
  ASSERT_TRUE(s.ok()) << s.error().message;
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const auto& p : prompts) {
    RequestParams rp = greedy(p, n_gen);
    rp.logprobs = 0;
    Submission sub = (*s)->submit(rp);
    ASSERT_TRUE(sub.stream) << sub.message;
    streams.push_back(sub.stream);
  }
  for (int i = 0; i < n_requests; ++i) {
    Outcome o = collect(*streams[static_cast<size_t>(i)]);
    ASSERT_TRUE(o.finished) << "request " << i;
    EXPECT_EQ(o.fin.reason, FinishReason::kLength);
    EXPECT_EQ(o.tokens, want[static_cast<size_t>(i)].tokens)
        << "request " << i << " (prompt of " << prompts[static_cast<size_t>(i)].size()
        << " tokens) differs from the same request alone";
    EXPECT_EQ(o.logprobs, want[static_cast<size_t>(i)].logprobs)
        << "request " << i << ": the same tokens, but not the same arithmetic";
  }
  const SchedulerMetrics m = (*s)->metrics();
  EXPECT_EQ(m.running, 0);
  EXPECT_EQ(m.kv_blocks_used, 0);
  if (preemptions) *preemptions = m.preemptions;
}

TEST(Scheduler, ThirtyTwoConcurrentRequestsEqualEachAlone) {
  expect_invariant(DType::kQ8_0, "sched_q8.gguf", small_options(), 32);
}

TEST(Scheduler, InvariantUnderOddChunkingForEveryKernelFamily) {
  for (DType t : {DType::kF32, DType::kQ4_1, DType::kQ4_K}) {
    SchedulerOptions o = small_options();
    o.batch_tokens = 7;  // prompts split into odd chunks, beside decodes
    o.max_seqs = 5;
    SCOPED_TRACE(tensor::dtype_name(t));
    expect_invariant(t, ("sched_chunk_" + std::string(tensor::dtype_name(t)) + ".gguf").c_str(), o,
                     12);
  }
}

TEST(Scheduler, PreemptsInsteadOfFailingAndStaysInvariant) {
  SchedulerOptions o = small_options();
  o.n_ctx = 128;
  o.n_parallel = 1;  // a pool of 8 blocks (128 tokens) for requests of up to 94 tokens
  o.max_seqs = 6;
  o.prefix_cache = false;
  o.admission = SchedulerOptions::Admission::kPromptOnly;
  uint64_t preemptions = 0;
  expect_invariant(DType::kQ8_0, "sched_preempt.gguf", o, 10, &preemptions);
  EXPECT_GT(preemptions, 0u) << "the pool was large enough to avoid preemption";
}

// The same pool and requests under the default admission: each request is
// admitted only when its prompt plus max_tokens fits beside what the running
// ones may still grow to, so nothing is ever preempted, and a request larger
// than what is left waits rather than evicting a running one.
TEST(Scheduler, ReservingAdmissionNeverPreempts) {
  SchedulerOptions o = small_options();
  o.n_ctx = 128;
  o.n_parallel = 1;
  o.max_seqs = 6;
  o.prefix_cache = false;
  ASSERT_EQ(o.admission, SchedulerOptions::Admission::kReserve);
  uint64_t preemptions = 0;
  expect_invariant(DType::kQ8_0, "sched_reserve.gguf", o, 10, &preemptions);
  EXPECT_EQ(preemptions, 0u);
}

// A sliding-window model: its windowed layers give blocks back as sequences
// grow, and neither that, the chunking, nor preemption changes a token.
TEST(Scheduler, SlidingWindowModelStaysInvariant) {
  SchedulerOptions o = small_options();
  o.batch_tokens = 7;
  o.max_seqs = 5;
  expect_invariant(DType::kQ8_0, "sched_gemma.gguf", o, 12, nullptr, "gemma3");
  o.n_ctx = 128;
  o.n_parallel = 1;
  o.prefix_cache = false;
  o.admission = SchedulerOptions::Admission::kPromptOnly;
  uint64_t preemptions = 0;
  expect_invariant(DType::kQ8_0, "sched_gemma_preempt.gguf", o, 10, &preemptions, "gemma3");
  EXPECT_GT(preemptions, 0u) << "the pool was large enough to avoid preemption";
}

// Beside a decoding sequence, a prompt runs in pieces of at most
// prefill_chunk tokens (each step's time, which every decoder waits for,
// stays short), and its tokens are still those of the request alone. Alone,
// a prompt takes all of batch_tokens.
TEST(Scheduler, PromptBesideDecodesRunsInPrefillChunks) {
  auto f = load(DType::kQ8_0, "sched_prefill_chunk.gguf");
  ASSERT_TRUE(f);
  SchedulerOptions o = small_options();
  o.batch_tokens = 64;
  o.prefill_chunk = 5;
  o.prefix_cache = false;  // the second run of the prompt computes all of it again
  auto s = Scheduler::create(*f->model, *f->tok, o, &f->ledger);
  ASSERT_TRUE(s.ok()) << s.error().message;
  const std::vector<int32_t> long_prompt = make_prompt(60, 7);
  // Alone: one piece of 60.
  uint64_t before = (*s)->metrics().prompt_chunks;
  Submission lone = (*s)->submit(greedy(long_prompt, 1));
  ASSERT_TRUE(lone.stream) << lone.message;
  Outcome first = collect(*lone.stream);
  EXPECT_EQ((*s)->metrics().prompt_chunks - before, 1u);
  // Beside a sequence that is decoding (its first token out, 239 to go). On
  // this tiny model those take milliseconds: a test thread starved on a loaded
  // machine can see the decoder finish before the prompt is admitted, and the
  // prompt then runs alone in one piece. Such a round (the decoder not
  // cancelled, so maybe not beside the prompt) proves nothing and is run
  // again; one of five must have the decoder beside the prompt throughout.
  bool beside_decoder = false;
  for (int round = 0; round < 5 && !beside_decoder; ++round) {
    Submission a = (*s)->submit(greedy(make_prompt(8, 1), 240));
    ASSERT_TRUE(a.stream) << a.message;
    RequestStream::Event ev;
    ASSERT_TRUE(a.stream->next(&ev, std::chrono::seconds(60)));
    ASSERT_TRUE(ev.token.has_value());
    before = (*s)->metrics().prompt_chunks;
    Submission b = (*s)->submit(greedy(long_prompt, 1));
    ASSERT_TRUE(b.stream) << b.message;
    Outcome beside = collect(*b.stream);
    const uint64_t chunks = (*s)->metrics().prompt_chunks - before;
    a.stream->cancel();
    Outcome decoder = collect(*a.stream);
    ASSERT_TRUE(decoder.finished);
    EXPECT_EQ(beside.tokens, first.tokens);
    if (decoder.fin.reason != FinishReason::kCancelled) continue;
    beside_decoder = true;
    EXPECT_EQ(chunks, 12u);  // 60 in pieces of 5
  }
  EXPECT_TRUE(beside_decoder) << "the decoder finished before the prompt in every round";
  EXPECT_EQ(first.tokens, alone(*f, long_prompt, 1));
  o.prefill_chunk = -1;
  EXPECT_FALSE(Scheduler::create(*f->model, *f->tok, o, &f->ledger).ok());
}

// The pool the plan gives a sliding-window model: every position of the
// global layers, the window and a batch of the windowed ones.
TEST(Scheduler, SlidingWindowPoolHoldsTheWindowNotTheContext) {
  auto f = load(DType::kQ8_0, "sched_gemma_pool.gguf", "gemma3");
  ASSERT_TRUE(f);
  SchedulerOptions o = small_options();  // 4 x 256 tokens
  o.batch_tokens = 32;
  auto s = Scheduler::create(*f->model, *f->tok, o, &f->ledger);
  ASSERT_TRUE(s.ok()) << s.error().message;
  // Global group: 256 / 16 = 16 blocks; each of 5 windowed groups: the 7
  // positions behind, a slack of 128 and 32 new ones at the worst alignment,
  // ceil((7 + 128 + 32 + 15) / 16) = 12 blocks.
  EXPECT_EQ((*s)->metrics().kv_blocks_total, 4 * (16 + 5 * 12));
  EXPECT_EQ((*s)->plan().kv.group_layers(), 2);
}

// On a sliding-window model too: a hit there needs the global layers' every
// block and the windowed layers' last one.
class PrefixCache : public ::testing::TestWithParam<const char*> {};

TEST_P(PrefixCache, HitsWithinAScopeOnly) {
  auto f =
      load(DType::kQ8_0, (std::string("sched_prefix_") + GetParam() + ".gguf").c_str(), GetParam());
  ASSERT_TRUE(f);
  auto s = Scheduler::create(*f->model, *f->tok, small_options(), &f->ledger);
  ASSERT_TRUE(s.ok()) << s.error().message;
  const std::vector<int32_t> prompt = make_prompt(70, 3);
  const std::vector<int32_t> want = alone(*f, prompt, 16);
  auto run = [&](const std::string& scope) {
    RequestParams p = greedy(prompt, 16);
    p.cache_scope = scope;
    Submission sub = (*s)->submit(p);
    EXPECT_TRUE(sub.stream) << sub.message;
    return collect(*sub.stream);
  };
  Outcome first = run("tenant-a");
  Outcome again = run("tenant-a");
  Outcome other = run("tenant-b");
  EXPECT_EQ(first.fin.cached_tokens, 0);
  EXPECT_EQ(again.fin.cached_tokens, 64);  // 4 full blocks of 16; the 70th token is recomputed
  EXPECT_EQ(other.fin.cached_tokens, 0) << "a request hit another scope's cached blocks";
  EXPECT_EQ(first.tokens, want);
  EXPECT_EQ(again.tokens, want);
  EXPECT_EQ(other.tokens, want);
  // A longer prompt sharing the first 64 tokens (the next turn of a chat).
  std::vector<int32_t> longer(prompt.begin(), prompt.begin() + 64);
  for (int i = 0; i < 30; ++i) longer.push_back((i * 13 + 5) % 256);
  RequestParams p = greedy(longer, 16);
  p.cache_scope = "tenant-a";
  Submission sub = (*s)->submit(p);
  ASSERT_TRUE(sub.stream);
  Outcome turn = collect(*sub.stream);
  EXPECT_EQ(turn.fin.cached_tokens, 64);
  EXPECT_EQ(turn.tokens, alone(*f, longer, 16));
  const SchedulerMetrics m = (*s)->metrics();
  EXPECT_GT(m.prefix_hit_blocks, 0u);
  EXPECT_GT(m.kv_blocks_cached, 0);
  EXPECT_EQ(m.kv_blocks_used, 0);
}

INSTANTIATE_TEST_SUITE_P(Scheduler, PrefixCache, ::testing::Values("llama", "gemma3"));

// Tenant shares: a flooding tenant holds at most its share; another tenant's
// requests, queued behind the flood, go past it into their own share; every
// result is still the request's alone; what can never fit a share is refused.
TEST(Scheduler, TenantSharesIsolateAFlood) {
  auto f = load(DType::kQ8_0, "sched_tenants.gguf");
  ASSERT_TRUE(f);
  SchedulerOptions o = small_options();  // 4 x 256 tokens: 64 blocks of 16
  o.tenant_kv_blocks = {16, 16, 4};      // flood, calm, tiny; 28 blocks reserved for nobody
  auto s = Scheduler::create(*f->model, *f->tok, o, &f->ledger);
  ASSERT_TRUE(s.ok()) << s.error().message;
  const int n_gen = 40;
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 15; ++i) prompts.push_back(make_prompt(40, i));  // 80 tokens: 5 blocks
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 15; ++i) {
    RequestParams p = greedy(prompts[static_cast<size_t>(i)], n_gen);
    p.tenant = i < 12 ? 0 : 1;  // 12 flood requests, then 3 calm ones
    Submission sub = (*s)->submit(p);
    ASSERT_TRUE(sub.stream) << sub.message;
    streams.push_back(sub.stream);
  }
  int32_t flood_peak = 0;
  std::atomic<bool> done{false};
  std::thread watch([&] {
    while (!done) {
      const SchedulerMetrics m = (*s)->metrics();
      if (!m.tenant_kv_blocks.empty()) flood_peak = std::max(flood_peak, m.tenant_kv_blocks[0]);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  std::vector<Outcome> out;
  for (auto& st : streams) out.push_back(collect(*st));
  done = true;
  watch.join();
  double last_flood_queue = 0;
  for (int i = 0; i < 15; ++i) {
    const Outcome& r = out[static_cast<size_t>(i)];
    ASSERT_TRUE(r.finished) << i;
    EXPECT_EQ(r.tokens, alone(*f, prompts[static_cast<size_t>(i)], n_gen)) << "request " << i;
    if (i < 12) last_flood_queue = std::max(last_flood_queue, r.fin.queue_seconds);
  }
  EXPECT_LE(flood_peak, 16);
  EXPECT_GT(flood_peak, 0);
  // The calm tenant waited for nothing of the flood's: admitted at once.
  for (int i = 12; i < 15; ++i) {
    EXPECT_LT(out[static_cast<size_t>(i)].fin.queue_seconds, last_flood_queue / 2)
        << "calm request " << i << " queued behind the flood";
  }
  // Never fits a share of 4 blocks: refused; nor beside the others' shares.
  RequestParams big = greedy(make_prompt(100, 1), 10);  // 110 tokens: 7 blocks
  big.tenant = 2;
  Submission no = (*s)->submit(big);
  EXPECT_EQ(no.rejection, Rejection::kNeverFits);
  EXPECT_NE(no.message.find("tenant's KV share is 4 blocks"), std::string::npos) << no.message;
  // Shares beyond the pool: refused at creation.
  SchedulerOptions over = small_options();
  over.tenant_kv_blocks = {40, 40};
  auto bad = Scheduler::create(*f->model, *f->tok, over, &f->ledger);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("tenants reserve 80 KV blocks; the pool holds 64"),
            std::string::npos)
      << bad.error().message;
}

TEST(Scheduler, CancelFreesBlocksWithinAStep) {
  auto f = load(DType::kQ8_0, "sched_cancel.gguf");
  ASSERT_TRUE(f);
  SchedulerOptions o1 = small_options();
  o1.n_threads = 1;
  auto s = Scheduler::create(*f->model, *f->tok, o1, &f->ledger);
  ASSERT_TRUE(s.ok()) << s.error().message;
  // The request is admitted first, with three others of 200 tokens in every
  // step. A step of this tiny model takes microseconds, so a test thread
  // starved on a loaded machine can still see the request finish its 200
  // tokens before the cancel lands: such a round proves nothing and is run
  // again, and one of five must see the cancel.
  bool cancelled = false;
  for (int round = 0; round < 5 && !cancelled; ++round) {
    Submission sub = (*s)->submit(greedy(make_prompt(40, 1), 200));
    ASSERT_TRUE(sub.stream);
    std::vector<std::shared_ptr<RequestStream>> others;
    for (int i = 0; i < 3; ++i) {
      Submission o = (*s)->submit(greedy(make_prompt(40, 10 + i), 200));
      ASSERT_TRUE(o.stream);
      others.push_back(o.stream);
    }
    RequestStream::Event e;
    ASSERT_TRUE(sub.stream->next(&e, 30s));
    ASSERT_TRUE(e.token);
    EXPECT_GT((*s)->metrics().kv_blocks_used, 0);
    sub.stream->cancel();
    Outcome o = collect(*sub.stream);
    ASSERT_TRUE(o.finished);
    if (o.fin.reason == FinishReason::kCancelled) {
      EXPECT_LT(o.fin.completion_tokens, 200);
      cancelled = true;
    } else {
      EXPECT_EQ(o.fin.reason, FinishReason::kLength);
    }
    for (auto& other : others) other->cancel();
    for (auto& other : others) EXPECT_TRUE(collect(*other).finished);
    EXPECT_EQ((*s)->metrics().kv_blocks_used, 0);
  }
  EXPECT_TRUE(cancelled) << "the request finished before its cancel in every round";
}

TEST(Scheduler, DeadlinePassedIsATimeout) {
  auto f = load(DType::kQ8_0, "sched_timeout.gguf");
  ASSERT_TRUE(f);
  auto s = Scheduler::create(*f->model, *f->tok, small_options(), &f->ledger);
  ASSERT_TRUE(s.ok()) << s.error().message;
  RequestParams p = greedy(make_prompt(10, 1), 50);
  p.deadline = std::chrono::steady_clock::now() - 1s;
  Submission sub = (*s)->submit(p);
  ASSERT_TRUE(sub.stream);
  Outcome o = collect(*sub.stream);
  ASSERT_TRUE(o.finished);
  EXPECT_EQ(o.fin.reason, FinishReason::kTimeout);
  EXPECT_EQ(o.tokens.size(), 0u);
}

TEST(Scheduler, RejectsWhatCanNeverRunAndAFullQueue) {
  auto f = load(DType::kQ8_0, "sched_reject.gguf");
  ASSERT_TRUE(f);
  SchedulerOptions o = small_options();
  o.max_seqs = 1;
  o.max_queue = 2;
  auto s = Scheduler::create(*f->model, *f->tok, o, &f->ledger);
  ASSERT_TRUE(s.ok()) << s.error().message;
  // Bad requests, one class each.
  EXPECT_EQ((*s)->submit(greedy({}, 4)).rejection, Rejection::kInvalid);          // empty prompt
  EXPECT_EQ((*s)->submit(greedy({1, 99999}, 4)).rejection, Rejection::kInvalid);  // bad id
  EXPECT_EQ((*s)->submit(greedy(make_prompt(256, 1), 4)).rejection,
            Rejection::kNeverFits);  // prompt as long as the context
  EXPECT_EQ((*s)->submit(greedy(make_prompt(10, 1), 250)).rejection,
            Rejection::kNeverFits);  // prompt + max_tokens beyond the context
  RequestParams nan = greedy(make_prompt(10, 1), 4);
  nan.sampler.temperature = std::nanf("");
  EXPECT_EQ((*s)->submit(nan).rejection, Rejection::kInvalid);
  RequestParams many = greedy(make_prompt(10, 1), 4);
  many.logprobs = kMaxTopLogprobs + 1;
  EXPECT_EQ((*s)->submit(many).rejection, Rejection::kInvalid);
  // One runs, two wait, the rest are turned away at once.
  int full = 0;
  std::vector<std::shared_ptr<RequestStream>> ok;
  for (int i = 0; i < 8; ++i) {
    Submission sub = (*s)->submit(greedy(make_prompt(20, i), 100));
    if (sub.rejection == Rejection::kQueueFull) {
      ++full;
      EXPECT_FALSE(sub.message.empty());
    } else {
      ASSERT_TRUE(sub.stream) << sub.message;
      ok.push_back(sub.stream);
    }
  }
  EXPECT_GE(full, 5);
  for (auto& st : ok) EXPECT_TRUE(collect(*st).finished);
  EXPECT_EQ((*s)->metrics().requests_rejected, 6u + static_cast<uint64_t>(full));
}

TEST(Scheduler, StopStringsAndLogprobs) {
  auto f = load(DType::kQ8_0, "sched_stop.gguf");
  ASSERT_TRUE(f);
  auto s = Scheduler::create(*f->model, *f->tok, small_options(), &f->ledger);
  ASSERT_TRUE(s.ok()) << s.error().message;
  const std::vector<int32_t> prompt = make_prompt(12, 7);
  RequestParams p = greedy(prompt, 40);
  p.logprobs = 3;
  Submission sub = (*s)->submit(p);
  ASSERT_TRUE(sub.stream);
  Outcome full;
  RequestStream::Event e;
  while (sub.stream->next(&e, 30s)) {
    if (e.finish) {
      full.text += e.finish->text;
      break;
    }
    full.tokens.push_back(e.token->id);
    full.text += e.token->text;
    ASSERT_EQ(e.token->top.size(), 3u);
    // Greedy: the chosen token is the most likely one, and logprobs are sorted, <= 0.
    EXPECT_EQ(e.token->top[0].id, e.token->id);
    EXPECT_FLOAT_EQ(e.token->top[0].logprob, e.token->logprob);
    EXPECT_LE(e.token->top[0].logprob, 0.f);
    EXPECT_GE(e.token->top[0].logprob, e.token->top[1].logprob);
    EXPECT_GE(e.token->top[1].logprob, e.token->top[2].logprob);
  }
  ASSERT_GT(full.text.size(), 6u);
  // Stop at a piece of the text the request produced: the result is the text before it.
  const std::string stop = full.text.substr(full.text.size() / 2, 3);
  const size_t cut = full.text.find(stop);
  RequestParams q = greedy(prompt, 40);
  q.stop = {stop};
  Submission sub2 = (*s)->submit(q);
  ASSERT_TRUE(sub2.stream);
  Outcome o = collect(*sub2.stream);
  ASSERT_TRUE(o.finished);
  EXPECT_EQ(o.fin.reason, FinishReason::kStop);
  EXPECT_EQ(o.fin.detail, StopReason::kStopString);
  EXPECT_EQ(o.text, full.text.substr(0, cut));
}

TEST(Scheduler, DrainFinishesRunningRequestsAndRefusesNewOnes) {
  auto f = load(DType::kQ8_0, "sched_drain.gguf");
  ASSERT_TRUE(f);
  auto s = Scheduler::create(*f->model, *f->tok, small_options(), &f->ledger);
  ASSERT_TRUE(s.ok()) << s.error().message;
  Submission a = (*s)->submit(greedy(make_prompt(20, 1), 30));
  ASSERT_TRUE(a.stream);
  std::thread t([&] { (*s)->drain(std::chrono::steady_clock::now() + 60s); });
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ((*s)->submit(greedy(make_prompt(20, 2), 4)).rejection, Rejection::kShuttingDown);
  Outcome o = collect(*a.stream);
  t.join();
  ASSERT_TRUE(o.finished);
  EXPECT_EQ(o.fin.reason, FinishReason::kLength);
  EXPECT_EQ(o.tokens.size(), 30u);
}

}  // namespace
}  // namespace snug::engine
