// The quotas of --tenants at run time: requests in flight and tokens in the
// last minute, per tenant. A request over max_concurrent or over
// tokens_per_minute is refused with 429 and the seconds after which it may
// succeed (Retry-After); one for a model the tenant may not use, with 403.
// Tokens (prompt and completion) count when a request finishes.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "server/auth.h"

namespace snug::server {

struct TenantStatus {
  std::string name;
  int32_t in_flight = 0;
  int64_t tokens_last_minute = 0;
  uint64_t admitted = 0;
  uint64_t tokens = 0;               // all tokens counted since start
  uint64_t refused_rate = 0;         // over tokens_per_minute
  uint64_t refused_concurrency = 0;  // over max_concurrent
  uint64_t refused_model = 0;        // a model it may not use
  Tenant quota;
};

class TenantLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  explicit TenantLimiter(std::vector<Tenant> tenants);

  // Holds a request's place in its tenant's max_concurrent; counts its tokens.
  class Ticket {
   public:
    Ticket() = default;
    Ticket(Ticket&& o) noexcept { *this = std::move(o); }
    Ticket& operator=(Ticket&& o) noexcept;
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    ~Ticket() { release(); }
    // The request's tokens, when it finished (once; later calls add nothing).
    void finished(int64_t tokens);
    void release();

   private:
    friend class TenantLimiter;
    TenantLimiter* limiter_ = nullptr;
    size_t tenant_ = 0;
    bool counted_ = false;
  };

  struct Refusal {
    int status = 0;       // 429 or 403
    int retry_after = 0;  // seconds, for 429
    std::string message;  // one line
    std::string code;  // "rate_limit_exceeded", "concurrency_limit_exceeded", "model_not_allowed"
  };

  // A ticket for a request of `tenant` to `model`, or why not. Thread-safe.
  std::optional<Refusal> admit(size_t tenant, const std::string& model, Ticket* out,
                               Clock::time_point now = Clock::now());

  std::vector<TenantStatus> status(Clock::time_point now = Clock::now()) const;

 private:
  struct State {
    Tenant quota;
    int32_t in_flight = 0;
    std::deque<std::pair<Clock::time_point, int64_t>> window;  // finished requests' tokens
    int64_t window_tokens = 0;
    uint64_t admitted = 0, tokens = 0, refused_rate = 0, refused_concurrency = 0, refused_model = 0;
  };
  void expire(State& s, Clock::time_point now) const;
  mutable std::mutex mu_;
  mutable std::vector<State> states_;
};

}  // namespace snug::server
