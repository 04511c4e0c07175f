#include "server/http_server.h"

#include <algorithm>
#include <semaphore>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "base/sysmem.h"
#include "server/openai_response.h"
#include "server/tenant_limiter.h"
#include "server/web_assets.h"

namespace snug::server {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

void send_json(httplib::Response& res, int status, const std::string& body) {
  res.status = status;
  res.set_content(body, "application/json");
}

void send_error(httplib::Response& res, const ApiError& e, int retry_after = 0) {
  send_json(res, e.status, error_body(e));
  if (e.status == 401) res.set_header("WWW-Authenticate", "Bearer");
  if (retry_after > 0) res.set_header("Retry-After", std::to_string(retry_after));
}

// What a handler that sent nothing to a vanished client records: nginx's
// "client closed request", so /metrics counts such requests apart.
constexpr int kClientClosed = 499;

// The state of one streamed response, shared by httplib's content provider
// (called until the stream ends) and its completion callback.
struct StreamState {
  engine::ModelRegistry::Lease lease;  // keeps the model loaded until the stream ends
  TenantLimiter::Ticket ticket;        // the tenant's place; counts the tokens at the end
  std::shared_ptr<engine::RequestStream> stream;
  ResponseMeta meta;
  const text::Tokenizer* tok = nullptr;
  std::chrono::milliseconds poll{100};
  std::vector<engine::TokenEvent> held;  // tokens whose text is not out yet (for logprobs)
  size_t text_offset = 0;
  bool started = false;
};

}  // namespace

struct HttpServer::Routes {
  HttpServer* self;
  std::atomic<engine::ModelRegistry*> registry{nullptr};
  std::unique_ptr<TenantLimiter> limiter;  // with keys
  uint64_t predicted_peak = 0;             // written before `registry` is published
  std::string budget_source;               // likewise
  int32_t max_ctx = 0;
  std::counting_semaphore<> parse_slots;

  Routes(HttpServer* s, int32_t slots) : self(s), parse_slots(std::max(slots, 1)) {
    if (s->keys_.enabled()) limiter = std::make_unique<TenantLimiter>(s->keys_.tenants());
  }

  const ServerLimits& limits() const { return self->limits_; }

  // The request's tenant index when keys are on (nullopt: no keys, or no match).
  bool authorized(const httplib::Request& req, std::optional<size_t>* tenant) const {
    if (!self->keys_.enabled()) return true;
    const std::optional<size_t> key = self->keys_.match(req.get_header_value("Authorization"));
    if (key) *tenant = self->keys_.tenant_of(*key);
    return key.has_value();
  }

  void health(const httplib::Request&, httplib::Response& res) const {
    if (self->stopping_.load()) return send_json(res, 503, R"({"status":"shutting down"})");
    if (registry.load() == nullptr) return send_json(res, 503, R"({"status":"loading"})");
    send_json(res, 200, R"({"status":"ok"})");
  }

  // OpenAI's model objects, with snug's state and planned bytes beside them.
  void models(const httplib::Request&, httplib::Response& res) const {
    engine::ModelRegistry* reg = registry.load();
    if (reg == nullptr) return loading(res);
    json data = json::array();
    for (const engine::ModelStatus& m : reg->status()) {
      data.push_back(json{{"id", m.name},
                          {"object", "model"},
                          {"created", 0},
                          {"owned_by", "snug"},
                          {"context_length", m.n_ctx},
                          {"state", engine::model_state_name(m.state)},
                          {"planned_bytes", m.planned_bytes},
                          {"pinned", m.pinned}});
    }
    send_json(res, 200, json{{"object", "list"}, {"data", std::move(data)}}.dump());
  }

