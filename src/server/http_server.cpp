#include "server/http_server.h"

#include <semaphore>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "base/sysmem.h"
#include "server/openai_response.h"

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
  std::atomic<engine::Scheduler*> scheduler{nullptr};
  ServedModel model;  // written before `scheduler` is published
  uint64_t predicted_peak = 0;
  std::counting_semaphore<> parse_slots;

  Routes(HttpServer* s, int32_t slots) : self(s), parse_slots(std::max(slots, 1)) {}

  const ServerLimits& limits() const { return self->limits_; }

  // The request's tenant index when keys are on (nullopt: no keys, or no match).
  bool authorized(const httplib::Request& req, std::optional<size_t>* tenant) const {
    if (!self->keys_.enabled()) return true;
    *tenant = self->keys_.match(req.get_header_value("Authorization"));
    return tenant->has_value();
  }

  void health(const httplib::Request&, httplib::Response& res) const {
    if (self->stopping_.load()) return send_json(res, 503, R"({"status":"shutting down"})");
    if (scheduler.load() == nullptr) return send_json(res, 503, R"({"status":"loading"})");
    send_json(res, 200, R"({"status":"ok"})");
  }

  void models(const httplib::Request&, httplib::Response& res) const {
    if (scheduler.load() == nullptr) return loading(res);
    json data = json::array({json{{"id", model.name},
                                  {"object", "model"},
                                  {"created", 0},
                                  {"owned_by", "snug"},
                                  {"context_length", model.n_ctx}}});
    send_json(res, 200, json{{"object", "list"}, {"data", std::move(data)}}.dump());
  }

  void metrics(const httplib::Request&, httplib::Response& res) const {
    MetricsInput in;
    engine::SchedulerMetrics sm;
    if (engine::Scheduler* s = scheduler.load()) {
      sm = s->metrics();
      in.scheduler = &sm;
    }
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
  bool read_and_parse(Endpoint endpoint, const httplib::Request& req, httplib::Response& res,
                      const httplib::ContentReader& reader, OpenAIRequest* out) {
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
    auto parsed = parse_request(endpoint, body, model, limits());
    if (!parsed.ok()) {
      send_error(res, parsed.error());
      return false;
    }
    *out = std::move(parsed.value());
    return true;
  }

  void completion(Endpoint endpoint, const httplib::Request& req, httplib::Response& res,
                  const httplib::ContentReader& reader) {
    engine::Scheduler* sched = scheduler.load();
    if (sched == nullptr) {
      LimitedServer::close_after_response();
      return loading(res);
    }
    std::optional<size_t> tenant;
    if (!authorized(req, &tenant)) {
      LimitedServer::close_after_response();
      return send_error(res, ApiError{401, "a valid API key is required", {}, "invalid_api_key"});
    }
    OpenAIRequest r;
    if (!read_and_parse(endpoint, req, res, reader, &r)) return;
    r.params.cache_scope = ApiKeys::cache_scope(tenant);
    r.params.deadline = Clock::now() + limits().request_timeout;
    engine::Submission sub = sched->submit(std::move(r.params));
    if (sub.rejection != engine::Rejection::kNone) return rejected(res, sub);
    ResponseMeta meta = make_meta(endpoint, model.name, r.logprobs, r.include_usage && r.stream);
    if (r.stream) return stream(res, std::move(sub.stream), std::move(meta));
    whole(res, *sub.stream, meta);
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

  void whole(httplib::Response& res, engine::RequestStream& stream, const ResponseMeta& meta) {
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
      break;
    }
    if (c.finish.reason == engine::FinishReason::kCancelled ||
        c.finish.reason == engine::FinishReason::kTimeout)
      return send_error(res, unfinished(c.finish));
    send_json(res, 200, completion_body(meta, c, model.prompts->tokenizer()));
  }

  void stream(httplib::Response& res, std::shared_ptr<engine::RequestStream> s, ResponseMeta meta) {
    auto st = std::make_shared<StreamState>();
    st->stream = std::move(s);
    st->meta = std::move(meta);
    st->tok = &model.prompts->tokenizer();
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

  // Only /health is public. A refused request's body is left unread, so its
  // connection closes after the answer.
  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!keys_.enabled() || req.path == "/health")
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
  s.Get("/v1/models", [r](const httplib::Request& q, httplib::Response& p) { r->models(q, p); });
  s.Get("/metrics", [r](const httplib::Request& q, httplib::Response& p) { r->metrics(q, p); });
  s.Post("/v1/completions",
         [r](const httplib::Request& q, httplib::Response& p, const httplib::ContentReader& c) {
           r->completion(Endpoint::kCompletions, q, p, c);
         });
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

void HttpServer::attach(engine::Scheduler* scheduler, ServedModel model,
                        uint64_t predicted_peak_bytes) {
  routes_->model = std::move(model);
  routes_->predicted_peak = predicted_peak_bytes;
  routes_->scheduler.store(scheduler, std::memory_order_release);
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
    if (engine::Scheduler* s = routes_->scheduler.load()) s->drain(deadline);
  }
  // The accept loop has ended; it returns when every handler has sent its
  // last event. httplib's stop() is not called: it would cut those streams.
  if (thread_.joinable()) thread_.join();
}

}  // namespace snug::server
