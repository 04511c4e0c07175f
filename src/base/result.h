// Expected failures travel as values: a Result<T> holds either a T or an Error
// whose message a user can act on. Exceptions never cross a layer boundary;
// programmer errors use SNUG_CHECK (check.h) instead.
#pragma once

#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace snug {

struct Error {
  std::string message;  // one line, names the problem and the input at fault
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }
  T& operator*() & { return std::get<0>(v_); }
  const T& operator*() const& { return std::get<0>(v_); }

  const Error& error() const { return std::get<1>(v_); }
  Error take_error() { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

// Result<void>: success or an Error.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error error) : error_(std::move(error)), failed_(true) {}  // NOLINT

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const { return error_; }
  Error take_error() { return std::move(error_); }

 private:
  Error error_;
  bool failed_ = false;
};

inline Status ok_status() {
  return {};
}

inline std::string to_error_piece(const std::string& s) {
  return s;
}
inline std::string to_error_piece(std::string_view s) {
  return std::string(s);
}
inline std::string to_error_piece(const char* s) {
  return s;
}
inline std::string to_error_piece(char c) {
  return std::string(1, c);
}
template <typename N>
requires std::is_arithmetic_v<N> std::string to_error_piece(N n) {
  return std::to_string(n);
}

// Text from an input file (a metadata key, a tensor name, a token) as an error
// message may quote it: bytes outside printable ASCII as \xNN, a backslash
// doubled, cut at max_bytes with "..." (a hostile length can stretch a name
// over the rest of the file), so the message stays one short line.
std::string printable(std::string_view s, size_t max_bytes = 64);

// Builds an Error from pieces: make_error("tensor '", name, "' is truncated").
template <typename... Parts>
Error make_error(const Parts&... parts) {
  std::string s;
  (s.append(to_error_piece(parts)), ...);
  return Error{std::move(s)};
}

}  // namespace snug

// Propagates a failed Status/Result from the current function.
#define SNUG_RETURN_IF_ERROR(expr)                            \
  do {                                                        \
    auto snug_status_ = (expr);                               \
    if (!snug_status_.ok()) return snug_status_.take_error(); \
  } while (0)

#define SNUG_CONCAT_INNER_(a, b) a##b
#define SNUG_CONCAT_(a, b) SNUG_CONCAT_INNER_(a, b)
// SNUG_ASSIGN_OR_RETURN(auto x, make_x()) declares x or returns the error.
// decl is a declaration, so it cannot be parenthesised.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define SNUG_ASSIGN_OR_RETURN(decl, expr)                     \
  auto SNUG_CONCAT_(snug_result_, __LINE__) = (expr);         \
  if (!SNUG_CONCAT_(snug_result_, __LINE__).ok())             \
    return SNUG_CONCAT_(snug_result_, __LINE__).take_error(); \
  decl = std::move(SNUG_CONCAT_(snug_result_, __LINE__)).value()
// NOLINTEND(bugprone-macro-parentheses)
