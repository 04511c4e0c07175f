#include "cli/prompt.h"

namespace snug::cli {

Result<std::vector<int32_t>> chat_prompt(const LoadedModel& lm,
                                         const std::vector<text::ChatMessage>& messages) {
  const text::Tokenizer& tok = *lm.tokenizer;
  const std::string tmpl = text::select_chat_template(tok, lm.model->config().arch_name);
  const std::string bos = tok.bos() >= 0 ? tok.piece(tok.bos()) : "";
  const std::string eos = tok.eos() >= 0 ? tok.piece(tok.eos()) : "";
  SNUG_ASSIGN_OR_RETURN(text::ChatTemplate parsed, text::ChatTemplate::parse(tmpl));
  SNUG_ASSIGN_OR_RETURN(text::RenderedChat chat,
                        text::render_chat_located(parsed, messages, true, bos, eos));
  // Special tokens are parsed in the template's text only, never in the messages.
  SNUG_ASSIGN_OR_RETURN(std::vector<int32_t> ids, text::tokenize_chat(tok, chat, messages));
  if (ids.size() >= 2 && tok.add_bos() && ids[0] == tok.bos() && ids[1] == tok.bos())
    ids.erase(ids.begin());
  return ids;
}

}  // namespace snug::cli
