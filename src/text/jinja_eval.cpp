#include "text/jinja_eval.h"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace snug::text::jinja {

std::string_view type_name(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kUndefined:
      return "undefined";
    case Value::Kind::kNone:
      return "none";
    case Value::Kind::kBool:
      return "bool";
    case Value::Kind::kInt:
      return "int";
    case Value::Kind::kFloat:
      return "float";
    case Value::Kind::kString:
      return "string";
    case Value::Kind::kList:
      return "list";
    case Value::Kind::kDict:
      return "dict";
    case Value::Kind::kFunction:
      return "function";
  }
  return "value";
}

namespace {

std::string float_str(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f > 0 ? "inf" : "-inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof(buf), f);
  std::string s(buf, r.ptr);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";  // Python prints 1.0
  return s;
}

std::string quote(const std::string& s) {
  const char q = s.find('\'') != std::string::npos && s.find('"') == std::string::npos ? '"' : '\'';
  std::string out(1, q);
  for (char c : s) {
    if (c == q || c == '\\') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  out.push_back(q);
  return out;
}

}  // namespace

std::string repr(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kString:
      return quote(v.s);
    case Value::Kind::kList: {
      std::string s = "[";
      for (size_t k = 0; k < v.list->size(); ++k) s += (k ? ", " : "") + repr((*v.list)[k]);
      return s + "]";
    }
    case Value::Kind::kDict: {
      std::string s = "{";
      bool first = true;
      for (const auto& [k, x] : v.dict->items) {
        s += (first ? "" : ", ") + quote(k) + ": " + repr(x);
        first = false;
      }
      return s + "}";
    }
    default:
      return to_string(v);
  }
}

std::string to_string(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kUndefined:
      return "";
    case Value::Kind::kNone:
      return "None";
    case Value::Kind::kBool:
      return v.b ? "True" : "False";
    case Value::Kind::kInt:
      return std::to_string(v.i);
    case Value::Kind::kFloat:
      return float_str(v.f);
    case Value::Kind::kString:
      return v.s;
    case Value::Kind::kFunction:
      return "<function " + v.s + ">";
    default:
      return repr(v);
  }
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return false;
    case Value::Kind::kBool:
      return v.b;
    case Value::Kind::kInt:
      return v.i != 0;
    case Value::Kind::kFloat:
      return v.f != 0;
    case Value::Kind::kString:
      return !v.s.empty();
    case Value::Kind::kList:
      return !v.list->empty();
    case Value::Kind::kDict:
      return !v.dict->items.empty();
    case Value::Kind::kFunction:
      return true;
  }
  return false;
}

bool equal(const Value& a, const Value& b) {
  const auto numeric = [](const Value& v) { return v.is_number() || v.kind == Value::Kind::kBool; };
  if (numeric(a) && numeric(b)) {
    const double x = a.kind == Value::Kind::kBool ? a.b : a.as_double();
    const double y = b.kind == Value::Kind::kBool ? b.b : b.as_double();
    return x == y;
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Value::Kind::kString:
      return a.s == b.s;
    case Value::Kind::kList:
      if (a.list->size() != b.list->size()) return false;
      for (size_t k = 0; k < a.list->size(); ++k)
        if (!equal((*a.list)[k], (*b.list)[k])) return false;
      return true;
    case Value::Kind::kDict:
      if (a.dict->items.size() != b.dict->items.size()) return false;
      for (const auto& [k, v] : a.dict->items) {
        const Value* o = b.dict->find(k);
        if (!o || !equal(v, *o)) return false;
      }
      return true;
    case Value::Kind::kFunction:
      return a.s == b.s && a.self == b.self;
    default:
      return true;  // undefined == undefined, none == none
  }
}

const Value* CallArgs::kwarg(std::string_view name) const {
  for (const auto& [k, v] : kwargs)
    if (k == name) return &v;
  return nullptr;
}

Status Evaluator::step(uint64_t n) {
  steps_ += n;
  if (steps_ > limits_.max_steps)
    return make_error("chat template exceeds ", limits_.max_steps,
                      " evaluation steps (runaway loop?)");
  return ok_status();
}

Status Evaluator::check_size(uint64_t bytes) const {
  if (bytes > limits_.max_output_bytes)
    return make_error("chat template output exceeds ", limits_.max_output_bytes, " bytes");
  return ok_status();
}

Value Evaluator::lookup(std::string_view name) const {
  for (auto s = scopes.rbegin(); s != scopes.rend(); ++s)
    for (const auto& [k, v] : *s)
      if (k == name) return v;
  return Value();
}

