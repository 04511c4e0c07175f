// A persistent pool of worker threads for the token loop: no allocation,
// spawning or locking per call. run() hands the same job to every thread
// (the caller is thread 0) and returns when all are done. Idle workers spin
// briefly for the next job, then sleep on a futex so an idle process costs no CPU.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace snug {

// The atomics sit on their own cache lines on purpose:
// NOLINTNEXTLINE(clang-analyzer-optin.performance.Padding)
class ThreadPool {
 public:
  // n_threads counts the caller; 1 means no worker threads at all.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls f(thread_index, n_threads) once on each thread and waits for all.
  // Not re-entrant: f must not call run() on the same pool.
  template <typename F>
  void run(F&& f) {
    if (n_threads_ == 1) {
      f(0, 1);
      return;
    }
    run_impl([](void* ctx, int tid,
                int nth) { (*static_cast<std::remove_reference_t<F>*>(ctx))(tid, nth); },
             &f);
  }

 private:
  using Job = void (*)(void*, int, int);
  void run_impl(Job job, void* ctx);
  void worker_loop(int tid);

  int n_threads_;
  std::vector<std::thread> workers_;
  Job job_ = nullptr;
  void* ctx_ = nullptr;
  alignas(64) std::atomic<uint32_t> generation_{0};
  alignas(64) std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
};

// Hands out [0, n) in chunks of `chunk` to whichever thread asks next, so
// that a thread slowed by a neighbour (a shared core, a busy hypervisor) takes
// fewer chunks and the others do not wait for it at the end of the job.
// With parts > 0 the chunks are guided: each claim takes 1/parts of what is
// left, rounded down to a multiple of `chunk` and at least `chunk`, so the
// first claims are large and the last ones, which the threads finish at
// different times, small. Create it before run(); every thread calls drain().
class WorkQueue {
 public:
  WorkQueue(int64_t n, int64_t chunk, int64_t parts = 0)
      : n_(n), chunk_(chunk < 1 ? 1 : chunk), parts_(parts < 0 ? 0 : parts) {}

  // Calls f(begin, end) for each chunk this thread claims, until none is left.
  template <typename F>
  void drain(F&& f) {
    if (parts_ == 0) {
      for (int64_t b; (b = next_.fetch_add(chunk_, std::memory_order_relaxed)) < n_;) {
        f(b, b + chunk_ < n_ ? b + chunk_ : n_);
      }
      return;
    }
    int64_t b = next_.load(std::memory_order_relaxed);
    while (b < n_) {
      int64_t c = (n_ - b) / parts_ / chunk_ * chunk_;
      if (c < chunk_) c = chunk_;
      if (next_.compare_exchange_weak(b, b + c, std::memory_order_relaxed)) {
        f(b, b + c < n_ ? b + c : n_);
        b = next_.load(std::memory_order_relaxed);
      }
    }
  }

 private:
  alignas(64) std::atomic<int64_t> next_{0};
  int64_t n_;
  int64_t chunk_;
  int64_t parts_;
};

// Splits [0, n) into near-equal contiguous chunks, one per thread, each a
// multiple of `grain` except the last; calls f(begin, end) for this thread's chunk.
template <typename F>
inline void for_each_chunk(int64_t n, int64_t grain, int tid, int nth, F&& f) {
  int64_t units = (n + grain - 1) / grain;
  int64_t per = units / nth, extra = units % nth;
  int64_t u0 = tid * per + (tid < extra ? tid : extra);
  int64_t u1 = u0 + per + (tid < extra ? 1 : 0);
  int64_t b = u0 * grain, e = u1 * grain < n ? u1 * grain : n;
  if (b < e) f(b, e);
}

}  // namespace snug
