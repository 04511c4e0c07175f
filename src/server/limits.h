// Every limit the HTTP server enforces, in one place, with its default and the
// status a request that crosses it gets. Hostile or careless clients meet one
// of these before they can hold a thread, a socket or memory for long.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace snug::server {

struct ServerLimits {
  // --- the request on the wire (http_connection.cpp) ---
  size_t max_body_bytes = 1 << 20;     // a larger body: 413
  size_t max_header_bytes = 16 << 10;  // request line plus headers: 431 beyond
  int32_t max_header_lines = 64;       // request line plus header lines: 431 beyond
  // The whole header must arrive within this from its first byte, and the whole
  // body within body_timeout after the header (a client dripping a byte every
  // few seconds is cut off: 408), each read waiting at most read_timeout.
  std::chrono::milliseconds header_timeout{10'000};
  std::chrono::milliseconds body_timeout{30'000};
  std::chrono::milliseconds read_timeout{5'000};
  std::chrono::milliseconds write_timeout{10'000};      // a client that stops reading: closed
  std::chrono::milliseconds keep_alive_timeout{5'000};  // idle between requests: closed
  int32_t keep_alive_max_requests = 100;                // then the connection is closed

  // --- connections (a bounded pool of handler threads) ---
  // Threads serving connections at once; 0: the scheduler's running sequences
  // plus its queue plus 8 (for /health, /metrics and requests being parsed),
  // so that a full scheduler queue, not the pool, is what turns requests away.
  int32_t max_connections = 0;
  // Accepted connections waiting for a thread; beyond them a connection is
  // answered 503 at once and closed. 0: as many as max_connections.
  int32_t max_pending_connections = 0;

  // --- parsing (openai_request.cpp, json_bounded.cpp) ---
  // Bodies read and parsed at once: a parse holds the body plus its JSON tree,
  // so memory for requests is parse_slots * (body + tree), not per connection.
  int32_t parse_slots = 2;
  std::chrono::milliseconds parse_slot_wait{5'000};  // then 503
  int32_t max_json_depth = 16;                       // nesting of arrays and objects: 400 beyond
  // Values in one body (a token-id prompt takes one per token); 0: the
  // context plus 4096, so any prompt that can fit the context can be sent.
  size_t max_json_values = 0;
  int32_t max_messages = 512;                  // chat messages per request
  int32_t max_stop = 4;                        // stop strings per request (OpenAI's limit)
  size_t max_stop_bytes = 256;                 // bytes per stop string
  int32_t max_completion_logprobs = 5;         // legacy completions `logprobs` (OpenAI's limit)
  int32_t max_top_logprobs = 20;               // chat `top_logprobs` (OpenAI's limit)
  int32_t default_completion_max_tokens = 16;  // OpenAI's default for /v1/completions
  // A non-streaming response carries every logprob entry at once: at most this
  // many (generated tokens x (1 + alternatives)). An explicit max_tokens beyond
  // it is a 400 that says to stream; without max_tokens the request stops there
  // (finish_reason "length"). Streaming responses have no such cap.
  int32_t max_logprob_entries = 4096;

  // --- the engine ---
  std::chrono::seconds request_timeout{600};   // a request still running then ends (503)
  std::chrono::milliseconds stream_poll{100};  // how often a waiting handler checks its client
  int32_t retry_after_seconds = 1;             // Retry-After of a 503 for a full queue
};

// Upper bound, in bytes, of the memory the HTTP side holds beyond the engine's
// plan: handler threads (touched stack and allocator arena), bodies and JSON
// trees being parsed, and per-connection state. serve reserves it from the
// budget and adds it to the predicted peak it prints.
// `connections` as resolved (max_connections), `running` the scheduler's
// max_seqs (responses accumulate only while their sequence runs).
uint64_t server_memory_bound(const ServerLimits& limits, int32_t connections, int32_t running,
                             int32_t n_ctx);

// Per-request figures the bound and the parser share.
size_t json_value_limit(const ServerLimits& limits, int32_t n_ctx);
constexpr uint64_t kJsonBytesPerValue = 128;     // a tree node, its map entry or vector slot, a key
constexpr uint64_t kLogprobEntryBytes = 160;     // one token alternative kept and serialized
constexpr uint64_t kHttpThreadBytes = 96 << 10;  // touched stack, buffers and arena of a handler
// What the HTTP side's libraries (cpp-httplib, OpenSSL, zlib, brotli) take at
// run time beyond their image, which the process's figure already counts
// (base/process_image.h): their heap and the listener's threads. snug-serve
// on a tiny model measured 1.3 MiB over its image and the model's plan.
constexpr uint64_t kHttpLibraryBytes = 2 << 20;

}  // namespace snug::server
