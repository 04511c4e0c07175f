#include "server/tenant_limiter.h"

#include <algorithm>

#include "base/check.h"

namespace snug::server {

namespace {
constexpr std::chrono::seconds kWindow{60};
}  // namespace

TenantLimiter::TenantLimiter(std::vector<Tenant> tenants) {
  states_.resize(tenants.size());
  for (size_t i = 0; i < tenants.size(); ++i) states_[i].quota = std::move(tenants[i]);
}

TenantLimiter::Ticket& TenantLimiter::Ticket::operator=(Ticket&& o) noexcept {
  if (this != &o) {
    release();
    limiter_ = o.limiter_;
    tenant_ = o.tenant_;
    counted_ = o.counted_;
    o.limiter_ = nullptr;
  }
  return *this;
}

void TenantLimiter::Ticket::finished(int64_t tokens) {
  if (limiter_ == nullptr || counted_) return;
  counted_ = true;
  std::lock_guard<std::mutex> lock(limiter_->mu_);
  State& s = limiter_->states_[tenant_];
  s.window.emplace_back(Clock::now(), tokens);
  s.window_tokens += tokens;
  s.tokens += static_cast<uint64_t>(tokens);
}

void TenantLimiter::Ticket::release() {
  if (limiter_ == nullptr) return;
  std::lock_guard<std::mutex> lock(limiter_->mu_);
  State& s = limiter_->states_[tenant_];
  SNUG_CHECK(s.in_flight > 0);
  --s.in_flight;
  limiter_ = nullptr;
}

void TenantLimiter::expire(State& s, Clock::time_point now) const {
  while (!s.window.empty() && now - s.window.front().first >= kWindow) {
    s.window_tokens -= s.window.front().second;
    s.window.pop_front();
  }
}

std::optional<TenantLimiter::Refusal> TenantLimiter::admit(size_t tenant, const std::string& model,
                                                           Ticket* out, Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  State& s = states_[tenant];
  const Tenant& q = s.quota;
  if (!q.may_use(model)) {
    ++s.refused_model;
    return Refusal{403, 0,
                   "tenant '" + q.name + "' may not use the model '" + printable(model, 64) + "'",
                   "model_not_allowed"};
  }
  if (q.max_concurrent > 0 && s.in_flight >= q.max_concurrent) {
    ++s.refused_concurrency;
    return Refusal{429, 1,
                   "tenant '" + q.name + "' has " + std::to_string(s.in_flight) +
                       " requests in flight, its limit; retry when one finishes",
                   "concurrency_limit_exceeded"};
  }
  if (q.tokens_per_minute > 0) {
    expire(s, now);
    if (s.window_tokens >= q.tokens_per_minute) {
      // Until enough of the oldest finished requests leave the window.
      int64_t over = s.window_tokens - q.tokens_per_minute;
      auto when = s.window.front().first;
      for (const auto& [t, n] : s.window) {
        when = t;
        over -= n;
        if (over < 0) break;
      }
      const auto wait = std::chrono::duration_cast<std::chrono::seconds>(when + kWindow - now);
      ++s.refused_rate;
      return Refusal{429, static_cast<int>(std::max<int64_t>(1, wait.count() + 1)),
                     "tenant '" + q.name + "' used " + std::to_string(s.window_tokens) +
                         " tokens in the last minute, its limit is " +
                         std::to_string(q.tokens_per_minute),
                     "rate_limit_exceeded"};
    }
  }
  ++s.in_flight;
  ++s.admitted;
  *out = Ticket();
  out->limiter_ = this;
  out->tenant_ = tenant;
  return std::nullopt;
}

std::vector<TenantStatus> TenantLimiter::status(Clock::time_point now) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<TenantStatus> out;
  for (State& s : states_) {
    expire(s, now);
    TenantStatus t;
    t.name = s.quota.name;
    t.in_flight = s.in_flight;
    t.tokens_last_minute = s.window_tokens;
    t.admitted = s.admitted;
    t.tokens = s.tokens;
    t.refused_rate = s.refused_rate;
    t.refused_concurrency = s.refused_concurrency;
    t.refused_model = s.refused_model;
    t.quota = s.quota;
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace snug::server
