#include "server/http_connection.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <string>

#include "server/connection_pool.h"

namespace snug::server {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Polls one socket for `events`, in slices of at most `slice` so that
// `give_up()` is checked while waiting. > 0: ready, 0: timed out, < 0: error.
int poll_until(int fd, short events, Clock::time_point until, milliseconds slice,
               const std::function<bool()>& give_up, short* revents = nullptr) {
  for (;;) {
    const auto now = Clock::now();
    if (now >= until || give_up()) return 0;
    const auto left = std::chrono::duration_cast<milliseconds>(until - now) + milliseconds(1);
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::min(left, slice).count()));
    if (r < 0 && errno == EINTR) continue;
    if (r != 0) {
      if (revents != nullptr) *revents = p.revents;
      return r;
    }
  }
}

std::string address_of(const sockaddr_storage& a, int* port) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (a.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&a);
    ::inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
    *port = ntohs(in->sin_port);
  } else if (a.ss_family == AF_INET6) {
    const auto* in = reinterpret_cast<const sockaddr_in6*>(&a);
    ::inet_ntop(AF_INET6, &in->sin6_addr, buf, sizeof buf);
    *port = ntohs(in->sin6_port);
  }
  return buf;
}

// httplib's Stream over one accepted socket, counting what each request
// sends. httplib reads the request line and headers one byte at a time and
// then exactly the body, so the byte that ends the headers ("\r\n\r\n") is
// seen here and the phases are told apart without parsing HTTP twice.
class ConnectionStream : public httplib::Stream {
 public:
  ConnectionStream(int fd, const ServerLimits& limits, std::function<bool()> give_up)
      : fd_(fd), limits_(limits), give_up_(std::move(give_up)) {}

  void begin_request() {
    header_phase_ = true;
    header_bytes_ = 0;
    header_lines_ = 0;
    tail_ = 0;
    body_bytes_ = 0;
    fault_ = WireFault::kNone;
    deadline_ = Clock::now() + limits_.header_timeout;
  }
  WireFault fault() const { return fault_; }
  // The request was not read to its end (a fault, an error, EOF mid-request),
  // or a handler left its body unread: the connection cannot carry another.
  bool broken() const { return broken_; }
  void mark_broken() { broken_ = true; }
  bool buffered() const { return pos_ < len_; }

  bool is_readable() const override {
    if (pos_ < len_) return true;
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(limits_.read_timeout.count())) > 0;
  }
  bool is_writable() const override { return peer_open() && can_write(limits_.write_timeout); }

  ssize_t read(char* ptr, size_t size) override {
    if (fault_ != WireFault::kNone || size == 0) return -1;
    if (pos_ == len_) {
      const ssize_t n = fill();
      if (n <= 0) {
        broken_ = true;
        return n;
      }
    }
    size_t n = std::min(size, len_ - pos_);
    if (header_phase_) {
      n = scan_header(n);
    } else if ((body_bytes_ += n) > 2 * limits_.max_body_bytes + (64 << 10)) {
      fault_ = WireFault::kBodyTooLarge;
    }
    if (fault_ != WireFault::kNone) {
      broken_ = true;
      return -1;
    }
    std::memcpy(ptr, buf_ + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    size_t done = 0;
    while (done < size) {
      if (!can_write(limits_.write_timeout)) return -1;
      const ssize_t n = ::send(fd_, ptr + done, size - done, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
        return -1;
      }
      done += static_cast<size_t>(n);
    }
    return static_cast<ssize_t>(size);
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    if (::getpeername(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0) ip = address_of(a, &port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0) ip = address_of(a, &port);
  }
  socket_t socket() const override { return fd_; }

  // The peer has not closed or reset its side (data waiting to be read, such
  // as a pipelined request, does not count as closed).
  bool peer_open() const {
    pollfd p{fd_, POLLRDHUP, 0};
    if (::poll(&p, 1, 0) <= 0) return true;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) == 0;
  }

 private:
  bool can_write(milliseconds timeout) const {
    short rev = 0;
    const int r =
        poll_until(fd_, POLLOUT, Clock::now() + timeout, milliseconds(100), give_up_, &rev);
    return r > 0 && (rev & (POLLERR | POLLHUP | POLLNVAL)) == 0;
  }

  // Refills the buffer within the phase's deadline; each wait is at most read_timeout.
  ssize_t fill() {
    if (header_phase_ && header_bytes_ == 0) deadline_ = Clock::now() + limits_.header_timeout;
    const auto until = std::min(deadline_, Clock::now() + limits_.read_timeout);
    const int r = poll_until(fd_, POLLIN, until, milliseconds(100), give_up_);
    if (r == 0) {
      if (Clock::now() >= deadline_)
        fault_ = header_phase_ ? WireFault::kHeaderTimeout : WireFault::kBodyTimeout;
      return -1;
    }
    if (r < 0) return -1;
    ssize_t n;
    do {
      n = ::recv(fd_, buf_, sizeof buf_, 0);
    } while (n < 0 && errno == EINTR);
    pos_ = 0;
    len_ = n > 0 ? static_cast<size_t>(n) : 0;
    return n;
  }

  // Counts up to `n` header bytes; returns how many of them to hand out
  // (stopping after the "\r\n\r\n" that ends the headers).
  size_t scan_header(size_t n) {
    for (size_t i = 0; i < n; ++i) {
      const char c = buf_[pos_ + i];
      if (++header_bytes_ > limits_.max_header_bytes) {
        fault_ = WireFault::kHeaderTooLarge;
        return 0;
      }
      if (c == '\n' && ++header_lines_ > limits_.max_header_lines) {
        fault_ = WireFault::kHeaderTooLarge;
        return 0;
      }
      tail_ = (tail_ << 8) | static_cast<unsigned char>(c);
      if ((tail_ & 0xffffffffu) == 0x0d0a0d0au) {
        header_phase_ = false;
        deadline_ = Clock::now() + limits_.body_timeout;
        return i + 1;
      }
    }
    return n;
  }

  const int fd_;
  const ServerLimits& limits_;
  std::function<bool()> give_up_;
  char buf_[4096];
  size_t pos_ = 0;
  size_t len_ = 0;
  bool header_phase_ = true;
  size_t header_bytes_ = 0;
  int32_t header_lines_ = 0;
  uint32_t tail_ = 0;  // the last four bytes read, for "\r\n\r\n"
  size_t body_bytes_ = 0;
  Clock::time_point deadline_ = Clock::time_point::max();
  WireFault fault_ = WireFault::kNone;
  bool broken_ = false;
};