void Evaluator::assign(const std::string& name, Value v) {
  for (auto& [k, old] : scopes.back()) {
    if (k == name) {
      old = std::move(v);
      return;
    }
  }
  scopes.back().emplace_back(name, std::move(v));
}

namespace {

Result<Value> arithmetic(Evaluator& ev, const std::string& op, const Value& a, const Value& b,
                         int line) {
  const auto fail = [&]() {
    return make_error("template line ", line, ": unsupported operands for '", op,
                      "': ", type_name(a), " and ", type_name(b));
  };
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      SNUG_RETURN_IF_ERROR(ev.check_size(a.s.size() + b.s.size()));
      return Value::string(a.s + b.s);
    }
    if (a.is_list() && b.is_list()) {
      SNUG_RETURN_IF_ERROR(ev.check_size(a.list->size() + b.list->size()));
      Value r = Value::new_list();
      *r.list = *a.list;
      r.list->insert(r.list->end(), b.list->begin(), b.list->end());
      return r;
    }
  }
  if (op == "*" && (a.is_string() || b.is_string()) &&
      (a.kind == Value::Kind::kInt || b.kind == Value::Kind::kInt)) {
    const Value& s = a.is_string() ? a : b;
    const int64_t n = a.is_string() ? b.i : a.i;
    if (n <= 0) return Value::string("");
    SNUG_RETURN_IF_ERROR(ev.check_size(static_cast<uint64_t>(n) * std::max<size_t>(s.s.size(), 1)));
    std::string r;
    for (int64_t k = 0; k < n; ++k) r += s.s;
    return Value::string(std::move(r));
  }
  if (!a.is_number() || !b.is_number()) return fail();
  if (a.kind == Value::Kind::kInt && b.kind == Value::Kind::kInt && op != "/" && op != "**") {
    int64_t r = 0;
    if (op == "+" && !__builtin_add_overflow(a.i, b.i, &r)) return Value::integer(r);
    if (op == "-" && !__builtin_sub_overflow(a.i, b.i, &r)) return Value::integer(r);
    if (op == "*" && !__builtin_mul_overflow(a.i, b.i, &r)) return Value::integer(r);
    if (op == "//" || op == "%") {
      if (b.i == 0) return make_error("template line ", line, ": integer division by zero");
      if (a.i == INT64_MIN && b.i == -1)
        return make_error("template line ", line, ": integer overflow");
      int64_t q = a.i / b.i, m = a.i % b.i;
      if (m != 0 && ((m < 0) != (b.i < 0))) --q, m += b.i;  // Python floors
      return Value::integer(op == "//" ? q : m);
    }
    return make_error("template line ", line, ": integer overflow in '", op, "'");
  }
  const double x = a.as_double(), y = b.as_double();
  if (op == "+") return Value::number(x + y);
  if (op == "-") return Value::number(x - y);
  if (op == "*") return Value::number(x * y);
  if (op == "**") {
    const double r = std::pow(x, y);
    if (a.kind == Value::Kind::kInt && b.kind == Value::Kind::kInt && b.i >= 0 &&
        std::fabs(r) < 9.2e18)
      return Value::integer(static_cast<int64_t>(r));
    return Value::number(r);
  }
  if (y == 0) return make_error("template line ", line, ": division by zero");
  if (op == "/") return Value::number(x / y);
  if (op == "//") return Value::number(std::floor(x / y));
  if (op == "%") return Value::number(x - y * std::floor(x / y));
  return fail();
}

Result<bool> contains(const Value& hay, const Value& needle, int line) {
  if (hay.is_string() && needle.is_string()) return hay.s.find(needle.s) != std::string::npos;
  if (hay.is_list()) {
    for (const Value& v : *hay.list)
      if (equal(v, needle)) return true;
    return false;
  }
  if (hay.is_dict()) return needle.is_string() && hay.dict->find(needle.s) != nullptr;
  if (hay.is_undefined() || hay.is_none()) return false;
  return make_error("template line ", line, ": 'in' needs a string, list or dict, not ",
                    type_name(hay));
}

}  // namespace

