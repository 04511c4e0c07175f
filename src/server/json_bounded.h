// Parsing an untrusted JSON body into a tree whose size is bounded before it
// is built: nesting depth and the number of values are counted while parsing
// (nlohmann's SAX interface), so a deep or huge body is refused after reading
// at most the values the limit allows, and no exception leaves this file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/result.h"

namespace snug::server {

struct JsonLimits {
  int32_t max_depth = 16;     // arrays and objects nested deeper: refused
  size_t max_values = 65536;  // scalars, arrays and objects in all: refused beyond
};

// The tree, or a one-line Error: the parser's message (position, what was
// expected; invalid UTF-8 in a string is one) with the input's bytes quoted
// printable, or which limit the body crossed.
Result<nlohmann::json> parse_json_bounded(std::string_view text, const JsonLimits& limits);

}  // namespace snug::server