thread_local ConnectionStream* t_stream = nullptr;  // the connection this thread serves
}  // namespace

int fault_status(WireFault f) {
  switch (f) {
    case WireFault::kHeaderTooLarge:
      return 431;
    case WireFault::kHeaderTimeout:
    case WireFault::kBodyTimeout:
      return 408;
    case WireFault::kBodyTooLarge:
      return 413;
    default:
      return 400;
  }
}

const char* fault_message(WireFault f) {
  switch (f) {
    case WireFault::kHeaderTooLarge:
      return "the request line and headers are too large or too many";
    case WireFault::kHeaderTimeout:
      return "the request headers did not arrive in time";
    case WireFault::kBodyTooLarge:
      return "the request body is too large";
    case WireFault::kBodyTimeout:
      return "the request body did not arrive in time";
    default:
      return "the request could not be read";
  }
}

LimitedServer::LimitedServer(const ServerLimits& limits, int32_t connections, int32_t pending,
                             HttpCounters* counters)
    : limits_(limits),
      counters_(counters),
      refuser_(std::make_unique<Refuser>(limits.retry_after_seconds)) {
  new_task_queue = [connections, pending] { return new BoundedPool(connections, pending); };
  set_payload_max_length(limits.max_body_bytes);
  const auto secs = [](milliseconds m) { return static_cast<time_t>((m.count() + 999) / 1000); };
  set_read_timeout(secs(limits.read_timeout));
  set_write_timeout(secs(limits.write_timeout));
  set_keep_alive_timeout(secs(limits.keep_alive_timeout));
  set_keep_alive_max_count(static_cast<size_t>(std::max(limits.keep_alive_max_requests, 1)));
}

LimitedServer::~LimitedServer() = default;

WireFault LimitedServer::current_fault() {
  return t_stream != nullptr ? t_stream->fault() : WireFault::kNone;
}

bool LimitedServer::client_connected() {
  return t_stream == nullptr || t_stream->peer_open();
}

void LimitedServer::close_after_response() {
  if (t_stream != nullptr) t_stream->mark_broken();
}

void LimitedServer::begin_shutdown(Clock::time_point hard_stop) {
  hard_stop_ns_.store(hard_stop.time_since_epoch().count());
  stopping_.store(true);
}

bool LimitedServer::set_backlog(int n) {
  const socket_t sock = svr_sock_.load();
  return sock != INVALID_SOCKET && ::listen(sock, n) == 0;
}

void LimitedServer::stop_accepting() {
  // accept() on a listening socket that was shut down fails (EINVAL), and
  // httplib's loop then closes the socket itself.
  const socket_t sock = svr_sock_.load();
  if (sock != INVALID_SOCKET) ::shutdown(sock, SHUT_RDWR);
}

bool LimitedServer::process_and_close_socket(socket_t sock) {
  if (BoundedPool::refusing()) {
    counters_->connection_refused();
    refuser_->refuse(sock);
    return true;
  }
  counters_->connection_opened();
  const auto give_up = [this] {
    return Clock::now().time_since_epoch().count() >= hard_stop_ns_.load();
  };
  ConnectionStream stream(sock, limits_, give_up);
  t_stream = &stream;
  const auto stopped = [this] { return stopping_.load() || svr_sock_ == INVALID_SOCKET; };
  for (int32_t n = 0; n < std::max(limits_.keep_alive_max_requests, 1); ++n) {
    if (!stream.buffered()) {
      // The first request gets the header timeout to begin; later ones the
      // keep-alive timeout. Shutdown closes idle connections at once.
      const auto wait = n == 0 ? limits_.header_timeout : limits_.keep_alive_timeout;
      const auto give_up_idle = [&] { return n > 0 && stopped(); };
      if (poll_until(sock, POLLIN, Clock::now() + wait, limits_.stream_poll, give_up_idle) <= 0)
        break;
    }
    stream.begin_request();
    const bool last = n + 1 >= limits_.keep_alive_max_requests || stopped();
    bool closed = false;
    const bool ok = process_request(stream, last, closed, nullptr);
    if (!ok || closed || last || stream.broken()) break;
  }
  t_stream = nullptr;
  // A lingering close: what the client still sends (an unread body) is read
  // and dropped for a moment, since closing with unread data resets the
  // connection and the client could lose the response it has not read yet.
  ::shutdown(sock, SHUT_WR);
  char sink[4096];
  size_t drained = 0;
  const auto until = Clock::now() + milliseconds(200);
  while (drained < (256u << 10) && poll_until(sock, POLLIN, until, milliseconds(50), give_up) > 0) {
    const ssize_t n = ::recv(sock, sink, sizeof sink, MSG_DONTWAIT);
    if (n <= 0) break;
    drained += static_cast<size_t>(n);
  }
  ::close(sock);
  counters_->connection_closed();
  return true;
}

}  // namespace snug::server
