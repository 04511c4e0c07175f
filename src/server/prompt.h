// Prompt tokens for the two endpoints, as `snug run` makes them: chat
// messages through the model's chat template (special tokens parsed in the
// template's text only, never in the messages), completion text tokenized
// plainly with BOS as the model adds it.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace snug::server {

// Immutable after create(); used by many handler threads at once.
class PromptBuilder {
 public:
  // Parses the chat template once: tokenizer.chat_template, or the fallback of
  // the architecture's family. The tokenizer must outlive the builder.
  static Result<PromptBuilder> create(const text::Tokenizer& tokenizer,
                                      std::string_view architecture);

  // Renders with add_generation_prompt and tokenizes; a template that prints
  // BOS itself does not get a second one. Errors: the template refused the
  // conversation (e.g. roles out of order) or hit its limits.
  Result<std::vector<int32_t>> chat(const std::vector<text::ChatMessage>& messages) const;
  // Plain text: special-token text stays text (`snug run --no-chat`).
  std::vector<int32_t> completion(std::string_view text) const;

  const text::Tokenizer& tokenizer() const { return *tok_; }

 private:
  PromptBuilder(const text::Tokenizer& tok, text::ChatTemplate tmpl)
      : tok_(&tok), tmpl_(std::move(tmpl)) {}
  const text::Tokenizer* tok_;
  text::ChatTemplate tmpl_;
  std::string bos_;
  std::string eos_;
};

}  // namespace snug::server
