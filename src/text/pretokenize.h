// Pre-tokenization for byte-level BPE: the regex cascade llama.cpp applies before
// merging, selected by tokenizer.ggml.pre. Each pattern splits every piece left by
// the previous one into its matches and the text between them (both kept), so a
// later pattern never sees across an earlier boundary.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace snug::text {

struct PreTokenizerSpec {
  std::vector<std::string_view> names;     // tokenizer.ggml.pre values that select it
  std::vector<std::string_view> patterns;  // applied in order
  bool ignore_merges = false;
  bool clean_spaces = true;
  bool add_bos = false;
};

// The spec for a tokenizer.ggml.pre value ("" means llama.cpp's default), or nullptr.
const PreTokenizerSpec* find_pre_tokenizer(std::string_view name);

// Words of one text, as byte ranges of `bytes`.
struct Words {
  std::string bytes;           // the text as llama.cpp re-encodes it (see split())
  std::vector<uint32_t> ends;  // word k is bytes[ends[k-1], ends[k]) with ends[-1] = 0
};

class PreTokenizer {
 public:
  static Result<PreTokenizer> create(const PreTokenizerSpec& spec);
  PreTokenizer(PreTokenizer&&) noexcept;
  PreTokenizer& operator=(PreTokenizer&&) noexcept;
  ~PreTokenizer();

  // Splits `text` into words. Invalid UTF-8 is handled as llama.cpp does: each
  // malformed byte becomes U+FFFD; overlong forms and surrogates are re-encoded from
  // their decoded value. Safe to call concurrently.
  void split(std::string_view text, Words* out) const;

  uint64_t memory_bytes() const;

 private:
  PreTokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace snug::text
