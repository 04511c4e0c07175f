// Prompt tokens as every front end makes them (snug run, snug chat, snug
// serve, snug batch): chat messages through the model's chat template
// (special tokens parsed in the template's text only, never in the
// messages), completion text tokenized plainly with BOS as the model adds it.
// One implementation, so the server's greedy output equals `snug run`'s.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace snug::text {

// Immutable after create(); used by many threads at once.
class ChatPrompter {
 public:
  // Parses the chat template once: tokenizer.chat_template, or the fallback of
  // the architecture's family. The tokenizer must outlive the prompter.
  static Result<ChatPrompter> create(const Tokenizer& tokenizer, std::string_view architecture);

  // Renders with add_generation_prompt and tokenizes; a template that prints
  // BOS itself does not get a second one. Errors: the template refused the
  // conversation (e.g. roles out of order) or hit its limits.
  Result<std::vector<int32_t>> chat(const std::vector<ChatMessage>& messages) const;
  // Plain text: special-token text stays text (`snug run --no-chat`).
  std::vector<int32_t> completion(std::string_view text) const;

  const Tokenizer& tokenizer() const { return *tok_; }

 private:
  ChatPrompter(const Tokenizer& tok, ChatTemplate tmpl) : tok_(&tok), tmpl_(std::move(tmpl)) {}
  const Tokenizer* tok_;
  ChatTemplate tmpl_;
  std::string bos_;
  std::string eos_;
};

}  // namespace snug::text
