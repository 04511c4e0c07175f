#include "server/limits.h"

#include <algorithm>

namespace snug::server {

size_t json_value_limit(const ServerLimits& limits, int32_t n_ctx) {
  if (limits.max_json_values > 0) return limits.max_json_values;
  return static_cast<size_t>(std::max(n_ctx, 0)) + 4096;
}

uint64_t server_memory_bound(const ServerLimits& limits, int32_t connections, int32_t running,
                             int32_t n_ctx) {
  const uint64_t ctx = static_cast<uint64_t>(std::max(n_ctx, 1));
  // A parse holds the body, its tree and the strings copied out of it.
  const uint64_t parse = 2 * static_cast<uint64_t>(limits.max_body_bytes) +
                         json_value_limit(limits, n_ctx) * kJsonBytesPerValue;
  // A request holds its prompt ids, sampled ids and text (a few bytes a token).
  const uint64_t request = ctx * 16;
  const uint64_t logprobs = static_cast<uint64_t>(limits.max_logprob_entries) * kLogprobEntryBytes;
  return kHttpLibraryBytes + static_cast<uint64_t>(connections) * (kHttpThreadBytes + request) +
         static_cast<uint64_t>(limits.parse_slots) * parse +
         static_cast<uint64_t>(running) * logprobs;
}

}  // namespace snug::server
