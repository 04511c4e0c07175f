#include "engine/scheduler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "base/check.h"
#include "base/log.h"
#include "engine/session.h"
#include "engine/stop_filter.h"
#include "kv/block_hash.h"
#include "plan/footprint.h"
#include "text/stream_decoder.h"

namespace snug::engine {

using Clock = std::chrono::steady_clock;

namespace {

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Log of the softmax's normaliser over raw logits (summed in double):
// logprob(id) = logits[id] - log_z.
double log_normaliser(const float* logits, int32_t n_vocab) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int32_t i = 0; i < n_vocab; ++i) mx = std::max(mx, logits[i]);
  double sum = 0;
  for (int32_t i = 0; i < n_vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - mx));
  return static_cast<double>(mx) + std::log(sum);
}

float logprob(const float* logits, int32_t id, double log_z) {
  return static_cast<float>(static_cast<double>(logits[id]) - log_z);
}

// The k most likely tokens, most likely first (ties: lower id first).
void top_logprobs(const float* logits, int32_t n_vocab, int32_t k, double log_z,
                  std::vector<TokenLogprob>* out, std::vector<int32_t>* order) {
  out->clear();
  if (k <= 0) return;
  order->resize(static_cast<size_t>(n_vocab));
  std::iota(order->begin(), order->end(), 0);
  const auto kk = static_cast<ptrdiff_t>(std::min(k, n_vocab));
  std::partial_sort(order->begin(), order->begin() + kk, order->end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  for (ptrdiff_t i = 0; i < kk; ++i) {
    const int32_t id = (*order)[static_cast<size_t>(i)];
    out->push_back({id, logprob(logits, id, log_z)});
  }
}

}  // namespace

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kTimeout:
      return "timeout";
  }
  return "?";
}

void LatencyHistogram::observe(double seconds) {
  int i = 0;
  while (i < kBuckets && seconds > kBounds[i]) ++i;
  ++counts[i];
  sum += seconds;
  ++count;
}

bool RequestStream::next(Event* out, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  // A zero timeout only looks: condition_variable::wait_for would still make
  // a futex call that times out at once, and snug batch's loop and the SSE
  // pump poll every stream that way, taking a core from the step's threads.
  if (timeout.count() <= 0 ? events_.empty()
                           : !cv_.wait_for(lock, timeout, [&] { return !events_.empty(); })) {
    return false;
  }
  *out = std::move(events_.front());
  events_.pop_front();
  return true;
}

void RequestStream::push(Event e) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::move(e));
  }
  cv_.notify_all();
}

// One request from submission to finish.
struct Request {
  std::shared_ptr<RequestStream> stream;
  RequestParams p;
  Clock::time_point submitted;
  // Prompt, then every generated token; decode[i]: tokens[i] was generated.
  std::vector<int32_t> tokens;
  std::vector<uint8_t> decode;
  int32_t n_prompt = 0;
  int32_t generated = 0;
  // KV state: kv < 0 while waiting (never admitted, or preempted).
  kv::SeqId kv = -1;
  int32_t n_computed = 0;  // leading tokens whose K/V the cache holds
  bool ever_admitted = false;
  // Prefix cache: the chain of hashes of tokens' full blocks computed so far,
  // and how many of this sequence's blocks were published.
  std::vector<kv::BlockHash> hashes;
  int32_t published = 0;
  // Generation state, kept across preemptions.
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<text::StreamDecoder> decoder;
  std::unique_ptr<StopFilter> filter;
  Finish fin;
  Clock::time_point last_token;
  int32_t pending() const { return static_cast<int32_t>(tokens.size()) - n_computed; }
};

struct Scheduler::Impl {
  const model::Model& model;
  const text::Tokenizer& tok;
  SchedulerOptions opt;
  plan::SessionPlan plan;
  memory::Reservation reservation;
  std::unique_ptr<ThreadPool> pool;
  kv::KvCache cache;
  model::Workspace ws;
  model::Batch batch;
  std::vector<int32_t> eog_ids;
  std::vector<int32_t> order_scratch;
  int32_t max_seqs = 0;

