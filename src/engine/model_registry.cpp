#include "engine/model_registry.h"

#include <algorithm>

#include <fmt/format.h>

#include "base/bytes.h"
#include "base/check.h"
#include "base/log.h"
#include "base/sysmem.h"

namespace snug::engine {

const char* model_state_name(ModelState s) {
  switch (s) {
    case ModelState::kUnloaded:
      return "unloaded";
    case ModelState::kLoading:
      return "loading";
    case ModelState::kLoaded:
      return "loaded";
    case ModelState::kUnloading:
      return "unloading";
    case ModelState::kTooLarge:
      return "too_large";
  }
  return "unknown";
}

ModelRegistry::ModelRegistry(memory::Budget* budget, std::vector<ModelSpec> specs,
                             std::vector<LoadedInstance> preloaded)
    : budget_(budget) {
  SNUG_CHECK(preloaded.empty() || preloaded.size() == specs.size());
  entries_.resize(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    Entry& e = entries_[i];
    e.spec = std::move(specs[i]);
    if (!e.spec.too_large.empty()) e.state = ModelState::kTooLarge;
    if (!preloaded.empty() && preloaded[i].owner != nullptr) {
      e.instance = std::move(preloaded[i]);
      e.state = ModelState::kLoaded;
      e.loads = 1;
      e.last_used = Clock::now();
    }
  }
}

ModelRegistry::~ModelRegistry() {
  std::unique_lock<std::mutex> lock(mu_);
  for (size_t i = 0; i < entries_.size(); ++i) {
    SNUG_CHECK(entries_[i].in_flight == 0);
    if (entries_[i].state == ModelState::kLoaded) {
      LoadedInstance inst = std::move(entries_[i].instance);
      entries_[i].instance = {};
      lock.unlock();
      inst = {};
      lock.lock();
      entries_[i].reservation.release();
      entries_[i].state = ModelState::kUnloaded;
    }
  }
}

ModelRegistry::Lease& ModelRegistry::Lease::operator=(Lease&& o) noexcept {
  if (this != &o) {
    release();
    registry_ = o.registry_;
    index_ = o.index_;
    instance_ = std::move(o.instance_);
    name_ = o.name_;
    n_ctx_ = o.n_ctx_;
    o.registry_ = nullptr;
    o.instance_ = {};
  }
  return *this;
}

void ModelRegistry::Lease::release() {
  if (registry_ == nullptr) return;
  ModelRegistry* r = registry_;
  registry_ = nullptr;
  instance_ = {};
  r->give_back(index_);
}

void ModelRegistry::give_back(size_t index) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry& e = entries_[index];
  SNUG_CHECK(e.in_flight > 0);
  --e.in_flight;
  e.last_used = Clock::now();
  cv_.notify_all();
}

int ModelRegistry::lru_idle() const {
  int best = -1;
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = entries_[i];
    if (e.state != ModelState::kLoaded || e.in_flight > 0 || e.spec.pinned) continue;
    if (best < 0 || e.last_used < entries_[static_cast<size_t>(best)].last_used)
      best = static_cast<int>(i);
  }
  return best;
}

void ModelRegistry::unload(std::unique_lock<std::mutex>& lock, size_t i, bool eviction) {
  Entry& e = entries_[i];
  SNUG_CHECK(e.state == ModelState::kLoaded && e.in_flight == 0 && !loading_);
  e.state = ModelState::kUnloading;
  e.closing = false;
  loading_ = true;
  LoadedInstance inst = std::move(e.instance);
  e.instance = {};
  memory::Reservation r = std::move(e.reservation);
  log_info("model {}: unloading ({}), {} back to the budget", printable(e.spec.name, 128),
           eviction ? "evicted least recently used to make room" : "idle past its keep-alive",
           format_bytes(e.spec.planned_bytes));
  lock.unlock();
  inst = {};  // the scheduler drains nothing (idle) and joins; the weights unmap
  release_free_heap();
  r.release();
  lock.lock();
  loading_ = false;
  e.state = ModelState::kUnloaded;
  ++(eviction ? e.evictions : e.idle_unloads);
  cv_.notify_all();
}

uint64_t ModelRegistry::idle_bytes() const {
  uint64_t idle = 0;
  for (const Entry& o : entries_) {
    if (o.state == ModelState::kLoaded && o.in_flight == 0 && !o.spec.pinned)
      idle += o.spec.planned_bytes;
  }
  return idle;
}

