// Test helper: writes the converter-style tiny models (tests/common/tiny_model.h) into a
// directory, for the reference test that loads them with llama.cpp as well.
//   write_fixture_tool DIR  ->  DIR/tiny-bpe-f32.gguf, DIR/tiny-spm-f32.gguf
#include <cstdio>
#include <string>

#include "tiny_model.h"

int main(int argc, char** argv) {
  using namespace snug::testing;
  if (argc != 2) {
    std::fprintf(stderr, "usage: write_fixture_tool DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  for (auto [vocab, name] : {std::pair{TinyVocab::kBpe, "tiny-bpe-f32.gguf"},
                             std::pair{TinyVocab::kSpm, "tiny-spm-f32.gguf"}}) {
    auto st = build_tiny_model(converter_style_spec(vocab)).write(dir + "/" + name);
    if (!st.ok()) {
      std::fprintf(stderr, "write_fixture_tool: %s\n", st.error().message.c_str());
      return 1;
    }
  }
  return 0;
}
