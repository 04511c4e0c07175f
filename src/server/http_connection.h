// The connection layer under the routes: cpp-httplib's server with its
// per-socket loop replaced, so that limits httplib 0.11 lacks hold on the
// wire:
// - the request line and headers: at most max_header_bytes and
//   max_header_lines, all within header_timeout of their first byte (431 or
//   408: a client dripping a byte every few seconds is cut off);
// - the body: within body_timeout, at most 2 x max_body_bytes + 64 KiB on the
//   wire (chunk framing included; 413);
// - a bounded pool of handler threads (max_connections) with a bounded queue
//   of accepted connections; beyond it a connection is answered 503 by a
//   refuser thread and closed;
// - keep-alive: idle connections closed after keep_alive_timeout, and at once
//   when the server shuts down;
// - handlers can ask whether their client is still there (POLLRDHUP), so a
//   request whose client vanished is cancelled even before anything is
//   written to it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>

#include <httplib.h>

#include "server/connection_pool.h"
#include "server/limits.h"
#include "server/metrics.h"

namespace snug::server {

// Why the connection layer stopped reading the current request.
enum class WireFault : uint8_t {
  kNone,
  kHeaderTooLarge,  // 431
  kHeaderTimeout,   // 408
  kBodyTooLarge,    // 413
  kBodyTimeout,     // 408
};
int fault_status(WireFault f);
const char* fault_message(WireFault f);

class LimitedServer : public httplib::Server {
 public:
  // `connections` handler threads (limits.max_connections resolved), `pending`
  // accepted connections waiting for one.
  LimitedServer(const ServerLimits& limits, int32_t connections, int32_t pending,
                HttpCounters* counters);
  ~LimitedServer() override;

  // After binding: the kernel's queue of connections not yet accepted.
  // httplib listens with a backlog of 5, and a burst of clients beyond it
  // overflows the queue (dropped handshakes, resets); this listens again with
  // `n` (the kernel caps it at net.core.somaxconn).
  bool set_backlog(int n);

  // For handlers, about the connection of the request on this thread:
  static WireFault current_fault();
  // False once the client closed its side or reset the connection.
  static bool client_connected();
  // Closes the connection after this response: its body was not read (an
  // early refusal), so what follows on the wire is not a request.
  static void close_after_response();

  // Stops reusing connections: idle ones close within stream_poll, the rest
  // after their current response; reads still waiting give up at `hard_stop`.
  void begin_shutdown(std::chrono::steady_clock::time_point hard_stop);
  // Closes the listening socket's queue: the accept loop ends and joins the
  // handler threads once they finish. Unlike httplib's stop(), the responses
  // being streamed go on (httplib ends content providers once its socket is
  // marked closed), so a drain can let them finish.
  void stop_accepting();
  bool shutting_down() const { return stopping_.load(); }

 private:
  bool process_and_close_socket(socket_t sock) override;

  const ServerLimits limits_;
  HttpCounters* counters_;
  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> hard_stop_ns_{INT64_MAX};  // steady_clock, since its epoch
  std::unique_ptr<Refuser> refuser_;
};

}  // namespace snug::server
