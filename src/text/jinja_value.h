// Values of the chat-template interpreter: Jinja's dynamic types, reduced to what
// chat templates use. Lists and dicts are shared (reference semantics, as in Python),
// which is what lets namespace() objects be updated from inside loops.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace snug::text::jinja {

struct Value;
using List = std::vector<Value>;

// Insertion-ordered map with string keys, like a Python dict of a JSON object.
struct Dict {
  std::vector<std::pair<std::string, Value>> items;
  bool is_namespace = false;
  const Value* find(std::string_view key) const;
  void set(std::string key, Value v);
};

struct Value {
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kFunction };
  Kind kind = Kind::kUndefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;                // kString; kFunction: the builtin's or method's name
  std::shared_ptr<List> list;   // kList
  std::shared_ptr<Dict> dict;   // kDict
  std::shared_ptr<Value> self;  // kFunction: the receiver of a bound method, or null

  static Value none() { return make(Kind::kNone); }
  static Value boolean(bool v) {
    Value x = make(Kind::kBool);
    x.b = v;
    return x;
  }
  static Value integer(int64_t v) {
    Value x = make(Kind::kInt);
    x.i = v;
    return x;
  }
  static Value number(double v) {
    Value x = make(Kind::kFloat);
    x.f = v;
    return x;
  }
  static Value string(std::string v) {
    Value x = make(Kind::kString);
    x.s = std::move(v);
    return x;
  }
  static Value new_list() {
    Value x = make(Kind::kList);
    x.list = std::make_shared<List>();
    return x;
  }
  static Value new_dict() {
    Value x = make(Kind::kDict);
    x.dict = std::make_shared<Dict>();
    return x;
  }
  static Value function(std::string name, std::shared_ptr<Value> self = nullptr) {
    Value x = make(Kind::kFunction);
    x.s = std::move(name);
    x.self = std::move(self);
    return x;
  }

  bool is_undefined() const { return kind == Kind::kUndefined; }
  bool is_none() const { return kind == Kind::kNone; }
  bool is_string() const { return kind == Kind::kString; }
  bool is_number() const { return kind == Kind::kInt || kind == Kind::kFloat; }
  bool is_list() const { return kind == Kind::kList; }
  bool is_dict() const { return kind == Kind::kDict; }
  double as_double() const { return kind == Kind::kInt ? static_cast<double>(i) : f; }

 private:
  static Value make(Kind k) {
    Value x;
    x.kind = k;
    return x;
  }
};

inline const Value* Dict::find(std::string_view key) const {
  for (const auto& [k, v] : items)
    if (k == key) return &v;
  return nullptr;
}

inline void Dict::set(std::string key, Value v) {
  for (auto& [k, old] : items) {
    if (k == key) {
      old = std::move(v);
      return;
    }
  }
  items.emplace_back(std::move(key), std::move(v));
}

}  // namespace snug::text::jinja
