// Many models under one byte budget: the models `snug serve --models` serves,
// loaded on demand and evicted least-recently-used by bytes.
//
// Each model has a plan made from its header alone (planned_bytes: weights,
// tokenizer, KV pool, workspace, bookkeeping). Loading one reserves exactly
// that from the shared Budget first; when the budget lacks room, idle models
// (no request in flight, not pinned) are unloaded, least recently used first,
// until it fits. A model whose plan exceeds what the budget can ever give it
// is refused at once; one that fits once busy models finish waits (until its
// deadline) for them, first come first served: the oldest such request
// closes enough busy models (least recently used first) to new requests;
// they finish what they hold, are evicted, and it loads, so a model kept busy
// cannot hold the room forever. A later request for another model loads at
// once only when that leaves the oldest one's room intact (backfilling).
// Each model keeps its own KV pool, sized by its plan: KV
// blocks of different models have different shapes, and a per-model pool
// unloads with its model, whole. A model idle for longer than its keep-alive
// is unloaded by reap().
//
// The registry knows nothing of files: each entry brings a loader, so the
// policy here is tested with loaders that allocate nothing.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "engine/scheduler.h"
#include "memory/budget.h"
#include "text/chat_prompt.h"

namespace snug::engine {

// A loaded model: whatever `owner` keeps alive (model, tokenizer, scheduler,
// chat prompter) is released when the registry unloads it.
struct LoadedInstance {
  std::shared_ptr<void> owner;
  Scheduler* scheduler = nullptr;               // null only in tests
  const text::ChatPrompter* prompts = nullptr;  // null only in tests
};

struct ModelSpec {
  std::string name;            // the API's "model"
  std::string path;            // where it came from, for status pages
  uint64_t planned_bytes = 0;  // reserved from the budget while loaded
  int32_t n_ctx = 0;           // tokens one sequence may hold
  bool pinned = false;         // never evicted nor reaped
  // Idle time after which reap() unloads it; negative: kept until evicted.
  std::chrono::milliseconds keep_alive{-1};
  std::string too_large;  // when set: can never load, and why (one line)
  std::function<Result<LoadedInstance>()> load;
};

enum class ModelState : uint8_t { kUnloaded, kLoading, kLoaded, kUnloading, kTooLarge };
const char* model_state_name(ModelState s);  // "unloaded", "loading", ...

struct ModelStatus {
  std::string name;
  std::string path;
  ModelState state = ModelState::kUnloaded;
  uint64_t planned_bytes = 0;
  int32_t n_ctx = 0;
  bool pinned = false;
  int64_t keep_alive_ms = -1;
  int32_t in_flight = 0;  // leases held now
  int32_t waiting = 0;    // acquire() calls waiting for it
  bool closing = false;   // taking no new leases, to make room for a waiting model
  uint64_t loads = 0;     // successful loads
  uint64_t load_failures = 0;
  uint64_t evictions = 0;         // unloaded to make room for another model
  uint64_t idle_unloads = 0;      // unloaded by reap() after keep-alive
  double load_seconds_total = 0;  // time spent loading, all loads
  std::string too_large;
  std::optional<SchedulerMetrics> scheduler;  // while loaded
};

enum class AcquireError : uint8_t {
  kNone,
  kUnknown,       // no model of that name
  kTooLarge,      // its plan can never fit the budget
  kTimeout,       // the deadline passed while busy models held the budget
  kLoadFailed,    // the loader failed (message says why)
  kShuttingDown,  // drain() was called
};

class ModelRegistry {
 public:
  // `budget` may be null: nothing is reserved (every model always fits).
  // `preloaded` (optional, same length as specs): instances already loaded
  // by the caller, whose bytes the caller reserved.
  ModelRegistry(memory::Budget* budget, std::vector<ModelSpec> specs,
                std::vector<LoadedInstance> preloaded = {});
  ~ModelRegistry();  // unloads everything (every lease must be returned)
  ModelRegistry(const ModelRegistry&) = delete;
  ModelRegistry& operator=(const ModelRegistry&) = delete;

  // Keeps a model loaded while held; movable, returns itself when destroyed.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& o) noexcept { *this = std::move(o); }
    Lease& operator=(Lease&& o) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { release(); }
    void release();
    explicit operator bool() const { return registry_ != nullptr; }
    Scheduler* scheduler() const { return instance_.scheduler; }
    const text::ChatPrompter* prompts() const { return instance_.prompts; }
    const std::string& name() const { return *name_; }
    int32_t n_ctx() const { return n_ctx_; }

   private:
    friend class ModelRegistry;
    ModelRegistry* registry_ = nullptr;
    size_t index_ = 0;
    LoadedInstance instance_;
    const std::string* name_ = nullptr;
    int32_t n_ctx_ = 0;
  };

  struct Acquired {
    Lease lease;  // set when error is kNone
    AcquireError error = AcquireError::kNone;
    std::string message;  // one line, when not kNone
  };

  // The model named `name`, loaded (evicting idle ones) if it is not; waits
  // until `deadline` while models in use hold the room it needs. Thread-safe.
  Acquired acquire(const std::string& name, std::chrono::steady_clock::time_point deadline);

  // Unloads loaded, unpinned models idle for longer than their keep-alive;
  // returns how many. Thread-safe.
  int reap();

  // Stops new acquisitions, then drains every loaded scheduler until the
  // deadline (Scheduler::drain). Thread-safe.
  void drain(std::chrono::steady_clock::time_point deadline);

  std::vector<ModelStatus> status() const;  // thread-safe, in the specs' order
  size_t size() const { return entries_.size(); }
  // The names, quoted and comma-separated (the first 8, then "..."), for messages.
  std::string names() const;
  const std::string& name(size_t i) const { return entries_[i].spec.name; }
  const memory::Budget* budget() const { return budget_; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Entry {
    ModelSpec spec;
    ModelState state = ModelState::kUnloaded;
    LoadedInstance instance;
    memory::Reservation reservation;
    int32_t in_flight = 0;
    int32_t waiting = 0;
    bool closing = false;  // the oldest waiter needs its room: no new leases
    Clock::time_point last_used{};
    uint64_t loads = 0, load_failures = 0, evictions = 0, idle_unloads = 0;
    double load_seconds_total = 0;
  };

  void give_back(size_t index);
  // Unloads entry i (loaded, idle), with mu_ released during the unload.
  void unload(std::unique_lock<std::mutex>& lock, size_t i, bool eviction);
  // The idle, unpinned loaded entry used least recently; -1 when none.
  int lru_idle() const;
  // Bytes of loaded, unpinned entries now idle (evictable at once).
  uint64_t idle_bytes() const;
  // Bytes the oldest waiter will have once its closing models are evicted.
  uint64_t room_for_head() const;
  // Closes the busy, unpinned models (least recently used first) whose
  // bytes the oldest waiter, for entry `i`, still lacks; closes none when
  // they would not be enough.
  void close_for(size_t i, uint64_t lacking);
  void clear_closing();

  struct Waiter {
    uint64_t ticket;
    size_t index;
  };

  memory::Budget* const budget_;
  std::vector<Entry> entries_;
  mutable std::mutex mu_;
  std::condition_variable cv_;  // a load, unload or returned lease happened
  bool loading_ = false;        // one load or unload at a time
  bool draining_ = false;
  std::vector<Waiter> waiters_;  // acquire() calls that could not lease at once, oldest first
  uint64_t next_ticket_ = 0;
};

}  // namespace snug::engine
