// SentencePiece-style BPE over scores, as llama.cpp's llm_tokenizer_spm: the text
// (spaces already escaped to U+2581) starts as one symbol per UTF-8 character; the
// adjacent pair whose concatenation is the highest-scoring token is merged first
// (ties: leftmost), until no pair forms a token. Symbols that are not tokens fall
// back to byte tokens <0xNN>.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "text/vocab.h"

namespace snug::text {

// Appends the tokens of `text` (already whitespace-escaped) to `out`.
void spm_encode(const Vocab& vocab, std::string_view text, std::vector<int32_t>* out);

}  // namespace snug::text
