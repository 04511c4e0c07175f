// Parses lexed chat templates into a tree. The grammar is the subset of Jinja that
// chat templates use: {% if/elif/else %}, {% for ... in ... [if ...] %} with
// {% else %}, {% set %} (names, namespace attributes, blocks), {% break/continue %},
// and expressions with Jinja's operator precedence, filters, tests, calls, indexing
// and slicing. Anything else is an Error naming the construct and line.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "text/jinja_lexer.h"
#include "text/jinja_value.h"

namespace snug::text::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,  // value
    kName,     // name
    kList,     // args
    kDict,     // args as key, value, key, value ...
    kAttr,     // args[0].name
    kIndex,    // args[0][args[1]]
    kSlice,    // args[0][args[1]:args[2]:args[3]] (null = omitted)
    kCall,     // args[0](args[1..]); kwargs
    kFilter,   // args[0] | name(args[1..]); kwargs
    kTest,     // args[0] is [not] name(args[1..])
    kUnary,    // op args[0]: "not", "-", "+"
    kBinary,   // args[0] op args[1]
    kTernary,  // args[0] if args[1] else args[2] (args[2] may be null)
  };
  Kind kind = Kind::kLiteral;
  Value value;
  std::string name;  // name, attribute, filter, test or operator
  bool negated = false;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  int line = 0;
};

struct Node;
using Body = std::vector<Node>;

struct Node {
  enum class Kind { kText, kOutput, kIf, kFor, kSet, kBreak, kContinue };
  Kind kind = Kind::kText;
  int line = 0;
  std::string text;                                // kText
  ExprPtr expr;                                    // kOutput; kSet value; kFor iterable
  std::vector<std::pair<ExprPtr, Body>> branches;  // kIf: condition, body
  Body body;                                       // kFor body; kSet block body
  Body else_body;                                  // kIf, kFor
  std::vector<std::string> targets;                // kFor loop variables; kSet name
  std::string attribute;                           // kSet: ns.attribute target
  ExprPtr filter;                                  // kFor: "if" condition
  bool block_set = false;                          // {% set x %}...{% endset %}
};

Result<Body> parse(const std::vector<Segment>& segments);

}  // namespace snug::text::jinja
