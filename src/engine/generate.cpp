#include "engine/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace snug::engine {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Holds back text that might be the start of a stop string, and cuts at the
// first complete one.
class StopFilter {
 public:
  StopFilter(const std::vector<std::string>& stops, const TextSink& sink, std::string& out)
      : stops_(stops), sink_(sink), out_(out) {}

  // Returns true when a stop string was found.
  bool push(std::string_view text) {
    pending_.append(text);
    size_t cut = std::string::npos;
    for (const auto& s : stops_) {
      if (s.empty()) continue;
      size_t at = pending_.find(s);
      if (at != std::string::npos) cut = std::min(cut, at);
    }
    if (cut != std::string::npos) {
      emit(pending_.substr(0, cut));
      pending_.clear();
      return true;
    }
    // Emit all but the longest tail that is a prefix of some stop string.
    size_t hold = 0;
    for (const auto& s : stops_) {
      for (size_t k = std::min(s.size() - (s.empty() ? 0 : 1), pending_.size()); k > hold; --k) {
        if (pending_.compare(pending_.size() - k, k, s, 0, k) == 0) {
          hold = k;
          break;
        }
      }
    }
    emit(pending_.substr(0, pending_.size() - hold));
    pending_.erase(0, pending_.size() - hold);
    return false;
  }
  void flush() {
    emit(pending_);
    pending_.clear();
  }

 private:
  void emit(const std::string& s) {
    if (s.empty()) return;
    out_.append(s);
    if (sink_) sink_(s);
  }
  const std::vector<std::string>& stops_;
  const TextSink& sink_;
  std::string& out_;
  std::string pending_;
};

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
  int32_t reuse = std::min(session.common_prefix(prompt), static_cast<int32_t>(prompt.size()) - 1);
  session.truncate(reuse);
  r.reused_tokens = reuse;
  r.prompt_tokens = static_cast<int32_t>(prompt.size()) - reuse;

  auto t0 = std::chrono::steady_clock::now();
  SNUG_ASSIGN_OR_RETURN(float* logits, session.feed(prompt.subspan(static_cast<size_t>(reuse))));
  r.prompt_seconds = seconds_since(t0);

  Sampler sampler(options.sampler, session.model().config().n_vocab);
  text::StreamDecoder decoder(tokenizer);
  StopFilter filter(options.stop, sink, r.text);
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
    if (filter.push(decoder.push(tok))) {
      r.reason = StopReason::kStopString;
      break;
    }
    if (static_cast<int32_t>(session.history().size()) + 1 > session.n_ctx()) {
      r.reason = StopReason::kContextFull;
      break;
    }
    const int32_t one[1] = {tok};
    auto next = session.feed(one);
    if (!next.ok()) return next.take_error();
    logits = *next;
  }
  if (r.reason != StopReason::kStopString) {
    filter.push(decoder.finish());
    filter.flush();
  }
  r.generate_seconds = seconds_since(t1);
  return r;
}

}  // namespace snug::engine
