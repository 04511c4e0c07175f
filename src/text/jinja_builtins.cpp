// Filters, tests, global functions and methods of the chat-template interpreter.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <ctime>

#include "text/jinja_eval.h"

namespace snug::text::jinja {

namespace {

bool is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string strip(const std::string& s, const Value* chars, bool left, bool right) {
  const auto drop = [&](char c) {
    return chars && chars->is_string() ? chars->s.find(c) != std::string::npos : is_ws(c);
  };
  size_t b = 0, e = s.size();
  if (left)
    while (b < e && drop(s[b])) ++b;
  if (right)
    while (e > b && drop(s[e - 1])) --e;
  return s.substr(b, e - b);
}

std::string map_case(std::string s, int (*f)(int)) {
  for (char& c : s) c = static_cast<char>(f(static_cast<unsigned char>(c)));
  return s;
}

std::string title(std::string s) {
  bool start = true;
  for (char& c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    c = static_cast<char>(start ? std::toupper(u) : std::tolower(u));
    start = !std::isalnum(u);
  }
  return s;
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size())
    out.append(s, pos, hit - pos).append(to);
  return out.append(s, pos);
}

const Value& arg(const CallArgs& a, size_t k, std::string_view name) {
  static const Value kUndefined;
  if (k < a.args.size()) return a.args[k];
  const Value* v = a.kwarg(name);
  return v ? *v : kUndefined;
}

Status json_dump(Evaluator& ev, const Value& v, int indent, int depth, std::string* out) {
  SNUG_RETURN_IF_ERROR(ev.step());
  SNUG_RETURN_IF_ERROR(ev.check_size(out->size()));
  const auto newline = [&](int d) {
    if (indent < 0) return;
    out->push_back('\n');
    out->append(static_cast<size_t>(indent) * d, ' ');
  };
  switch (v.kind) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      *out += "null";
      return ok_status();
    case Value::Kind::kBool:
      *out += v.b ? "true" : "false";
      return ok_status();
    case Value::Kind::kInt:
    case Value::Kind::kFloat:
      *out += to_string(v);
      return ok_status();
    case Value::Kind::kString: {
      out->push_back('"');
      for (unsigned char c : v.s) {
        switch (c) {
          case '"':
            *out += "\\\"";
            break;
          case '\\':
            *out += "\\\\";
            break;
          case '\n':
            *out += "\\n";
            break;
          case '\r':
            *out += "\\r";
            break;
          case '\t':
            *out += "\\t";
            break;
          case '\b':
            *out += "\\b";
            break;
          case '\f':
            *out += "\\f";
            break;
          default:
            if (c < 0x20) {
              char buf[8];
              std::snprintf(buf, sizeof(buf), "\\u%04x", c);
              *out += buf;
            } else {
              out->push_back(static_cast<char>(c));
            }
        }
      }
      out->push_back('"');
      return ok_status();
    }
    case Value::Kind::kList: {
      if (v.list->empty()) return *out += "[]", ok_status();
      out->push_back('[');
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) *out += indent < 0 ? ", " : ",";
        newline(depth + 1);
        SNUG_RETURN_IF_ERROR(json_dump(ev, (*v.list)[k], indent, depth + 1, out));
      }
      newline(depth);
      out->push_back(']');
      return ok_status();
    }
    case Value::Kind::kDict: {
      if (v.dict->items.empty()) return *out += "{}", ok_status();
      out->push_back('{');
      bool first = true;
      for (const auto& [k, x] : v.dict->items) {
        if (!first) *out += indent < 0 ? ", " : ",";
        first = false;
        newline(depth + 1);
        SNUG_RETURN_IF_ERROR(json_dump(ev, Value::string(k), indent, depth + 1, out));
        *out += ": ";
        SNUG_RETURN_IF_ERROR(json_dump(ev, x, indent, depth + 1, out));
      }
      newline(depth);
      out->push_back('}');
      return ok_status();
    }
    case Value::Kind::kFunction:
      return make_error("tojson: cannot serialize a function");
  }
  return ok_status();
}

