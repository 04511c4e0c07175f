// The connection cap under cpp-httplib: a fixed pool of handler threads with
// a bounded queue of accepted connections, and the refuser that answers the
// connections beyond it with 503 (Retry-After) and closes them.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

namespace snug::server {

// httplib's TaskQueue with `threads` workers and room for `pending` waiting
// jobs. httplib's enqueue cannot refuse, so when the pool is full the job
// runs at once on the accepting thread with refusing() true, and the job
// (LimitedServer::process_and_close_socket) hands its socket to a Refuser
// instead of serving it.
class BoundedPool final : public httplib::TaskQueue {
 public:
  BoundedPool(int32_t threads, int32_t pending);
  ~BoundedPool() override;
  void enqueue(std::function<void()> fn) override;
  // Serves every job already queued, then joins the workers.
  void shutdown() override;
  // True inside a job the pool had no room for.
  static bool refusing();

 private:
  void work();
  const int32_t capacity_;  // threads + pending
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  int32_t busy_ = 0;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

// Answers sockets with a fixed 503 without reading their requests: the answer
// is sent at once, the sending side shut, and what the client still sends is
// read and dropped until it closes or 200 ms pass (closing with unread data
// would reset the connection and could lose the answer). One thread polls
// all of them; beyond 256 at once a socket is closed unanswered.
class Refuser {
 public:
  explicit Refuser(int32_t retry_after_seconds);
  ~Refuser();
  Refuser(const Refuser&) = delete;
  Refuser& operator=(const Refuser&) = delete;
  void refuse(int fd);  // takes ownership of fd

 private:
  void work();
  std::string response_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<int> incoming_;
  size_t lingering_ = 0;  // sockets the thread is closing
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace snug::server