  // Shared with submit()/metrics() under mu.
  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<std::unique_ptr<Request>> incoming;
  bool draining = false;
  bool stopping = false;
  Clock::time_point drain_deadline = Clock::time_point::max();
  uint64_t next_id = 1;
  SchedulerMetrics m;

  // Owned by the scheduler thread.
  std::deque<std::unique_ptr<Request>> waiting;   // FCFS; preempted ones go back to the front
  std::vector<std::unique_ptr<Request>> running;  // in admission order
  std::thread thread;
  // Events of this step, sent after update_gauges() so that a client that
  // sees an event also sees its effect (blocks taken or released) in metrics().
  std::vector<std::pair<std::shared_ptr<RequestStream>, RequestStream::Event>> outbox;

  Impl(const model::Model& md, const text::Tokenizer& t, const SchedulerOptions& o)
      : model(md), tok(t), opt(o) {}

  void loop();
  bool step();
  void take_incoming();
  void expire(Clock::time_point now);
  void admit();
  // Tokens r holds when it finishes at the latest: prompt plus max_tokens,
  // or the context; and the blocks it still needs to get there.
  int32_t final_tokens(const Request& r) const;
  int32_t outstanding_blocks(const Request& r) const;
  // Tenant shares (SchedulerOptions::tenant_kv_blocks): a request's tenant's
  // share (0: none), the blocks it may grow to, and each tenant's running total.
  int32_t share_of(const Request& r) const;
  int32_t grown_blocks(const Request& r) const;
  std::vector<int32_t> tenant_committed() const;
  void preempt_latest();  // running is in admission order: the latest is at the back
  void finish(Request& r, FinishReason why, StopReason detail);
  void release_kv(Request& r);
  void publish_full_blocks(Request& r);
  void ensure_hashes(Request& r, int32_t n_blocks);
  void after_forward(Request& r, float* logits);
  void update_gauges();
};

Result<std::unique_ptr<Scheduler>> Scheduler::create(const model::Model& model,
                                                     const text::Tokenizer& tokenizer,
                                                     const SchedulerOptions& options,
                                                     memory::Ledger* ledger,
                                                     memory::Budget* budget) {
  const auto& c = model.config();
  if (options.n_ctx < 0) return make_error("context size must be positive, got ", options.n_ctx);
  if (options.n_parallel <= 0)
    return make_error("parallel sequences must be positive, got ", options.n_parallel);
  if (options.batch_tokens <= 0)
    return make_error("batch tokens must be positive, got ", options.batch_tokens);
  if (options.max_queue < 0) return make_error("queue size must be >= 0, got ", options.max_queue);
  if (options.max_seqs < 0) return make_error("max sequences must be >= 0, got ", options.max_seqs);
  if (options.prefill_chunk < 0)
    return make_error("prefill chunk must be >= 0, got ", options.prefill_chunk);
  auto impl = std::make_unique<Impl>(model, tokenizer, options);
  const int threads = options.n_threads > 0 ? options.n_threads : default_thread_count();
  plan::SessionShape shape;
  shape.n_ctx = options.n_ctx > 0 ? options.n_ctx : c.n_ctx_train;
  shape.n_parallel = options.n_parallel;
  shape.n_batch = options.batch_tokens;
  shape.n_threads = threads;
  shape.k_type = options.k_type;
  shape.v_type = options.v_type;
  shape.kv_block_tokens = options.kv_block_tokens;
  int32_t max_seqs = options.max_seqs > 0 ? options.max_seqs : 4 * options.n_parallel;
  max_seqs = std::max(1, std::min(max_seqs, options.batch_tokens));
  shape.n_seqs = max_seqs;
  const std::vector<tensor::DType> types = plan::matrix_types(model.file(), c);
  SNUG_ASSIGN_OR_RETURN(impl->plan, plan::plan_session(c, types, shape));
  const plan::SessionPlan& p = impl->plan;
  int64_t reserved = 0;
  for (int32_t b : options.tenant_kv_blocks) {
    if (b < 0) return make_error("a tenant's KV share must be >= 0 blocks, got ", b);
    reserved += b;
  }
  if (reserved > p.kv_blocks)
    return make_error("tenants reserve ", reserved, " KV blocks; the pool holds ", p.kv_blocks);
  if (budget) {
    SNUG_ASSIGN_OR_RETURN(
        impl->reservation,
        budget->reserve(p.kv_bytes + p.workspace.total(),
                        "the KV pool (" + std::to_string(shape.n_parallel) + " x " +
                            std::to_string(p.shape.n_ctx) + " tokens) and workspace"));
  }
  impl->max_seqs = max_seqs;
  impl->pool = std::make_unique<ThreadPool>(threads);
  SNUG_ASSIGN_OR_RETURN(impl->cache, kv::KvCache::create(p.kv, p.kv_blocks, ledger));
  SNUG_ASSIGN_OR_RETURN(impl->ws, model::Workspace::create(c, p.workspace, ledger));
  if (Status st = impl->cache.commit(); !st.ok())
    return make_error("KV cache: ", st.error().message);
  if (Status st = impl->ws.buffer.commit(); !st.ok())
    return make_error("workspace: ", st.error().message);
  for (int32_t id = 0; id < c.n_vocab; ++id) {
    if (tokenizer.is_eog(id)) impl->eog_ids.push_back(id);
  }
  impl->m.kv_blocks_total = impl->cache.total_blocks();
  impl->update_gauges();
  std::unique_ptr<Scheduler> s(new Scheduler(std::move(impl)));
  s->plan_ = s->impl_->plan;
  s->max_seqs_ = max_seqs;
  Impl* raw = s->impl_.get();
  raw->thread = std::thread([raw] { raw->loop(); });
  return s;
}