  // GET /v1/memory: the budget, what holds it, and every model's plan and state.
  void memory(const httplib::Request&, httplib::Response& res) const {
    engine::ModelRegistry* reg = registry.load();
    if (reg == nullptr) return loading(res);
    const ProcessMemory pm = probe_process_memory();
    json models = json::array();
    uint64_t models_reserved = 0;
    for (const engine::ModelStatus& m : reg->status()) {
      const bool holds = m.state == engine::ModelState::kLoaded ||
                         m.state == engine::ModelState::kLoading ||
                         m.state == engine::ModelState::kUnloading;
      if (holds && reg->budget() != nullptr) models_reserved += m.planned_bytes;
      json j{{"name", m.name},
             {"state", engine::model_state_name(m.state)},
             {"planned_bytes", m.planned_bytes},
             {"reserved_bytes", holds ? m.planned_bytes : 0},
             {"context_length", m.n_ctx},
             {"pinned", m.pinned},
             {"keep_alive_ms", m.keep_alive_ms},
             {"requests_in_flight", m.in_flight},
             {"requests_waiting", m.waiting},
             {"closing", m.closing},
             {"loads", m.loads},
             {"evictions", m.evictions},
             {"idle_unloads", m.idle_unloads},
             {"load_seconds_total", m.load_seconds_total}};
      if (!m.too_large.empty()) j["too_large"] = m.too_large;
      if (m.scheduler) {
        j["kv_blocks"] = json{{"total", m.scheduler->kv_blocks_total},
                              {"used", m.scheduler->kv_blocks_used},
                              {"cached", m.scheduler->kv_blocks_cached},
                              {"free", m.scheduler->kv_blocks_free}};
        j["sequences"] = json{{"running", m.scheduler->running}, {"waiting", m.scheduler->waiting}};
        if (!m.scheduler->tenant_kv_blocks.empty() && limiter != nullptr) {
          json per = json::object();
          const auto& names = self->keys_.tenants();
          for (size_t t = 0; t < m.scheduler->tenant_kv_blocks.size() && t < names.size(); ++t)
            per[names[t].name] = m.scheduler->tenant_kv_blocks[t];
          j["tenant_kv_blocks"] = std::move(per);
        }
      }
      models.push_back(std::move(j));
    }
    json ledger = json::object();
    for (int k = 0; k < static_cast<int>(memory::Category::kCount); ++k) {
      const auto c = static_cast<memory::Category>(k);
      ledger[std::string(memory::category_name(c))] = self->ledger_->current(c);
    }
    json budget = json::object();
    if (const memory::Budget* b = reg->budget()) {
      budget = json{{"limit_bytes", b->limit()},
                    {"source", budget_source},
                    {"reserved_bytes", b->used()},
                    {"available_bytes", b->available()},
                    {"models_reserved_bytes", models_reserved},
                    {"base_reserved_bytes", b->used() - std::min(b->used(), models_reserved)}};
    }
    json tenants = json::array();
    if (limiter != nullptr) {
      for (const TenantStatus& t : limiter->status()) {
        tenants.push_back(json{{"name", t.name},
                               {"requests_in_flight", t.in_flight},
                               {"tokens_last_minute", t.tokens_last_minute},
                               {"max_concurrent", t.quota.max_concurrent},
                               {"tokens_per_minute", t.quota.tokens_per_minute},
                               {"kv_bytes", t.quota.kv_bytes},
                               {"models", t.quota.models}});
      }
    }
    send_json(res, 200,
              json{{"budget", std::move(budget)},
                   {"tenants", std::move(tenants)},
                   {"process",
                    {{"resident_bytes", pm.rss},
                     {"peak_resident_bytes", pm.peak_rss},
                     {"predicted_peak_bytes", predicted_peak}}},
                   {"ledger_bytes", std::move(ledger)},
                   {"models", std::move(models)}}
                  .dump());
  }

