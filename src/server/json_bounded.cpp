#include "server/json_bounded.h"

#include <string>
#include <utility>
#include <vector>

namespace snug::server {
namespace {

using json = nlohmann::json;

// Builds the tree as nlohmann's own DOM parser does (a duplicate key keeps
// the last value), refusing past the limits.
class BoundedBuilder : public nlohmann::json_sax<json> {
 public:
  explicit BoundedBuilder(const JsonLimits& limits) : limits_(limits) {}

  bool null() override { return put(nullptr); }
  bool boolean(bool v) override { return put(v); }
  bool number_integer(number_integer_t v) override { return put(v); }
  bool number_unsigned(number_unsigned_t v) override { return put(v); }
  bool number_float(number_float_t v, const string_t& /*text*/) override { return put(v); }
  bool string(string_t& v) override { return put(std::move(v)); }
  bool binary(binary_t& /*v*/) override {
    error_ = "binary values are not JSON";
    return false;
  }
  bool start_object(std::size_t /*n*/) override { return open(json::object()); }
  bool key(string_t& k) override {
    key_slot_ = &(*stack_.back())[k];
    return true;
  }
  bool end_object() override {
    stack_.pop_back();
    return true;
  }
  bool start_array(std::size_t /*n*/) override { return open(json::array()); }
  bool end_array() override {
    stack_.pop_back();
    return true;
  }
  bool parse_error(std::size_t /*position*/, const std::string& /*last_token*/,
                   const nlohmann::detail::exception& ex) override {
    // "[json.exception.parse_error.101] parse error at line 1, column 9: ..."
    std::string what = ex.what();
    const size_t cut = what.find("] ");
    if (what.rfind("[json.exception", 0) == 0 && cut != std::string::npos) what.erase(0, cut + 2);
    error_ = "invalid JSON: " + printable(what, 200);
    return false;
  }

  json take() { return std::move(root_); }
  const std::string& error() const { return error_; }

 private:
  // Places a value where the parser is: the root, the next array element, or
  // the slot of the last key.
  template <typename V>
  json* place(V&& v) {
    if (++values_ > limits_.max_values) {
      error_ = "the JSON body has more than " + std::to_string(limits_.max_values) + " values";
      return nullptr;
    }
    if (stack_.empty()) {
      root_ = json(std::forward<V>(v));
      return &root_;
    }
    json* top = stack_.back();
    if (top->is_array()) {
      top->emplace_back(std::forward<V>(v));
      return &top->back();
    }
    *key_slot_ = json(std::forward<V>(v));
    return key_slot_;
  }
  template <typename V>
  bool put(V&& v) {
    return place(std::forward<V>(v)) != nullptr;
  }
  bool open(json container) {
    if (static_cast<int32_t>(stack_.size()) >= limits_.max_depth) {
      error_ = "the JSON body nests deeper than " + std::to_string(limits_.max_depth) + " levels";
      return false;
    }
    json* slot = place(std::move(container));
    if (slot == nullptr) return false;
    stack_.push_back(slot);
    return true;
  }

  const JsonLimits& limits_;
  json root_;
  std::vector<json*> stack_;  // open arrays and objects, innermost last
  json* key_slot_ = nullptr;  // where the value after a key goes
  size_t values_ = 0;
  std::string error_;
};

}  // namespace

Result<nlohmann::json> parse_json_bounded(std::string_view text, const JsonLimits& limits) {
  BoundedBuilder builder(limits);
  // Pointers into the body: no copy. strict: nothing may follow the value.
  const bool ok = json::sax_parse(text.begin(), text.end(), &builder,
                                  nlohmann::json::input_format_t::json, /*strict=*/true);
  if (!ok) {
    if (builder.error().empty()) return make_error("invalid JSON");
    return make_error(builder.error());
  }
  return builder.take();
}

}  // namespace snug::server
