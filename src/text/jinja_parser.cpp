#include "text/jinja_parser.h"

#include <initializer_list>

namespace snug::text::jinja {

namespace {

constexpr int kMaxNesting = 200;  // bounds recursion on hostile templates

// Recursive-descent expression parser over one tag's tokens.
class ExprParser {
 public:
  ExprParser(const std::vector<Token>& t, size_t pos, int line) : t_(t), pos_(pos), line_(line) {}

  size_t pos() const { return pos_; }
  bool done() const { return pos_ >= t_.size(); }
  bool peek_op(std::string_view op) const {
    return !done() && t_[pos_].kind == Token::Kind::kOp && t_[pos_].text == op;
  }
  bool peek_name(std::string_view n, size_t ahead = 0) const {
    return pos_ + ahead < t_.size() && t_[pos_ + ahead].kind == Token::Kind::kName &&
           t_[pos_ + ahead].text == n;
  }
  bool accept_op(std::string_view op) {
    if (!peek_op(op)) return false;
    ++pos_;
    return true;
  }
  bool accept_name(std::string_view n) {
    if (!peek_name(n)) return false;
    ++pos_;
    return true;
  }
  Error error(std::string_view what) const {
    const std::string at = done() ? "end of tag" : "'" + t_[pos_].text + "'";
    return make_error("template line ", line_, ": ", what, " at ", at);
  }
  Result<std::string> expect_name() {
    if (done() || t_[pos_].kind != Token::Kind::kName) return error("expected a name");
    return t_[pos_++].text;
  }
  Status expect_op(std::string_view op) {
    if (!accept_op(op)) return error("expected '" + std::string(op) + "'");
    return ok_status();
  }

  // expression := or ["if" or ["else" expression]]
  Result<ExprPtr> expression() {
    if (++depth_ > kMaxNesting) return error("expression nested too deeply");
    SNUG_ASSIGN_OR_RETURN(ExprPtr e, or_expr());
    if (accept_name("if")) {
      SNUG_ASSIGN_OR_RETURN(ExprPtr cond, or_expr());
      ExprPtr other;
      if (accept_name("else")) {
        SNUG_ASSIGN_OR_RETURN(other, expression());
      }
      e = node(Expr::Kind::kTernary, "", std::move(e), std::move(cond), std::move(other));
    }
    --depth_;
    return e;
  }

  // A primary with postfix operators only (for loop targets and set targets).
  Result<ExprPtr> or_expr() {
    SNUG_ASSIGN_OR_RETURN(ExprPtr e, and_expr());
    while (accept_name("or")) {
      SNUG_ASSIGN_OR_RETURN(ExprPtr r, and_expr());
      e = node(Expr::Kind::kBinary, "or", std::move(e), std::move(r));
    }
    return e;
  }

 private:
  template <typename... Args>
  ExprPtr node(Expr::Kind k, std::string name, Args&&... args) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->name = std::move(name);
    e->line = line_;
    (e->args.push_back(std::forward<Args>(args)), ...);
    return e;
  }

  Result<ExprPtr> and_expr() {
    SNUG_ASSIGN_OR_RETURN(ExprPtr e, not_expr());
    while (accept_name("and")) {
      SNUG_ASSIGN_OR_RETURN(ExprPtr r, not_expr());
      e = node(Expr::Kind::kBinary, "and", std::move(e), std::move(r));
    }
    return e;
  }

  Result<ExprPtr> not_expr() {
    if (accept_name("not")) {
      if (++depth_ > kMaxNesting) return error("expression nested too deeply");
      SNUG_ASSIGN_OR_RETURN(ExprPtr e, not_expr());
      --depth_;
      return node(Expr::Kind::kUnary, "not", std::move(e));
    }
    return compare();
  }

  Result<ExprPtr> compare() {
    SNUG_ASSIGN_OR_RETURN(ExprPtr e, binary_level(0));
    while (true) {
      const char* op = nullptr;
      for (const char* o : {"==", "!=", "<=", ">=", "<", ">"})
        if (!op && accept_op(o)) op = o;
      if (!op && accept_name("in")) op = "in";
      if (!op && peek_name("not") && peek_name("in", 1)) pos_ += 2, op = "not in";
      if (!op) return e;
      SNUG_ASSIGN_OR_RETURN(ExprPtr r, binary_level(0));
      e = node(Expr::Kind::kBinary, op, std::move(e), std::move(r));
    }
  }