Scheduler::Scheduler(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->draining = true;
    impl_->stopping = true;
    impl_->drain_deadline = Clock::now();
  }
  impl_->cv.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

int32_t Scheduler::n_threads() const {
  return impl_->pool->size();
}

Submission Scheduler::submit(RequestParams params) {
  Impl& I = *impl_;
  Submission out;
  auto reject = [&](Rejection why, std::string msg) {
    std::lock_guard<std::mutex> lock(I.mu);
    ++I.m.requests_rejected;
    out.rejection = why;
    out.message = std::move(msg);
    return out;
  };
  const int32_t n_ctx = plan_.shape.n_ctx;
  const auto n_prompt = static_cast<int64_t>(params.prompt.size());
  const int32_t n_vocab = I.model.config().n_vocab;
  if (n_prompt == 0) return reject(Rejection::kInvalid, "the prompt is empty");
  for (int32_t t : params.prompt) {
    if (t < 0 || t >= n_vocab)
      return reject(Rejection::kInvalid,
                    make_error("token id ", t, " is outside the vocabulary of ", n_vocab).message);
  }
  if (params.logprobs > kMaxTopLogprobs)
    return reject(Rejection::kInvalid, make_error("at most ", kMaxTopLogprobs,
                                                  " top logprobs, asked for ", params.logprobs)
                                           .message);
  const SamplerParams& sp = params.sampler;
  if (!std::isfinite(sp.temperature) || !std::isfinite(sp.top_p) || !std::isfinite(sp.min_p) ||
      !std::isfinite(sp.repeat_penalty) || sp.repeat_penalty <= 0)
    return reject(Rejection::kInvalid,
                  "sampling parameters must be finite numbers (and repeat_penalty > 0)");
  if (n_prompt >= n_ctx)
    return reject(Rejection::kNeverFits,
                  make_error("the prompt has ", n_prompt, " tokens; the context holds ", n_ctx,
                             " (at least one must be left to generate)")
                      .message);
  if (params.max_tokens >= 0 && n_prompt + params.max_tokens > n_ctx)
    return reject(Rejection::kNeverFits,
                  make_error("the prompt's ", n_prompt, " tokens plus max_tokens ",
                             params.max_tokens, " exceed the context of ", n_ctx, " tokens")
                      .message);
  if (!I.opt.tenant_kv_blocks.empty()) {
    // Shares: a request must fit in its tenant's share, or, without one, in
    // what no tenant reserved.
    const auto t = static_cast<size_t>(params.tenant);
    const int32_t share =
        params.tenant >= 0 && t < I.opt.tenant_kv_blocks.size() ? I.opt.tenant_kv_blocks[t] : 0;
    int64_t reserved = 0;
    for (int32_t b : I.opt.tenant_kv_blocks) reserved += std::max(b, 0);
    const int64_t room = share > 0 ? share : plan_.kv_blocks - reserved;
    const int64_t final_len =
        params.max_tokens < 0 ? n_ctx : std::min<int64_t>(n_prompt + params.max_tokens, n_ctx);
    const int64_t blocks = plan_.kv.sequence_blocks(final_len, plan_.shape.n_batch);
    if (blocks > room)
      return reject(
          Rejection::kNeverFits,
          make_error("the request may grow to ", final_len, " tokens (", blocks, " KV blocks); ",
                     share > 0 ? "its tenant's KV share is " : "what no tenant reserved is ", room,
                     " blocks (lower max_tokens)")
              .message);
  }
  auto r = std::make_unique<Request>();
  r->submitted = Clock::now();
  r->tokens = std::move(params.prompt);
  r->decode.assign(r->tokens.size(), 0);
  r->n_prompt = static_cast<int32_t>(n_prompt);
  r->p = std::move(params);
  {
    std::lock_guard<std::mutex> lock(I.mu);
    if (I.draining) {
      ++I.m.requests_rejected;
      out.rejection = Rejection::kShuttingDown;
      out.message = "the server is shutting down";
      return out;
    }
    if (I.m.waiting >= I.opt.max_queue) {
      ++I.m.requests_rejected;
      out.rejection = Rejection::kQueueFull;
      out.message =
          make_error("the queue is full (", I.opt.max_queue, " requests waiting); retry later")
              .message;
      return out;
    }
    r->stream = std::make_shared<RequestStream>(I.next_id++);
    out.stream = r->stream;
    ++I.m.requests_submitted;
    I.incoming.push_back(std::move(r));
    ++I.m.waiting;
  }
  I.cv.notify_all();
  return out;
}

