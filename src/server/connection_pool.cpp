#include "server/connection_pool.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include "server/api_error.h"

namespace snug::server {
namespace {

thread_local bool t_refusing = false;

// Reads what is there (at most 64 KiB a call, so a client that keeps sending
// cannot hold the thread); false once the client closed or the socket failed.
bool drain(int fd) {
  char buf[4096];
  for (int i = 0; i < 16; ++i) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) continue;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
  }
  return true;
}

}  // namespace

BoundedPool::BoundedPool(int32_t threads, int32_t pending) : capacity_(threads + pending) {
  for (int32_t i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
}

BoundedPool::~BoundedPool() {
  BoundedPool::shutdown();
}

bool BoundedPool::refusing() {
  return t_refusing;
}

void BoundedPool::enqueue(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stop_ && static_cast<int32_t>(jobs_.size()) + busy_ < capacity_) {
      jobs_.push_back(std::move(fn));
      cv_.notify_one();
      return;
    }
  }
  t_refusing = true;
  fn();
  t_refusing = false;
}

void BoundedPool::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ && workers_.empty()) return;
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

void BoundedPool::work() {
  for (;;) {
    std::function<void()> fn;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, and every accepted connection served
      fn = std::move(jobs_.front());
      jobs_.pop_front();
      ++busy_;
    }
    fn();
    std::lock_guard<std::mutex> lock(mu_);
    --busy_;
  }
}

Refuser::Refuser(int32_t retry_after_seconds) {
  ApiError e{503, "the server is at its connection limit; retry later", {}, "server_busy"};
  const std::string body = error_body(e);
  response_ =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
      "Retry-After: " +
      std::to_string(retry_after_seconds) +
      "\r\nConnection: close\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  thread_ = std::thread([this] { work(); });
}

Refuser::~Refuser() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  for (int fd : incoming_) ::close(fd);
}

void Refuser::refuse(int fd) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stop_ || incoming_.size() + lingering_ >= 256) {
    ::close(fd);
    return;
  }
  incoming_.push_back(fd);
  cv_.notify_one();
}

void Refuser::work() {
  using Clock = std::chrono::steady_clock;
  struct Lingering {
    int fd;
    Clock::time_point until;
  };
  std::vector<Lingering> open;
  std::vector<pollfd> fds;
  for (;;) {
    std::deque<int> fresh;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (open.empty()) cv_.wait(lock, [this] { return stop_ || !incoming_.empty(); });
      if (stop_) break;
      fresh.swap(incoming_);
      lingering_ = open.size() + fresh.size();
    }
    for (int fd : fresh) {
      drain(fd);
      (void)::send(fd, response_.data(), response_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      ::shutdown(fd, SHUT_WR);
      open.push_back({fd, Clock::now() + std::chrono::milliseconds(200)});
    }
    fds.clear();
    for (const Lingering& l : open) fds.push_back({l.fd, POLLIN, 0});
    ::poll(fds.data(), fds.size(), 20);
    const auto now = Clock::now();
    size_t kept = 0;
    for (size_t i = 0; i < open.size(); ++i) {
      const bool alive = (fds[i].revents == 0 || drain(open[i].fd)) && now < open[i].until;
      if (alive) {
        open[kept++] = open[i];
      } else {
        ::close(open[i].fd);
      }
    }
    open.resize(kept);
  }
  for (const Lingering& l : open) ::close(l.fd);
}

}  // namespace snug::server