  // Jinja's arithmetic levels, loosest first: + -, ~, * / // %, **.
  Result<ExprPtr> binary_level(int level) {
    static const std::initializer_list<const char*> kLevels[] = {
        {"+", "-"}, {"~"}, {"*", "/", "//", "%"}, {"**"}};
    if (level == 4) return unary();
    SNUG_ASSIGN_OR_RETURN(ExprPtr e, binary_level(level + 1));
    while (true) {
      const char* op = nullptr;
      for (const char* o : kLevels[level])
        if (!op && accept_op(o)) op = o;
      if (!op) return e;
      SNUG_ASSIGN_OR_RETURN(ExprPtr r, binary_level(level + 1));
      e = node(Expr::Kind::kBinary, op, std::move(e), std::move(r));
    }
  }

  Result<ExprPtr> unary() {
    if (peek_op("-") || peek_op("+")) {
      const std::string op = t_[pos_++].text;
      if (++depth_ > kMaxNesting) return error("expression nested too deeply");
      SNUG_ASSIGN_OR_RETURN(ExprPtr e, unary());
      --depth_;
      return node(Expr::Kind::kUnary, op, std::move(e));
    }
    SNUG_ASSIGN_OR_RETURN(ExprPtr e, primary());
    return postfix(std::move(e), true);
  }

  Status call_args(Expr* e) {
    if (accept_op(")")) return ok_status();
    while (true) {
      if (!done() && t_[pos_].kind == Token::Kind::kName && pos_ + 1 < t_.size() &&
          t_[pos_ + 1].kind == Token::Kind::kOp && t_[pos_ + 1].text == "=") {
        std::string name = t_[pos_].text;
        pos_ += 2;
        SNUG_ASSIGN_OR_RETURN(ExprPtr v, expression());
        e->kwargs.emplace_back(std::move(name), std::move(v));
      } else {
        SNUG_ASSIGN_OR_RETURN(ExprPtr v, expression());
        e->args.push_back(std::move(v));
      }
      if (accept_op(")")) return ok_status();
      SNUG_RETURN_IF_ERROR(expect_op(","));
    }
  }

  Result<ExprPtr> postfix(ExprPtr e, bool filters) {
    while (true) {
      if (accept_op(".")) {
        SNUG_ASSIGN_OR_RETURN(std::string name, expect_name());
        auto a = node(Expr::Kind::kAttr, name, std::move(e));
        e = std::move(a);
      } else if (accept_op("[")) {
        ExprPtr lo, hi, step;
        if (!peek_op(":")) {
          SNUG_ASSIGN_OR_RETURN(lo, expression());
        }
        if (accept_op(":")) {
          if (!peek_op("]") && !peek_op(":")) {
            SNUG_ASSIGN_OR_RETURN(hi, expression());
          }
          if (accept_op(":") && !peek_op("]")) {
            SNUG_ASSIGN_OR_RETURN(step, expression());
          }
          e = node(Expr::Kind::kSlice, "", std::move(e), std::move(lo), std::move(hi),
                   std::move(step));
        } else {
          if (!lo) return error("expected an index");
          e = node(Expr::Kind::kIndex, "", std::move(e), std::move(lo));
        }
        SNUG_RETURN_IF_ERROR(expect_op("]"));
      } else if (accept_op("(")) {
        auto c = node(Expr::Kind::kCall, "", std::move(e));
        SNUG_RETURN_IF_ERROR(call_args(c.get()));
        e = std::move(c);
      } else if (filters && accept_op("|")) {
        SNUG_ASSIGN_OR_RETURN(std::string name, expect_name());
        auto f = node(Expr::Kind::kFilter, name, std::move(e));
        if (accept_op("(")) SNUG_RETURN_IF_ERROR(call_args(f.get()));
        e = std::move(f);
      } else if (filters && accept_name("is")) {
        const bool negated = accept_name("not");
        SNUG_ASSIGN_OR_RETURN(std::string name, expect_name());
        auto t = node(Expr::Kind::kTest, name, std::move(e));
        t->negated = negated;
        if (accept_op("(")) {
          SNUG_RETURN_IF_ERROR(call_args(t.get()));
        } else if (!done() &&
                   (t_[pos_].kind == Token::Kind::kString || t_[pos_].kind == Token::Kind::kInt ||
                    t_[pos_].kind == Token::Kind::kFloat)) {
          SNUG_ASSIGN_OR_RETURN(ExprPtr arg, primary());  // "x is divisibleby 3", "x is eq 'a'"
          t->args.push_back(std::move(arg));
        }
        e = std::move(t);
      } else {
        return e;
      }
    }
  }