  void metrics(const httplib::Request&, httplib::Response& res) const {
    MetricsInput in;
    if (engine::ModelRegistry* reg = registry.load()) {
      in.models = reg->status();
      if (const memory::Budget* b = reg->budget()) {
        in.budget_bytes = b->limit();
        in.budget_reserved_bytes = b->used();
      }
    }
    if (limiter != nullptr) in.tenants = limiter->status();
    in.ledger = self->ledger_;
    in.http = &self->counters_;
    const ProcessMemory pm = probe_process_memory();
    in.resident_bytes = pm.rss;
    in.peak_resident_bytes = pm.peak_rss;
    in.predicted_peak_bytes = predicted_peak;
    res.status = 200;
    res.set_content(format_metrics(in), "text/plain; version=0.0.4; charset=utf-8");
  }

  void loading(httplib::Response& res) const {
    send_error(res, ApiError{503, "the model is still loading", {}, "model_loading"},
               limits().retry_after_seconds);
  }

  // Reads the body under a parse slot and parses it. Returns false with `res`
  // filled when the request was refused.
  bool read_body(const httplib::Request& req, httplib::Response& res,
                 const httplib::ContentReader& reader, std::string* out) {
    if (!parse_slots.try_acquire_for(limits().parse_slot_wait)) {
      LimitedServer::close_after_response();
      send_error(
          res,
          ApiError{
              503, "the server is busy reading other requests; retry later", {}, "server_busy"},
          limits().retry_after_seconds);
      return false;
    }
    struct Release {
      std::counting_semaphore<>* s;
      ~Release() { s->release(); }
    } release{&parse_slots};
    std::string body;
    bool too_large = false;
    const bool read = reader([&](const char* data, size_t n) {
      // Decompressed bytes count too (a Content-Encoding bomb stops here).
      if (body.size() + n > limits().max_body_bytes) {
        too_large = true;
        return false;
      }
      body.append(data, n);
      return true;
    });
    if (!read) {
      LimitedServer::close_after_response();
      const WireFault fault = LimitedServer::current_fault();
      if (fault != WireFault::kNone) {
        send_error(res, ApiError{fault_status(fault), fault_message(fault), {}, {}});
      } else if (too_large || res.status == 413) {
        send_error(res, ApiError{413,
                                 "the request body is larger than " +
                                     std::to_string(limits().max_body_bytes) + " bytes",
                                 {},
                                 "body_too_large"});
      } else {
        send_error(res, bad_request("the request body could not be read"));
      }
      return false;
    }
    *out = std::move(body);
    return true;
  }

  // The model the body names (the only one served when it names none);
  // false with `res` filled when it names none of several.
  bool model_name(const std::string& body, httplib::Response& res, std::string* want) {
    engine::ModelRegistry* reg = registry.load();
    auto name = requested_model(body, limits(), max_ctx);
    if (!name.ok()) {
      send_error(res, name.error());
      return false;
    }
    *want = std::move(name.value());
    if (want->empty()) {
      if (reg->size() != 1) {
        send_error(res,
                   bad_request("the request must name its model: one of " + reg->names(), "model"));
        return false;
      }
      *want = reg->name(0);
    }
    return true;
  }

  // The tenant's place for a request to `model`; false with `res` filled
  // (403 or 429) when its quotas refuse it.
  bool admit_tenant(std::optional<size_t> tenant, const std::string& model, httplib::Response& res,
                    TenantLimiter::Ticket* out) {
    if (!tenant || limiter == nullptr) return true;
    auto refusal = limiter->admit(*tenant, model, out);
    if (!refusal) return true;
    send_error(res, ApiError{refusal->status, refusal->message, {}, refusal->code},
               refusal->retry_after);
    return false;
  }