void Scheduler::drain(Clock::time_point deadline) {
  Impl& I = *impl_;
  std::unique_lock<std::mutex> lock(I.mu);
  I.draining = true;
  I.drain_deadline = deadline;
  I.cv.notify_all();
  I.cv.wait(lock, [&] { return I.incoming.empty() && I.m.waiting == 0 && I.m.running == 0; });
}

SchedulerMetrics Scheduler::metrics() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->m;
}

// ---- the scheduler's thread -------------------------------------------------

void Scheduler::Impl::loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] {
        return stopping || !incoming.empty() || !running.empty() || !waiting.empty();
      });
      if (stopping && incoming.empty() && running.empty() && waiting.empty()) return;
    }
    take_incoming();
    const Clock::time_point now = Clock::now();
    expire(now);
    admit();
    const bool progressed = step();
    update_gauges();
    for (auto& [stream, event] : outbox) stream->push(std::move(event));
    outbox.clear();
    cv.notify_all();  // drain() waits for the gauges to reach zero
    if (!progressed && !running.empty()) {
      // Nothing could run (should not happen: admission keeps one sequence
      // able to advance); avoid spinning.
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
}

void Scheduler::Impl::take_incoming() {
  std::lock_guard<std::mutex> lock(mu);
  while (!incoming.empty()) {
    waiting.push_back(std::move(incoming.front()));
    incoming.pop_front();
  }
}

void Scheduler::Impl::expire(Clock::time_point now) {
  bool past_drain;
  {
    std::lock_guard<std::mutex> lock(mu);
    past_drain = draining && now >= drain_deadline;
  }
  auto dead = [&](Request& r, FinishReason* why) {
    if (r.stream->cancelled() || past_drain) {
      *why = FinishReason::kCancelled;
      return true;
    }
    if (now >= r.p.deadline) {
      *why = FinishReason::kTimeout;
      return true;
    }
    return false;
  };
  FinishReason why;
  for (size_t i = 0; i < running.size();) {
    if (dead(*running[i], &why)) {
      finish(*running[i], why, StopReason::kMaxTokens);
      running.erase(running.begin() + static_cast<ptrdiff_t>(i));
    } else {
      ++i;
    }
  }
  for (auto it = waiting.begin(); it != waiting.end();) {
    if (dead(**it, &why)) {
      finish(**it, why, StopReason::kMaxTokens);
      it = waiting.erase(it);
    } else {
      ++it;
    }
  }
}

