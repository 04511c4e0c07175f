#include "engine/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "engine/stop_filter.h"

namespace snug::engine {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

std::string_view stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::kEndOfGeneration:
      return "end of generation";
    case StopReason::kStopString:
      return "stop string";
    case StopReason::kMaxTokens:
      return "token limit";
    case StopReason::kContextFull:
      return "context full";
  }
  return "?";
}

Result<GenerateResult> generate(Session& session, const text::Tokenizer& tokenizer,
                                std::span<const int32_t> prompt, const GenerateOptions& options,
                                const TextSink& sink) {
  GenerateResult r;
  if (prompt.empty()) return make_error("the prompt is empty");
  if (static_cast<int64_t>(prompt.size()) >= session.n_ctx())
    return make_error("prompt of ", prompt.size(), " tokens does not fit the context of ",
                      session.n_ctx(), " tokens (raise --ctx or shorten the prompt)");
  // Keep at least one prompt token to evaluate, so there are logits to sample from.
  const int32_t reuse = session.truncate(
      std::min(session.common_prefix(prompt), static_cast<int32_t>(prompt.size()) - 1));
  r.reused_tokens = reuse;
  r.prompt_tokens = static_cast<int32_t>(prompt.size()) - reuse;

  auto t0 = std::chrono::steady_clock::now();
  SNUG_ASSIGN_OR_RETURN(float* logits, session.feed(prompt.subspan(static_cast<size_t>(reuse))));
  r.prompt_seconds = seconds_since(t0);

  Sampler sampler(options.sampler, session.model().config().n_vocab);
  text::StreamDecoder decoder(tokenizer);
  StopFilter filter(options.stop);
  auto emit = [&](const std::string& text) {
    if (text.empty()) return;
    r.text.append(text);
    if (sink) sink(text);
  };
  // End-of-generation tokens are masked out when asked to ignore them.
  std::vector<int32_t> eog;
  if (options.ignore_eos) {
    for (int32_t id = 0; id < session.model().config().n_vocab; ++id) {
      if (tokenizer.is_eog(id)) eog.push_back(id);
    }
  }
  auto t1 = std::chrono::steady_clock::now();
  for (;;) {
    for (int32_t id : eog) logits[id] = -INFINITY;
    if (options.max_tokens >= 0 && static_cast<int32_t>(r.tokens.size()) >= options.max_tokens) {
      r.reason = StopReason::kMaxTokens;
      break;
    }
    const int32_t tok = sampler.sample(logits, session.history());
    if (tokenizer.is_eog(tok)) {
      r.reason = StopReason::kEndOfGeneration;
      break;
    }
    r.tokens.push_back(tok);
    bool stopped = false;
    emit(filter.push(decoder.push(tok), &stopped));
    if (stopped) {
      r.reason = StopReason::kStopString;
      break;
    }
    if (static_cast<int32_t>(session.history().size()) + 1 > session.n_ctx()) {
      r.reason = StopReason::kContextFull;
      break;
    }
    const int32_t one[1] = {tok};
    auto next = session.feed(one, /*generated=*/true);
    if (!next.ok()) return next.take_error();
    logits = *next;
  }
  if (r.reason != StopReason::kStopString) {
    bool stopped = false;
    emit(filter.push(decoder.finish(), &stopped));
    if (!stopped) emit(filter.flush());
  }
  r.generate_seconds = seconds_since(t1);
  return r;
}

}  // namespace snug::engine
