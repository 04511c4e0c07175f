// The HTTP routes of `snug serve`, OpenAI-compatible, on cpp-httplib:
//   POST /v1/completions, POST /v1/chat/completions   JSON, or SSE with "stream"
//   GET  /v1/models   the served models, with their state and planned bytes
//   GET  /v1/memory   JSON: the budget, the ledger, every model's plan and state
//   GET  /health    200 {"status":"ok"}; 503 while loading or when the server stops
//   GET  /metrics   Prometheus text (metrics.h)
// A completion names its model ("model"; optional when one is served); the
// registry loads it on demand inside the budget (engine/model_registry.h),
// and the response holds it loaded until it ends.
// With API keys every route but /health needs `Authorization: Bearer KEY`.
//
// Lifecycle: bind() and start() serve at once (/health answers "loading"),
// attach() hands over the model registry, shutdown() stops
// accepting, drains the scheduler until a deadline and joins every thread.
// The server only parses, checks and streams: scheduling is engine/'s.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "base/result.h"
#include "engine/model_registry.h"
#include "engine/scheduler.h"
#include "memory/ledger.h"
#include "server/auth.h"
#include "server/http_connection.h"
#include "server/limits.h"
#include "server/metrics.h"
#include "server/openai_request.h"

namespace snug::server {

class HttpServer {
 public:
  // `ledger` (for /metrics) must outlive the server.
  HttpServer(const ServerLimits& limits, ApiKeys keys, const memory::Ledger* ledger);
  ~HttpServer();  // shuts down with an immediate deadline if still running
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds host:port (port 0: any free one) with `connections` handler threads
  // and as many waiting connections; returns the port bound.
  Result<int> bind(const std::string& host, int port, int32_t connections);
  // Serves on a thread of its own until shutdown().
  void start();
  // Serving starts: completions go to the registry's models from now on. The
  // registry must outlive the server's shutdown(). predicted_peak_bytes:
  // shown in /metrics beside the measured peak.
  // budget_source: how the budget was chosen ("--memory", "cgroup v2 limit"...).
  void attach(engine::ModelRegistry* registry, uint64_t predicted_peak_bytes,
              std::string budget_source);

  // Stops accepting, lets running requests finish until `deadline` (then the
  // scheduler cancels them), closes the connections and joins. Idempotent.
  void shutdown(std::chrono::steady_clock::time_point deadline);

  const HttpCounters& counters() const { return counters_; }
  const ApiKeys& keys() const { return keys_; }

 private:
  struct Routes;
  const ServerLimits limits_;
  const ApiKeys keys_;
  const memory::Ledger* ledger_;
  HttpCounters counters_;
  std::unique_ptr<LimitedServer> http_;
  std::unique_ptr<Routes> routes_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  bool shut_down_ = false;
};

}  // namespace snug::server