  Result<ExprPtr> primary() {
    if (done()) return error("expected an expression");
    if (++depth_ > kMaxNesting) return error("expression nested too deeply");
    const Token& t = t_[pos_++];
    ExprPtr e;
    switch (t.kind) {
      case Token::Kind::kString: {
        std::string s = t.text;
        // Adjacent string literals concatenate, as in Python.
        while (!done() && t_[pos_].kind == Token::Kind::kString) s += t_[pos_++].text;
        e = node(Expr::Kind::kLiteral, "");
        e->value = Value::string(std::move(s));
        break;
      }
      case Token::Kind::kInt:
        e = node(Expr::Kind::kLiteral, "");
        e->value = Value::integer(t.int_value);
        break;
      case Token::Kind::kFloat:
        e = node(Expr::Kind::kLiteral, "");
        e->value = Value::number(t.float_value);
        break;
      case Token::Kind::kName:
        e = node(Expr::Kind::kLiteral, "");
        if (t.text == "true" || t.text == "True") {
          e->value = Value::boolean(true);
        } else if (t.text == "false" || t.text == "False") {
          e->value = Value::boolean(false);
        } else if (t.text == "none" || t.text == "None") {
          e->value = Value::none();
        } else {
          e->kind = Expr::Kind::kName;
          e->name = t.text;
        }
        break;
      case Token::Kind::kOp:
        if (t.text == "(") {
          SNUG_ASSIGN_OR_RETURN(e, expression());
          if (accept_op(",")) {  // a tuple: treated as a list
            auto l = node(Expr::Kind::kList, "", std::move(e));
            while (!peek_op(")")) {
              SNUG_ASSIGN_OR_RETURN(ExprPtr item, expression());
              l->args.push_back(std::move(item));
              if (!accept_op(",")) break;
            }
            e = std::move(l);
          }
          SNUG_RETURN_IF_ERROR(expect_op(")"));
        } else if (t.text == "[") {
          e = node(Expr::Kind::kList, "");
          while (!accept_op("]")) {
            SNUG_ASSIGN_OR_RETURN(ExprPtr item, expression());
            e->args.push_back(std::move(item));
            if (!accept_op(",")) {
              SNUG_RETURN_IF_ERROR(expect_op("]"));
              break;
            }
          }
        } else if (t.text == "{") {
          e = node(Expr::Kind::kDict, "");
          while (!accept_op("}")) {
            SNUG_ASSIGN_OR_RETURN(ExprPtr k, expression());
            SNUG_RETURN_IF_ERROR(expect_op(":"));
            SNUG_ASSIGN_OR_RETURN(ExprPtr v, expression());
            e->args.push_back(std::move(k));
            e->args.push_back(std::move(v));
            if (!accept_op(",")) {
              SNUG_RETURN_IF_ERROR(expect_op("}"));
              break;
            }
          }
        } else {
          --pos_;
          return error("unexpected operator");
        }
        break;
    }
    --depth_;
    return e;
  }

  const std::vector<Token>& t_;
  size_t pos_;
  int line_;
  int depth_ = 0;
};

class StatementParser {
 public:
  explicit StatementParser(const std::vector<Segment>& s) : segs_(s) {}

  // Parses until one of `ends` (a statement keyword) or the end of the template.
  Result<Body> body(std::initializer_list<std::string_view> ends, std::string* found, int depth) {
    if (depth > kMaxNesting) return make_error("template blocks nested too deeply");
    Body out;
    while (i_ < segs_.size()) {
      const Segment& seg = segs_[i_];
      if (seg.kind == Segment::Kind::kText) {
        Node n;
        n.kind = Node::Kind::kText;
        n.text = seg.text;
        out.push_back(std::move(n));
        ++i_;
        continue;
      }
      ExprParser p(seg.tokens, 0, seg.line);
      if (seg.kind == Segment::Kind::kOutput) {
        Node n;
        n.kind = Node::Kind::kOutput;
        n.line = seg.line;
        SNUG_ASSIGN_OR_RETURN(n.expr, p.expression());
        if (!p.done()) return p.error("unexpected token after expression");
        out.push_back(std::move(n));
        ++i_;
        continue;
      }
      const std::string& kw = seg.tokens[0].text;
      for (std::string_view e : ends) {
        if (kw == e) {
          *found = kw;
          return out;
        }
      }
      ++i_;
      SNUG_ASSIGN_OR_RETURN(Node n, statement(seg, depth));
      out.push_back(std::move(n));
    }
    if (ends.size() > 0)
      return make_error("template ends inside a block: missing '{% ", *(ends.end() - 1), " %}'");
    return out;
  }

