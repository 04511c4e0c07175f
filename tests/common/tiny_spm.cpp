#include "tiny_spm.h"

#include <cstdio>

namespace snug::testing {

TinySpmTokens tiny_spm_tokens() {
  TinySpmTokens t;
  t.tokens = {"<unk>", "<s>", "</s>"};
  t.scores = {0.f, 0.f, 0.f};
  t.types = {2, 3, 3};  // unknown, control, control
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    t.tokens.emplace_back(hex);
    t.scores.push_back(0.f);
    t.types.push_back(6);  // byte
  }
  const std::string sp = "\xE2\x96\x81";  // U+2581, SPM's space
  const std::vector<std::string> pieces = {
      sp,         "h",          "e",        "l",  "o",      sp + "h", "he",   "ll",
      "llo",      sp + "hello", "\xC3\xA9", "a",  sp + "a", "aa",     "aaaa", "\xF0\x9F\x98\x80",
      sp + "the", "t",          "th",       "the"};
  float score = -1.f;
  for (const auto& p : pieces) {
    t.tokens.push_back(p);
    t.scores.push_back(score);
    score -= 0.5f;
    t.types.push_back(1);
  }
  t.tokens.emplace_back("<|user|>");
  t.scores.push_back(0.f);
  t.types.push_back(4);  // user-defined
  t.tokens.emplace_back("<start_of_turn>");
  t.scores.push_back(0.f);
  t.types.push_back(3);
  return t;
}

gguf::Writer build_tiny_spm_vocab() {
  const TinySpmTokens t = tiny_spm_tokens();
  gguf::Writer w;
  w.set_string("general.architecture", "llama");
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_strings("tokenizer.ggml.tokens", t.tokens);
  w.set_f32s("tokenizer.ggml.scores", t.scores);
  w.set_i32s("tokenizer.ggml.token_type", t.types);
  w.set_u32("tokenizer.ggml.unknown_token_id", 0);
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", 2);
  return w;
}

}  // namespace snug::testing