std::vector<kv::BlockHash> prompt_block_hashes(std::span<const int32_t> prompt,
                                               std::string_view scope, int32_t block_tokens) {
  std::vector<kv::BlockHash> out;
  if (block_tokens <= 0 || prompt.empty()) return out;
  const size_t bt = static_cast<size_t>(block_tokens);
  const size_t n = (prompt.size() - 1) / bt;
  const std::vector<uint8_t> prompt_order(bt, 0);  // every token computed as a prompt token
  out.reserve(n);
  for (size_t b = 0; b < n; ++b) {
    out.push_back(kv::next_block_hash(b == 0 ? kv::root_block_hash(scope) : out.back(),
                                      prompt.subspan(b * bt, bt), prompt_order));
  }
  return out;
}

void Scheduler::Impl::ensure_hashes(Request& r, int32_t n_blocks) {
  const int32_t bt = cache.layout().block_tokens;
  if (r.hashes.empty() && n_blocks > 0) r.hashes.reserve(static_cast<size_t>(n_blocks));
  while (static_cast<int32_t>(r.hashes.size()) < n_blocks) {
    const size_t b = r.hashes.size();
    const kv::BlockHash parent = b == 0 ? kv::root_block_hash(r.p.cache_scope) : r.hashes[b - 1];
    const auto off = b * static_cast<size_t>(bt);
    r.hashes.push_back(kv::next_block_hash(
        parent, std::span<const int32_t>(r.tokens).subspan(off, static_cast<size_t>(bt)),
        std::span<const uint8_t>(r.decode).subspan(off, static_cast<size_t>(bt))));
  }
}

int32_t Scheduler::Impl::final_tokens(const Request& r) const {
  const int32_t n_ctx = plan.shape.n_ctx;
  if (r.p.max_tokens < 0) return n_ctx;
  return static_cast<int32_t>(std::min<int64_t>(int64_t{r.n_prompt} + r.p.max_tokens, n_ctx));
}

int32_t Scheduler::Impl::share_of(const Request& r) const {
  const auto t = static_cast<size_t>(r.p.tenant);
  return r.p.tenant >= 0 && t < opt.tenant_kv_blocks.size() ? opt.tenant_kv_blocks[t] : 0;
}

int32_t Scheduler::Impl::grown_blocks(const Request& r) const {
  return static_cast<int32_t>(cache.layout().sequence_blocks(final_tokens(r), opt.batch_tokens));
}

std::vector<int32_t> Scheduler::Impl::tenant_committed() const {
  std::vector<int32_t> used(opt.tenant_kv_blocks.size(), 0);
  for (const auto& q : running) {
    if (share_of(*q) > 0) used[static_cast<size_t>(q->p.tenant)] += grown_blocks(*q);
  }
  return used;
}

int32_t Scheduler::Impl::outstanding_blocks(const Request& r) const {
  return cache.blocks_to_grow(r.kv, std::max(0, final_tokens(r) - r.n_computed), opt.batch_tokens);
}

