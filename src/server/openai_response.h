// The JSON the server sends back, in OpenAI's shapes:
//   /v1/completions        "text_completion" objects (streamed: chunks of the
//                          same object), legacy logprobs {tokens,
//                          token_logprobs, top_logprobs: [{token: logprob}],
//                          text_offset}
//   /v1/chat/completions   "chat.completion", streamed as
//                          "chat.completion.chunk": a first chunk with the
//                          role, content deltas, a chunk with finish_reason;
//                          logprobs {content: [{token, logprob, bytes,
//                          top_logprobs: [{token, logprob, bytes}]}]}
//   usage                  {prompt_tokens, completion_tokens, total_tokens,
//                          prompt_tokens_details: {cached_tokens}}
// Token strings are the token's bytes; JSON cannot carry a partial UTF-8
// character, so such bytes become U+FFFD there and stay exact in `bytes`.
// text_offset counts bytes of the completion from its start (no echo).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/scheduler.h"
#include "server/openai_request.h"
#include "text/tokenizer.h"

namespace snug::server {

// Identity shared by every object and chunk of one response.
struct ResponseMeta {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string id;       // "cmpl-<24 hex>" or "chatcmpl-<24 hex>"
  int64_t created = 0;  // Unix seconds
  std::string model;
  bool logprobs = false;       // logprobs were asked for
  bool include_usage = false;  // streamed: "usage": null on each chunk, then a usage chunk
};
ResponseMeta make_meta(Endpoint endpoint, std::string model, bool logprobs, bool include_usage);

// "stop" or "length"; cancelled and timed-out requests never reach a client
// as a finish_reason (they end in an error instead).
const char* openai_finish_reason(engine::FinishReason r);

// What a non-streaming request produced.
struct Completion {
  std::string text;                        // the whole generated text
  std::vector<engine::TokenEvent> tokens;  // kept only when logprobs were asked for
  engine::Finish finish;
};

// The whole response body of a non-streaming request.
std::string completion_body(const ResponseMeta& meta, const Completion& c,
                            const text::Tokenizer& tok);

// Server-sent events: "data: <json>\n\n". A stream is
//   [chat: role_chunk] (delta_chunk)* finish_chunk [usage_chunk] kDone
constexpr std::string_view kDone = "data: [DONE]\n\n";
std::string role_chunk(const ResponseMeta& meta);
// `text` and the tokens it completes (their logprobs when asked for; tokens
// whose text was held back are reported with the text that releases them).
// `text_offset`: bytes of completion text sent so far, advanced here.
std::string delta_chunk(const ResponseMeta& meta, std::string_view text,
                        std::span<const engine::TokenEvent> tokens, const text::Tokenizer& tok,
                        size_t* text_offset);
std::string finish_chunk(const ResponseMeta& meta, engine::FinishReason reason);
std::string usage_chunk(const ResponseMeta& meta, const engine::Finish& finish);
// An error inside a stream that has already begun (its status was 200).
std::string error_chunk(const std::string& error_json);

}  // namespace snug::server
