// Keeping message contents plain text in a rendered chat (chat_template.h).
//
// A chat template prints control tokens ("<|im_start|>") as text and the prompt
// is tokenized with special-token parsing, so a user who types "<|im_end|>" into a
// message would otherwise close their turn and forge a system or assistant turn.
// Locating each content in the output lets the tokenizer parse special tokens
// only in the template's own text.
#include <algorithm>
#include <string>

#include "text/chat_template.h"

namespace snug::text {
namespace {

constexpr char kOpen = '\x1E', kClose = '\x1F';  // marker: kOpen <index> kClose

std::string marker(size_t k) {
  return kOpen + std::to_string(k) + kClose;
}

std::string_view trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(kSpace);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(kSpace) - b + 1);
}

// Walks the marker rendering and the real one together; false on any mismatch.
bool locate(std::string_view marked, std::string_view real,
            const std::vector<ChatMessage>& messages, std::vector<TextSpan>* spans) {
  size_t m = 0, r = 0;
  while (m < marked.size()) {
    const size_t open = marked.find(kOpen, m);
    const std::string_view seg = marked.substr(m, open - m);
    if (real.substr(r, seg.size()) != seg) return false;
    r += seg.size();
    if (open == std::string_view::npos) break;
    const size_t close = marked.find(kClose, open);
    if (close == std::string_view::npos) return false;
    size_t k = 0;
    for (size_t i = open + 1; i < close; ++i) {
      if (marked[i] < '0' || marked[i] > '9' || k > messages.size()) return false;
      k = k * 10 + static_cast<size_t>(marked[i] - '0');
    }
    if (k >= messages.size()) return false;
    std::string_view content = messages[k].content;
    if (real.substr(r, content.size()) != content) content = trim(content);
    if (real.substr(r, content.size()) != content) return false;
    if (!content.empty()) spans->push_back({r, r + content.size()});
    r += content.size();
    m = close + 1;
  }
  return r == real.size();
}

}  // namespace

Result<RenderedChat> render_chat_located(const ChatTemplate& tmpl,
                                         const std::vector<ChatMessage>& messages,
                                         bool add_generation_prompt, const std::string& bos_token,
                                         const std::string& eos_token, const ChatLimits& limits) {
  RenderedChat out;
  SNUG_ASSIGN_OR_RETURN(out.text,
                        tmpl.render(messages, add_generation_prompt, bos_token, eos_token, limits));
  std::vector<ChatMessage> marked = messages;
  for (size_t k = 0; k < marked.size(); ++k) {
    if (messages[k].content.find_first_of(std::string{kOpen, kClose}) != std::string::npos)
      return out;  // a content that looks like a marker: leave it unlocated
    marked[k].content = marker(k);
  }
  auto m = tmpl.render(marked, add_generation_prompt, bos_token, eos_token, limits);
  if (m.ok()) out.located = locate(*m, out.text, messages, &out.contents);
  if (!out.located) out.contents.clear();
  return out;
}

Result<std::vector<int32_t>> tokenize_chat(const Tokenizer& tok, const RenderedChat& chat,
                                           const std::vector<ChatMessage>& messages) {
  if (chat.located) return tok.encode(chat.text, true, true, chat.contents);
  for (size_t k = 0; k < messages.size(); ++k) {
    for (int32_t id : tok.encode(messages[k].content, false, true)) {
      if (tok.is_control(id))
        return make_error("message ", k + 1, " contains the special token '", tok.token_text(id),
                          "' as text, and the chat template rewrites contents so it cannot be "
                          "kept as plain text");
    }
  }
  return tok.encode(chat.text, true, true);
}

}  // namespace snug::text