uint64_t ModelRegistry::room_for_head() const {
  uint64_t room = (budget_ ? budget_->available() : 0) + idle_bytes();
  for (const Entry& o : entries_) {
    if (o.closing && o.in_flight > 0) room += o.spec.planned_bytes;
  }
  return room;
}

void ModelRegistry::clear_closing() {
  for (Entry& o : entries_) o.closing = false;
}

void ModelRegistry::close_for(size_t i, uint64_t lacking) {
  std::vector<size_t> busy;
  for (size_t k = 0; k < entries_.size(); ++k) {
    const Entry& o = entries_[k];
    if (k != i && o.state == ModelState::kLoaded && o.in_flight > 0 && !o.spec.pinned)
      busy.push_back(k);
  }
  std::sort(busy.begin(), busy.end(),
            [&](size_t x, size_t y) { return entries_[x].last_used < entries_[y].last_used; });
  uint64_t found = 0;
  size_t n = 0;
  while (n < busy.size() && found < lacking) found += entries_[busy[n++]].spec.planned_bytes;
  if (found < lacking) n = 0;  // pinned models hold the rest: closing would not help
  std::vector<bool> close(entries_.size(), false);
  for (size_t k = 0; k < n; ++k) close[busy[k]] = true;
  for (size_t k = 0; k < entries_.size(); ++k) {
    Entry& o = entries_[k];
    if (close[k] && !o.closing) {
      log_info(
          "model {}: taking no new requests until its {} in flight finish, to make room "
          "for model {}",
          printable(o.spec.name, 128), o.in_flight, printable(entries_[i].spec.name, 128));
    }
    o.closing = close[k];
  }
}

ModelRegistry::Acquired ModelRegistry::acquire(const std::string& name,
                                               Clock::time_point deadline) {
  Acquired out;
  std::unique_lock<std::mutex> lock(mu_);
  size_t i = 0;
  while (i < entries_.size() && entries_[i].spec.name != name) ++i;
  if (i == entries_.size()) {
    out.error = AcquireError::kUnknown;
    out.message =
        "the model '" + printable(name, 64) + "' does not exist; this server has " + names();
    return out;
  }
  Entry& e = entries_[i];
  const Clock::time_point waited_from = Clock::now();
  uint64_t ticket = 0;  // set once queued among the waiters
  const auto leave_queue = [&] {
    if (ticket == 0) return;
    const bool was_head = waiters_.front().ticket == ticket;
    waiters_.erase(std::find_if(waiters_.begin(), waiters_.end(),
                                [&](const Waiter& w) { return w.ticket == ticket; }));
    --e.waiting;
    if (was_head) clear_closing();  // the next oldest decides anew
    cv_.notify_all();
  };
  for (;;) {
    if (draining_) {
      leave_queue();
      out.error = AcquireError::kShuttingDown;
      out.message = "the server is shutting down";
      return out;
    }
    if (e.state == ModelState::kTooLarge) {
      out.error = AcquireError::kTooLarge;
      out.message = e.spec.too_large;
      return out;
    }
    if (e.state == ModelState::kLoaded && !e.closing) {
      leave_queue();
      ++e.in_flight;
      e.last_used = Clock::now();
      out.lease.registry_ = this;
      out.lease.index_ = i;
      out.lease.instance_ = e.instance;
      out.lease.name_ = &e.spec.name;
      out.lease.n_ctx_ = e.spec.n_ctx;
      return out;
    }
    if (ticket == 0) {
      ticket = ++next_ticket_;
      waiters_.push_back({ticket, i});
      ++e.waiting;
    }
    const bool head = waiters_.front().ticket == ticket;
    if (!loading_ && e.state == ModelState::kUnloaded) {
      const uint64_t need = e.spec.planned_bytes;
      const uint64_t avail = budget_ ? budget_->available() : need;
      // The oldest waiter loads when it fits; a later one only when the
      // oldest's room (free, idle and closing bytes) survives it.
      bool fits = avail >= need;
      if (fits && !head) {
        const uint64_t head_need = entries_[waiters_.front().index].spec.planned_bytes;
        fits = room_for_head() >= need + head_need;
      }
      if (fits) {
        memory::Reservation reservation;
        if (budget_ != nullptr) {
          auto r = budget_->reserve(need, "model " + e.spec.name);
          SNUG_CHECK(r.ok());  // loads and unloads are serialised under mu_
          reservation = std::move(r.value());
        }
        e.state = ModelState::kLoading;
        loading_ = true;
        lock.unlock();
        const Clock::time_point t0 = Clock::now();
        Result<LoadedInstance> inst = e.spec.load();
        const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
        lock.lock();
        loading_ = false;
        cv_.notify_all();
        if (!inst.ok()) {
          e.state = ModelState::kUnloaded;
          ++e.load_failures;
          leave_queue();
          out.error = AcquireError::kLoadFailed;
          out.message = "model '" + printable(e.spec.name, 64) +
                        "' could not be loaded: " + inst.error().message;
          return out;
        }
        e.instance = std::move(inst.value());
        e.reservation = std::move(reservation);
        e.state = ModelState::kLoaded;
        e.last_used = Clock::now();
        ++e.loads;
        e.load_seconds_total += seconds;
        log_info("model {}: loaded in {:.2f} s ({} of the budget)", printable(e.spec.name, 128),
                 seconds, format_bytes(need));
        continue;
      }
      if (head) {
        // Evict only when evicting every idle model makes room; otherwise
        // close busy ones to new requests and wait for them to finish.
        const uint64_t idle = idle_bytes();
        if (avail + idle >= need) {
          const int victim = lru_idle();
          SNUG_CHECK(victim >= 0);
          unload(lock, static_cast<size_t>(victim), /*eviction=*/true);
          continue;
        }
        close_for(i, need - avail - idle);
      }
    }
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && Clock::now() >= deadline) {
      leave_queue();
      out.error = AcquireError::kTimeout;
      const double waited = std::chrono::duration<double>(Clock::now() - waited_from).count();
      out.message = fmt::format(
          "model '{}' needs {} of the memory budget, and models with requests in flight held it "
          "for {:.0f} s; retry later",
          printable(e.spec.name, 64), format_bytes(e.spec.planned_bytes), waited);
      return out;
    }
  }
}

