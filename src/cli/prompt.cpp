#include "cli/prompt.h"

namespace snug::cli {

Result<std::vector<int32_t>> chat_prompt(const LoadedModel& lm,
                                         const std::vector<text::ChatMessage>& messages) {
  const text::Tokenizer& tok = *lm.tokenizer;
  const std::string tmpl = text::select_chat_template(tok, lm.model->config().arch_name);
  const std::string bos = tok.bos() >= 0 ? tok.piece(tok.bos()) : "";
  const std::string eos = tok.eos() >= 0 ? tok.piece(tok.eos()) : "";
  SNUG_ASSIGN_OR_RETURN(std::string text, text::render_chat(tmpl, messages, true, bos, eos));
  std::vector<int32_t> ids = tok.encode(text, /*add_special=*/true, /*parse_special=*/true);
  if (ids.size() >= 2 && tok.add_bos() && ids[0] == tok.bos() && ids[1] == tok.bos())
    ids.erase(ids.begin());
  return ids;
}

}  // namespace snug::cli
