// What the server writes: OpenAI's response and chunk shapes (checked field
// by field as the openai client reads them), logprobs in both shapes, error
// objects, the Prometheus text of /metrics (parsed line by line against the
// 0.0.4 format), and the API keys: file parsing and the constant-time compare.
#include <gtest/gtest.h>

#include <chrono>
#include <regex>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "gguf/gguf.h"
#include "server/api_error.h"
#include "server/auth.h"
#include "server/limits.h"
#include "server/metrics.h"
#include "server/openai_response.h"
#include "server/tenant_limiter.h"
#include "tiny_model.h"

namespace snug::server {
namespace {

using json = nlohmann::json;

const text::Tokenizer& tok() {
  static const text::Tokenizer* t = [] {
    auto file = gguf::File::open(testing::write_tiny_model("server_format_tiny.gguf"));
    EXPECT_TRUE(file.ok());
    auto tk = text::Tokenizer::from_gguf(*file);
    EXPECT_TRUE(tk.ok());
    return new text::Tokenizer(std::move(*tk));
  }();
  return *t;
}

engine::TokenEvent token(int32_t id, float lp, std::vector<engine::TokenLogprob> top = {}) {
  engine::TokenEvent t;
  t.id = id;
  t.text = tok().piece(id);
  t.logprob = lp;
  t.top = std::move(top);
  return t;
}

engine::Finish finish(engine::FinishReason r, int prompt, int completion, int cached) {
  engine::Finish f;
  f.reason = r;
  f.prompt_tokens = prompt;
  f.completion_tokens = completion;
  f.cached_tokens = cached;
  return f;
}

// "data: {...}\n\n" -> the object.
json event(const std::string& sse) {
  EXPECT_EQ(sse.rfind("data: ", 0), 0u) << sse;
  EXPECT_EQ(sse.substr(sse.size() - 2), "\n\n") << sse;
  return json::parse(sse.substr(6, sse.size() - 8));
}

TEST(ServerFormat, ChatCompletionObject) {
  const ResponseMeta meta = make_meta(Endpoint::kChatCompletions, "tiny", false, false);
  EXPECT_EQ(meta.id.rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(meta.id.size(), 9u + 24u);
  EXPECT_NE(make_meta(Endpoint::kChatCompletions, "tiny", false, false).id, meta.id);
  Completion c;
  c.text = "héllo";
  c.finish = finish(engine::FinishReason::kLength, 12, 5, 8);
  const json j = json::parse(completion_body(meta, c, tok()));
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["model"], "tiny");
  EXPECT_EQ(j["id"], meta.id);
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  EXPECT_NEAR(j["created"].get<double>(), static_cast<double>(now), 5.0);
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "héllo");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(j["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(j["usage"]["prompt_tokens"], 12);
  EXPECT_EQ(j["usage"]["completion_tokens"], 5);
  EXPECT_EQ(j["usage"]["total_tokens"], 17);
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 8);
}

TEST(ServerFormat, TextCompletionWithLegacyLogprobs) {
  const ResponseMeta meta = make_meta(Endpoint::kCompletions, "tiny", true, false);
  EXPECT_EQ(meta.id.rfind("cmpl-", 0), 0u);
  Completion c;
  c.tokens = {token('a', -0.5f, {{'a', -0.5f}, {'b', -1.5f}}), token('b', -0.25f, {{'b', -0.25f}})};
  c.text = "ab";
  c.finish = finish(engine::FinishReason::kStop, 3, 2, 0);
  const json j = json::parse(completion_body(meta, c, tok()));
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], "ab");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  const json& lp = j["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"], json({"a", "b"}));
  EXPECT_FLOAT_EQ(lp["token_logprobs"][1].get<float>(), -0.25f);
  EXPECT_FLOAT_EQ(lp["top_logprobs"][0]["b"].get<float>(), -1.5f);
  EXPECT_EQ(lp["top_logprobs"][0].size(), 2u);
  EXPECT_EQ(lp["text_offset"], json({0, 1}));
}

