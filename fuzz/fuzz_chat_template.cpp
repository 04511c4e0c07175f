// Fuzzes the chat-template interpreter: both the template source and the message
// contents are attacker-controlled (a model file brings the first, a user the
// second). Parsing, rendering (with the contents located) and tokenizing must end
// with a result or an Error, within the output and step limits, never a crash, a
// leak or unbounded work.
//
// Input, byte 0 = mode:
//   mode & 1 == 0: template source up to the first NUL, then the messages;
//   mode & 1 == 1: a known template (built-in or a real model's) picked by
//                  mode >> 1, and the whole rest is messages.
// Messages are separated by \x01; roles alternate user/assistant, with a system
// message first when mode & 0x80.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "text/chat_template.h"
#include "vocabs.h"

namespace {

using namespace snug;

const std::vector<std::string>& known_templates() {
  static const std::vector<std::string> all = [] {
    std::vector<std::string> out;
    for (const char* name : {"chatml", "gemma"})
      out.emplace_back(text::builtin_chat_template(name));
    for (const auto& t : fuzz::fuzz_tokenizers())
      if (!t.chat_template.empty()) out.push_back(t.chat_template);
    return out;
  }();
  return all;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  std::string source;
  if (mode & 1) {
    const auto& known = known_templates();
    source = known[(mode >> 1) % known.size()];
  } else {
    const size_t nul = rest.find('\0');
    source = std::string(rest.substr(0, nul));
    rest = nul == std::string_view::npos ? std::string_view() : rest.substr(nul + 1);
  }
  std::vector<text::ChatMessage> messages;
  const bool system = mode & 0x80;
  while (true) {
    const size_t sep = rest.find('\x01');
    const char* role = messages.empty() && system            ? "system"
                       : (messages.size() + system) % 2 == 0 ? "user"
                                                             : "assistant";
    messages.push_back({role, std::string(rest.substr(0, sep))});
    if (sep == std::string_view::npos) break;
    rest = rest.substr(sep + 1);
  }

  text::ChatLimits limits;
  limits.max_output_bytes = 1 << 20;
  limits.max_steps = 200'000;
  auto tmpl = text::ChatTemplate::parse(source);
  if (!tmpl.ok()) return 0;
  auto out = text::render_chat_located(*tmpl, messages, mode & 0x40, "<s>", "</s>", limits);
  if (!out.ok()) return 0;
  if (out->text.size() > limits.max_output_bytes) {
    std::fprintf(stderr, "fuzz_chat_template: output of %zu bytes beyond the limit\n",
                 out->text.size());
    std::abort();
  }
  // Tokenized as the CLI does, with message contents kept plain.
  const auto& toks = fuzz::fuzz_tokenizers();
  (void)text::tokenize_chat(toks[(mode >> 1) % toks.size()].tokenizer, *out, messages);
  return 0;
}