Result<Value> length(const Value& v) {
  if (v.is_string()) return Value::integer(static_cast<int64_t>(v.s.size()));
  if (v.is_list()) return Value::integer(static_cast<int64_t>(v.list->size()));
  if (v.is_dict()) return Value::integer(static_cast<int64_t>(v.dict->items.size()));
  if (v.is_undefined()) return Value::integer(0);
  return make_error("length of ", type_name(v), " is undefined");
}

// selectattr/rejectattr: items whose attribute passes the test (truthiness by default).
Result<Value> select_attr(const Value& input, const CallArgs& a, bool keep_if) {
  if (!input.is_list())
    return make_error("selectattr/rejectattr need a list, not ", type_name(input));
  const Value& attr = arg(a, 0, "attribute");
  if (!attr.is_string()) return make_error("selectattr/rejectattr need an attribute name");
  Value out = Value::new_list();
  for (const Value& item : *input.list) {
    const Value field = get_attribute(item, attr.s);
    bool pass;
    if (a.args.size() >= 2) {
      CallArgs test_args;
      test_args.args.assign(a.args.begin() + 2, a.args.end());
      SNUG_ASSIGN_OR_RETURN(pass, call_test(a.args[1].s, field, test_args));
    } else {
      pass = truthy(field);
    }
    if (pass == keep_if) out.list->push_back(item);
  }
  return out;
}

}  // namespace

Value get_attribute(const Value& obj, std::string_view name) {
  if (obj.is_dict()) {
    if (const Value* v = obj.dict->find(name)) return *v;
    if (!obj.dict->is_namespace &&
        (name == "items" || name == "keys" || name == "values" || name == "get"))
      return Value::function(std::string("dict.") + std::string(name),
                             std::make_shared<Value>(obj));
    return Value();
  }
  static constexpr std::string_view kStringMethods[] = {
      "strip", "lstrip",  "rstrip", "upper",      "lower", "startswith", "endswith",
      "split", "replace", "title",  "capitalize", "find",  "join",       "count"};
  if (obj.is_string()) {
    for (std::string_view m : kStringMethods)
      if (m == name)
        return Value::function("str." + std::string(name), std::make_shared<Value>(obj));
  }
  if (obj.is_list() && name == "append")
    return Value::function("list.append", std::make_shared<Value>(obj));
  return Value();
}