  // `want` loaded and leased; false with `res` filled when it cannot be.
  bool lease_model(const std::string& want, httplib::Response& res,
                   engine::ModelRegistry::Lease* out) {
    engine::ModelRegistry* reg = registry.load();
    engine::ModelRegistry::Acquired a = reg->acquire(want, Clock::now() + limits().request_timeout);
    switch (a.error) {
      case engine::AcquireError::kNone:
        *out = std::move(a.lease);
        return true;
      case engine::AcquireError::kUnknown:
        send_error(res, ApiError{404, a.message, "model", "model_not_found"});
        return false;
      case engine::AcquireError::kTooLarge:
        send_error(res, ApiError{400, a.message, "model", "model_too_large"});
        return false;
      case engine::AcquireError::kLoadFailed:
        send_error(res, ApiError{500, a.message, "model", "model_load_failed"});
        return false;
      case engine::AcquireError::kTimeout:
        send_error(res, ApiError{503, a.message, {}, "memory_busy"}, limits().retry_after_seconds);
        return false;
      case engine::AcquireError::kShuttingDown:
        send_error(res, ApiError{503, a.message, {}, "shutting_down"});
        return false;
    }
    return false;
  }

  // What every model request starts with: the server loaded, the caller's key
  // (its tenant), the body and the model it names; false with `res` filled.
  bool begin_model_request(const httplib::Request& req, httplib::Response& res,
                           const httplib::ContentReader& reader, std::optional<size_t>* tenant,
                           std::string* body, std::string* want) {
    if (registry.load() == nullptr) {
      LimitedServer::close_after_response();
      loading(res);
      return false;
    }
    if (!authorized(req, tenant)) {
      LimitedServer::close_after_response();
      send_error(res, ApiError{401, "a valid API key is required", {}, "invalid_api_key"});
      return false;
    }
    return read_body(req, res, reader, body) && model_name(*body, res, want);
  }

  // POST /v1/prefix: the prompt of a completion or chat body (a chat when it
  // has "messages"), as the prefix cache names it: the hashes of its full
  // blocks under the caller's cache scope. Nothing is generated; a router
  // sends the request itself to the replica that served the same hashes.
  void prefix(const httplib::Request& req, httplib::Response& res,
              const httplib::ContentReader& reader) {
    std::optional<size_t> tenant;
    std::string body, want;
    if (!begin_model_request(req, res, reader, &tenant, &body, &want)) return;
    if (tenant && *tenant < self->keys_.tenants().size() &&
        !self->keys_.tenants()[*tenant].may_use(want))
      return send_error(
          res, ApiError{403, "this API key may not use the model '" + printable(want, 64) + "'",
                        "model", "model_not_allowed"});
    engine::ModelRegistry::Lease lease;
    if (!lease_model(want, res, &lease)) return;
    const json probe = json::parse(body, nullptr, false);
    const Endpoint endpoint = probe.is_object() && probe.contains("messages")
                                  ? Endpoint::kChatCompletions
                                  : Endpoint::kCompletions;
    const ServedModel model{lease.name(), lease.n_ctx(), lease.prompts()};
    auto parsed = parse_request(endpoint, body, model, limits());
    if (!parsed.ok()) return send_error(res, parsed.error());
    const int32_t bt = lease.scheduler()->plan().shape.kv_block_tokens;
    const std::vector<int32_t>& prompt = parsed->params.prompt;
    json hashes = json::array();
    for (const kv::BlockHash& h :
         engine::prompt_block_hashes(prompt, self->keys_.cache_scope(tenant), bt)) {
      static constexpr char kHex[] = "0123456789abcdef";
      std::string hex;
      hex.reserve(2 * h.bytes.size());
      for (uint8_t b : h.bytes) {
        hex += kHex[b >> 4];
        hex += kHex[b & 15];
      }
      hashes.push_back(std::move(hex));
    }
    send_json(res, 200,
              json{{"model", model.name},
                   {"prompt_tokens", prompt.size()},
                   {"block_tokens", bt},
                   {"block_hashes", std::move(hashes)}}
                  .dump());
  }

