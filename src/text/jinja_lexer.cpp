#include "text/jinja_lexer.h"

#include <cctype>
#include <cstdlib>

namespace snug::text::jinja {

namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

int line_of(std::string_view src, size_t pos) {
  int line = 1;
  for (size_t i = 0; i < pos && i < src.size(); ++i) line += src[i] == '\n';
  return line;
}

Result<std::vector<Token>> tokenize_expr(std::string_view s, int line) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (is_space(c)) {
      ++i;
      continue;
    }
    Token t;
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      t.kind = Token::Kind::kName;
      t.text = std::string(s.substr(i, j - i));
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      bool is_float = false;
      if (j + 1 < s.size() && s[j] == '.' && std::isdigit(static_cast<unsigned char>(s[j + 1]))) {
        is_float = true;
        ++j;
        while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      }
      std::string num;
      for (char d : s.substr(i, j - i))
        if (d != '_') num.push_back(d);
      if (is_float) {
        t.kind = Token::Kind::kFloat;
        t.float_value = std::strtod(num.c_str(), nullptr);
      } else {
        t.kind = Token::Kind::kInt;
        errno = 0;
        t.int_value = std::strtoll(num.c_str(), nullptr, 10);
        if (errno == ERANGE)
          return make_error("template line ", line, ": integer literal out of range");
      }
      t.text = num;
      i = j;
    } else if (c == '\'' || c == '"') {
      size_t j = i + 1;
      std::string val;
      for (; j < s.size() && s[j] != c; ++j) {
        if (s[j] == '\\' && j + 1 < s.size()) {
          const char e = s[++j];
          switch (e) {
            case 'n':
              val.push_back('\n');
              break;
            case 't':
              val.push_back('\t');
              break;
            case 'r':
              val.push_back('\r');
              break;
            default:
              val.push_back(e);
              break;
          }
        } else {
          val.push_back(s[j]);
        }
      }
      if (j >= s.size()) return make_error("template line ", line, ": unterminated string literal");
      t.kind = Token::Kind::kString;
      t.text = std::move(val);
      i = j + 1;
    } else {
      static constexpr std::string_view kTwo[] = {"==", "!=", "<=", ">=", "//", "**"};
      t.kind = Token::Kind::kOp;
      for (std::string_view op : kTwo)
        if (s.substr(i, 2) == op) t.text = std::string(op);
      if (t.text.empty()) {
        if (std::string_view("+-*/%~<>()[]{},.:|=").find(c) == std::string_view::npos)
          return make_error("template line ", line, ": unexpected character '", c,
                            "' in expression");
        t.text = std::string(1, c);
      }
      i += t.text.size();
    }
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace

Result<std::vector<Segment>> lex(std::string_view src) {
  std::vector<Segment> segs;
  std::string text;  // pending text segment
  size_t i = 0;
  bool trim_next_newline = false;  // trim_blocks after a block tag
  bool strip_next_ws = false;      // "-%}" / "-}}" / "-#}"
  const auto flush_text = [&](int line) {
    if (!text.empty()) segs.push_back({Segment::Kind::kText, std::move(text), {}, line});
    text.clear();
  };
  while (i <= src.size()) {
    const size_t open = src.find('{', i);
    size_t tag = std::string_view::npos;
    for (size_t p = open; p != std::string_view::npos && p + 1 < src.size();
         p = src.find('{', p + 1)) {
      const char n = src[p + 1];
      if (n == '{' || n == '%' || n == '#') {
        tag = p;
        break;
      }
    }
    std::string_view chunk =
        src.substr(i, tag == std::string_view::npos ? std::string_view::npos : tag - i);
    if (strip_next_ws) {
      while (!chunk.empty() && is_space(chunk.front())) chunk.remove_prefix(1);
    } else if (trim_next_newline) {
      if (!chunk.empty() && chunk.front() == '\n') {
        chunk.remove_prefix(1);
      } else if (chunk.size() >= 2 && chunk.substr(0, 2) == "\r\n") {
        chunk.remove_prefix(2);
      }
    }
    strip_next_ws = trim_next_newline = false;
    if (tag == std::string_view::npos) {
      if (!chunk.empty() && chunk.back() == '\n')
        chunk.remove_suffix(1);  // keep_trailing_newline=False
      text.append(chunk);
      flush_text(line_of(src, i));
      break;
    }
    const char kind = src[tag + 1];
    const char modifier = tag + 2 < src.size() ? src[tag + 2] : '\0';
    if (modifier == '-') {
      while (!chunk.empty() && is_space(chunk.back())) chunk.remove_suffix(1);
    } else if (kind != '{' && modifier != '+') {
      // lstrip_blocks: drop spaces and tabs between the line start and a block tag.
      size_t k = chunk.size();
      while (k > 0 && (chunk[k - 1] == ' ' || chunk[k - 1] == '\t')) --k;
      const bool at_line_start =
          k == 0 ? (tag - chunk.size() == 0 || src[tag - chunk.size() - 1] == '\n')
                 : chunk[k - 1] == '\n';
      if (at_line_start) chunk = chunk.substr(0, k);
    }
    text.append(chunk);
    const int line = line_of(src, tag);
    const std::string_view close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    const size_t body_start = tag + 2 + ((modifier == '-' || modifier == '+') ? 1 : 0);
    const size_t end = src.find(close, body_start);
    if (end == std::string_view::npos)
      return make_error("template line ", line, ": unclosed '", std::string(src.substr(tag, 2)),
                        "'");
    std::string_view body = src.substr(body_start, end - body_start);
    if (!body.empty() && body.back() == '-' && !(kind == '#')) {
      body.remove_suffix(1);
      strip_next_ws = true;
    } else if (kind == '#' && !body.empty() && body.back() == '-') {
      strip_next_ws = true;
    } else if (kind != '{') {
      trim_next_newline = true;
    }
    i = end + 2;
    if (kind == '#') continue;
    flush_text(line);
    SNUG_ASSIGN_OR_RETURN(std::vector<Token> tokens, tokenize_expr(body, line));
    if (tokens.empty()) return make_error("template line ", line, ": empty tag");
    segs.push_back({kind == '{' ? Segment::Kind::kOutput : Segment::Kind::kStatement, "",
                    std::move(tokens), line});
  }
  return segs;
}

}  // namespace snug::text::jinja
