// ModelRegistry's policy with loaders that allocate nothing: loading on
// demand inside the budget, least-recently-used eviction by bytes, never a
// model in use or pinned, an immediate refusal for a model that can never
// fit, waiting for one that will (first come first served, with busy models
// closed to new requests), keep-alive, and concurrent acquirers.
#include "engine/model_registry.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace snug::engine {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

struct Counts {
  std::atomic<int> loads{0};
  std::atomic<int> live{0};  // instances alive now
  std::atomic<bool> fail{false};
};

ModelSpec spec(const std::string& name, uint64_t bytes, Counts* c) {
  ModelSpec s;
  s.name = name;
  s.path = "/models/" + name + ".gguf";
  s.planned_bytes = bytes;
  s.n_ctx = 512;
  s.load = [c]() -> Result<LoadedInstance> {
    if (c->fail.load()) return make_error("the file went away");
    c->loads.fetch_add(1);
    c->live.fetch_add(1);
    LoadedInstance inst;
    inst.owner = std::shared_ptr<void>(nullptr, [c](void*) { c->live.fetch_sub(1); });
    return inst;
  };
  return s;
}

Clock::time_point soon(int ms = 2000) {
  return Clock::now() + milliseconds(ms);
}

ModelState state_of(const ModelRegistry& r, const std::string& name) {
  for (const ModelStatus& s : r.status()) {
    if (s.name == name) return s.state;
  }
  return ModelState::kUnloaded;
}

TEST(ModelRegistry, LoadsOnDemandAndEvictsLeastRecentlyUsedByBytes) {
  memory::Budget budget(100);
  Counts a, b, c;
  ModelRegistry r(&budget, {spec("a", 40, &a), spec("b", 40, &b), spec("c", 50, &c)});
  EXPECT_EQ(state_of(r, "a"), ModelState::kUnloaded);
  {
    auto x = r.acquire("a", soon());
    ASSERT_EQ(x.error, AcquireError::kNone) << x.message;
  }
  {
    auto x = r.acquire("b", soon());
    ASSERT_EQ(x.error, AcquireError::kNone);
  }
  EXPECT_EQ(budget.used(), 80u);
  {
    auto x = r.acquire("a", soon());
    ASSERT_EQ(x.error, AcquireError::kNone);
  }  // a: most recent
  // c needs 50 of 20 free: evicting b (the least recently used) is enough.
  {
    auto x = r.acquire("c", soon());
    ASSERT_EQ(x.error, AcquireError::kNone) << x.message;
  }
  EXPECT_EQ(state_of(r, "a"), ModelState::kLoaded);
  EXPECT_EQ(state_of(r, "b"), ModelState::kUnloaded);
  EXPECT_EQ(state_of(r, "c"), ModelState::kLoaded);
  EXPECT_EQ(b.live.load(), 0);
  EXPECT_EQ(budget.used(), 90u);
  EXPECT_EQ(a.loads.load(), 1);
  for (const ModelStatus& s : r.status()) {
    if (s.name == "b") {
      EXPECT_EQ(s.evictions, 1u);
    }
  }
}

TEST(ModelRegistry, NeverEvictsAModelInUseOrPinned) {
  memory::Budget budget(100);
  Counts a, b, c;
  std::vector<ModelSpec> specs = {spec("a", 60, &a), spec("b", 60, &b), spec("c", 60, &c)};
  specs[2].pinned = true;
  ModelRegistry r(&budget, std::move(specs));
  auto held = r.acquire("a", soon());
  ASSERT_EQ(held.error, AcquireError::kNone);
  // b cannot load while a is in use: it waits, then times out; a stays loaded.
  const auto t0 = Clock::now();
  auto x = r.acquire("b", Clock::now() + milliseconds(150));
  EXPECT_EQ(x.error, AcquireError::kTimeout);
  EXPECT_GE(Clock::now() - t0, milliseconds(140));
  EXPECT_NE(x.message.find("in flight"), std::string::npos) << x.message;
  EXPECT_EQ(state_of(r, "a"), ModelState::kLoaded);
  EXPECT_EQ(a.live.load(), 1);
  held.lease.release();
  // Pinned c, once loaded, is never the one evicted.
  {
    auto y = r.acquire("c", soon());
    ASSERT_EQ(y.error, AcquireError::kNone) << y.message;
  }
  EXPECT_EQ(state_of(r, "a"), ModelState::kUnloaded);
  auto z = r.acquire("b", Clock::now() + milliseconds(100));
  EXPECT_EQ(z.error, AcquireError::kTimeout);
  EXPECT_EQ(state_of(r, "c"), ModelState::kLoaded);
}

TEST(ModelRegistry, AWaitingRequestLoadsWhenTheModelInUseIsReturned) {
  memory::Budget budget(100);
  Counts a, b;
  ModelRegistry r(&budget, {spec("a", 60, &a), spec("b", 60, &b)});
  auto held = r.acquire("a", soon());
  ASSERT_EQ(held.error, AcquireError::kNone);
  std::thread t([&] {
    std::this_thread::sleep_for(milliseconds(100));
    held.lease.release();
  });
  auto x = r.acquire("b", soon(5000));
  t.join();
  ASSERT_EQ(x.error, AcquireError::kNone) << x.message;
  EXPECT_EQ(state_of(r, "a"), ModelState::kUnloaded);
  EXPECT_EQ(a.live.load(), 0);
}

