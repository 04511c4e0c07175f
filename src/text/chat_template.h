// Chat templates: turning a conversation into the prompt text a model was trained on.
//
// Templates are Jinja source (tokenizer.chat_template in GGUF) run by a small closed
// interpreter (jinja_*.h): it supports the subset chat templates use, has no access
// to files or the environment, and bounds output size and work so no template runs
// unbounded. Unknown tags, filters, tests or functions are Errors, never crashes.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "text/jinja_eval.h"
#include "text/tokenizer.h"

namespace snug::text {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", ...
  std::string content;
};

using ChatLimits = jinja::Limits;

// A parsed template, reusable across requests (rendering does not modify it).
class ChatTemplate {
 public:
  static Result<ChatTemplate> parse(std::string_view source);

  // Variables: messages (list of {role, content}), add_generation_prompt, bos_token,
  // eos_token; functions raise_exception, range, namespace, strftime_now.
  // bos_token is printed wherever the template says so (Gemma's does at the start):
  // pass "" when the tokenizer will add BOS itself, or tokenize with add_special=false.
  Result<std::string> render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                             const std::string& bos_token, const std::string& eos_token,
                             const ChatLimits& limits = {}) const;

 private:
  std::shared_ptr<const jinja::Body> body_;
};

// Parses and renders in one call.
Result<std::string> render_chat(const std::string& tmpl, const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt, const std::string& bos_token,
                                const std::string& eos_token);

// A rendered conversation and where each message's content landed in it.
struct RenderedChat {
  std::string text;
  std::vector<TextSpan> contents;  // sorted, non-overlapping
  bool located = false;            // false: the template rewrote a content; spans unknown
};

// Renders like ChatTemplate::render and locates the contents: the template is
// rendered again with each content replaced by a marker, and the real output must
// be that output with every marker replaced by its content (or the content
// trimmed, as Gemma's `| trim` does). Costs a second rendering (same limits).
Result<RenderedChat> render_chat_located(const ChatTemplate& tmpl,
                                         const std::vector<ChatMessage>& messages,
                                         bool add_generation_prompt, const std::string& bos_token,
                                         const std::string& eos_token,
                                         const ChatLimits& limits = {});

// Prompt tokens of a rendered chat (BOS/EOS as the tokenizer adds them): the
// template's own special-token texts become control tokens, while the same texts
// inside message contents stay plain text, so a message cannot forge a turn. An
// Error when a content holds control-token text and could not be located.
Result<std::vector<int32_t>> tokenize_chat(const Tokenizer& tokenizer, const RenderedChat& chat,
                                           const std::vector<ChatMessage>& messages);

// Source of a built-in template by name ("chatml", "gemma"); empty when unknown.
std::string_view builtin_chat_template(std::string_view name);

// The built-in template to use when a GGUF has none: "gemma" for Gemma architectures
// or vocabularies with <start_of_turn>, otherwise "chatml".
std::string_view fallback_chat_template_name(const Tokenizer& tokenizer,
                                             std::string_view architecture);

// tokenizer.chat_template when present, else the fallback's source.
std::string select_chat_template(const Tokenizer& tokenizer, std::string_view architecture);

}  // namespace snug::text
