#include "server/openai_request.h"

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "server/json_bounded.h"

namespace snug::server {
namespace {

using json = nlohmann::json;

// The field's value, or nullptr when absent or null.
const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

ApiError wrong_type(const char* name, const char* what) {
  return bad_request(std::string("'") + name + "' must be " + what, name);
}

// A number (integer or not) in [lo, hi], or with lo_open in (lo, hi].
std::optional<ApiError> get_real(const json& body, const char* name, double lo, double hi,
                                 bool lo_open, float* out) {
  const json* v = field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) return wrong_type(name, "a number");
  const double d = v->get<double>();
  // nlohmann refuses literals beyond double's range (1e999) while parsing;
  // isfinite keeps the check whole anyway.
  const bool in = std::isfinite(d) && (lo_open ? d > lo : d >= lo) && d <= hi;
  if (!in) {
    return bad_request(
        fmt::format("'{}' must be in {}{}, {}], not {}", name, lo_open ? "(" : "[", lo, hi, d),
        name);
  }
  *out = static_cast<float>(d);
  return std::nullopt;
}

// An integer in [lo, hi] (a JSON number with a fraction or exponent is refused).
std::optional<ApiError> get_int(const json& body, const char* name, int64_t lo, int64_t hi,
                                int64_t* out) {
  const json* v = field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number_integer()) return wrong_type(name, "an integer");
  // nlohmann stores non-negative integers as unsigned, negative ones as signed.
  bool in = false;
  int64_t x = 0;
  if (v->is_number_unsigned()) {
    const uint64_t u = v->get<uint64_t>();
    in = hi >= 0 && u <= static_cast<uint64_t>(hi) && static_cast<int64_t>(u) >= lo;
    x = in ? static_cast<int64_t>(u) : 0;
  } else {
    x = v->get<int64_t>();
    in = x >= lo && x <= hi;
  }
  if (!in) {
    return bad_request(std::string("'") + name + "' must be an integer in [" + std::to_string(lo) +
                           ", " + std::to_string(hi) + "], not " + v->dump(),
                       name);
  }
  *out = x;
  return std::nullopt;
}

std::optional<ApiError> get_bool(const json& body, const char* name, bool* out) {
  const json* v = field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) return wrong_type(name, "true or false");
  *out = v->get<bool>();
  return std::nullopt;
}

// A field whose only accepted value is the default (n = 1, echo = false...).
std::optional<ApiError> require_default(const json& body, const char* name, const json& only,
                                        const char* what) {
  const json* v = field(body, name);
  if (v == nullptr || *v == only) return std::nullopt;
  return bad_request(std::string("'") + name + "' is not supported: " + what, name);
}

std::optional<ApiError> parse_stop(const json& body, const ServerLimits& limits,
                                   std::vector<std::string>* out) {
  const json* v = field(body, "stop");
  if (v == nullptr) return std::nullopt;
  std::vector<const json*> items;
  if (v->is_string()) {
    items.push_back(v);
  } else if (v->is_array()) {
    for (const json& e : *v) items.push_back(&e);
  } else {
    return wrong_type("stop", "a string or an array of strings");
  }
  if (static_cast<int32_t>(items.size()) > limits.max_stop)
    return bad_request("'stop' may hold at most " + std::to_string(limits.max_stop) + " strings",
                       "stop");
  for (const json* e : items) {
    if (!e->is_string()) return wrong_type("stop", "a string or an array of strings");
    const std::string& s = e->get_ref<const std::string&>();
    if (s.empty()) return bad_request("'stop' strings must not be empty", "stop");
    if (s.size() > limits.max_stop_bytes)
      return bad_request(
          "'stop' strings may have at most " + std::to_string(limits.max_stop_bytes) + " bytes",
          "stop");
    out->push_back(s);
  }
  return std::nullopt;
}

