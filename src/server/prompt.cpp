#include "server/prompt.h"

#include <utility>

namespace snug::server {

Result<PromptBuilder> PromptBuilder::create(const text::Tokenizer& tok,
                                            std::string_view architecture) {
  const std::string source = text::select_chat_template(tok, architecture);
  SNUG_ASSIGN_OR_RETURN(text::ChatTemplate parsed, text::ChatTemplate::parse(source));
  PromptBuilder b(tok, std::move(parsed));
  b.bos_ = tok.bos() >= 0 ? tok.piece(tok.bos()) : "";
  b.eos_ = tok.eos() >= 0 ? tok.piece(tok.eos()) : "";
  return b;
}

// The same steps as cli::chat_prompt (src/cli/prompt.cpp), with the template
// parsed once instead of per call: greedy output must equal `snug run`'s.
Result<std::vector<int32_t>> PromptBuilder::chat(
    const std::vector<text::ChatMessage>& messages) const {
  SNUG_ASSIGN_OR_RETURN(text::RenderedChat chat,
                        text::render_chat_located(tmpl_, messages, true, bos_, eos_));
  SNUG_ASSIGN_OR_RETURN(std::vector<int32_t> ids, text::tokenize_chat(*tok_, chat, messages));
  if (ids.size() >= 2 && tok_->add_bos() && ids[0] == tok_->bos() && ids[1] == tok_->bos())
    ids.erase(ids.begin());
  return ids;
}

std::vector<int32_t> PromptBuilder::completion(std::string_view text) const {
  return tok_->encode(text, /*add_special=*/true, /*parse_special=*/false);
}

}  // namespace snug::server
