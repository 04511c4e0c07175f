#include "tiny_spm.h"

#include <cstdio>
#include <string>
#include <vector>

namespace snug::testing {

gguf::Writer build_tiny_spm_vocab() {
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<float> scores = {0.f, 0.f, 0.f};
  std::vector<int32_t> types = {2, 3, 3};  // unknown, control, control
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    tokens.emplace_back(hex);
    scores.push_back(0.f);
    types.push_back(6);  // byte
  }
  const std::string sp = "\xE2\x96\x81";  // U+2581, SPM's space
  const std::vector<std::string> pieces = {
      sp,         "h",          "e",        "l",  "o",      sp + "h", "he",   "ll",
      "llo",      sp + "hello", "\xC3\xA9", "a",  sp + "a", "aa",     "aaaa", "\xF0\x9F\x98\x80",
      sp + "the", "t",          "th",       "the"};
  float score = -1.f;
  for (const auto& p : pieces) {
    tokens.push_back(p);
    scores.push_back(score);
    score -= 0.5f;
    types.push_back(1);
  }
  tokens.emplace_back("<|user|>");
  scores.push_back(0.f);
  types.push_back(4);  // user-defined
  tokens.emplace_back("<start_of_turn>");
  scores.push_back(0.f);
  types.push_back(3);

  gguf::Writer w;
  w.set_string("general.architecture", "llama");
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_strings("tokenizer.ggml.tokens", tokens);
  w.set_f32s("tokenizer.ggml.scores", scores);
  w.set_i32s("tokenizer.ggml.token_type", types);
  w.set_u32("tokenizer.ggml.unknown_token_id", 0);
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", 2);
  return w;
}

}  // namespace snug::testing
