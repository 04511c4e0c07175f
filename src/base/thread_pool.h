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

// Hands out [0, n) as one contiguous share per thread (near-equal, in
// multiples of `chunk`), which its owner claims front to back, 1/parts of
// what is left of it at a time (at least `chunk`); a thread done with its own
// share takes chunks from the back of the others'. An owner's claims are
// consecutive, so its reads stay one stream that the prefetchers follow
// (claims handed to whichever thread asks next alternate between the
// threads, and each starts a stream afresh), and a slowed thread still
// leaves the tail of its share to the others. At most 2^32 - 1 chunks and
// 64 shares (more threads share them). Create it before run(); every thread
// calls drain() with its pool index.
class ShareQueue {
 public:
  ShareQueue(int64_t n, int64_t chunk, int nth, int64_t parts)
      : n_(n), chunk_(chunk < 1 ? 1 : chunk), parts_(parts < 1 ? 1 : parts) {
    const int64_t units = (n_ + chunk_ - 1) / chunk_;
    const int count = nth < 1 ? 1 : nth > kMaxShares ? kMaxShares : nth;
    for (int t = 0; t < count; ++t) {
      const int64_t u0 = units * t / count, u1 = units * (t + 1) / count;
      span(t).store(pack(u0, u1), std::memory_order_relaxed);
    }
    count_ = count;
  }

  // Calls f(begin, end) for each chunk this thread claims, until none is left.
  template <typename F>
  void drain(int tid, F&& f) {
    const int own = tid % count_;
    // Front claims on this thread's share: 1/parts of what is left of it.
    for (int64_t u0, u1; claim(own, true, &u0, &u1);) f(u0 * chunk_, end_of(u1));
    // Then chunks from the backs of the others' shares.
    for (int k = 1; k < count_; ++k) {
      for (int64_t u0, u1; claim((own + k) % count_, false, &u0, &u1);) f(u0 * chunk_, end_of(u1));
    }
  }

 private:
  static constexpr int kMaxShares = 64;
  static uint64_t pack(int64_t front, int64_t back) {
    return static_cast<uint64_t>(front) | static_cast<uint64_t>(back) << 32;
  }
  int64_t end_of(int64_t unit) const { return unit * chunk_ < n_ ? unit * chunk_ : n_; }
  // Takes units [*u0, *u1) from the front (the owner) or the back of share i.
  bool claim(int i, bool front, int64_t* u0, int64_t* u1) {
    std::atomic_ref<uint64_t> span = this->span(i);
    uint64_t cur = span.load(std::memory_order_relaxed);
    for (;;) {
      const auto lo = static_cast<int64_t>(cur & 0xFFFFFFFFu), hi = static_cast<int64_t>(cur >> 32);
      if (lo >= hi) return false;
      int64_t c = front ? (hi - lo) / parts_ : 1;
      if (c < 1) c = 1;
      const uint64_t next = front ? pack(lo + c, hi) : pack(lo, hi - c);
      if (span.compare_exchange_weak(cur, next, std::memory_order_relaxed)) {
        *u0 = front ? lo : hi - c;
        *u1 = front ? lo + c : hi;
        return true;
      }
    }
  }
  // Share i's [front, back) in chunks (front the low 32 bits, back the high),
  // one cache line each. Only the first count_ are written: a queue is made
  // for every product of a step, where zeroing all 64 would be 4 KiB of
  // stores for nothing.
  std::atomic_ref<uint64_t> span(int i) { return std::atomic_ref<uint64_t>(spans_[i * 8]); }
  alignas(64) uint64_t spans_[kMaxShares * 8];
  int count_ = 1;
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
