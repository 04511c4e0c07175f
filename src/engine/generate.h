// Generation for one session: feed the prompt, then sample token by token
// until an end-of-generation token, a stop string, the token limit or a full
// context, streaming complete UTF-8 text to a callback.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "engine/sampler.h"
#include "engine/session.h"
#include "text/stream_decoder.h"
#include "text/tokenizer.h"

namespace snug::engine {

struct GenerateOptions {
  int32_t max_tokens = -1;  // < 0: until end of generation or a full context
  SamplerParams sampler;
  std::vector<std::string> stop;  // stop strings; the text stops before them
  bool ignore_eos = false;        // never end on an end-of-generation token (benchmarks)
};

enum class StopReason { kEndOfGeneration, kStopString, kMaxTokens, kContextFull };
std::string_view stop_reason_name(StopReason r);

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated token ids (not the prompt)
  std::string text;             // generated text, stop string excluded
  StopReason reason = StopReason::kMaxTokens;
  int32_t prompt_tokens = 0;  // tokens really evaluated (after reusing the cached prefix)
  int32_t reused_tokens = 0;  // prompt tokens served from the cache
  double prompt_seconds = 0;
  double generate_seconds = 0;
};

using TextSink = std::function<void(std::string_view)>;

// Reuses the longest cached prefix of `prompt`, evaluates the rest, then generates.
Result<GenerateResult> generate(Session& session, const text::Tokenizer& tokenizer,
                                std::span<const int32_t> prompt, const GenerateOptions& options,
                                const TextSink& sink);

}  // namespace snug::engine
