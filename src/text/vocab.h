// The vocabulary of a tokenizer as read from GGUF metadata: token texts, scores and
// attributes, special ids and flags, plus the lookup tables the tokenizers need
// (text -> id, BPE merge ranks keyed by id pair, byte tokens). Built once and
// immutable afterwards, so encode/decode may run concurrently on one Vocab.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/result.h"
#include "gguf/gguf.h"

namespace snug::text {

// Token attributes: bit flags with llama.cpp's values (llama_token_attr).
enum TokenAttr : uint32_t {
  kAttrUndefined = 0,
  kAttrUnknown = 1u << 0,
  kAttrUnused = 1u << 1,
  kAttrNormal = 1u << 2,
  kAttrControl = 1u << 3,
  kAttrUserDefined = 1u << 4,
  kAttrByte = 1u << 5,
};

enum class VocabType { kBpe, kSpm };

// Open-addressing map from token text to id over one text arena: ~12 bytes per token
// instead of the ~80 of an unordered_map<std::string, int>.
class TokenTable {
 public:
  // Fails on a duplicate text, returning the id that already holds it.
  Result<int32_t> add(std::string_view text);  // returns the new id
  void finish();                               // builds the hash index
  int32_t find(std::string_view text) const;   // -1 when absent
  std::string_view text(int32_t id) const {
    return std::string_view(arena_).substr(offsets_[id], offsets_[id + 1] - offsets_[id]);
  }
  int32_t size() const { return static_cast<int32_t>(offsets_.size()) - 1; }
  uint64_t memory_bytes() const;

 private:
  std::string arena_;
  std::vector<uint32_t> offsets_{0};
  std::vector<int32_t> slots_;  // power-of-two size, -1 = empty
};

struct SpecialIds {
  int32_t bos = -1, eos = -1, eot = -1, eom = -1, unk = -1, sep = -1, pad = -1;
  int32_t fim_pre = -1, fim_suf = -1, fim_mid = -1, fim_pad = -1, fim_rep = -1, fim_sep = -1;
};

struct Vocab {
  VocabType type = VocabType::kBpe;
  std::string model;  // tokenizer.ggml.model
  std::string pre;    // tokenizer.ggml.pre
  TokenTable tokens;
  std::vector<float> scores;
  std::vector<uint32_t> attrs;
  SpecialIds special;
  bool add_bos = false;
  bool add_eos = false;
  bool add_space_prefix = false;
  bool ignore_merges = false;  // BPE: a whole pre-token that is a token skips merging
  bool clean_spaces = false;   // detokenize removes spaces before punctuation
  std::vector<uint8_t> eog;    // per id: 1 when it ends generation
  // One line per metadata defect that was tolerated, as llama.cpp tolerates it (a special
  // id of an unused token outside the vocabulary); whoever loads the model for use prints them.
  std::vector<std::string> warnings;

  // Tokens matched in raw text before tokenizing (control, user-defined, unknown),
  // longest text first; ties by id.
  std::vector<int32_t> special_tokens;

  // BPE: (left id, right id) -> merge rank and resulting token (-1 when the merged
  // text is not itself a token, which stops further merging of that symbol).
  struct Merge {
    int32_t rank;
    int32_t result;
  };
  std::unordered_map<uint64_t, Merge> merges;
  // BPE: token of the GPT-2 mapped character of each byte (-1 when absent).
  int32_t bpe_byte_token[256];
  // SPM: token "<0xNN>" of each byte, else the one-character token, else unk.
  int32_t spm_byte_token[256];

  static Result<Vocab> from_gguf(const gguf::File& file);

  int32_t size() const { return tokens.size(); }
  int32_t find(std::string_view text) const { return tokens.find(text); }
  std::string_view text(int32_t id) const { return tokens.text(id); }
  const Merge* find_merge(int32_t left, int32_t right) const {
    auto it = merges.find((static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
                          static_cast<uint32_t>(right));
    return it == merges.end() ? nullptr : &it->second;
  }
  uint64_t memory_bytes() const;
};

}  // namespace snug::text
