// Streaming detokenization for generation: push() returns only complete UTF-8
// characters, holding back the bytes of a character split across tokens (byte
// fallback tokens, byte-level BPE pieces) until it completes. Bytes that can never
// form a character are emitted as U+FFFD at once, so every returned string is valid
// UTF-8 and the concatenation of all outputs equals sanitize_utf8(decode(ids)).
#pragma once

#include <cstdint>
#include <string>

#include "text/tokenizer.h"

namespace snug::text {

class StreamDecoder {
 public:
  // `tokenizer` must outlive the decoder.
  explicit StreamDecoder(const Tokenizer& tokenizer) : tok_(&tokenizer) {}

  // Appends the visible piece of `id` (control tokens print nothing) and returns the
  // text that is complete so far.
  std::string push(int32_t id);
  // Flushes held bytes; an unfinished character becomes U+FFFD. The decoder is then
  // empty and may be reused.
  std::string finish();
  // Bytes held back waiting for the rest of a character (at most 3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer* tok_;
  std::string pending_;
};

}  // namespace snug::text
