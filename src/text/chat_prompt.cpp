#include "text/chat_prompt.h"

#include <utility>

namespace snug::text {

Result<ChatPrompter> ChatPrompter::create(const Tokenizer& tok, std::string_view architecture) {
  const std::string source = select_chat_template(tok, architecture);
  SNUG_ASSIGN_OR_RETURN(ChatTemplate parsed, ChatTemplate::parse(source));
  ChatPrompter p(tok, std::move(parsed));
  p.bos_ = tok.bos() >= 0 ? tok.piece(tok.bos()) : "";
  p.eos_ = tok.eos() >= 0 ? tok.piece(tok.eos()) : "";
  return p;
}

Result<std::vector<int32_t>> ChatPrompter::chat(const std::vector<ChatMessage>& messages) const {
  SNUG_ASSIGN_OR_RETURN(RenderedChat chat, render_chat_located(tmpl_, messages, true, bos_, eos_));
  SNUG_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tokenize_chat(*tok_, chat, messages));
  if (ids.size() >= 2 && tok_->add_bos() && ids[0] == tok_->bos() && ids[1] == tok_->bos())
    ids.erase(ids.begin());
  return ids;
}

std::vector<int32_t> ChatPrompter::completion(std::string_view text) const {
  return tok_->encode(text, /*add_special=*/true, /*parse_special=*/false);
}

}  // namespace snug::text