// The text of a message's content: a string or an array of text parts.
std::optional<ApiError> message_text(const json& content, size_t index, std::string* out) {
  const std::string param = "messages[" + std::to_string(index) + "].content";
  if (content.is_string()) {
    *out = content.get<std::string>();
    return std::nullopt;
  }
  if (!content.is_array())
    return bad_request("'" + param + "' must be a string or an array of text parts", param);
  bool first = true;
  for (const json& part : content) {
    const json* type = part.is_object() ? field(part, "type") : nullptr;
    const json* text = part.is_object() ? field(part, "text") : nullptr;
    if (type == nullptr || !type->is_string() || *type != "text" || text == nullptr ||
        !text->is_string())
      return bad_request("'" + param +
                             "' parts must be {\"type\": \"text\", \"text\": \"...\"} (only text "
                             "is supported)",
                         param);
    if (!first) out->push_back('\n');
    out->append(text->get_ref<const std::string&>());
    first = false;
  }
  return std::nullopt;
}

ApiResult<std::vector<int32_t>> chat_prompt(const json& body, const ServedModel& model,
                                            const ServerLimits& limits) {
  const json* msgs = field(body, "messages");
  if (msgs == nullptr) return bad_request("'messages' is required", "messages");
  if (!msgs->is_array()) return wrong_type("messages", "an array of messages");
  if (msgs->empty()) return bad_request("'messages' must not be empty", "messages");
  if (static_cast<int32_t>(msgs->size()) > limits.max_messages)
    return bad_request(
        "'messages' may hold at most " + std::to_string(limits.max_messages) + " messages",
        "messages");
  std::vector<text::ChatMessage> messages;
  messages.reserve(msgs->size());
  for (size_t i = 0; i < msgs->size(); ++i) {
    const json& m = (*msgs)[i];
    const std::string at = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) return bad_request("'" + at + "' must be an object", at);
    const json* role = field(m, "role");
    if (role == nullptr || !role->is_string())
      return bad_request("'" + at + ".role' must be a string", at + ".role");
    std::string r = role->get<std::string>();
    if (r == "developer") r = "system";  // OpenAI's newer name for the system message
    if (r != "system" && r != "user" && r != "assistant")
      return bad_request("'" + at + ".role' must be system, developer, user or assistant, not '" +
                             printable(r, 32) + "'",
                         at + ".role");
    const json* content = field(m, "content");
    if (content == nullptr) return bad_request("'" + at + ".content' is required", at + ".content");
    text::ChatMessage cm;
    cm.role = std::move(r);
    if (auto e = message_text(*content, i, &cm.content)) return *e;
    messages.push_back(std::move(cm));
  }
  auto ids = model.prompts->chat(messages);
  if (!ids.ok())
    return bad_request("the chat template refused the messages: " + ids.error().message,
                       "messages");
  return std::move(ids).value();
}

// A token id array: every element an id of the vocabulary.
ApiResult<std::vector<int32_t>> token_ids(const json& arr, int32_t n_vocab) {
  std::vector<int32_t> ids;
  ids.reserve(arr.size());
  for (const json& e : arr) {
    if (!e.is_number_integer() || (!e.is_number_unsigned() && e.get<int64_t>() < 0) ||
        e.get<uint64_t>() >= static_cast<uint64_t>(n_vocab))
      return bad_request("'prompt' token ids must be integers in [0, " + std::to_string(n_vocab) +
                             "), not " + e.dump(),
                         "prompt");
    ids.push_back(e.get<int32_t>());
  }
  return ids;
}

ApiResult<std::vector<int32_t>> completion_prompt(const json& body, const ServedModel& model) {
  const json* p = field(body, "prompt");
  if (p == nullptr) return bad_request("'prompt' is required", "prompt");
  const int32_t n_vocab = model.prompts->tokenizer().n_vocab();
  if (p->is_string()) return model.prompts->completion(p->get_ref<const std::string&>());
  if (!p->is_array())
    return wrong_type("prompt",
                      "a string, an array of token ids, or a one-element array of either");
  if (!p->empty() && ((*p)[0].is_string() || (*p)[0].is_array())) {
    if (p->size() != 1)
      return bad_request("several prompts in one request are not supported: send one each",
                         "prompt");
    const json& only = (*p)[0];
    if (only.is_string()) return model.prompts->completion(only.get_ref<const std::string&>());
    return token_ids(only, n_vocab);
  }
  return token_ids(*p, n_vocab);
}