  void completion(Endpoint endpoint, const httplib::Request& req, httplib::Response& res,
                  const httplib::ContentReader& reader) {
    std::optional<size_t> tenant;
    std::string body, want;
    if (!begin_model_request(req, res, reader, &tenant, &body, &want)) return;
    TenantLimiter::Ticket ticket;
    if (!admit_tenant(tenant, want, res, &ticket)) return;
    engine::ModelRegistry::Lease lease;
    if (!lease_model(want, res, &lease)) return;
    const ServedModel model{lease.name(), lease.n_ctx(), lease.prompts()};
    auto parsed = parse_request(endpoint, body, model, limits());
    if (!parsed.ok()) return send_error(res, parsed.error());
    OpenAIRequest& r = parsed.value();
    r.params.cache_scope = self->keys_.cache_scope(tenant);
    if (tenant) r.params.tenant = static_cast<int32_t>(*tenant);
    r.params.deadline = Clock::now() + limits().request_timeout;
    engine::Submission sub = lease.scheduler()->submit(std::move(r.params));
    if (sub.rejection != engine::Rejection::kNone) return rejected(res, sub);
    ResponseMeta meta = make_meta(endpoint, model.name, r.logprobs, r.include_usage && r.stream);
    if (r.stream)
      return stream(res, std::move(sub.stream), std::move(meta), std::move(lease),
                    std::move(ticket));
    whole(res, *sub.stream, meta, lease.prompts()->tokenizer(), &ticket);
  }

  void rejected(httplib::Response& res, const engine::Submission& sub) const {
    switch (sub.rejection) {
      case engine::Rejection::kQueueFull:
        return send_error(res, ApiError{503, sub.message, {}, "queue_full"},
                          limits().retry_after_seconds);
      case engine::Rejection::kShuttingDown:
        return send_error(res, ApiError{503, sub.message, {}, "shutting_down"});
      default:
        return send_error(res, bad_request(sub.message));
    }
  }

  // Why a request ended without a result, as an error.
  ApiError unfinished(const engine::Finish& f) const {
    if (f.reason == engine::FinishReason::kTimeout)
      return ApiError{
          503,
          "the request ran longer than " + std::to_string(limits().request_timeout.count()) + " s",
          {},
          "timeout"};
    return ApiError{
        503, "the request was cancelled: the server is shutting down", {}, "shutting_down"};
  }

  void whole(httplib::Response& res, engine::RequestStream& stream, const ResponseMeta& meta,
             const text::Tokenizer& tok, TenantLimiter::Ticket* ticket) {
    Completion c;
    // The client is checked every poll interval, also while tokens keep coming.
    auto next_check = Clock::now() + limits().stream_poll;
    for (;;) {
      engine::RequestStream::Event ev;
      const bool got = stream.next(&ev, limits().stream_poll);
      if (!got || Clock::now() >= next_check) {
        next_check = Clock::now() + limits().stream_poll;
        if (!LimitedServer::client_connected()) {
          stream.cancel();
          LimitedServer::close_after_response();
          res.status = kClientClosed;
          return;
        }
      }
      if (!got) continue;
      if (ev.token) {
        c.text += ev.token->text;
        if (meta.logprobs) c.tokens.push_back(std::move(*ev.token));
        continue;
      }
      c.finish = std::move(*ev.finish);
      c.text += c.finish.text;
      ticket->finished(int64_t{c.finish.prompt_tokens} + c.finish.completion_tokens);
      break;
    }
    if (c.finish.reason == engine::FinishReason::kCancelled ||
        c.finish.reason == engine::FinishReason::kTimeout)
      return send_error(res, unfinished(c.finish));
    send_json(res, 200, completion_body(meta, c, tok));
  }

