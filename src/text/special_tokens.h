// Splits raw text around the texts of special tokens before tokenization, with
// llama.cpp's semantics (tokenizer_st_partition): tokens are taken longest first;
// each claims its non-overlapping occurrences, left to right, inside text that no
// longer token has claimed. Control and unknown tokens take part only when
// parse_special is set; user-defined tokens always do.
//
// llama.cpp scans the whole text once per special token (Gemma 3 has ~6,400). Here
// one pass over a trie finds which special tokens occur at all, and only those are
// scanned for, which gives the same fragments in time linear in the text for any
// ordinary input.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "text/tokenizer.h"
#include "text/vocab.h"

namespace snug::text {

struct Fragment {
  int32_t token = -1;  // a special token, or -1 for raw text
  size_t offset = 0;   // raw text: bytes [offset, offset + length) of the input
  size_t length = 0;
};

class SpecialTokenMatcher {
 public:
  explicit SpecialTokenMatcher(const Vocab& vocab);

  // Fragments of `text` in order; raw fragments are never empty. A control or
  // unknown token is not matched where its text overlaps a span of `plain`.
  std::vector<Fragment> partition(std::string_view text, bool parse_special,
                                  std::span<const TextSpan> plain = {}) const;

  uint64_t memory_bytes() const;

 private:
  struct Node {
    uint32_t first_edge = 0;  // edges_[first_edge, first_edge + n_edges), sorted by byte
    uint16_t n_edges = 0;
    int32_t token = -1;  // special token whose text ends here
  };
  struct Edge {
    uint8_t byte;
    uint32_t child;
  };
  const Vocab* vocab_;
  std::vector<Node> nodes_;
  std::vector<Edge> edges_;
  std::vector<int32_t> priority_;  // token id -> rank in vocab.special_tokens (or -1)
};

}  // namespace snug::text