Result<Value> Evaluator::binary(const Expr& e) {
  const std::string& op = e.name;
  SNUG_ASSIGN_OR_RETURN(Value a, eval(*e.args[0]));
  if (op == "and") return truthy(a) ? eval(*e.args[1]) : Result<Value>(a);
  if (op == "or") return truthy(a) ? Result<Value>(a) : eval(*e.args[1]);
  SNUG_ASSIGN_OR_RETURN(Value b, eval(*e.args[1]));
  if (op == "==") return Value::boolean(equal(a, b));
  if (op == "!=") return Value::boolean(!equal(a, b));
  if (op == "in" || op == "not in") {
    SNUG_ASSIGN_OR_RETURN(bool in, contains(b, a, e.line));
    return Value::boolean(op == "in" ? in : !in);
  }
  if (op == "~") {
    std::string s = to_string(a) + to_string(b);
    SNUG_RETURN_IF_ERROR(check_size(s.size()));
    return Value::string(std::move(s));
  }
  if (op == "<" || op == ">" || op == "<=" || op == ">=") {
    int c;
    if (a.is_number() && b.is_number()) {
      c = a.as_double() < b.as_double() ? -1 : a.as_double() > b.as_double() ? 1 : 0;
    } else if (a.is_string() && b.is_string()) {
      c = a.s.compare(b.s);
    } else {
      return make_error("template line ", e.line, ": cannot compare ", type_name(a), " with ",
                        type_name(b));
    }
    const bool r = op == "<" ? c < 0 : op == ">" ? c > 0 : op == "<=" ? c <= 0 : c >= 0;
    return Value::boolean(r);
  }
  return arithmetic(*this, op, a, b, e.line);
}