std::optional<ApiError> unsupported(const json& body, Endpoint endpoint) {
  if (auto e = require_default(body, "n", 1, "only n = 1")) return e;
  if (auto e = require_default(body, "best_of", 1, "only best_of = 1")) return e;
  if (auto e = require_default(body, "echo", false, "echo of the prompt")) return e;
  if (auto e = require_default(body, "presence_penalty", 0, "use repeat_penalty")) return e;
  if (auto e = require_default(body, "frequency_penalty", 0, "use repeat_penalty")) return e;
  if (const json* v = field(body, "logit_bias"); v != nullptr && !v->empty())
    return bad_request("'logit_bias' is not supported", "logit_bias");
  if (const json* v = field(body, "suffix"); v != nullptr && !(v->is_string() && v->empty()))
    return bad_request("'suffix' is not supported", "suffix");
  if (const json* v = field(body, "tools"); v != nullptr && !v->empty())
    return bad_request("'tools' are not supported", "tools");
  if (const json* v = field(body, "response_format"); v != nullptr) {
    const json* type = v->is_object() ? field(*v, "type") : nullptr;
    if (type == nullptr || *type != "text")
      return bad_request("'response_format' other than {\"type\": \"text\"} is not supported",
                         "response_format");
  }
  (void)endpoint;
  return std::nullopt;
}

std::optional<ApiError> parse_sampling(const json& body, engine::SamplerParams* s) {
  // OpenAI's defaults; top_k and min_p are off unless asked for.
  s->temperature = 1.f;
  s->top_p = 1.f;
  s->top_k = 0;
  s->min_p = 0.f;
  s->repeat_penalty = 1.f;
  if (auto e = get_real(body, "temperature", 0, 2, false, &s->temperature)) return e;
  if (auto e = get_real(body, "top_p", 0, 1, true, &s->top_p)) return e;
  if (auto e = get_real(body, "min_p", 0, 1, false, &s->min_p)) return e;
  if (auto e = get_real(body, "repeat_penalty", 0, 10, true, &s->repeat_penalty)) return e;
  int64_t k = 0;
  if (auto e = get_int(body, "top_k", 0, std::numeric_limits<int32_t>::max(), &k)) return e;
  s->top_k = static_cast<int32_t>(k);
  if (const json* seed = field(body, "seed")) {
    if (!seed->is_number_integer()) return wrong_type("seed", "an integer");
    s->seed = seed->is_number_unsigned() ? seed->get<uint64_t>()
                                         : static_cast<uint64_t>(seed->get<int64_t>());
  } else {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    s->seed = rng();
  }
  return std::nullopt;
}

// logprobs and the number of alternatives per token.
std::optional<ApiError> parse_logprobs(const json& body, Endpoint endpoint,
                                       const ServerLimits& limits, OpenAIRequest* r) {
  int64_t top = 0;
  if (endpoint == Endpoint::kCompletions) {
    const json* v = field(body, "logprobs");
    if (v != nullptr && !v->is_number_integer())
      return wrong_type("logprobs", "an integer (alternatives per token)");
    if (auto e = get_int(body, "logprobs", 0, limits.max_completion_logprobs, &top)) return e;
    r->logprobs = v != nullptr;
  } else {
    if (auto e = get_bool(body, "logprobs", &r->logprobs)) return e;
    if (auto e = get_int(body, "top_logprobs", 0, limits.max_top_logprobs, &top)) return e;
    if (top > 0 && !r->logprobs)
      return bad_request("'top_logprobs' needs 'logprobs': true", "top_logprobs");
  }
  r->params.logprobs = r->logprobs ? static_cast<int32_t>(top) : -1;
  return std::nullopt;
}