void Scheduler::Impl::admit() {
  const int32_t bt = cache.layout().block_tokens;
  const bool shares = opt.admission == SchedulerOptions::Admission::kReserve &&
                      std::any_of(opt.tenant_kv_blocks.begin(), opt.tenant_kv_blocks.end(),
                                  [](int32_t b) { return b > 0; });
  std::vector<int32_t> committed = shares ? tenant_committed() : std::vector<int32_t>();
  for (auto it = waiting.begin();
       it != waiting.end() && static_cast<int32_t>(running.size()) < max_seqs;) {
    Request& r = **it;
    const int32_t share = shares ? share_of(r) : 0;
    // Over its tenant's share: it waits, and the requests behind it (other
    // tenants') may go first.
    if (share > 0 && committed[static_cast<size_t>(r.p.tenant)] + grown_blocks(r) > share) {
      ++it;
      continue;
    }
    const auto len = static_cast<int32_t>(r.tokens.size());
    r.kv = cache.create_sequence();
    // Reuse cached full blocks, keeping at least one token to compute so
    // there are logits to sample from.
    int32_t hit = 0;
    const int32_t reusable = (len - 1) / bt;
    if (opt.prefix_cache && reusable > 0) {
      ensure_hashes(r, reusable);
      hit = cache.attach_cached(
          r.kv, std::span<const kv::BlockHash>(r.hashes).first(static_cast<size_t>(reusable)));
    }
    // kReserve: blocks for everything it may grow to, beside what every
    // running sequence may still grow to and what other tenants reserved and
    // do not use; a request is always admitted when nothing runs (it fits
    // alone: submit() checked its length). kPromptOnly: blocks for every token
    // it holds now plus the first one it generates, beyond one block of
    // headroom per running sequence.
    int32_t need = 0, held_back = 0;
    if (opt.admission == SchedulerOptions::Admission::kReserve) {
      need = cache.blocks_to_grow(r.kv, final_tokens(r) - hit * bt, opt.batch_tokens);
      for (const auto& q : running) held_back += outstanding_blocks(*q);
      for (size_t t = 0; shares && t < committed.size(); ++t) {
        if (static_cast<int32_t>(t) != r.p.tenant)
          held_back += std::max(0, opt.tenant_kv_blocks[t] - committed[t]);
      }
      // (With shares, submit() checked that it fits beside the others' shares.)
      if (running.empty() && !shares) need = std::min(need, cache.free_blocks());
    } else {
      need = cache.blocks_to_grow(r.kv, len + 1 - hit * bt, opt.batch_tokens);
      held_back = static_cast<int32_t>(running.size());
    }
    if (need > cache.free_blocks() - held_back) {
      cache.free_sequence(r.kv);  // attached blocks go back to the cache as they were
      r.kv = -1;
      break;  // first come, first served: nobody overtakes the head of the queue
    }
    if (share > 0) committed[static_cast<size_t>(r.p.tenant)] += grown_blocks(r);
    r.n_computed = hit * bt;
    r.published = hit;
    const int32_t cached = std::min(hit * bt, r.n_prompt);
    {
      std::lock_guard<std::mutex> lock(mu);
      m.prefix_lookup_blocks += static_cast<uint64_t>(reusable);
      m.prefix_hit_blocks += static_cast<uint64_t>(hit);
      if (!r.ever_admitted) {
        m.prompt_tokens += static_cast<uint64_t>(r.n_prompt);
        m.prompt_tokens_cached += static_cast<uint64_t>(cached);
      }
    }
    if (!r.ever_admitted) {
      r.ever_admitted = true;
      r.fin.prompt_tokens = r.n_prompt;
      r.fin.cached_tokens = cached;
      r.fin.queue_seconds = seconds_between(r.submitted, Clock::now());
      const int32_t n_vocab = model.config().n_vocab;
      r.sampler = std::make_unique<Sampler>(r.p.sampler, n_vocab);
      r.decoder = std::make_unique<text::StreamDecoder>(tok);
      r.filter = std::make_unique<StopFilter>(r.p.stop);
    }
    running.push_back(std::move(*it));
    it = waiting.erase(it);
  }
}

void Scheduler::Impl::release_kv(Request& r) {
  if (r.kv < 0) return;
  cache.free_sequence(r.kv);
  r.kv = -1;
  r.n_computed = 0;
  r.published = 0;
}

void Scheduler::Impl::preempt_latest() {
  std::unique_ptr<Request> r = std::move(running.back());
  running.pop_back();
  release_kv(*r);  // its published blocks stay cached: a quick readmission reuses them
  ++r->fin.preemptions;
  {
    std::lock_guard<std::mutex> lock(mu);
    ++m.preemptions;
  }
  waiting.push_front(std::move(r));
}