Result<Value> Evaluator::eval(const Expr& e) {
  SNUG_RETURN_IF_ERROR(step());
  switch (e.kind) {
    case Expr::Kind::kLiteral:
      return e.value;
    case Expr::Kind::kName:
      return lookup(e.name);
    case Expr::Kind::kList: {
      Value l = Value::new_list();
      for (const ExprPtr& x : e.args) {
        SNUG_ASSIGN_OR_RETURN(Value v, eval(*x));
        l.list->push_back(std::move(v));
      }
      return l;
    }
    case Expr::Kind::kDict: {
      Value d = Value::new_dict();
      for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
        SNUG_ASSIGN_OR_RETURN(Value key, eval(*e.args[k]));
        SNUG_ASSIGN_OR_RETURN(Value v, eval(*e.args[k + 1]));
        d.dict->set(to_string(key), std::move(v));
      }
      return d;
    }
    case Expr::Kind::kAttr: {
      SNUG_ASSIGN_OR_RETURN(Value obj, eval(*e.args[0]));
      return get_attribute(obj, e.name);
    }
    case Expr::Kind::kIndex: {
      SNUG_ASSIGN_OR_RETURN(Value obj, eval(*e.args[0]));
      SNUG_ASSIGN_OR_RETURN(Value key, eval(*e.args[1]));
      if (obj.is_dict()) {
        if (!key.is_string()) return Value();
        const Value* v = obj.dict->find(key.s);
        return v ? *v : get_attribute(obj, key.s);
      }
      if ((obj.is_list() || obj.is_string()) && key.kind == Value::Kind::kInt) {
        const int64_t n = obj.is_list() ? static_cast<int64_t>(obj.list->size())
                                        : static_cast<int64_t>(obj.s.size());
        const int64_t k = key.i < 0 ? key.i + n : key.i;
        if (k < 0 || k >= n) return Value();
        return obj.is_list() ? (*obj.list)[k] : Value::string(std::string(1, obj.s[k]));
      }
      if (key.is_string()) return get_attribute(obj, key.s);
      return Value();
    }
    case Expr::Kind::kSlice: {
      SNUG_ASSIGN_OR_RETURN(Value obj, eval(*e.args[0]));
      int64_t idx[3] = {0, 0, 1};
      bool given[3] = {false, false, false};
      for (int k = 0; k < 3; ++k) {
        if (!e.args[k + 1]) continue;
        SNUG_ASSIGN_OR_RETURN(Value v, eval(*e.args[k + 1]));
        if (v.is_none()) continue;
        if (v.kind != Value::Kind::kInt)
          return make_error("template line ", e.line, ": slice bounds must be integers");
        idx[k] = v.i, given[k] = true;
      }
      if (idx[2] == 0) return make_error("template line ", e.line, ": slice step cannot be zero");
      if (!obj.is_list() && !obj.is_string())
        return make_error("template line ", e.line, ": cannot slice ", type_name(obj));
      const int64_t n = obj.is_list() ? static_cast<int64_t>(obj.list->size())
                                      : static_cast<int64_t>(obj.s.size());
      const int64_t st = idx[2];
      const auto clamp = [&](int64_t v, bool g, int64_t dflt) {
        if (!g) return dflt;
        if (v < 0) v += n;
        return st > 0 ? std::clamp<int64_t>(v, 0, n) : std::clamp<int64_t>(v, -1, n - 1);
      };
      const int64_t lo = clamp(idx[0], given[0], st > 0 ? 0 : n - 1);
      const int64_t hi = clamp(idx[1], given[1], st > 0 ? n : -1);
      Value r = obj.is_list() ? Value::new_list() : Value::string("");
      for (int64_t k = lo; st > 0 ? k < hi : k > hi; k += st) {
        if (obj.is_list()) {
          r.list->push_back((*obj.list)[k]);
        } else {
          r.s.push_back(obj.s[k]);
        }
      }
      return r;
    }
    case Expr::Kind::kCall: {
      SNUG_ASSIGN_OR_RETURN(Value fn, eval(*e.args[0]));
      CallArgs a;
      for (size_t k = 1; k < e.args.size(); ++k) {
        SNUG_ASSIGN_OR_RETURN(Value v, eval(*e.args[k]));
        a.args.push_back(std::move(v));
      }
      for (const auto& [name, x] : e.kwargs) {
        SNUG_ASSIGN_OR_RETURN(Value v, eval(*x));
        a.kwargs.emplace_back(name, std::move(v));
      }
      if (fn.kind != Value::Kind::kFunction)
        return make_error("template line ", e.line, ": ", type_name(fn), " is not callable");
      auto r = call_function(*this, fn, a);
      if (!r.ok()) return make_error("template line ", e.line, ": ", r.error().message);
      return r;
    }
    case Expr::Kind::kFilter:
    case Expr::Kind::kTest: {
      SNUG_ASSIGN_OR_RETURN(Value input, eval(*e.args[0]));
      CallArgs a;
      for (size_t k = 1; k < e.args.size(); ++k) {
        SNUG_ASSIGN_OR_RETURN(Value v, eval(*e.args[k]));
        a.args.push_back(std::move(v));
      }
      for (const auto& [name, x] : e.kwargs) {
        SNUG_ASSIGN_OR_RETURN(Value v, eval(*x));
        a.kwargs.emplace_back(name, std::move(v));
      }
      if (e.kind == Expr::Kind::kFilter) {
        auto r = call_filter(*this, e.name, input, a);
        if (!r.ok()) return make_error("template line ", e.line, ": ", r.error().message);
        return r;
      }
      auto r = call_test(e.name, input, a);
      if (!r.ok()) return make_error("template line ", e.line, ": ", r.error().message);
      return Value::boolean(*r != e.negated);
    }
    case Expr::Kind::kUnary: {
      SNUG_ASSIGN_OR_RETURN(Value v, eval(*e.args[0]));
      if (e.name == "not") return Value::boolean(!truthy(v));
      if (v.kind == Value::Kind::kInt) return Value::integer(e.name == "-" ? -v.i : v.i);
      if (v.kind == Value::Kind::kFloat) return Value::number(e.name == "-" ? -v.f : v.f);
      return make_error("template line ", e.line, ": unary '", e.name, "' needs a number, not ",
                        type_name(v));
    }
    case Expr::Kind::kBinary:
      return binary(e);
    case Expr::Kind::kTernary: {
      SNUG_ASSIGN_OR_RETURN(Value c, eval(*e.args[1]));
      if (truthy(c)) return eval(*e.args[0]);
      if (e.args[2]) return eval(*e.args[2]);
      return Value();
    }
  }
  return Value();
}