Result<Value> call_filter(Evaluator& ev, std::string_view name, const Value& in,
                          const CallArgs& a) {
  SNUG_RETURN_IF_ERROR(ev.step());
  if (name == "trim") {
    if (!in.is_string()) return Value::string(strip(to_string(in), nullptr, true, true));
    return Value::string(strip(in.s, a.args.empty() ? nullptr : &a.args[0], true, true));
  }
  if (name == "length" || name == "count") return length(in);
  if (name == "upper") return Value::string(map_case(to_string(in), ::toupper));
  if (name == "lower") return Value::string(map_case(to_string(in), ::tolower));
  if (name == "title") return Value::string(title(to_string(in)));
  if (name == "capitalize") {
    std::string s = map_case(to_string(in), ::tolower);
    if (!s.empty()) s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
    return Value::string(std::move(s));
  }
  if (name == "string") return Value::string(to_string(in));
  if (name == "safe") return in;
  if (name == "escape" || name == "e" || name == "forceescape") {
    std::string s = to_string(in), o;
    for (char c : s) {
      switch (c) {
        case '&':
          o += "&amp;";
          break;
        case '<':
          o += "&lt;";
          break;
        case '>':
          o += "&gt;";
          break;
        case '"':
          o += "&#34;";
          break;
        case '\'':
          o += "&#39;";
          break;
        default:
          o.push_back(c);
      }
    }
    return Value::string(std::move(o));
  }
  if (name == "first" || name == "last") {
    if (in.is_list()) {
      if (in.list->empty()) return Value();
      return name == "first" ? in.list->front() : in.list->back();
    }
    if (in.is_string() && !in.s.empty())
      return Value::string(std::string(1, name == "first" ? in.s.front() : in.s.back()));
    return Value();
  }
  if (name == "default" || name == "d") {
    const bool boolean = truthy(arg(a, 1, "boolean"));
    if (in.is_undefined() || (boolean && !truthy(in))) {
      const Value& d = arg(a, 0, "default_value");
      return d.is_undefined() ? Value::string("") : d;
    }
    return in;
  }
  if (name == "join") {
    const Value& sep = arg(a, 0, "d");
    const Value* attr = a.kwarg("attribute");
    std::string out;
    if (!in.is_list()) return make_error("join needs a list, not ", type_name(in));
    for (size_t k = 0; k < in.list->size(); ++k) {
      if (k) out += sep.is_string() ? sep.s : "";
      out += to_string(attr && attr->is_string() ? get_attribute((*in.list)[k], attr->s)
                                                 : (*in.list)[k]);
      SNUG_RETURN_IF_ERROR(ev.check_size(out.size()));
    }
    return Value::string(std::move(out));
  }
  if (name == "replace") {
    const Value& from = arg(a, 0, "old");
    const Value& to = arg(a, 1, "new");
    std::string r = replace_all(to_string(in), to_string(from), to_string(to));
    SNUG_RETURN_IF_ERROR(ev.check_size(r.size()));
    return Value::string(std::move(r));
  }
  if (name == "tojson") {
    const Value& indent = arg(a, 0, "indent");
    std::string out;
    SNUG_RETURN_IF_ERROR(json_dump(
        ev, in, indent.kind == Value::Kind::kInt ? static_cast<int>(indent.i) : -1, 0, &out));
    return Value::string(std::move(out));
  }
  if (name == "list") {
    if (in.is_list()) return in;
    Value l = Value::new_list();
    if (in.is_string())
      for (char c : in.s) l.list->push_back(Value::string(std::string(1, c)));
    if (in.is_dict())
      for (const auto& [k, v] : in.dict->items) l.list->push_back(Value::string(k));
    return l;
  }
  if (name == "reverse") {
    if (in.is_string()) return Value::string(std::string(in.s.rbegin(), in.s.rend()));
    if (!in.is_list()) return make_error("reverse needs a list or string, not ", type_name(in));
    Value l = Value::new_list();
    l.list->assign(in.list->rbegin(), in.list->rend());
    return l;
  }
  if (name == "items") {
    if (!in.is_dict()) return make_error("items needs a dict, not ", type_name(in));
    CallArgs none;
    return call_function(ev, Value::function("dict.items", std::make_shared<Value>(in)), none);
  }
  if (name == "int") {
    if (in.is_number()) return Value::integer(static_cast<int64_t>(in.as_double()));
    if (in.is_string()) return Value::integer(std::strtoll(in.s.c_str(), nullptr, 10));
    return Value::integer(in.kind == Value::Kind::kBool ? in.b : 0);
  }
  if (name == "float") {
    if (in.is_number()) return Value::number(in.as_double());
    if (in.is_string()) return Value::number(std::strtod(in.s.c_str(), nullptr));
    return Value::number(0);
  }
  if (name == "abs") {
    if (in.kind == Value::Kind::kInt) return Value::integer(in.i < 0 ? -in.i : in.i);
    if (in.kind == Value::Kind::kFloat) return Value::number(std::fabs(in.f));
    return make_error("abs needs a number, not ", type_name(in));
  }
  if (name == "selectattr") return select_attr(in, a, true);
  if (name == "rejectattr") return select_attr(in, a, false);
  if (name == "map") {
    if (!in.is_list()) return make_error("map needs a list, not ", type_name(in));
    Value l = Value::new_list();
    const Value* attr = a.kwarg("attribute");
    for (const Value& item : *in.list) {
      if (attr && attr->is_string()) {
        l.list->push_back(get_attribute(item, attr->s));
      } else if (!a.args.empty() && a.args[0].is_string()) {
        CallArgs rest;
        rest.args.assign(a.args.begin() + 1, a.args.end());
        SNUG_ASSIGN_OR_RETURN(Value v, call_filter(ev, a.args[0].s, item, rest));
        l.list->push_back(std::move(v));
      } else {
        return make_error("map needs attribute= or a filter name");
      }
    }
    return l;
  }
  return make_error("unknown filter '", std::string(name), "'");
}

