// An error as the OpenAI API reports it: an HTTP status and the body
// {"error": {"message", "type", "param", "code"}}. Everything the server
// refuses is one of these, with a one-line message that names the problem.
#pragma once

#include <optional>
#include <string>
#include <utility>

namespace snug::server {

struct ApiError {
  int status = 400;
  std::string message;  // one line, printable
  std::string param;    // the request field at fault; empty: null
  std::string code;     // e.g. "invalid_api_key", "model_not_found"; empty: null
};

// OpenAI's `type` for a status: "invalid_request_error" (400, 404, 413...),
// "authentication_error" (401), "server_error" (5xx)...
const char* error_type(int status);

// The JSON body, serialized; invalid UTF-8 in the message is replaced.
std::string error_body(const ApiError& e);

ApiError bad_request(std::string message, std::string param = {});

// A value or the ApiError that refused it.
template <typename T>
class [[nodiscard]] ApiResult {
 public:
  ApiResult(T value) : value_(std::move(value)) {}         // NOLINT(google-explicit-constructor)
  ApiResult(ApiError error) : error_(std::move(error)) {}  // NOLINT(google-explicit-constructor)
  bool ok() const { return value_.has_value(); }
  T& value() { return *value_; }
  const T& value() const { return *value_; }
  T* operator->() { return &*value_; }
  const ApiError& error() const { return error_; }

 private:
  std::optional<T> value_;
  ApiError error_;
};

}  // namespace snug::server