Status Evaluator::exec_for(const Node& n) {
  SNUG_ASSIGN_OR_RETURN(Value seq, eval(*n.expr));
  std::vector<Value> items;
  if (seq.is_list()) {
    items = *seq.list;
  } else if (seq.is_dict()) {
    for (const auto& [k, v] : seq.dict->items) items.push_back(Value::string(k));
  } else if (seq.is_string()) {
    for (char c : seq.s) items.push_back(Value::string(std::string(1, c)));
  } else if (!seq.is_undefined() && !seq.is_none()) {
    return make_error("template line ", n.line, ": cannot iterate over ", type_name(seq));
  }
  scopes.emplace_back();
  const auto bind = [&](const Value& item) -> Status {
    if (n.targets.size() == 1) {
      assign(n.targets[0], item);
      return ok_status();
    }
    if (!item.is_list() || item.list->size() != n.targets.size())
      return make_error("template line ", n.line, ": cannot unpack ", type_name(item), " into ",
                        n.targets.size(), " loop variables");
    for (size_t k = 0; k < n.targets.size(); ++k) assign(n.targets[k], (*item.list)[k]);
    return ok_status();
  };
  if (n.filter) {
    std::vector<Value> kept;
    for (const Value& item : items) {
      SNUG_RETURN_IF_ERROR(step());
      SNUG_RETURN_IF_ERROR(bind(item));
      SNUG_ASSIGN_OR_RETURN(Value keep, eval(*n.filter));
      if (truthy(keep)) kept.push_back(item);
    }
    items.swap(kept);
  }
  const int64_t len = static_cast<int64_t>(items.size());
  for (int64_t k = 0; k < len; ++k) {
    SNUG_RETURN_IF_ERROR(step());
    SNUG_RETURN_IF_ERROR(bind(items[k]));
    Value loop = Value::new_dict();
    loop.dict->set("index", Value::integer(k + 1));
    loop.dict->set("index0", Value::integer(k));
    loop.dict->set("revindex", Value::integer(len - k));
    loop.dict->set("revindex0", Value::integer(len - k - 1));
    loop.dict->set("first", Value::boolean(k == 0));
    loop.dict->set("last", Value::boolean(k == len - 1));
    loop.dict->set("length", Value::integer(len));
    loop.dict->set("previtem", k > 0 ? items[k - 1] : Value());
    loop.dict->set("nextitem", k + 1 < len ? items[k + 1] : Value());
    assign("loop", std::move(loop));
    int flow = 0;
    SNUG_RETURN_IF_ERROR(exec(n.body, &flow));
    if (flow == 1) break;
  }
  scopes.pop_back();
  if (len == 0) {
    int flow = 0;
    SNUG_RETURN_IF_ERROR(exec(n.else_body, &flow));
  }
  return ok_status();
}

Status Evaluator::exec(const Body& body, int* flow) {
  for (const Node& n : body) {
    SNUG_RETURN_IF_ERROR(step());
    switch (n.kind) {
      case Node::Kind::kText:
        out += n.text;
        break;
      case Node::Kind::kOutput: {
        SNUG_ASSIGN_OR_RETURN(Value v, eval(*n.expr));
        out += to_string(v);
        break;
      }
      case Node::Kind::kIf:
        for (const auto& [cond, b] : n.branches) {
          SNUG_ASSIGN_OR_RETURN(Value c, eval(*cond));
          if (truthy(c)) {
            SNUG_RETURN_IF_ERROR(exec(b, flow));
            goto done_if;
          }
        }
        SNUG_RETURN_IF_ERROR(exec(n.else_body, flow));
      done_if:
        break;
      case Node::Kind::kFor:
        SNUG_RETURN_IF_ERROR(exec_for(n));
        break;
      case Node::Kind::kSet: {
        Value v;
        if (n.block_set) {
          std::string saved;
          saved.swap(out);
          int inner = 0;
          SNUG_RETURN_IF_ERROR(exec(n.body, &inner));
          v = Value::string(std::move(out));
          out = std::move(saved);
        } else {
          SNUG_ASSIGN_OR_RETURN(v, eval(*n.expr));
        }
        if (n.attribute.empty()) {
          assign(n.targets[0], std::move(v));
        } else {
          Value target = lookup(n.targets[0]);
          if (!target.is_dict() || !target.dict->is_namespace)
            return make_error("template line ", n.line, ": cannot set attribute '", n.attribute,
                              "' on ", type_name(target), " (only namespace() objects)");
          target.dict->set(n.attribute, std::move(v));
        }
        break;
      }
      case Node::Kind::kBreak:
      case Node::Kind::kContinue:
        *flow = n.kind == Node::Kind::kBreak ? 1 : 2;
        return ok_status();
    }
    SNUG_RETURN_IF_ERROR(check_size(out.size()));
    if (*flow) return ok_status();
  }
  return ok_status();
}

Result<std::string> render(const Body& body, const Value& globals, const Limits& limits) {
  Evaluator ev(limits);
  ev.scopes.emplace_back();
  if (globals.is_dict())
    for (const auto& [k, v] : globals.dict->items) ev.scopes.back().emplace_back(k, v);
  int flow = 0;
  SNUG_RETURN_IF_ERROR(ev.exec(body, &flow));
  return std::move(ev.out);
}

}  // namespace snug::text::jinja
