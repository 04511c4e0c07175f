// Byte-level BPE (GPT-2 style), as llama.cpp's llm_tokenizer_bpe: the text is split
// into words by the pre-tokenizer, each byte of a word starts as the token of its
// GPT-2 mapped character, and adjacent pairs are merged lowest rank first (ties:
// leftmost first) until no ranked pair remains. A priority queue with lazy
// invalidation keeps a word of n bytes at O(n log n).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "text/pretokenize.h"
#include "text/vocab.h"

namespace snug::text {

// Appends the tokens of raw text (no special-token handling) to `out`.
void bpe_encode(const Vocab& vocab, const PreTokenizer& pre, std::string_view text,
                std::vector<int32_t>* out);

}  // namespace snug::text
