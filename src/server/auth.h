// API keys and tenants. `--api-key-file F` holds one key per line, each key a
// tenant of its own without quotas. `--tenants F` (JSON) names tenants, each
// with its keys and quotas:
//   {"tenants": [{"name": "research", "keys": ["sk-research-0001"],
//                 "models": ["SmolLM2-135M-Instruct.Q4_1"],   // optional: all
//                 "max_concurrent": 8,                          // optional: no limit
//                 "tokens_per_minute": 60000,                   // optional: no limit
//                 "kv_bytes": "64MiB"}]}                        // optional: none reserved
// A request must carry `Authorization: Bearer KEY` with one of the keys (only
// /health is public); the comparison takes the same time wherever the keys
// differ. A tenant's prefix-cache blocks are hit by its own requests only.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace snug::server {

// True when a and b are equal. The time taken depends on the lengths only,
// never on where the bytes differ.
bool constant_time_equal(std::string_view a, std::string_view b);

// A tenant's quotas (0: no limit), enforced by the server (tenant_limiter.h).
struct Tenant {
  std::string name;
  std::vector<std::string> models;  // models it may use; empty: all
  int32_t max_concurrent = 0;       // its requests running or queued at once
  int64_t tokens_per_minute = 0;    // prompt and completion tokens finished in any 60 s
  uint64_t kv_bytes = 0;            // KV memory reserved for it in each model's pool, and the
                                    // most its requests may hold there (engine scheduler)
  bool may_use(const std::string& model) const;
};

class ApiKeys {
 public:
  ApiKeys() = default;  // no keys: every request is let in, all share one cache scope
  // Lines are trimmed of spaces, tabs and CR; empty lines and lines starting
  // with '#' are skipped. Errors: an unreadable file, no key in it, a key with
  // bytes outside printable ASCII, a key shorter than 8 bytes.
  static Result<ApiKeys> load(const std::string& path);
  static Result<ApiKeys> from_text(std::string_view text, const std::string& what);
  // The --tenants JSON above. Errors (one line each): unreadable, not JSON,
  // an unknown field, a field of the wrong type or out of range, a tenant
  // without keys, a name or key used twice, a key as the key file refuses.
  static Result<ApiKeys> load_tenants(const std::string& path);
  static Result<ApiKeys> tenants_from_text(std::string_view text, const std::string& what);

  bool enabled() const { return !keys_.empty(); }
  size_t size() const { return keys_.size(); }

  // The index of the key an Authorization header carries ("Bearer KEY",
  // scheme case-insensitive), or nullopt. Every key is compared, whichever
  // matches, so the time does not tell which one did.
  std::optional<size_t> match(std::string_view authorization_header) const;

  // The tenant a key (match()'s index) belongs to.
  size_t tenant_of(size_t key) const { return key_tenant_[key]; }
  const std::vector<Tenant>& tenants() const { return tenants_; }

  // The prefix-cache scope of a tenant (tenant_of's index): "" without keys.
  std::string cache_scope(std::optional<size_t> tenant) const;

 private:
  std::vector<std::string> keys_;
  std::vector<size_t> key_tenant_;  // per key
  std::vector<Tenant> tenants_;
};

}  // namespace snug::server
