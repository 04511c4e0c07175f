// Jinja template lexing for chat templates: splits a template into text, {{ output }}
// and {% statement %} segments (comments dropped) and tokenizes the expressions inside
// tags. Whitespace control follows Hugging Face's chat-template environment:
// trim_blocks and lstrip_blocks on, "{%-"/"-%}" strip all adjacent whitespace, "{%+"
// keeps the line's indentation, and one trailing newline of the template is dropped.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace snug::text::jinja {

struct Token {
  enum class Kind { kName, kString, kInt, kFloat, kOp };
  Kind kind = Kind::kOp;
  std::string text;  // name, decoded string literal, or operator
  int64_t int_value = 0;
  double float_value = 0;
};

struct Segment {
  enum class Kind { kText, kOutput, kStatement };
  Kind kind = Kind::kText;
  std::string text;           // kText
  std::vector<Token> tokens;  // kOutput, kStatement
  int line = 1;               // where the segment starts, for error messages
};

Result<std::vector<Segment>> lex(std::string_view source);

}  // namespace snug::text::jinja
