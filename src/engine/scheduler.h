// Continuous batching: many requests share one model, one paged KV pool and
// one forward pass per step.
//
// Each step (on the scheduler's own thread) takes every decoding sequence's
// next token plus chunks of waiting prompts up to a token budget (chunked
// prefill), runs one forward pass over that ragged batch, samples, and
// streams each request's tokens to its RequestStream. Requests are admitted
// first come, first served when the KV blocks they may grow to are free
// beside what the running sequences may still grow to (blocks as
// plan::plan_session counts them; SchedulerOptions::admission). If blocks
// still run out during generation (kPromptOnly admission, or a lone request
// admitted because nothing runs) the most recently admitted sequence is
// preempted: its blocks are freed and it is recomputed later from its prompt
// and the tokens it already produced, so no request fails for lack of memory
// once admitted. Full KV
// blocks are kept in a prefix cache keyed by a hash chain (see
// kv/prefix_cache.h) so that a repeated system prompt or the next turn of a
// chat skips its cached prefix.
//
// Batch invariance: at temperature 0 a request's tokens do not depend on what
// else is in the batch, on the chunk sizes its prompt was split into, on a
// preemption or on a prefix-cache hit. Every kernel computes one token's row
// with the same arithmetic whatever the batch holds, and attention uses
// llama.cpp's prompt order for prompt tokens and its single-token order for
// generated ones (model::Batch::generated), as `snug run` does.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/result.h"
#include "engine/generate.h"
#include "engine/sampler.h"
#include "kv/block_hash.h"
#include "memory/budget.h"
#include "memory/ledger.h"
#include "model/model.h"
#include "plan/session_plan.h"
#include "text/tokenizer.h"

namespace snug::engine {

constexpr int32_t kMaxTopLogprobs = 20;

struct RequestParams {
  std::vector<int32_t> prompt;    // token ids, 1 <= size < n_ctx
  int32_t max_tokens = -1;        // generated tokens at most; < 0: until the context is full
  SamplerParams sampler;          // temperature <= 0: greedy
  std::vector<std::string> stop;  // the text stops before the first of these
  bool ignore_eos = false;        // never end on an end-of-generation token
  int32_t logprobs = -1;          // < 0: none; else each token's logprob and this many
                                  // most likely alternatives (<= kMaxTopLogprobs)
  std::string cache_scope;        // prefix-cache salt: a request reuses only blocks
                                  // cached under the same scope (one per tenant / API key)
  int32_t tenant = -1;            // index into SchedulerOptions::tenant_kv_blocks; < 0: none
  // The request is cancelled (FinishReason::kTimeout) when this passes.
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0.f;  // natural log of the probability under the model's raw logits
};

// One generated token.
struct TokenEvent {
  int32_t id = 0;
  // Text this token completes: whole UTF-8 characters, stop-string filtered.
  // Empty while text is held back (a partial character or a possible start of
  // a stop string); a later token or the Finish releases it.
  std::string text;
  float logprob = 0.f;            // when RequestParams::logprobs >= 0
  std::vector<TokenLogprob> top;  // most likely first, RequestParams::logprobs of them
};

enum class FinishReason : uint8_t {
  kStop,       // an end-of-generation token or a stop string
  kLength,     // max_tokens or the context is full
  kCancelled,  // RequestStream::cancel (e.g. the client went away) or shutdown
  kTimeout,    // RequestParams::deadline passed
};
const char* finish_reason_name(FinishReason r);  // "stop", "length", "cancelled", "timeout"

struct Finish {
  FinishReason reason = FinishReason::kStop;
  StopReason detail = StopReason::kEndOfGeneration;  // for kStop / kLength
  std::string text;                                  // held-back text released at the end
  int32_t prompt_tokens = 0;                         // the prompt's length
  int32_t cached_tokens = 0;       // prompt tokens served from the prefix cache (first admission)
  int32_t completion_tokens = 0;   // tokens generated (and streamed)
  int32_t preemptions = 0;         // times this request was preempted and recomputed
  double queue_seconds = 0;        // submission to first admission
  double first_token_seconds = 0;  // submission to the first generated token
  double total_seconds = 0;        // submission to finish
};

// What a request produces, consumed by one thread (an HTTP handler, the batch
// runner) while the scheduler's thread produces it. Thread-safe.
class RequestStream {
 public:
  struct Event {
    std::optional<TokenEvent> token;  // exactly one of the two is set
    std::optional<Finish> finish;     // the last event
  };
  // Waits up to `timeout` (zero: no wait) for the next event; false when none
  // came in time.
  bool next(Event* out, std::chrono::milliseconds timeout);
  // Asks the scheduler to stop the request; its KV blocks are free after the
  // scheduler's next step, and a Finish with kCancelled follows.
  void cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }
  uint64_t id() const { return id_; }

  // Producer side (the scheduler).
  explicit RequestStream(uint64_t id) : id_(id) {}
  void push(Event e);

 private:
  const uint64_t id_;
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> events_;
};

enum class Rejection : uint8_t {
  kNone,
  kInvalid,       // a parameter out of range (message says which)
  kNeverFits,     // the prompt (plus max_tokens) can never fit the context or the KV pool
  kQueueFull,     // the waiting queue is at max_queue: retry later
  kShuttingDown,  // drain() was called
};

struct Submission {
  std::shared_ptr<RequestStream> stream;  // set when accepted
  Rejection rejection = Rejection::kNone;
  std::string message;  // one line, when rejected
};