// max_tokens against the room the prompt leaves in the context.
std::optional<ApiError> parse_max_tokens(const json& body, Endpoint endpoint,
                                         const ServedModel& model, const ServerLimits& limits,
                                         OpenAIRequest* r) {
  const int32_t prompt = static_cast<int32_t>(r->params.prompt.size());
  if (prompt >= model.n_ctx)
    return bad_request("the prompt has " + std::to_string(prompt) +
                           " tokens; this server's context holds " + std::to_string(model.n_ctx) +
                           " (prompt and completion together)",
                       endpoint == Endpoint::kChatCompletions ? "messages" : "prompt");
  const int32_t room = model.n_ctx - prompt;
  const char* name =
      field(body, "max_completion_tokens") != nullptr ? "max_completion_tokens" : "max_tokens";
  const json* v = field(body, name);
  int64_t n = -1;
  if (v != nullptr) {
    if (!v->is_number_integer()) return wrong_type(name, "an integer");
    if (v->is_number_unsigned() ? v->get<uint64_t>() > static_cast<uint64_t>(room)
                                : v->get<int64_t>() > room)
      return bad_request("'" + std::string(name) + "' is " + v->dump() + " but the prompt's " +
                             std::to_string(prompt) + " tokens leave " + std::to_string(room) +
                             " of the context's " + std::to_string(model.n_ctx),
                         name);
    if (v->get<int64_t>() < 1)
      return bad_request("'" + std::string(name) + "' must be at least 1", name);
    n = v->get<int64_t>();
  } else if (endpoint == Endpoint::kCompletions) {
    n = std::min(limits.default_completion_max_tokens, room);
  }
  // A non-streaming response holds all its logprob entries at once.
  if (r->logprobs && !r->stream) {
    const int64_t per_token = 1 + std::max(r->params.logprobs, 0);
    const int64_t cap = std::max<int64_t>(1, limits.max_logprob_entries / per_token);
    if (n > cap)
      return bad_request("with logprobs, a response that is not streamed may have at most " +
                             std::to_string(cap) + " tokens; ask for fewer or set 'stream'",
                         name);
    if (n < 0) n = std::min<int64_t>(cap, room);
  }
  r->params.max_tokens = static_cast<int32_t>(n);
  return std::nullopt;
}

}  // namespace

ApiResult<std::string> requested_model(std::string_view text, const ServerLimits& limits,
                                       int32_t max_ctx) {
  JsonLimits jl;
  jl.max_depth = limits.max_json_depth;
  jl.max_values = json_value_limit(limits, max_ctx);
  auto parsed = parse_json_bounded(text, jl);
  if (!parsed.ok()) return bad_request(parsed.error().message);
  const json& body = parsed.value();
  if (!body.is_object()) return bad_request("the request body must be a JSON object");
  const json* m = field(body, "model");
  if (m == nullptr) return std::string();
  if (!m->is_string()) return wrong_type("model", "a string");
  return m->get<std::string>();
}

ApiResult<OpenAIRequest> parse_request(Endpoint endpoint, std::string_view text,
                                       const ServedModel& model, const ServerLimits& limits) {
  JsonLimits jl;
  jl.max_depth = limits.max_json_depth;
  jl.max_values = json_value_limit(limits, model.n_ctx);
  auto parsed = parse_json_bounded(text, jl);
  if (!parsed.ok()) return bad_request(parsed.error().message);
  const json& body = parsed.value();
  if (!body.is_object()) return bad_request("the request body must be a JSON object");

  if (const json* m = field(body, "model")) {
    if (!m->is_string()) return wrong_type("model", "a string");
    if (m->get_ref<const std::string&>() != model.name)
      return ApiError{404,
                      "the model '" + printable(m->get<std::string>(), 64) +
                          "' does not exist; this server has '" + model.name + "'",
                      "model", "model_not_found"};
  }
  if (auto e = unsupported(body, endpoint)) return *e;

  OpenAIRequest r;
  r.endpoint = endpoint;
  if (auto e = get_bool(body, "stream", &r.stream)) return *e;
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) return wrong_type("stream_options", "an object");
    if (auto e = get_bool(*so, "include_usage", &r.include_usage)) {
      e->param = "stream_options.include_usage";
      return *e;
    }
  }
  if (auto e = parse_sampling(body, &r.params.sampler)) return *e;
  if (auto e = parse_stop(body, limits, &r.params.stop)) return *e;
  if (auto e = get_bool(body, "ignore_eos", &r.params.ignore_eos)) return *e;
  if (auto e = parse_logprobs(body, endpoint, limits, &r)) return *e;

  auto prompt = endpoint == Endpoint::kChatCompletions ? chat_prompt(body, model, limits)
                                                       : completion_prompt(body, model);
  if (!prompt.ok()) return prompt.error();
  r.params.prompt = std::move(prompt.value());
  if (r.params.prompt.empty())
    return bad_request("the prompt is empty (no tokens)",
                       endpoint == Endpoint::kChatCompletions ? "messages" : "prompt");
  if (auto e = parse_max_tokens(body, endpoint, model, limits, &r)) return *e;
  return r;
}

}  // namespace snug::server
