// The malformed-GGUF catalogue: each case is the tiny test model (tiny_model.h)
// with exactly one defect, and a distinctive part of the one-line error that
// loading it must produce. Used by malformed_test.cpp (in process, with a memory
// bound), malformed_cli_test.cpp (through the snug binary) and fuzz/make_seeds.cpp
// (as seeds for the GGUF fuzzer).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace snug::testing {

struct MalformedCase {
  std::string name;  // a short identifier, usable as a file name
  std::string cls;   // the defect class it belongs to (several cases may share one)
  std::vector<uint8_t> bytes;
  std::string expect;  // substring of the error message
};

// Every case, in a fixed order. Builds the valid tiny model once.
const std::vector<MalformedCase>& malformed_catalogue();

// The valid tiny model the cases start from.
const std::vector<uint8_t>& valid_tiny_bytes();

}  // namespace snug::testing
