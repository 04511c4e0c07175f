#include "server/auth.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/bytes.h"

namespace snug::server {

bool constant_time_equal(std::string_view a, std::string_view b) {
  // Walks all of `a` (the presented key) whatever `b` holds; an empty b is
  // compared against zero bytes. The length check is folded in, not a branch.
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  const size_t nb = b.size();
  for (size_t i = 0; i < a.size(); ++i) {
    const unsigned char x = static_cast<unsigned char>(a[i]);
    const unsigned char y = nb == 0 ? 0 : static_cast<unsigned char>(b[i % nb]);
    diff |= static_cast<unsigned>(x ^ y);
  }
  // Keep the compiler from turning the loop into an early exit.
  volatile unsigned sink = diff;
  return sink == 0;
}

namespace {

// A key as the key file takes them: 8 bytes or more of printable ASCII.
std::optional<std::string> key_problem(std::string_view key) {
  for (char c : key) {
    if (c < 0x21 || c > 0x7e) return "a key may hold printable ASCII only";
  }
  if (key.size() < 8) return "a key needs 8 bytes or more";
  return std::nullopt;
}

Result<std::string> read_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error("cannot read the ", what, " '", printable(path, 200), "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

bool Tenant::may_use(const std::string& model) const {
  return models.empty() || std::find(models.begin(), models.end(), model) != models.end();
}

Result<ApiKeys> ApiKeys::from_text(std::string_view text, const std::string& what) {
  ApiKeys k;
  size_t line_no = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\r'))
      line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    if (auto problem = key_problem(line))
      return make_error(what, " line ", line_no, ": ", *problem);
    k.key_tenant_.push_back(k.keys_.size());
    k.tenants_.push_back(Tenant{"key-" + std::to_string(k.keys_.size()), {}, 0, 0});
    k.keys_.emplace_back(line);
  }
  if (k.keys_.empty()) return make_error(what, " holds no key");
  return k;
}

Result<ApiKeys> ApiKeys::load(const std::string& path) {
  SNUG_ASSIGN_OR_RETURN(std::string text, read_file(path, "API key file"));
  return from_text(text, "API key file '" + printable(path, 200) + "'");
}

Result<ApiKeys> ApiKeys::load_tenants(const std::string& path) {
  SNUG_ASSIGN_OR_RETURN(std::string text, read_file(path, "tenants file"));
  return tenants_from_text(text, "tenants file '" + printable(path, 200) + "'");
}

Result<ApiKeys> ApiKeys::tenants_from_text(std::string_view text, const std::string& what) {
  using json = nlohmann::json;
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return make_error(what, ": not valid JSON");
  if (!doc.is_object() || doc.size() != 1 || !doc.contains("tenants") ||
      !doc["tenants"].is_array() || doc["tenants"].empty())
    return make_error(what, ": must be {\"tenants\": [ ...one or more tenants... ]}");
  ApiKeys k;
  size_t index = 0;
  for (const json& t : doc["tenants"]) {
    ++index;
    const std::string at = what + ": tenant " + std::to_string(index);
    if (!t.is_object()) return make_error(at, " must be an object");
    Tenant tenant;
    for (const auto& [field, v] : t.items()) {
      const std::string here = at + ": '" + printable(field, 32) + "'";
      if (field == "name") {
        if (!v.is_string() || v.get_ref<const std::string&>().empty() ||
            v.get_ref<const std::string&>().size() > 64 ||
            printable(v.get<std::string>(), 64) != v.get<std::string>())
          return make_error(here, " must be a name of 1 to 64 printable characters");
        tenant.name = v.get<std::string>();
      } else if (field == "keys") {
        if (!v.is_array() || v.empty()) return make_error(here, " must be a list of keys");
        for (const json& key : v) {
          if (!key.is_string()) return make_error(here, " must hold strings");
          if (auto problem = key_problem(key.get_ref<const std::string&>()))
            return make_error(here, ": ", *problem);
          if (std::find(k.keys_.begin(), k.keys_.end(), key.get<std::string>()) != k.keys_.end())
            return make_error(here, ": a key is given twice");
          k.keys_.push_back(key.get<std::string>());
          k.key_tenant_.push_back(k.tenants_.size());
        }
      } else if (field == "models") {
        if (!v.is_array()) return make_error(here, " must be a list of model names");
        for (const json& m : v) {
          if (!m.is_string() || m.get_ref<const std::string&>().empty())
            return make_error(here, " must hold model names");
          tenant.models.push_back(m.get<std::string>());
        }
      } else if (field == "max_concurrent") {
        if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > 1'000'000)
          return make_error(here, " must be an integer from 0 (no limit) to 1000000");
        tenant.max_concurrent = v.get<int32_t>();
      } else if (field == "tokens_per_minute") {
        if (!v.is_number_integer() || v.get<int64_t>() < 0)
          return make_error(here, " must be a non-negative integer (0: no limit)");
        tenant.tokens_per_minute = v.get<int64_t>();
      } else if (field == "kv_bytes") {
        if (v.is_number_unsigned()) {
          tenant.kv_bytes = v.get<uint64_t>();
        } else if (v.is_string()) {
          auto b = parse_bytes(v.get<std::string>());
          if (!b.ok()) return make_error(here, ": ", b.error().message);
          tenant.kv_bytes = *b;
        } else {
          return make_error(here, " must be a size (bytes, or a string such as \"64MiB\")");
        }
      } else {
        return make_error(here,
                          " is not a tenant field (name, keys, models, max_concurrent, "
                          "tokens_per_minute, kv_bytes)");
      }
    }
    if (tenant.name.empty()) return make_error(at, " has no name");
    if (std::find(k.key_tenant_.begin(), k.key_tenant_.end(), k.tenants_.size()) ==
        k.key_tenant_.end())
      return make_error(at, " ('", tenant.name, "') has no keys");
    for (const Tenant& o : k.tenants_) {
      if (o.name == tenant.name)
        return make_error(at, ": the name '", tenant.name, "' is used twice");
    }
    k.tenants_.push_back(std::move(tenant));
  }
  return k;
}

std::optional<size_t> ApiKeys::match(std::string_view header) const {
  constexpr std::string_view kScheme = "bearer ";
  if (header.size() < kScheme.size()) return std::nullopt;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    char c = header[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != kScheme[i]) return std::nullopt;
  }
  std::string_view presented = header.substr(kScheme.size());
  while (!presented.empty() && presented.front() == ' ') presented.remove_prefix(1);
  std::optional<size_t> found;
  for (size_t i = 0; i < keys_.size(); ++i) {
    if (constant_time_equal(presented, keys_[i]) && !found) found = i;
  }
  return found;
}

std::string ApiKeys::cache_scope(std::optional<size_t> tenant) const {
  return tenant ? "tenant:" + tenants_[*tenant].name : std::string();
}

}  // namespace snug::server
