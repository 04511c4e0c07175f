// The tokenizer of a GGUF model: text <-> token ids, token for token as llama.cpp
// (byte-level BPE for tokenizer.ggml.model = "gpt2", SentencePiece-style for "llama").
//
// A Tokenizer is immutable after from_gguf() and cheap to copy (copies share the
// tables); encode/decode may run concurrently from many threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "gguf/gguf.h"

namespace snug::text {

struct Vocab;

// Bytes [begin, end) of a text.
struct TextSpan {
  size_t begin = 0;
  size_t end = 0;
};

class Tokenizer {
 public:
  // Reads and validates the tokenizer.* metadata: one-line Error for an unsupported
  // model or pre-tokenizer, score/type arrays whose length differs from the
  // vocabulary, an id outside it for a special token generation needs (eos; bos when
  // added), duplicate token texts, or merges that name unknown tokens. A special id of
  // -1 means "none"; another unused one outside the vocabulary is a warning (warnings()).
  static Result<Tokenizer> from_gguf(const gguf::File& file);

  // add_special: prepend BOS / append EOS as tokenizer.ggml.add_bos_token /
  // add_eos_token say. parse_special: the text of a control token (e.g.
  // "<|im_start|>") becomes that token; when false it is tokenized as plain text
  // (user-defined tokens are matched either way, as in llama.cpp). Any bytes are
  // accepted; invalid UTF-8 is handled as llama.cpp does.
  std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special) const;
  // As above, but control-token text inside `plain` (sorted, non-overlapping spans,
  // e.g. the user's message contents in a rendered chat) stays plain text even with
  // parse_special. Outside them the result is exactly encode()'s.
  std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special,
                              std::span<const TextSpan> plain) const;

  // Concatenated pieces with control and unknown tokens rendered empty: llama.cpp's
  // llama_detokenize(remove_special = false, unparse_special = false). Out-of-range
  // ids render empty. The result may hold invalid UTF-8 when the ids split a character.
  std::string decode(std::span<const int32_t> ids) const;

  // The bytes token `id` stands for, special tokens included (their text): the GPT-2
  // byte mapping undone, SPM's U+2581 turned to a space, <0xNN> turned to its byte.
  std::string piece(int32_t id) const;
  // Like piece(), but control and unknown tokens give "" (what decode() prints).
  std::string visible_piece(int32_t id) const;

  int32_t n_vocab() const;
  int32_t bos() const;  // -1 when the vocabulary has none
  int32_t eos() const;
  bool add_bos() const;
  bool add_eos() const;
  // End of generation: eos, eot, eom, <|im_end|>, <end_of_turn>, ... as llama.cpp decides.
  bool is_eog(int32_t id) const;
  bool is_control(int32_t id) const;
  std::optional<int32_t> find_token(std::string_view text) const;
  std::string_view token_text(int32_t id) const;  // raw vocabulary text; "" when out of range

  // Tolerated metadata defects, one line each (Vocab::warnings); empty for a clean file.
  const std::vector<std::string>& warnings() const;

  // Heap bytes held by this tokenizer's tables (shared between copies).
  uint64_t memory_bytes() const;
  const std::string& chat_template() const;  // tokenizer.chat_template, or empty
  const std::string& model_type() const;     // "gpt2" or "llama"

  const Vocab& vocab() const;

 private:
  struct State;
  std::shared_ptr<const State> s_;
};

}  // namespace snug::text
