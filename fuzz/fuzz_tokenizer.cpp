// Fuzzes every tokenizer (vocabs.h) with arbitrary bytes: encode, decode, pieces
// and streaming detokenization must not crash, leak or hang, and must keep their
// contracts: ids inside the vocabulary, streamed text always valid UTF-8, and
// valid UTF-8 surviving a round trip where the vocabulary promises one.
//
// Input: byte 0 chooses the tokenizer (low bits) and the flags; the rest is text.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "text/stream_decoder.h"
#include "text/unicode.h"
#include "text/vocab.h"
#include "vocabs.h"

namespace {

[[noreturn]] void fail(const char* what, const std::string& name) {
  std::fprintf(stderr, "fuzz_tokenizer: %s (%s)\n", what, name.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace snug;
  const auto& toks = fuzz::fuzz_tokenizers();
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  const auto& entry = toks[mode % toks.size()];
  const text::Tokenizer& tok = entry.tokenizer;
  const bool parse_special = mode & 0x80;
  const bool add_special = mode & 0x40;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);

  const std::vector<int32_t> ids = tok.encode(text, add_special, parse_special);
  for (int32_t id : ids)
    if (id < 0 || id >= tok.n_vocab()) fail("token id outside the vocabulary", entry.name);

  const std::string decoded = tok.decode(ids);
  text::StreamDecoder stream(tok);
  std::string streamed;
  for (int32_t id : ids) {
    streamed += stream.push(id);
    if (stream.pending_bytes() > 3) fail("stream decoder holds more than 3 bytes", entry.name);
    (void)tok.piece(id);
  }
  streamed += stream.finish();
  if (!text::unicode::is_valid_utf8(streamed)) fail("streamed text is not UTF-8", entry.name);

  // Byte-level BPE with a token for every byte loses no input (SmolLM2 lacks some
  // control bytes: llama.cpp drops them too), and without space clean-up it
  // reproduces valid UTF-8 exactly.
  const text::Vocab& v = tok.vocab();
  const bool all_bytes = std::all_of(std::begin(v.bpe_byte_token), std::end(v.bpe_byte_token),
                                     [](int32_t id) { return id >= 0; });
  if (v.type == text::VocabType::kBpe && all_bytes && !text.empty() && ids.empty())
    fail("non-empty text gave no tokens", entry.name);
  if (v.type == text::VocabType::kBpe && all_bytes && !v.clean_spaces && !parse_special &&
      !add_special && text::unicode::is_valid_utf8(text) && decoded != text)
    fail("BPE round trip changed the text", entry.name);
  return 0;
}