struct SchedulerOptions {
  int32_t n_ctx = 0;       // tokens one sequence may hold; 0: the model's trained context
  int32_t n_parallel = 4;  // the KV pool holds n_parallel * n_ctx tokens (snug plan --parallel)
  int32_t max_seqs = 0;    // sequences running at once; 0: 4 * n_parallel, capped by batch_tokens
  int32_t batch_tokens = 256;  // tokens per forward pass: decodes plus prompt chunks
  // Prompt tokens one step takes while other sequences decode (0: what
  // batch_tokens leaves). A step's time grows with its prompt chunk, and every
  // decoding sequence waits for it: a smaller chunk bounds the gap between
  // their tokens, spreading a prompt over more steps. A prompt with nothing
  // decoding beside it still takes all of batch_tokens.
  int32_t prefill_chunk = 0;
  int32_t max_queue = 64;  // waiting requests beyond which submit() says kQueueFull
  int32_t n_threads = 0;   // 0: all cores the process may use
  tensor::DType k_type = tensor::DType::kF16;
  tensor::DType v_type = tensor::DType::kF16;
  int32_t kv_block_tokens = 16;
  bool prefix_cache = true;
  // Admission (see Scheduler): kReserve admits a request when the free blocks
  // hold what it and every running sequence may still grow to (prompt plus
  // max_tokens, or the whole context without max_tokens); kPromptOnly admits
  // on its prompt alone and preempts when the pool runs out, as vLLM does.
  enum class Admission { kReserve, kPromptOnly };
  Admission admission = Admission::kReserve;
  // KV blocks reserved for each tenant (RequestParams::tenant), which are
  // also the most its requests may hold: a tenant's running requests, counted
  // at the blocks they may grow to, stay within its share, and no other
  // tenant's request is admitted into blocks a tenant reserved and does not
  // use. 0 (or absent): nothing reserved; the tenant shares what no tenant
  // reserved. A request over its tenant's share waits (others go past it);
  // one that could never fit in it is refused. Applies to kReserve admission.
  std::vector<int32_t> tenant_kv_blocks;
};

// Fixed-bucket latency histogram (seconds), Prometheus style: counts[i] holds
// observations <= kBounds[i]; counts[kBuckets] the rest.
struct LatencyHistogram {
  static constexpr int kBuckets = 14;
  static constexpr double kBounds[kBuckets] = {0.005, 0.01, 0.025, 0.05, 0.075, 0.1,  0.25,
                                               0.5,   0.75, 1.0,   2.5,  5.0,   10.0, 30.0};
  uint64_t counts[kBuckets + 1] = {};
  double sum = 0;
  uint64_t count = 0;
  void observe(double seconds);
};

// A consistent snapshot for /metrics and tests.
struct SchedulerMetrics {
  uint64_t requests_submitted = 0;
  uint64_t requests_rejected = 0;       // by submit(), any reason
  uint64_t requests_finished[4] = {};   // by FinishReason
  uint64_t prompt_tokens = 0;           // prompt tokens of admitted requests
  uint64_t prompt_tokens_cached = 0;    // of those, served from the prefix cache
  uint64_t prompt_tokens_computed = 0;  // prompt (and recomputed) tokens run through the model
  uint64_t prompt_chunks = 0;           // the pieces they ran in (one per request and step)
  uint64_t generated_tokens = 0;
  uint64_t preemptions = 0;
  uint64_t steps = 0;
  int32_t waiting = 0;  // queued, not yet admitted (including preempted ones)
  int32_t running = 0;  // admitted, holding KV blocks
  int32_t kv_blocks_total = 0;
  int32_t kv_blocks_used = 0;             // held by running sequences
  int32_t kv_blocks_cached = 0;           // held by no sequence, kept for prefix hits, reusable
  int32_t kv_blocks_free = 0;             // neither
  std::vector<int32_t> tenant_kv_blocks;  // per tenant with a share: blocks its running
                                          // requests may grow to (what counts against it)
  uint64_t prefix_lookup_blocks = 0;      // full prompt blocks looked up in the prefix cache
  uint64_t prefix_hit_blocks = 0;         // of those, found
  LatencyHistogram time_to_first_token;
  LatencyHistogram inter_token_latency;
};

// The hashes of the full blocks of `prompt` that admission looks up in the
// prefix cache ((size - 1) / block_tokens of them: the last token is always
// computed), under `scope`: the names a router can use to send a request to
// the replica that holds its prefix.
std::vector<kv::BlockHash> prompt_block_hashes(std::span<const int32_t> prompt,
                                               std::string_view scope, int32_t block_tokens);

class Scheduler {
 public:
  // Plans the KV pool and workspace with plan::plan_session (the numbers
  // `snug plan --parallel N` prints), reserves them from `budget` when given,
  // allocates and commits them, and starts the scheduler's thread. The model
  // and tokenizer must outlive the scheduler.
  static Result<std::unique_ptr<Scheduler>> create(const model::Model& model,
                                                   const text::Tokenizer& tokenizer,
                                                   const SchedulerOptions& options,
                                                   memory::Ledger* ledger,
                                                   memory::Budget* budget = nullptr);
  ~Scheduler();  // cancels what is left and joins the thread
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Checks and queues a request; never blocks on the model. Thread-safe.
  Submission submit(RequestParams params);

  // Stops accepting requests, lets running and queued ones finish until
  // `deadline`, then cancels the rest; returns when none is left. Thread-safe.
  void drain(std::chrono::steady_clock::time_point deadline);

  SchedulerMetrics metrics() const;  // thread-safe
  const plan::SessionPlan& plan() const { return plan_; }
  int32_t n_ctx() const { return plan_.shape.n_ctx; }
  int32_t max_seqs() const { return max_seqs_; }
  int32_t n_threads() const;

 private:
  struct Impl;
  explicit Scheduler(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  plan::SessionPlan plan_;
  int32_t max_seqs_ = 0;
};

}  // namespace snug::engine