bool closing(const ModelRegistry& r, const std::string& name) {
  for (const ModelStatus& s : r.status()) {
    if (s.name == name) return s.closing;
  }
  return false;
}

// Polls until `pred` holds (true) or two seconds pass (false).
template <typename Pred>
bool eventually(Pred pred) {
  for (int k = 0; k < 400; ++k) {
    if (pred()) return true;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return pred();
}

TEST(ModelRegistry, ABusyModelClosesToNewRequestsForTheOldestWaiter) {
  memory::Budget budget(100);
  Counts a, b;
  ModelRegistry r(&budget, {spec("a", 60, &a), spec("b", 60, &b)});
  auto held = r.acquire("a", soon());
  ASSERT_EQ(held.error, AcquireError::kNone);
  // b waits for a; a takes no new request meanwhile, so a stream of requests
  // for a cannot keep b out until its deadline.
  std::vector<std::string> order;
  std::mutex order_mu;
  std::thread wants_b([&] {
    auto x = r.acquire("b", soon(5000));
    ASSERT_EQ(x.error, AcquireError::kNone) << x.message;
    {
      std::lock_guard<std::mutex> lock(order_mu);
      order.push_back("b");
    }
    std::this_thread::sleep_for(milliseconds(50));
  });
  ASSERT_TRUE(eventually([&] { return closing(r, "a"); }));
  auto refused = r.acquire("a", Clock::now() + milliseconds(50));
  EXPECT_EQ(refused.error, AcquireError::kTimeout);
  EXPECT_EQ(state_of(r, "a"), ModelState::kLoaded);  // still serving what it holds
  std::thread wants_a([&] {
    auto x = r.acquire("a", soon(5000));
    ASSERT_EQ(x.error, AcquireError::kNone) << x.message;
    std::lock_guard<std::mutex> lock(order_mu);
    order.push_back("a");
  });
  ASSERT_TRUE(eventually([&] {
    for (const ModelStatus& s : r.status()) {
      if (s.name == "a") return s.waiting == 1;
    }
    return false;
  }));
  held.lease.release();  // a finishes: b loads, then a again once b is done
  wants_b.join();
  wants_a.join();
  EXPECT_EQ(order, (std::vector<std::string>{"b", "a"}));
  EXPECT_EQ(a.loads.load(), 2);
  EXPECT_EQ(b.loads.load(), 1);
  EXPECT_FALSE(closing(r, "a"));
  EXPECT_FALSE(closing(r, "b"));
}

TEST(ModelRegistry, ALaterRequestLoadsAtOnceOnlyWhenTheOldestWaitersRoomSurvives) {
  memory::Budget budget(100);
  Counts a, b, c, d;
  ModelRegistry r(&budget,
                  {spec("a", 40, &a), spec("b", 70, &b), spec("c", 20, &c), spec("d", 15, &d)});
  auto held = r.acquire("a", soon());
  ASSERT_EQ(held.error, AcquireError::kNone);
  std::thread wants_b([&] {
    auto x = r.acquire("b", soon(5000));
    EXPECT_EQ(x.error, AcquireError::kNone) << x.message;
  });
  ASSERT_TRUE(eventually([&] { return closing(r, "a"); }));
  // c (20) fits in the 60 free and leaves b its 70 once a is evicted.
  const auto t0 = Clock::now();
  auto held_c = r.acquire("c", soon());
  ASSERT_EQ(held_c.error, AcquireError::kNone) << held_c.message;
  EXPECT_LT(Clock::now() - t0, milliseconds(500));
  // d (15) fits in the 40 now free, but would leave b 65 of its 70: it waits.
  auto x = r.acquire("d", Clock::now() + milliseconds(100));
  EXPECT_EQ(x.error, AcquireError::kTimeout);
  EXPECT_EQ(d.loads.load(), 0);
  held_c.lease.release();
  held.lease.release();
  wants_b.join();
  EXPECT_EQ(state_of(r, "b"), ModelState::kLoaded);
  EXPECT_LE(budget.used(), 100u);
}

TEST(ModelRegistry, APinnedModelIsNeverClosed) {
  memory::Budget budget(100);
  Counts p, b;
  std::vector<ModelSpec> specs = {spec("p", 60, &p), spec("b", 60, &b)};
  specs[0].pinned = true;
  ModelRegistry r(&budget, std::move(specs));
  auto held = r.acquire("p", soon());
  ASSERT_EQ(held.error, AcquireError::kNone);
  std::thread wants_b([&] {
    auto x = r.acquire("b", Clock::now() + milliseconds(200));
    EXPECT_EQ(x.error, AcquireError::kTimeout);
  });
  std::this_thread::sleep_for(milliseconds(50));
  EXPECT_FALSE(closing(r, "p"));
  auto again = r.acquire("p", Clock::now() + milliseconds(50));
  EXPECT_EQ(again.error, AcquireError::kNone);
  wants_b.join();
}

TEST(ModelRegistry, RefusesAtOnceWhatCanNeverFitAndUnknownNames) {
  memory::Budget budget(100);
  Counts a;
  std::vector<ModelSpec> specs = {spec("a", 60, &a), spec("huge", 500, &a)};
  specs[1].too_large = "model 'huge' needs 500 B; the budget holds 100 B";
  ModelRegistry r(&budget, std::move(specs));
  const auto t0 = Clock::now();
  auto x = r.acquire("huge", soon(10000));
  EXPECT_EQ(x.error, AcquireError::kTooLarge);
  EXPECT_EQ(x.message, "model 'huge' needs 500 B; the budget holds 100 B");
  EXPECT_LT(Clock::now() - t0, milliseconds(100));
  for (const char* name : {"../a", "/models/a.gguf", "", "A", "a\n"}) {
    auto y = r.acquire(name, soon());
    EXPECT_EQ(y.error, AcquireError::kUnknown) << name;
    EXPECT_NE(y.message.find("this server has 'a', 'huge'"), std::string::npos) << y.message;
    EXPECT_EQ(y.message.find('\n'), std::string::npos) << y.message;
  }
  EXPECT_EQ(a.loads.load(), 0);
  EXPECT_EQ(budget.used(), 0u);
}

TEST(ModelRegistry, AFailedLoadGivesItsBytesBackAndCanBeRetried) {
  memory::Budget budget(100);
  Counts a;
  ModelRegistry r(&budget, {spec("a", 60, &a)});
  a.fail = true;
  auto x = r.acquire("a", soon());
  EXPECT_EQ(x.error, AcquireError::kLoadFailed);
  EXPECT_NE(x.message.find("the file went away"), std::string::npos) << x.message;
  EXPECT_EQ(budget.used(), 0u);
  a.fail = false;
  auto y = r.acquire("a", soon());
  EXPECT_EQ(y.error, AcquireError::kNone);
  EXPECT_EQ(budget.used(), 60u);
}

TEST(ModelRegistry, ReapUnloadsModelsIdlePastTheirKeepAlive) {
  memory::Budget budget(100);
  Counts a, b, c;
  std::vector<ModelSpec> specs = {spec("a", 30, &a), spec("b", 30, &b), spec("c", 30, &c)};
  specs[0].keep_alive = milliseconds(0);
  specs[1].keep_alive = milliseconds(0);
  specs[1].pinned = true;                      // pinned: kept whatever its keep-alive
  ModelRegistry r(&budget, std::move(specs));  // c: kept until evicted
  for (const char* n : {"a", "b", "c"}) ASSERT_EQ(r.acquire(n, soon()).error, AcquireError::kNone);
  auto held = r.acquire("a", soon());
  EXPECT_EQ(r.reap(), 0);  // a is in use
  held.lease.release();
  EXPECT_EQ(r.reap(), 1);
  EXPECT_EQ(state_of(r, "a"), ModelState::kUnloaded);
  EXPECT_EQ(state_of(r, "b"), ModelState::kLoaded);
  EXPECT_EQ(state_of(r, "c"), ModelState::kLoaded);
  EXPECT_EQ(budget.used(), 60u);
}

TEST(ModelRegistry, ConcurrentAcquirersNeverExceedTheBudget) {
  memory::Budget budget(100);
  std::vector<std::unique_ptr<Counts>> counts;
  std::vector<ModelSpec> specs;
  for (int i = 0; i < 5; ++i) {
    counts.push_back(std::make_unique<Counts>());
    const char name[3] = {'m', static_cast<char>('0' + i), 0};
    specs.push_back(spec(name, 30 + 10 * (i % 3), counts.back().get()));
  }
  ModelRegistry r(&budget, std::move(specs));
  std::atomic<int> ok{0}, failed{0};
  std::atomic<bool> over{false};
  std::vector<std::thread> threads;
  threads.reserve(6);
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < 40; ++k) {
        const char name[3] = {'m', static_cast<char>('0' + (t + k) % 5), 0};
        auto x = r.acquire(name, soon(10000));
        if (x.error != AcquireError::kNone) {
          failed.fetch_add(1);
          continue;
        }
        if (budget.used() > budget.limit()) over = true;
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        ok.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(ok.load(), 240);
  EXPECT_FALSE(over.load());
  int live = 0;
  for (const auto& c : counts) live += c->live.load();
  int loaded = 0;
  for (const ModelStatus& s : r.status()) loaded += s.state == ModelState::kLoaded;
  EXPECT_EQ(live, loaded);
}

TEST(ModelRegistry, DrainRefusesNewAcquisitions) {
  memory::Budget budget(100);
  Counts a;
  ModelRegistry r(&budget, {spec("a", 30, &a)});
  ASSERT_EQ(r.acquire("a", soon()).error, AcquireError::kNone);
  r.drain(Clock::now());
  EXPECT_EQ(r.acquire("a", soon()).error, AcquireError::kShuttingDown);
}

}  // namespace
}  // namespace snug::engine