void Scheduler::Impl::finish(Request& r, FinishReason why, StopReason detail) {
  release_kv(r);
  r.fin.reason = why;
  r.fin.detail = detail;
  r.fin.completion_tokens = r.generated;
  r.fin.total_seconds = seconds_between(r.submitted, Clock::now());
  if (why == FinishReason::kStop || why == FinishReason::kLength) {
    if (detail != StopReason::kStopString && r.filter) {
      bool stopped = false;
      r.fin.text = r.filter->push(r.decoder->finish(), &stopped);
      if (!stopped) r.fin.text += r.filter->flush();
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    ++m.requests_finished[static_cast<int>(why)];
  }
  RequestStream::Event e;
  e.finish = std::move(r.fin);
  outbox.emplace_back(r.stream, std::move(e));
}

void Scheduler::Impl::publish_full_blocks(Request& r) {
  if (!opt.prefix_cache) return;
  const int32_t full = r.n_computed / cache.layout().block_tokens;
  if (full <= r.published) return;
  ensure_hashes(r, full);
  for (int32_t b = r.published; b < full; ++b)
    cache.publish_block(r.kv, b, r.hashes[static_cast<size_t>(b)]);
  r.published = full;
}

bool Scheduler::Impl::step() {
  if (running.empty()) return false;
  // 1. Every sequence one token from its next sample decodes this step; find
  // their blocks first, preempting the latest admitted while they do not fit.
  auto decode_need = [&] {
    int32_t need = 0;
    for (const auto& r : running) {
      if (r->pending() == 1) need += cache.blocks_needed(r->kv, 1);
    }
    return need;
  };
  int32_t need = decode_need();
  while (need > cache.free_blocks() && running.size() > 1) {
    preempt_latest();
    need = decode_need();
  }
  // 2. Prompt chunks (and recomputation after a preemption) fill the rest of
  // the token budget, in admission order, with the blocks left.
  int32_t budget = opt.batch_tokens;
  int32_t avail = cache.free_blocks() - need;
  struct Slot {
    Request* r;
    int32_t n;
  };
  std::vector<Slot> slots;
  slots.reserve(running.size());
  for (const auto& r : running) {
    if (r->pending() == 1 && need <= cache.free_blocks()) {
      slots.push_back({r.get(), 1});
      --budget;
    }
  }
  // Beside decodes, prompts take at most prefill_chunk of what is left.
  if (opt.prefill_chunk > 0 && !slots.empty()) budget = std::min(budget, opt.prefill_chunk);
  for (const auto& r : running) {
    const int32_t pend = r->pending();
    if (pend <= 1 || budget <= 0) continue;
    int32_t n = std::min(pend, budget);
    if (cache.blocks_needed(r->kv, n) > avail) {
      int32_t lo = 0, hi = n;  // largest n whose blocks fit
      while (lo < hi) {
        const int32_t mid = (lo + hi + 1) / 2;
        if (cache.blocks_needed(r->kv, mid) <= avail) {
          lo = mid;
        } else {
          hi = mid - 1;
        }
      }
      n = lo;
    }
    if (n <= 0) continue;
    avail -= cache.blocks_needed(r->kv, n);
    budget -= n;
    slots.push_back({r.get(), n});
  }
  if (slots.empty()) {
    // Every sequence is stalled on blocks (prompts admitted together outgrew
    // the pool): give the earliest admitted room by preempting the latest.
    if (running.size() > 1) preempt_latest();
    return false;
  }

  batch.clear();
  for (const Slot& s : slots) {
    Request& r = *s.r;
    for (int32_t i = 0; i < s.n; ++i) {
      const size_t at = static_cast<size_t>(r.n_computed) + static_cast<size_t>(i);
      const bool last = r.n_computed + i + 1 == static_cast<int32_t>(r.tokens.size());
      batch.add(r.tokens[at], r.kv, last, r.decode[at] != 0);
    }
  }
  if (Status st = model.forward(batch, cache, ws, *pool); !st.ok()) {
    // The checks above make this a bug; fail the requests, not the server.
    log_warn("scheduler: forward pass failed: {}", st.error().message);
    for (const Slot& s : slots) s.r->stream->cancel();
    return false;
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    ++m.steps;
    for (const Slot& s : slots) {
      if (s.r->decode[static_cast<size_t>(s.r->n_computed)] == 0 || s.n > 1) {
        m.prompt_tokens_computed += static_cast<uint64_t>(s.n);
        ++m.prompt_chunks;
      }
    }
  }
  const int32_t n_vocab = model.config().n_vocab;
  int32_t row = 0;
  for (const Slot& s : slots) {
    Request& r = *s.r;
    r.n_computed += s.n;
    publish_full_blocks(r);
    if (r.n_computed == static_cast<int32_t>(r.tokens.size())) {
      after_forward(r, ws.logits + static_cast<int64_t>(row) * n_vocab);
      ++row;
    }
  }
  // Finished requests were marked by after_forward (kv < 0 and finish sent).
  running.erase(std::remove_if(running.begin(), running.end(),
                               [](const std::unique_ptr<Request>& r) { return r->kv < 0; }),
                running.end());
  return true;
}

void Scheduler::Impl::after_forward(Request& r, float* logits) {
  const int32_t n_vocab = model.config().n_vocab;
  const int32_t n_ctx = plan.shape.n_ctx;
  // Without max_tokens, generation ends when the context is full, as in generate().
  const int32_t max_new = r.p.max_tokens >= 0 ? r.p.max_tokens : INT32_MAX;
  if (r.generated >= max_new) {
    finish(r, FinishReason::kLength, StopReason::kMaxTokens);
    return;
  }
  TokenEvent ev;
  // Logprobs describe the model's distribution: taken before end-of-generation
  // tokens are masked for ignore_eos (the chosen token is never a masked one).
  double log_z = 0;
  if (r.p.logprobs >= 0) {
    log_z = log_normaliser(logits, n_vocab);
    top_logprobs(logits, n_vocab, r.p.logprobs, log_z, &ev.top, &order_scratch);
  }
  if (r.p.ignore_eos) {
    for (int32_t id : eog_ids) logits[id] = -INFINITY;
  }
  ev.id = r.sampler->sample(logits, r.tokens);
  if (tok.is_eog(ev.id)) {
    finish(r, FinishReason::kStop, StopReason::kEndOfGeneration);
    return;
  }
  if (r.p.logprobs >= 0) ev.logprob = logprob(logits, ev.id, log_z);
  bool stopped = false;
  ev.text = r.filter->push(r.decoder->push(ev.id), &stopped);
  r.tokens.push_back(ev.id);
  r.decode.push_back(1);
  ++r.generated;
  const Clock::time_point now = Clock::now();
  {
    std::lock_guard<std::mutex> lock(mu);
    ++m.generated_tokens;
    if (r.generated == 1) {
      m.time_to_first_token.observe(seconds_between(r.submitted, now));
    } else {
      m.inter_token_latency.observe(seconds_between(r.last_token, now));
    }
  }
  if (r.generated == 1) r.fin.first_token_seconds = seconds_between(r.submitted, now);
  r.last_token = now;
  RequestStream::Event e;
  e.token = std::move(ev);
  outbox.emplace_back(r.stream, std::move(e));
  if (stopped) {
    finish(r, FinishReason::kStop, StopReason::kStopString);
  } else if (r.generated >= max_new) {
    finish(r, FinishReason::kLength, StopReason::kMaxTokens);
  } else if (static_cast<int32_t>(r.tokens.size()) > n_ctx) {
    finish(r, FinishReason::kLength, StopReason::kContextFull);
  }
}

void Scheduler::Impl::update_gauges() {
  std::lock_guard<std::mutex> lock(mu);
  m.waiting = static_cast<int32_t>(waiting.size() + incoming.size());
  m.running = static_cast<int32_t>(running.size());
  m.kv_blocks_cached = cache.cached_blocks();
  m.kv_blocks_free = cache.free_blocks() - cache.cached_blocks();
  m.kv_blocks_used = cache.total_blocks() - cache.free_blocks();
  if (!opt.tenant_kv_blocks.empty()) m.tenant_kv_blocks = tenant_committed();
}

}  // namespace snug::engine