TEST(ServerFormat, ChatLogprobsCarryBytes) {
  const ResponseMeta meta = make_meta(Endpoint::kChatCompletions, "tiny", true, false);
  Completion c;
  // Byte 0xC3 alone is half a character: JSON gets U+FFFD, `bytes` the exact byte.
  const int32_t half = [] {
    for (int32_t id = 0; id < 256; ++id) {
      if (tok().piece(id) == "\xc3") return id;
    }
    return -1;
  }();
  ASSERT_GE(half, 0);
  c.tokens = {token(half, -0.1f, {{half, -0.1f}, {'x', -3.f}})};
  c.finish = finish(engine::FinishReason::kStop, 1, 1, 0);
  const json j = json::parse(completion_body(meta, c, tok()));
  const json& e = j["choices"][0]["logprobs"]["content"][0];
  EXPECT_EQ(e["bytes"], json({0xc3}));
  EXPECT_EQ(e["token"], "\xef\xbf\xbd");
  EXPECT_FLOAT_EQ(e["logprob"].get<float>(), -0.1f);
  ASSERT_EQ(e["top_logprobs"].size(), 2u);
  EXPECT_EQ(e["top_logprobs"][1]["token"], "x");
  EXPECT_EQ(e["top_logprobs"][1]["bytes"], json({'x'}));
  EXPECT_TRUE(j["choices"][0]["logprobs"]["refusal"].is_null());
}

TEST(ServerFormat, ChatStreamChunks) {
  const ResponseMeta meta = make_meta(Endpoint::kChatCompletions, "tiny", false, true);
  const json role = event(role_chunk(meta));
  EXPECT_EQ(role["object"], "chat.completion.chunk");
  EXPECT_EQ(role["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(role.contains("usage") && role["usage"].is_null());  // include_usage
  size_t offset = 0;
  const json d = event(delta_chunk(meta, "hi", {}, tok(), &offset));
  EXPECT_EQ(d["choices"][0]["delta"]["content"], "hi");
  EXPECT_TRUE(d["choices"][0]["finish_reason"].is_null());
  EXPECT_EQ(d["id"], meta.id);
  const json f = event(finish_chunk(meta, engine::FinishReason::kLength));
  EXPECT_EQ(f["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(f["choices"][0]["delta"].empty());
  const json u = event(usage_chunk(meta, finish(engine::FinishReason::kLength, 4, 2, 0)));
  EXPECT_TRUE(u["choices"].empty());
  EXPECT_EQ(u["usage"]["total_tokens"], 6);
  EXPECT_EQ(std::string(kDone), "data: [DONE]\n\n");
}

TEST(ServerFormat, TextStreamChunksAdvanceTheOffset) {
  const ResponseMeta meta = make_meta(Endpoint::kCompletions, "tiny", true, false);
  size_t offset = 0;
  const engine::TokenEvent a = token('a', -1.f), b = token('b', -2.f);
  const json one = event(delta_chunk(meta, "a", std::span(&a, 1), tok(), &offset));
  EXPECT_EQ(one["object"], "text_completion");
  EXPECT_FALSE(one.contains("usage"));
  EXPECT_EQ(one["choices"][0]["text"], "a");
  EXPECT_EQ(one["choices"][0]["logprobs"]["text_offset"], json({0}));
  const json two = event(delta_chunk(meta, "b", std::span(&b, 1), tok(), &offset));
  EXPECT_EQ(two["choices"][0]["logprobs"]["text_offset"], json({1}));
  EXPECT_EQ(offset, 2u);
}

TEST(ServerFormat, ErrorObject) {
  const json j =
      json::parse(error_body(ApiError{404, "no such \xff model", "model", "model_not_found"}));
  EXPECT_EQ(j["error"]["type"], "not_found_error");
  EXPECT_EQ(j["error"]["param"], "model");
  EXPECT_EQ(j["error"]["code"], "model_not_found");
  EXPECT_NE(j["error"]["message"].get<std::string>().find("no such"), std::string::npos);
  const json n = json::parse(error_body(bad_request("bad")));
  EXPECT_EQ(n["error"]["type"], "invalid_request_error");
  EXPECT_TRUE(n["error"]["param"].is_null());
  EXPECT_TRUE(n["error"]["code"].is_null());
  EXPECT_STREQ(error_type(401), "authentication_error");
  EXPECT_STREQ(error_type(503), "server_error");
  EXPECT_STREQ(error_type(413), "invalid_request_error");
}

// Every line of the exposition: a comment (# HELP / # TYPE) or a sample
// "name{labels} value" with a float value; each sample's family declared
// once by a TYPE line before it.
void expect_valid_exposition(const std::string& text) {
  const std::regex sample(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? (\S+)$)");
  const std::regex type(R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$)");
  std::set<std::string> families;
  std::istringstream in(text);
  std::string line;
  int samples = 0;
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, type)) {
      EXPECT_TRUE(families.insert(m[1]).second) << "declared twice: " << line;
      continue;
    }
    if (line.rfind("# HELP ", 0) == 0) continue;
    ASSERT_TRUE(std::regex_match(line, m, sample)) << "not a sample: '" << line << "'";
    std::string family = m[1];
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      if (!families.count(family) && family.size() > strlen(suffix) &&
          family.compare(family.size() - strlen(suffix), std::string::npos, suffix) == 0)
        family.resize(family.size() - strlen(suffix));
    }
    EXPECT_TRUE(families.count(family)) << "no TYPE before " << line;
    EXPECT_EQ(family.rfind("snug_", 0), 0u) << line;
    const std::string v = m[5];
    EXPECT_TRUE(v == "+Inf" || v == "-Inf" || v == "NaN" ||
                std::strtod(v.c_str(), nullptr) == std::strtod(v.c_str(), nullptr))
        << line;
    ++samples;
  }
  EXPECT_GT(samples, 0);
}

