// The JSON bodies of POST /v1/completions and /v1/chat/completions, parsed and
// checked into what the scheduler runs. Every value out of range, of the wrong
// type, or asking for something snug does not do is a 400 with a one-line
// message naming the field; fields snug does not know are ignored, as OpenAI
// clients send extras. A null value counts as absent.
//
// Accepted (OpenAI's names and ranges unless noted):
//   model            string; must be the served name when given (else 404)
//   prompt           completions: a string, an array of token ids, or a
//                    one-element array of either (several prompts: 400)
//   messages         chat: 1..max_messages of {role, content}; role system,
//                    developer (as system), user or assistant; content a
//                    string or an array of {"type": "text", "text"} parts,
//                    joined with "\n"
//   max_tokens, max_completion_tokens   1 .. context - prompt (the latter wins)
//   temperature [0, 2]   top_p (0, 1]   min_p [0, 1]   top_k >= 0 (extensions
//   as llama.cpp's server: top_k, min_p, repeat_penalty (0, 10], ignore_eos)
//   seed             integer (absent: a random one)
//   stop             a string or up to max_stop strings of 1..max_stop_bytes
//   stream, stream_options.include_usage
//   logprobs         completions: integer 0..5 (alternatives per token);
//                    chat: boolean, with top_logprobs 0..20
//   n, best_of = 1; echo = false; presence_penalty, frequency_penalty = 0;
//   logit_bias, suffix, tools, response_format other than text: 400
// Defaults: temperature 1, top_p 1, top_k and min_p off (OpenAI's); max_tokens
// 16 for completions (OpenAI's), the rest of the context for chat.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "engine/scheduler.h"
#include "server/api_error.h"
#include "server/limits.h"
#include "text/chat_prompt.h"

namespace snug::server {

enum class Endpoint : uint8_t { kCompletions, kChatCompletions };

// What parsing needs to know of the model being served.
struct ServedModel {
  std::string name;                             // "model" in requests and responses
  int32_t n_ctx = 0;                            // tokens one sequence may hold
  const text::ChatPrompter* prompts = nullptr;  // its tokenizer and chat template
};

struct OpenAIRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  // prompt, max_tokens, sampler, stop, ignore_eos and logprobs set here; the
  // server sets cache_scope (the API key) and deadline.
  engine::RequestParams params;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool logprobs = false;       // return logprobs (params.logprobs alternatives each)
};

// The body's "model" (empty when absent), for choosing the model before the
// rest is parsed against it; max_ctx: the largest context of the models
// served (it bounds the JSON values a body may hold).
ApiResult<std::string> requested_model(std::string_view text, const ServerLimits& limits,
                                       int32_t max_ctx);

ApiResult<OpenAIRequest> parse_request(Endpoint endpoint, std::string_view body,
                                       const ServedModel& model, const ServerLimits& limits);

}  // namespace snug::server
