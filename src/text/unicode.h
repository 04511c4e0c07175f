// UTF-8 helpers with llama.cpp's exact tolerance, and GPT-2's byte <-> code point map.
//
// Tokenizers must reproduce llama.cpp token for token, including on malformed
// input, so decoding here is deliberately as permissive as llama.cpp's: overlong
// forms and surrogates decode to their (invalid) values, only structurally broken
// sequences become U+FFFD. Code that needs strictly valid UTF-8 (PCRE2, output to
// users) uses is_valid_utf8() / valid_prefix_length() instead.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace snug::text::unicode {

constexpr uint32_t kReplacement = 0xFFFD;
inline constexpr std::string_view kReplacementUtf8 = "\xEF\xBF\xBD";

// Bytes in the sequence that `lead` starts, judged by its high nibble alone (1 for
// continuation bytes), like llama.cpp's unicode_len_utf8. Callers clamp to the input.
inline size_t sequence_length(uint8_t lead) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[lead >> 4];
}

// Decodes the code point at `offset` and advances past it. A structurally broken
// sequence (stray continuation byte, missing continuation, lead byte >= 0xF8) yields
// kReplacement and advances one byte. Values above 0x10FFFF (lead bytes F4..F7) and
// surrogates are returned as decoded.
uint32_t decode_permissive(std::string_view s, size_t& offset);

// Appends the UTF-8 form of `cpt`; values above 0x10FFFF are written as U+FFFD.
// Surrogates are written in their 3-byte form (what llama.cpp does).
void append_utf8(std::string& out, uint32_t cpt);

// True when `s` is well-formed UTF-8 (no overlongs, surrogates or values > 0x10FFFF).
bool is_valid_utf8(std::string_view s);

// Length of the longest prefix of `s` that ends on a character boundary, where an
// incomplete but so-far-valid sequence at the end is excluded. Invalid bytes inside
// count as one-byte units (they never become valid later).
struct ScanResult {
  size_t complete = 0;   // bytes that can be emitted now
  bool pending = false;  // s[complete..] is a valid but unfinished sequence
};
ScanResult scan_utf8(std::string_view s);

// Replaces every ill-formed subsequence with U+FFFD (maximal subparts, as WHATWG and
// Python's errors="replace" do).
std::string sanitize_utf8(std::string_view s);

// GPT-2's reversible byte -> printable code point map used by byte-level BPE vocabularies.
uint32_t byte_to_cpt(uint8_t b);
// Inverse of byte_to_cpt; -1 when `cpt` is not in the map.
int cpt_to_byte(uint32_t cpt);

}  // namespace snug::text::unicode