  void stream(httplib::Response& res, std::shared_ptr<engine::RequestStream> s, ResponseMeta meta,
              engine::ModelRegistry::Lease lease, TenantLimiter::Ticket ticket) {
    auto st = std::make_shared<StreamState>();
    st->ticket = std::move(ticket);
    st->tok = &lease.prompts()->tokenizer();
    st->lease = std::move(lease);
    st->stream = std::move(s);
    st->meta = std::move(meta);
    st->poll = limits().stream_poll;
    res.status = 200;
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, st](size_t /*offset*/, httplib::DataSink& sink) { return pump(*st, sink); },
        [st](bool success) {
          if (!success) st->stream->cancel();
        });
  }

  // One call of the content provider: waits up to the poll interval for
  // events, sends what came, and tells a vanished client's request to stop.
  bool pump(StreamState& st, httplib::DataSink& sink) {
    std::string out;
    if (!st.started) {
      st.started = true;
      if (st.meta.endpoint == Endpoint::kChatCompletions) out = role_chunk(st.meta);
    }
    engine::RequestStream::Event ev;
    auto wait = st.poll;
    bool finished = false;
    while (!finished && st.stream->next(&ev, wait)) {
      wait = std::chrono::milliseconds(0);  // then take whatever else is there
      if (ev.token) {
        engine::TokenEvent& t = *ev.token;
        std::string text = std::move(t.text);
        if (st.meta.logprobs) st.held.push_back(std::move(t));
        if (!text.empty()) {
          out += delta_chunk(st.meta, text, st.held, *st.tok, &st.text_offset);
          st.held.clear();
        }
        continue;
      }
      const engine::Finish& f = *ev.finish;
      st.ticket.finished(int64_t{f.prompt_tokens} + f.completion_tokens);
      if (!f.text.empty() || !st.held.empty())
        out += delta_chunk(st.meta, f.text, st.held, *st.tok, &st.text_offset);
      if (f.reason == engine::FinishReason::kCancelled ||
          f.reason == engine::FinishReason::kTimeout) {
        out += error_chunk(error_body(unfinished(f)));
      } else {
        out += finish_chunk(st.meta, f.reason);
        if (st.meta.include_usage) out += usage_chunk(st.meta, f);
      }
      out += kDone;
      finished = true;
    }
    if (out.empty()) {
      if (sink.is_writable() && LimitedServer::client_connected()) return true;
      st.stream->cancel();
      return false;
    }
    if (!sink.write(out.data(), out.size())) {
      st.stream->cancel();
      return false;
    }
    if (finished) sink.done();
    return true;
  }
};

HttpServer::HttpServer(const ServerLimits& limits, ApiKeys keys, const memory::Ledger* ledger)
    : limits_(limits), keys_(std::move(keys)), ledger_(ledger) {}

HttpServer::~HttpServer() {
  shutdown(Clock::now());
}