 private:
  Result<Node> statement(const Segment& seg, int depth) {
    ExprParser p(seg.tokens, 1, seg.line);
    const std::string& kw = seg.tokens[0].text;
    Node n;
    n.line = seg.line;
    std::string found;
    if (kw == "if") {
      n.kind = Node::Kind::kIf;
      SNUG_ASSIGN_OR_RETURN(ExprPtr cond, p.expression());
      SNUG_RETURN_IF_ERROR(finish(p));
      while (true) {
        SNUG_ASSIGN_OR_RETURN(Body b, body({"elif", "else", "endif"}, &found, depth + 1));
        n.branches.emplace_back(std::move(cond), std::move(b));
        const Segment& end = segs_[i_++];
        if (found == "elif") {
          ExprParser q(end.tokens, 1, end.line);
          SNUG_ASSIGN_OR_RETURN(cond, q.expression());
          SNUG_RETURN_IF_ERROR(finish(q));
          continue;
        }
        if (found == "else") {
          SNUG_RETURN_IF_ERROR(finish_bare(end));
          SNUG_ASSIGN_OR_RETURN(n.else_body, body({"endif"}, &found, depth + 1));
          SNUG_RETURN_IF_ERROR(finish_bare(segs_[i_++]));
        } else {
          SNUG_RETURN_IF_ERROR(finish_bare(end));
        }
        return n;
      }
    }
    if (kw == "for") {
      n.kind = Node::Kind::kFor;
      do {
        SNUG_ASSIGN_OR_RETURN(std::string name, p.expect_name());
        n.targets.push_back(std::move(name));
      } while (p.accept_op(","));
      if (!p.accept_name("in")) return p.error("expected 'in'");
      SNUG_ASSIGN_OR_RETURN(n.expr, p.or_expr());
      if (p.accept_name("if")) {
        SNUG_ASSIGN_OR_RETURN(n.filter, p.or_expr());
      }
      if (p.accept_name("recursive")) return p.error("recursive loops are not supported");
      SNUG_RETURN_IF_ERROR(finish(p));
      SNUG_ASSIGN_OR_RETURN(n.body, body({"else", "endfor"}, &found, depth + 1));
      SNUG_RETURN_IF_ERROR(finish_bare(segs_[i_++]));
      if (found == "else") {
        SNUG_ASSIGN_OR_RETURN(n.else_body, body({"endfor"}, &found, depth + 1));
        SNUG_RETURN_IF_ERROR(finish_bare(segs_[i_++]));
      }
      return n;
    }
    if (kw == "set") {
      n.kind = Node::Kind::kSet;
      SNUG_ASSIGN_OR_RETURN(std::string name, p.expect_name());
      n.targets.push_back(std::move(name));
      if (p.accept_op(".")) {
        SNUG_ASSIGN_OR_RETURN(n.attribute, p.expect_name());
      }
      if (p.accept_op("=")) {
        SNUG_ASSIGN_OR_RETURN(n.expr, p.expression());
        SNUG_RETURN_IF_ERROR(finish(p));
        return n;
      }
      SNUG_RETURN_IF_ERROR(finish(p));
      n.block_set = true;
      SNUG_ASSIGN_OR_RETURN(n.body, body({"endset"}, &found, depth + 1));
      SNUG_RETURN_IF_ERROR(finish_bare(segs_[i_++]));
      return n;
    }
    if (kw == "break" || kw == "continue") {
      n.kind = kw == "break" ? Node::Kind::kBreak : Node::Kind::kContinue;
      SNUG_RETURN_IF_ERROR(finish(p));
      return n;
    }
    if (kw == "generation" || kw == "endgeneration") {  // HF assistant-mask markers: no output
      n.kind = Node::Kind::kText;
      return n;
    }
    return make_error("template line ", seg.line, ": unsupported tag '{% ", kw, " %}'");
  }

  static Status finish(const ExprParser& p) {
    if (!p.done()) return p.error("unexpected token");
    return ok_status();
  }
  static Status finish_bare(const Segment& s) {
    if (s.tokens.size() != 1)
      return make_error("template line ", s.line, ": unexpected tokens after '", s.tokens[0].text,
                        "'");
    return ok_status();
  }

  const std::vector<Segment>& segs_;
  size_t i_ = 0;
};

}  // namespace

Result<Body> parse(const std::vector<Segment>& segments) {
  StatementParser p(segments);
  std::string found;
  SNUG_ASSIGN_OR_RETURN(Body b, p.body({}, &found, 0));
  return b;
}

}  // namespace snug::text::jinja