Result<bool> call_test(std::string_view name, const Value& in, const CallArgs& a) {
  const Value& x = arg(a, 0, "value");
  if (name == "defined") return !in.is_undefined();
  if (name == "undefined") return in.is_undefined();
  if (name == "none") return in.is_none();
  if (name == "string") return in.is_string();
  if (name == "number") return in.is_number();
  if (name == "integer") return in.kind == Value::Kind::kInt;
  if (name == "float") return in.kind == Value::Kind::kFloat;
  if (name == "boolean") return in.kind == Value::Kind::kBool;
  if (name == "true") return in.kind == Value::Kind::kBool && in.b;
  if (name == "false") return in.kind == Value::Kind::kBool && !in.b;
  if (name == "mapping") return in.is_dict();
  if (name == "iterable") return in.is_list() || in.is_dict() || in.is_string();
  if (name == "sequence") return in.is_list() || in.is_dict() || in.is_string();
  if (name == "callable") return in.kind == Value::Kind::kFunction;
  if (name == "lower") return in.is_string() && map_case(in.s, ::tolower) == in.s;
  if (name == "upper") return in.is_string() && map_case(in.s, ::toupper) == in.s;
  if (name == "even" || name == "odd" || name == "divisibleby") {
    if (in.kind != Value::Kind::kInt)
      return make_error("test '", std::string(name), "' needs an integer");
    if (name == "divisibleby") {
      if (x.kind != Value::Kind::kInt || x.i == 0)
        return make_error("divisibleby needs a non-zero integer");
      return in.i % x.i == 0;
    }
    return (in.i % 2 == 0) == (name == "even");
  }
  if (name == "eq" || name == "equalto" || name == "==") return equal(in, x);
  if (name == "ne" || name == "!=") return !equal(in, x);
  if (name == "in") {
    if (x.is_list())
      return std::any_of(x.list->begin(), x.list->end(),
                         [&](const Value& v) { return equal(v, in); });
    if (x.is_string() && in.is_string()) return x.s.find(in.s) != std::string::npos;
    if (x.is_dict() && in.is_string()) return x.dict->find(in.s) != nullptr;
    return false;
  }
  if (name == "gt" || name == "lt" || name == "ge" || name == "le" || name == ">" || name == "<" ||
      name == ">=" || name == "<=") {
    if (!in.is_number() || !x.is_number())
      return make_error("test '", std::string(name), "' needs numbers");
    const double p = in.as_double(), q = x.as_double();
    if (name == "gt" || name == ">") return p > q;
    if (name == "lt" || name == "<") return p < q;
    if (name == "ge" || name == ">=") return p >= q;
    return p <= q;
  }
  return make_error("unknown test '", std::string(name), "'");
}

