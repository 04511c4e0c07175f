// Fuzzes everything that reads a GGUF file before a token is computed, in the
// order the CLI runs it: testing::replay_load (tests/gguf/load_replay.h), which
// gguf_malformed_test also runs on every file in tests/gguf/regressions/. Every
// step may refuse the input with an Error; an abort, a sanitizer report, a leak
// or a timeout is a bug.
#include <cstddef>
#include <cstdint>

#include "load_replay.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)snug::testing::replay_load({data, size});
  return 0;
}