TEST(ServerFormat, MetricsText) {
  engine::SchedulerMetrics m;
  m.requests_submitted = 7;
  m.requests_finished[static_cast<int>(engine::FinishReason::kLength)] = 3;
  m.running = 2;
  m.waiting = 5;
  m.kv_blocks_total = 100;
  m.kv_blocks_used = 60;
  m.kv_blocks_cached = 30;
  m.kv_blocks_free = 10;
  m.prefix_lookup_blocks = 8;
  m.prefix_hit_blocks = 2;
  m.time_to_first_token.observe(0.003);
  m.time_to_first_token.observe(0.2);
  m.time_to_first_token.observe(100);
  memory::Ledger ledger;
  ledger.charge(memory::Category::kKvCache, 4096);
  HttpCounters http;
  http.count(route_of("/v1/completions"), 200);
  http.count(route_of("/v1/completions"), 200);
  http.count(route_of("/evil\"path\n"), 404);
  engine::ModelStatus loaded;
  loaded.name = "small\"one";
  loaded.state = engine::ModelState::kLoaded;
  loaded.planned_bytes = 123456;
  loaded.loads = 2;
  loaded.evictions = 1;
  loaded.in_flight = 3;
  loaded.scheduler = m;
  engine::ModelStatus idle;
  idle.name = "big";
  idle.state = engine::ModelState::kTooLarge;
  loaded.scheduler->tenant_kv_blocks = {5, 0};
  MetricsInput in;
  in.models = {loaded, idle};
  in.tenants.resize(2);
  in.tenants[0].name = "research";
  in.tenants[0].admitted = 4;
  in.tenants[1].name = "web";
  in.budget_bytes = 5000;
  in.budget_reserved_bytes = 4000;
  in.ledger = &ledger;
  in.http = &http;
  in.resident_bytes = 1000;
  in.peak_resident_bytes = 2000;
  in.predicted_peak_bytes = 3000;
  const std::string text = format_metrics(in);
  expect_valid_exposition(text);
  auto has = [&](const std::string& line) {
    EXPECT_NE(text.find("\n" + line + "\n"), std::string::npos) << "missing: " << line << "\n"
                                                                << text;
  };
  const std::string model = "model=\"small\\\"one\"";
  has("snug_model_loaded 1");
  has("snug_budget_bytes 5000");
  has("snug_budget_reserved_bytes 4000");
  has("snug_model_state{" + model + ",state=\"loaded\"} 1");
  has("snug_model_state{" + model + ",state=\"unloaded\"} 0");
  has("snug_model_state{model=\"big\",state=\"too_large\"} 1");
  has("snug_model_planned_bytes{" + model + "} 123456");
  has("snug_model_loads_total{" + model + "} 2");
  has("snug_model_evictions_total{" + model + "} 1");
  has("snug_model_requests_in_flight{" + model + "} 3");
  has("snug_requests_submitted_total{" + model + "} 7");
  has("snug_requests_finished_total{" + model + ",reason=\"length\"} 3");
  has("snug_queue_length{" + model + "} 5");
  has("snug_sequences{" + model + ",state=\"running\"} 2");
  has("snug_kv_blocks{" + model + ",state=\"used\"} 60");
  has("snug_kv_blocks{" + model + ",state=\"cached\"} 30");
  has("snug_kv_blocks{" + model + ",state=\"free\"} 10");
  has("snug_prefix_cache_hit_ratio{" + model + "} 0.25");
  has("snug_memory_bytes{category=\"kv_cache\"} 4096");
  has("snug_time_to_first_token_seconds_bucket{" + model + ",le=\"0.005\"} 1");
  has("snug_time_to_first_token_seconds_bucket{" + model + ",le=\"0.25\"} 2");
  has("snug_time_to_first_token_seconds_bucket{" + model + ",le=\"30\"} 2");
  has("snug_time_to_first_token_seconds_bucket{" + model + ",le=\"+Inf\"} 3");
  has("snug_time_to_first_token_seconds_count{" + model + "} 3");
  has("snug_http_requests_total{route=\"/v1/completions\",status=\"200\"} 2");
  has("snug_http_requests_total{route=\"other\",status=\"404\"} 1");  // paths never become labels
  has("snug_tenant_kv_blocks{" + model + ",tenant=\"research\"} 5");
  has("snug_tenant_requests_total{tenant=\"research\",outcome=\"admitted\"} 4");
  has("snug_process_peak_resident_bytes 2000");
  has("snug_predicted_peak_resident_bytes 3000");
  // No scheduler is loaded (the model is loading, or none is in use): still valid.
  MetricsInput loading;
  loading.models = {idle};
  loading.ledger = &ledger;
  loading.http = &http;
  const std::string early = format_metrics(loading);
  expect_valid_exposition(early);
  EXPECT_NE(early.find("snug_model_loaded 0"), std::string::npos);
  EXPECT_EQ(early.find("snug_requests_submitted_total{"), std::string::npos);
  EXPECT_EQ(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

TEST(ServerAuth, TenantsFile) {
  auto k = ApiKeys::tenants_from_text(
      R"({"tenants": [
        {"name": "research", "keys": ["sk-research-1", "sk-research-2"], "models": ["small"],
         "max_concurrent": 2, "tokens_per_minute": 1000},
        {"name": "web", "keys": ["sk-web-00001"], "kv_bytes": "64MiB"}]})",
      "tenants");
  ASSERT_TRUE(k.ok()) << k.error().message;
  EXPECT_EQ(k->size(), 3u);
  ASSERT_EQ(k->tenants().size(), 2u);
  EXPECT_EQ(k->match("Bearer sk-research-2"), std::optional<size_t>(1));
  EXPECT_EQ(k->tenant_of(1), 0u);
  EXPECT_EQ(k->tenant_of(2), 1u);
  EXPECT_EQ(k->cache_scope(0), "tenant:research");
  EXPECT_TRUE(k->tenants()[0].may_use("small"));
  EXPECT_FALSE(k->tenants()[0].may_use("big"));
  EXPECT_TRUE(k->tenants()[1].may_use("big"));
  EXPECT_EQ(k->tenants()[0].max_concurrent, 2);
  EXPECT_EQ(k->tenants()[0].tokens_per_minute, 1000);
  EXPECT_EQ(k->tenants()[0].kv_bytes, 0u);
  EXPECT_EQ(k->tenants()[1].kv_bytes, 64u << 20);
  // Each malformed file: one line naming what is wrong.
  const std::pair<const char*, const char*> bad[] = {
      {"not json", "not valid JSON"},
      {"[]", "must be {\"tenants\""},
      {R"({"tenants": []})", "must be {\"tenants\""},
      {R"({"tenants": [], "extra": 1})", "must be {\"tenants\""},
      {R"({"tenants": [7]})", "tenant 1 must be an object"},
      {R"({"tenants": [{"keys": ["sk-aaaaaaaa"]}]})", "has no name"},
      {R"({"tenants": [{"name": "a"}]})", "('a') has no keys"},
      {R"({"tenants": [{"name": "a", "keys": []}]})", "must be a list of keys"},
      {R"({"tenants": [{"name": "a", "keys": ["short"]}]})", "8 bytes or more"},
      {R"({"tenants": [{"name": "a", "keys": ["has space 1"]}]})", "printable ASCII"},
      {R"({"tenants": [{"name": "a", "keys": ["sk-aaaaaaaa", "sk-aaaaaaaa"]}]})", "given twice"},
      {R"({"tenants": [{"name": "a", "keys": ["sk-aaaaaaaa"]}, {"name": "a", "keys": ["sk-bbbbbbbb"]}]})",
       "used twice"},
      {R"({"tenants": [{"name": "a", "keys": ["sk-aaaaaaaa"], "max_concurrent": -1}]})",
       "'max_concurrent' must be an integer"},
      {R"({"tenants": [{"name": "a", "keys": ["sk-aaaaaaaa"], "tokens_per_minute": 1.5}]})",
       "'tokens_per_minute' must be a non-negative integer"},
      {R"({"tenants": [{"name": "a", "keys": ["sk-aaaaaaaa"], "models": "m"}]})",
       "'models' must be a list"},
      {R"({"tenants": [{"name": "a", "keys": ["sk-aaaaaaaa"], "kv_bytes": true}]})",
       "'kv_bytes' must be a size"},
      {R"({"tenants": [{"name": "a", "keys": ["sk-aaaaaaaa"], "kv_bytes": "lots"}]})",
       "'kv_bytes': "},
      {R"({"tenants": [{"name": "a", "keys": ["sk-aaaaaaaa"], "kv_bytes": -5}]})",
       "'kv_bytes' must be a size"},
      {R"({"tenants": [{"name": "a", "keys": ["sk-aaaaaaaa"], "quota": 1}]})",
       "'quota' is not a tenant field"},
      {R"({"tenants": [{"name": "a\nb", "keys": ["sk-aaaaaaaa"]}]})", "printable characters"},
  };
  for (const auto& [text, needle] : bad) {
    auto r = ApiKeys::tenants_from_text(text, "tenants");
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_NE(r.error().message.find(needle), std::string::npos) << r.error().message;
    EXPECT_EQ(r.error().message.find('\n'), std::string::npos) << r.error().message;
  }
  EXPECT_FALSE(ApiKeys::load_tenants("/nonexistent/tenants.json").ok());
}

