// The tokenizers the fuzzers run: the tiny test model's byte-level BPE (with the
// gpt2 and the smollm pre-tokenizers), a tiny
// SentencePiece vocabulary, and the real models' vocabularies (SmolLM2: BPE,
// Gemma 3: SPM) when their files are in $SNUG_MODELS or <source>/models.
// Built once per process; each entry keeps its GGUF bytes or mapping alive.
#pragma once

#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "text/tokenizer.h"

namespace snug::fuzz {

struct NamedTokenizer {
  std::string name;
  text::Tokenizer tokenizer;
  std::string chat_template;  // the model's, or "" when it has none
};

const std::vector<NamedTokenizer>& fuzz_tokenizers();

// Paths of the real model files that exist (for seeds).
std::vector<std::string> real_model_paths();

}  // namespace snug::fuzz