Result<Value> call_function(Evaluator& ev, const Value& fn, const CallArgs& a) {
  SNUG_RETURN_IF_ERROR(ev.step());
  const std::string& name = fn.s;
  if (name == "raise_exception") {
    return make_error("chat template raised: ", to_string(arg(a, 0, "message")));
  }
  if (name == "range") {
    int64_t lo = 0, hi = 0, st = 1;
    for (const Value& v : a.args)
      if (v.kind != Value::Kind::kInt) return make_error("range() needs integers");
    if (a.args.size() == 1) hi = a.args[0].i;
    if (a.args.size() >= 2) lo = a.args[0].i, hi = a.args[1].i;
    if (a.args.size() == 3) st = a.args[2].i;
    if (a.args.empty() || a.args.size() > 3 || st == 0)
      return make_error("range() takes 1 to 3 arguments, step not 0");
    Value l = Value::new_list();
    for (int64_t k = lo; st > 0 ? k < hi : k > hi; k += st) {
      SNUG_RETURN_IF_ERROR(ev.step());
      SNUG_RETURN_IF_ERROR(ev.check_size(l.list->size()));
      l.list->push_back(Value::integer(k));
    }
    return l;
  }
  if (name == "namespace" || name == "dict") {
    Value d = Value::new_dict();
    d.dict->is_namespace = name == "namespace";
    for (const auto& [k, v] : a.kwargs) d.dict->set(k, v);
    return d;
  }
  if (name == "strftime_now") {
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    char buf[256];
    const std::string fmt = to_string(arg(a, 0, "format"));
    const size_t n = std::strftime(buf, sizeof(buf), fmt.c_str(), &tm);
    return Value::string(std::string(buf, n));
  }
  if (!fn.self) return make_error("unknown function '", name, "'");
  const Value& self = *fn.self;
  if (name == "dict.items" || name == "dict.keys" || name == "dict.values") {
    Value l = Value::new_list();
    for (const auto& [k, v] : self.dict->items) {
      if (name == "dict.items") {
        Value pair = Value::new_list();
        pair.list->push_back(Value::string(k));
        pair.list->push_back(v);
        l.list->push_back(std::move(pair));
      } else {
        l.list->push_back(name == "dict.keys" ? Value::string(k) : v);
      }
    }
    return l;
  }
  if (name == "dict.get") {
    const Value& key = arg(a, 0, "key");
    const Value* v = key.is_string() ? self.dict->find(key.s) : nullptr;
    if (v) return *v;
    const Value& d = arg(a, 1, "default");
    return d.is_undefined() ? Value::none() : d;
  }
  if (name == "list.append") {
    SNUG_RETURN_IF_ERROR(ev.check_size(self.list->size() + 1));
    self.list->push_back(arg(a, 0, "x"));
    return Value::none();
  }
  const std::string& s = self.s;
  const Value& x = arg(a, 0, "x");
  if (name == "str.strip") return Value::string(strip(s, x.is_string() ? &x : nullptr, true, true));
  if (name == "str.lstrip")
    return Value::string(strip(s, x.is_string() ? &x : nullptr, true, false));
  if (name == "str.rstrip")
    return Value::string(strip(s, x.is_string() ? &x : nullptr, false, true));
  if (name == "str.upper") return Value::string(map_case(s, ::toupper));
  if (name == "str.lower") return Value::string(map_case(s, ::tolower));
  if (name == "str.title") return Value::string(title(s));
  if (name == "str.capitalize") return call_filter(ev, "capitalize", self, CallArgs{});
  if (name == "str.startswith" || name == "str.endswith") {
    const bool start = name == "str.startswith";
    const auto test = [&](const std::string& p) {
      return s.size() >= p.size() && (start ? s.compare(0, p.size(), p) == 0
                                            : s.compare(s.size() - p.size(), p.size(), p) == 0);
    };
    if (x.is_string()) return Value::boolean(test(x.s));
    if (x.is_list())
      return Value::boolean(std::any_of(x.list->begin(), x.list->end(), [&](const Value& p) {
        return p.is_string() && test(p.s);
      }));
    return make_error(name, "() needs a string");
  }
  if (name == "str.find")
    return Value::integer(x.is_string() ? static_cast<int64_t>(s.find(x.s)) : -1);
  if (name == "str.count") {
    if (!x.is_string() || x.s.empty()) return make_error("count() needs a non-empty string");
    int64_t n = 0;
    for (size_t p = s.find(x.s); p != std::string::npos; p = s.find(x.s, p + x.s.size())) ++n;
    return Value::integer(n);
  }
  if (name == "str.replace") {
    std::string r = replace_all(s, to_string(x), to_string(arg(a, 1, "new")));
    SNUG_RETURN_IF_ERROR(ev.check_size(r.size()));
    return Value::string(std::move(r));
  }
  if (name == "str.join") {
    if (!x.is_list()) return make_error("join() needs a list");
    std::string out;
    for (size_t k = 0; k < x.list->size(); ++k) {
      if (k) out += s;
      out += to_string((*x.list)[k]);
      SNUG_RETURN_IF_ERROR(ev.check_size(out.size()));
    }
    return Value::string(std::move(out));
  }
  if (name == "str.split") {
    Value l = Value::new_list();
    if (x.is_string() && !x.s.empty()) {
      size_t pos = 0;
      for (size_t hit; (hit = s.find(x.s, pos)) != std::string::npos; pos = hit + x.s.size())
        l.list->push_back(Value::string(s.substr(pos, hit - pos)));
      l.list->push_back(Value::string(s.substr(pos)));
    } else {
      size_t k = 0;
      while (k < s.size()) {
        while (k < s.size() && is_ws(s[k])) ++k;
        size_t e = k;
        while (e < s.size() && !is_ws(s[e])) ++e;
        if (e > k) l.list->push_back(Value::string(s.substr(k, e - k)));
        k = e;
      }
    }
    return l;
  }
  return make_error("unknown method '", name, "'");
}

}  // namespace snug::text::jinja
