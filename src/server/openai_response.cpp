#include "server/openai_response.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

#include <nlohmann/json.hpp>

namespace snug::server {
namespace {

using json = nlohmann::json;

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// OpenAI reports an impossible token as -9999.
double logprob_value(float lp) {
  return std::isfinite(lp) ? static_cast<double>(lp) : -9999.0;
}

json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

// {"token": ..., "logprob": ..., "bytes": [...]} for chat logprobs.
json chat_token(const text::Tokenizer& tok, int32_t id, float lp) {
  const std::string piece = tok.piece(id);
  return json{{"token", piece}, {"logprob", logprob_value(lp)}, {"bytes", bytes_of(piece)}};
}

// The logprobs object of a choice, serialized; entries are dumped one at a
// time so a long response never holds its whole logprobs tree.
std::string logprobs_json(const ResponseMeta& meta, std::span<const engine::TokenEvent> tokens,
                          const text::Tokenizer& tok, size_t* text_offset) {
  std::string out;
  if (meta.endpoint == Endpoint::kChatCompletions) {
    out = "{\"content\":[";
    for (size_t i = 0; i < tokens.size(); ++i) {
      const engine::TokenEvent& t = tokens[i];
      json e = chat_token(tok, t.id, t.logprob);
      json top = json::array();
      for (const engine::TokenLogprob& alt : t.top)
        top.push_back(chat_token(tok, alt.id, alt.logprob));
      e["top_logprobs"] = std::move(top);
      if (i > 0) out += ',';
      out += dump(e);
    }
    out += "],\"refusal\":null}";
    return out;
  }
  // Legacy completions: four parallel arrays.
  std::string toks = "[", lps = "[", tops = "[", offs = "[";
  for (size_t i = 0; i < tokens.size(); ++i) {
    const engine::TokenEvent& t = tokens[i];
    const std::string piece = tok.piece(t.id);
    if (i > 0) {
      for (std::string* s : {&toks, &lps, &tops, &offs}) s->push_back(',');
    }
    toks += dump(json(piece));
    lps += dump(json(logprob_value(t.logprob)));
    json alts = json::object();
    for (const engine::TokenLogprob& alt : t.top)
      alts[tok.piece(alt.id)] = logprob_value(alt.logprob);
    tops += dump(alts);
    offs += std::to_string(*text_offset);
    *text_offset += piece.size();
  }
  return "{\"tokens\":" + toks + "],\"token_logprobs\":" + lps + "],\"top_logprobs\":" + tops +
         "],\"text_offset\":" + offs + "]}";
}

// Serializes `doc`, whose choices[0].logprobs is null, with `logprobs` in its
// place. Inside JSON strings quotes are escaped, so the only `"logprobs":null`
// in the text is that key.
std::string splice_logprobs(const json& doc, const std::string& logprobs) {
  std::string s = dump(doc);
  constexpr std::string_view kKey = "\"logprobs\":null";
  const size_t at = s.find(kKey);
  if (at == std::string::npos) return s;
  s.replace(at + kKey.size() - 4, 4, logprobs);
  return s;
}

json usage_json(const engine::Finish& f) {
  return json{{"prompt_tokens", f.prompt_tokens},
              {"completion_tokens", f.completion_tokens},
              {"total_tokens", f.prompt_tokens + f.completion_tokens},
              {"prompt_tokens_details", {{"cached_tokens", f.cached_tokens}}}};
}

bool chat(const ResponseMeta& m) {
  return m.endpoint == Endpoint::kChatCompletions;
}

json chunk_head(const ResponseMeta& m) {
  json j{{"id", m.id},
         {"object", chat(m) ? "chat.completion.chunk" : "text_completion"},
         {"created", m.created},
         {"model", m.model}};
  if (m.include_usage) j["usage"] = nullptr;
  return j;
}

std::string sse(const std::string& payload) {
  return "data: " + payload + "\n\n";
}

}  // namespace

ResponseMeta make_meta(Endpoint endpoint, std::string model, bool logprobs, bool include_usage) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char hex[25];
  std::snprintf(hex, sizeof hex, "%016llx%08llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng() & 0xffffffffULL));
  ResponseMeta m;
  m.endpoint = endpoint;
  m.id = std::string(endpoint == Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-") + hex;
  m.created = std::chrono::duration_cast<std::chrono::seconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
  m.model = std::move(model);
  m.logprobs = logprobs;
  m.include_usage = include_usage;
  return m;
}

const char* openai_finish_reason(engine::FinishReason r) {
  return r == engine::FinishReason::kLength ? "length" : "stop";
}

std::string completion_body(const ResponseMeta& meta, const Completion& c,
                            const text::Tokenizer& tok) {
  json choice{{"index", 0},
              {"logprobs", nullptr},
              {"finish_reason", openai_finish_reason(c.finish.reason)}};
  if (chat(meta)) {
    choice["message"] = {{"role", "assistant"}, {"content", c.text}};
  } else {
    choice["text"] = c.text;
  }
  json doc{{"id", meta.id},
           {"object", chat(meta) ? "chat.completion" : "text_completion"},
           {"created", meta.created},
           {"model", meta.model},
           {"choices", json::array({std::move(choice)})},
           {"usage", usage_json(c.finish)}};
  if (!meta.logprobs) return dump(doc);
  size_t offset = 0;
  return splice_logprobs(doc, logprobs_json(meta, c.tokens, tok, &offset));
}

std::string role_chunk(const ResponseMeta& meta) {
  json doc = chunk_head(meta);
  doc["choices"] = json::array({json{{"index", 0},
                                     {"delta", {{"role", "assistant"}, {"content", ""}}},
                                     {"logprobs", nullptr},
                                     {"finish_reason", nullptr}}});
  return sse(dump(doc));
}

std::string delta_chunk(const ResponseMeta& meta, std::string_view text,
                        std::span<const engine::TokenEvent> tokens, const text::Tokenizer& tok,
                        size_t* text_offset) {
  json doc = chunk_head(meta);
  json choice{{"index", 0}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
  if (chat(meta)) {
    choice["delta"] = {{"content", std::string(text)}};
  } else {
    choice["text"] = std::string(text);
  }
  doc["choices"] = json::array({std::move(choice)});
  if (!meta.logprobs || tokens.empty()) return sse(dump(doc));
  return sse(splice_logprobs(doc, logprobs_json(meta, tokens, tok, text_offset)));
}

std::string finish_chunk(const ResponseMeta& meta, engine::FinishReason reason) {
  json doc = chunk_head(meta);
  json choice{{"index", 0}, {"logprobs", nullptr}, {"finish_reason", openai_finish_reason(reason)}};
  if (chat(meta)) {
    choice["delta"] = json::object();
  } else {
    choice["text"] = "";
  }
  doc["choices"] = json::array({std::move(choice)});
  return sse(dump(doc));
}

std::string usage_chunk(const ResponseMeta& meta, const engine::Finish& finish) {
  json doc = chunk_head(meta);
  doc["choices"] = json::array();
  doc["usage"] = usage_json(finish);
  return sse(dump(doc));
}

std::string error_chunk(const std::string& error_json) {
  return sse(error_json);
}

}  // namespace snug::server