Result<int> HttpServer::bind(const std::string& host, int port, int32_t connections) {
  http_ = std::make_unique<LimitedServer>(limits_, connections, connections, &counters_);
  routes_ = std::make_unique<Routes>(this, limits_.parse_slots);
  Routes* r = routes_.get();
  LimitedServer& s = *http_;

  // Only /health and the page's static files are public (the page asks for a
  // key and sends it with its requests). A refused request's body is left
  // unread, so its connection closes after the answer.
  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    const bool page =
        req.method == "GET" && std::any_of(web_assets().begin(), web_assets().end(),
                                           [&](const WebAsset& a) { return a.path == req.path; });
    if (!keys_.enabled() || req.path == "/health" || page)
      return httplib::Server::HandlerResponse::Unhandled;
    if (keys_.match(req.get_header_value("Authorization"))) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    LimitedServer::close_after_response();
    send_error(
        res,
        ApiError{
            401, "a valid API key is required (Authorization: Bearer KEY)", {}, "invalid_api_key"});
    return httplib::Server::HandlerResponse::Handled;
  });
  s.Get("/health", [r](const httplib::Request& q, httplib::Response& p) { r->health(q, p); });
  for (const WebAsset& a : web_assets()) {
    s.Get(std::string(a.path), [a](const httplib::Request&, httplib::Response& p) {
      p.status = 200;
      p.set_header("Cache-Control", "no-cache");
      p.set_header("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'");
      p.set_header("X-Content-Type-Options", "nosniff");
      p.set_content(a.body.data(), a.body.size(), std::string(a.content_type));
    });
  }
  s.Get("/v1/models", [r](const httplib::Request& q, httplib::Response& p) { r->models(q, p); });
  s.Get("/metrics", [r](const httplib::Request& q, httplib::Response& p) { r->metrics(q, p); });
  s.Get("/v1/memory", [r](const httplib::Request& q, httplib::Response& p) { r->memory(q, p); });
  s.Post("/v1/completions",
         [r](const httplib::Request& q, httplib::Response& p, const httplib::ContentReader& c) {
           r->completion(Endpoint::kCompletions, q, p, c);
         });
  s.Post("/v1/prefix", [r](const httplib::Request& q, httplib::Response& p,
                           const httplib::ContentReader& c) { r->prefix(q, p, c); });
  s.Post("/v1/chat/completions",
         [r](const httplib::Request& q, httplib::Response& p, const httplib::ContentReader& c) {
           r->completion(Endpoint::kChatCompletions, q, p, c);
         });
  // Statuses httplib sets itself (404, a bad request line, a wire fault) get
  // OpenAI's error body too.
  s.set_error_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        const WireFault fault = LimitedServer::current_fault();
        if (fault != WireFault::kNone) res.status = fault_status(fault);
        std::string message = fault != WireFault::kNone ? fault_message(fault)
                              : res.status == 404 ? "no route " + printable(req.method, 16) + " " +
                                                        printable(req.path, 128)
                                                  : std::string("the request is malformed");
        res.set_content(error_body(ApiError{res.status, std::move(message), {}, {}}),
                        "application/json");
        return httplib::Server::HandlerResponse::Handled;
      }));
  s.set_post_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    counters_.count(route_of(req.path), res.status);
  });
  s.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, const std::exception_ptr& ep) {
        std::string what = "internal error";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = std::string("internal error: ") + e.what();
        } catch (...) {
        }
        send_error(res, ApiError{500, printable(what, 200), {}, {}});
      });

  const int bound = port == 0 ? s.bind_to_any_port(host) : (s.bind_to_port(host, port) ? port : -1);
  if (bound <= 0)
    return make_error("cannot listen on ", printable(host, 64), ":", port,
                      " (in use, or not an address of this machine)");
  // Room for every connection the pool can hold, and a burst beyond them.
  if (!s.set_backlog(std::max(4 * connections, 1024)))
    return make_error("cannot set the listen backlog on ", printable(host, 64), ":", bound);
  return bound;
}

void HttpServer::start() {
  thread_ = std::thread([this] { http_->listen_after_bind(); });
}

void HttpServer::attach(engine::ModelRegistry* registry, uint64_t predicted_peak_bytes,
                        std::string budget_source) {
  routes_->predicted_peak = predicted_peak_bytes;
  routes_->budget_source = std::move(budget_source);
  int32_t max_ctx = 0;
  for (const engine::ModelStatus& m : registry->status()) max_ctx = std::max(max_ctx, m.n_ctx);
  routes_->max_ctx = max_ctx;
  routes_->registry.store(registry, std::memory_order_release);
}

void HttpServer::shutdown(Clock::time_point deadline) {
  if (shut_down_) return;
  shut_down_ = true;
  stopping_.store(true);
  if (!http_) return;
  // Reads and writes still waiting a second after the deadline give up.
  http_->begin_shutdown(deadline + std::chrono::seconds(1));
  http_->stop_accepting();
  if (routes_ != nullptr) {
    if (engine::ModelRegistry* reg = routes_->registry.load()) reg->drain(deadline);
  }
  // The accept loop has ended; it returns when every handler has sent its
  // last event. httplib's stop() is not called: it would cut those streams.
  if (thread_.joinable()) thread_.join();
}

}  // namespace snug::server