int ModelRegistry::reap() {
  std::unique_lock<std::mutex> lock(mu_);
  int n = 0;
  for (bool again = true; again;) {
    again = false;
    if (loading_ || draining_) break;
    const Clock::time_point now = Clock::now();
    for (size_t i = 0; i < entries_.size(); ++i) {
      const Entry& e = entries_[i];
      if (e.state != ModelState::kLoaded || e.in_flight > 0 || e.spec.pinned ||
          e.spec.keep_alive.count() < 0 || now - e.last_used < e.spec.keep_alive)
        continue;
      unload(lock, i, /*eviction=*/false);
      ++n;
      again = true;  // the lock was released: look again from the start
      break;
    }
  }
  return n;
}

void ModelRegistry::drain(Clock::time_point deadline) {
  std::vector<LoadedInstance> loaded;
  {
    std::lock_guard<std::mutex> lock(mu_);
    draining_ = true;
    cv_.notify_all();
    for (const Entry& e : entries_) {
      if (e.state == ModelState::kLoaded) loaded.push_back(e.instance);
    }
  }
  for (const LoadedInstance& inst : loaded) {
    if (inst.scheduler != nullptr) inst.scheduler->drain(deadline);
  }
}

std::string ModelRegistry::names() const {
  std::string out;
  for (size_t k = 0; k < entries_.size() && k < 8; ++k) {
    if (k > 0) out += ", ";
    out += fmt::format("'{}'", printable(entries_[k].spec.name, 64));
  }
  if (entries_.size() > 8) out += ", ...";
  return out;
}

std::vector<ModelStatus> ModelRegistry::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ModelStatus> out;
  out.reserve(entries_.size());
  for (const Entry& e : entries_) {
    ModelStatus s;
    s.name = e.spec.name;
    s.path = e.spec.path;
    s.state = e.state;
    s.planned_bytes = e.spec.planned_bytes;
    s.n_ctx = e.spec.n_ctx;
    s.pinned = e.spec.pinned;
    s.keep_alive_ms = e.spec.keep_alive.count();
    s.in_flight = e.in_flight;
    s.waiting = e.waiting;
    s.closing = e.closing;
    s.loads = e.loads;
    s.load_failures = e.load_failures;
    s.evictions = e.evictions;
    s.idle_unloads = e.idle_unloads;
    s.load_seconds_total = e.load_seconds_total;
    s.too_large = e.spec.too_large;
    if (e.state == ModelState::kLoaded && e.instance.scheduler != nullptr)
      s.scheduler = e.instance.scheduler->metrics();
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace snug::engine