TEST(ServerAuth, TenantLimiterQuotas) {
  using Clock = TenantLimiter::Clock;
  TenantLimiter lim({Tenant{"a", {"small"}, 2, 100}, Tenant{"b", {}, 0, 0}});
  const auto t0 = Clock::now();
  TenantLimiter::Ticket x, y, z;
  EXPECT_FALSE(lim.admit(0, "small", &x, t0));
  EXPECT_FALSE(lim.admit(0, "small", &y, t0));
  auto over = lim.admit(0, "small", &z, t0);  // a third at once
  ASSERT_TRUE(over);
  EXPECT_EQ(over->status, 429);
  EXPECT_EQ(over->code, "concurrency_limit_exceeded");
  auto denied = lim.admit(0, "big", &z, t0);
  ASSERT_TRUE(denied);
  EXPECT_EQ(denied->status, 403);
  x.finished(60);
  x.release();
  y.finished(50);
  y.release();
  // 110 tokens finished in the last minute, over the 100: refused until the
  // first 60 leave the window.
  auto rate = lim.admit(0, "small", &z, Clock::now());
  ASSERT_TRUE(rate);
  EXPECT_EQ(rate->status, 429);
  EXPECT_EQ(rate->code, "rate_limit_exceeded");
  EXPECT_GE(rate->retry_after, 59);
  EXPECT_LE(rate->retry_after, 61);
  EXPECT_FALSE(lim.admit(0, "small", &z, Clock::now() + std::chrono::seconds(61)));
  // The other tenant is never limited by the first one's use.
  for (int i = 0; i < 50; ++i) {
    TenantLimiter::Ticket t;
    EXPECT_FALSE(lim.admit(1, "big", &t));
  }
  const auto st = lim.status();
  EXPECT_EQ(st[0].refused_concurrency, 1u);
  EXPECT_EQ(st[0].refused_model, 1u);
  EXPECT_EQ(st[0].refused_rate, 1u);
  EXPECT_EQ(st[0].tokens, 110u);
  EXPECT_EQ(st[0].in_flight, 1);
  EXPECT_EQ(st[1].admitted, 50u);
  EXPECT_EQ(st[1].in_flight, 0);
}

