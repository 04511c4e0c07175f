// A tiny SentencePiece-style vocabulary (tokenizer.ggml.model = "llama") as a GGUF
// file without tensors: <unk>, <s>, </s>, the 256 byte-fallback tokens <0xNN>, a
// few scored pieces and a user-defined token. For tokenizer tests and fuzzers that
// need the SPM path without a real model.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gguf/gguf.h"

namespace snug::testing {

// The token list of that vocabulary: <unk> = 0, <s> = 1, </s> = 2.
struct TinySpmTokens {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;  // llama.cpp's token types (1 normal, 2 unknown, 3 control...)
};
TinySpmTokens tiny_spm_tokens();

// The vocabulary with its special ids (unknown 0, bos 1, eos 2) and general.architecture.
gguf::Writer build_tiny_spm_vocab();

}  // namespace snug::testing
