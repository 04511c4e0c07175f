// Evaluates a parsed chat template. The interpreter is closed: it reads only the
// values it is given (no files, environment, imports or attribute access into host
// objects) and bounds its work, so a hostile template ends with an Error instead of
// running unbounded or exhausting memory.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "text/jinja_parser.h"
#include "text/jinja_value.h"

namespace snug::text::jinja {

struct Limits {
  uint64_t max_output_bytes = 16u << 20;  // also bounds every string and list built
  uint64_t max_steps = 1'000'000;         // nodes executed + loop iterations + calls
};

// Renders `body` with the variables in `globals` (a dict).
Result<std::string> render(const Body& body, const Value& globals, const Limits& limits);

// Helpers shared by the evaluator and the builtins.
std::string to_string(const Value& v);  // Jinja's str(): what {{ v }} prints
std::string repr(const Value& v);       // Python repr, for lists and dicts printed whole
bool truthy(const Value& v);
bool equal(const Value& a, const Value& b);
std::string_view type_name(const Value& v);

class Evaluator;

// Builtins (jinja_builtins.cpp). `self` is the receiver for methods and the input for
// filters and tests. Unknown names are Errors.
struct CallArgs {
  std::vector<Value> args;
  std::vector<std::pair<std::string, Value>> kwargs;
  const Value* kwarg(std::string_view name) const;
};
Result<Value> call_filter(Evaluator& ev, std::string_view name, const Value& input,
                          const CallArgs& a);
Result<bool> call_test(std::string_view name, const Value& input, const CallArgs& a);
Result<Value> call_function(Evaluator& ev, const Value& fn, const CallArgs& a);
// Attribute lookup: dict keys, then the methods a value has (bound as functions).
Value get_attribute(const Value& obj, std::string_view name);

class Evaluator {
 public:
  explicit Evaluator(const Limits& limits) : limits_(limits) {}
  Status step(uint64_t n = 1);              // charges work; Error past the limit
  Status check_size(uint64_t bytes) const;  // Error when a string/list would exceed the limit
  const Limits& limits() const { return limits_; }

  Result<Value> eval(const Expr& e);
  // Runs a body; sets *flow to 1 on break, 2 on continue.
  Status exec(const Body& body, int* flow);

  std::vector<std::vector<std::pair<std::string, Value>>> scopes;
  std::string out;

 private:
  Value lookup(std::string_view name) const;
  void assign(const std::string& name, Value v);
  Result<Value> binary(const Expr& e);
  Status exec_for(const Node& n);

  Limits limits_;
  uint64_t steps_ = 0;
};

}  // namespace snug::text::jinja