TEST(ServerAuth, ConstantTimeEqual) {
  EXPECT_TRUE(constant_time_equal("secret-key-1", "secret-key-1"));
  EXPECT_FALSE(constant_time_equal("secret-key-1", "secret-key-2"));
  EXPECT_FALSE(constant_time_equal("secret-key", "secret-key-1"));     // a prefix
  EXPECT_FALSE(constant_time_equal("secret-key-1x", "secret-key-1"));  // longer
  EXPECT_FALSE(constant_time_equal("", "secret"));
  EXPECT_FALSE(constant_time_equal("secret", ""));
  EXPECT_TRUE(constant_time_equal("", ""));
  // A presented key that repeats the real one is not equal to it.
  EXPECT_FALSE(constant_time_equal("abcabc", "abc"));
}

TEST(ServerAuth, KeysFile) {
  auto k = ApiKeys::from_text("# tenants\n  key-alpha-1 \r\n\nkey-bravo-22\n", "keys");
  ASSERT_TRUE(k.ok()) << k.error().message;
  EXPECT_EQ(k->size(), 2u);
  EXPECT_EQ(k->match("Bearer key-alpha-1"), std::optional<size_t>(0));
  EXPECT_EQ(k->match("bearer key-bravo-22"), std::optional<size_t>(1));
  EXPECT_EQ(k->match("Bearer key-bravo-2"), std::nullopt);
  EXPECT_EQ(k->match("key-alpha-1"), std::nullopt);  // no scheme
  EXPECT_EQ(k->match("Basic key-alpha-1"), std::nullopt);
  EXPECT_EQ(k->match(""), std::nullopt);
  EXPECT_EQ(k->tenant_of(1), 1u);
  EXPECT_EQ(k->cache_scope(1), "tenant:key-1");
  EXPECT_EQ(k->cache_scope(std::nullopt), "");
  EXPECT_FALSE(ApiKeys::from_text("\n# none\n", "keys").ok());
  EXPECT_FALSE(ApiKeys::from_text("short\n", "keys").ok());
  EXPECT_FALSE(ApiKeys::from_text("has a space inside\n", "keys").ok());
  EXPECT_FALSE(ApiKeys::load("/nonexistent/keys").ok());
  EXPECT_FALSE(ApiKeys().enabled());
}

TEST(ServerLimits, MemoryBoundGrowsWithWhatItCounts) {
  ServerLimits l;
  const uint64_t base = server_memory_bound(l, 10, 4, 1024);
  EXPECT_GT(server_memory_bound(l, 20, 4, 1024), base);
  EXPECT_GT(server_memory_bound(l, 10, 8, 1024), base);
  EXPECT_GT(server_memory_bound(l, 10, 4, 8192), base);
  l.max_body_bytes *= 2;
  EXPECT_GT(server_memory_bound(l, 10, 4, 1024), base);
  EXPECT_EQ(json_value_limit(ServerLimits{}, 1000), 5096u);
}

}  // namespace
}  // namespace snug::server
