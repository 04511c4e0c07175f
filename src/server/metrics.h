// GET /metrics: Prometheus text exposition (format 0.0.4) of each served
// model's state and loads, each loaded model's scheduler counters and gauges
// (label model="NAME"), the budget, the ledger's bytes per category, the
// process's resident set, and the HTTP side's requests by route and status.
// Every name starts with snug_; counters end in _total, histograms are in
// seconds. A model's scheduler counters start again from 0 when it reloads.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/model_registry.h"
#include "engine/scheduler.h"
#include "memory/ledger.h"
#include "server/tenant_limiter.h"

namespace snug::server {

// The routes counted; anything else is kOther, so the label set stays fixed
// whatever paths clients send.
enum class Route : uint8_t { kCompletions, kChatCompletions, kModels, kHealth, kMetrics, kOther };
Route route_of(std::string_view path);
const char* route_label(Route r);  // "/v1/completions", ..., "other"

// Requests by route and status, and connection-level events. Thread-safe.
class HttpCounters {
 public:
  void count(Route route, int status);
  void connection_refused() { refused_.fetch_add(1, std::memory_order_relaxed); }
  void connection_opened() { active_.fetch_add(1, std::memory_order_relaxed); }
  void connection_closed() { active_.fetch_sub(1, std::memory_order_relaxed); }

  std::map<std::pair<Route, int>, uint64_t> requests() const;
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }
  int64_t active() const { return active_.load(std::memory_order_relaxed); }

 private:
  mutable std::mutex mu_;
  std::map<std::pair<Route, int>, uint64_t> requests_;  // statuses are the server's own: few
  std::atomic<uint64_t> refused_{0};
  std::atomic<int64_t> active_{0};
};

struct MetricsInput {
  std::vector<engine::ModelStatus> models;  // every served model; schedulers of loaded ones
  uint64_t budget_bytes = 0;                // 0: not shown
  uint64_t budget_reserved_bytes = 0;
  std::vector<TenantStatus> tenants;  // with keys
  const memory::Ledger* ledger = nullptr;
  const HttpCounters* http = nullptr;
  uint64_t resident_bytes = 0;        // VmRSS
  uint64_t peak_resident_bytes = 0;   // VmHWM
  uint64_t predicted_peak_bytes = 0;  // the plan's, with the server's bound (0: unknown)
};

std::string format_metrics(const MetricsInput& in);

// A label value escaped as the exposition format asks: \\, \" and \n.
std::string escape_label(std::string_view v);

}  // namespace snug::server
