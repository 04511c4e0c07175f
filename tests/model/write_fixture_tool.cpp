// Test helper: writes the converter-style tiny models (tests/common/tiny_model.h) into a
// directory, for the reference test that loads them with llama.cpp as well.
//   write_fixture_tool DIR  ->  DIR/tiny-bpe-f32.gguf, DIR/tiny-spm-f32.gguf, and the families'
//   DIR/tiny-qwen2.gguf, DIR/tiny-qwen3.gguf, DIR/tiny-gemma3.gguf and the rope-scaled Llamas
//   DIR/tiny-llama-{linear,yarn,freqs}.gguf (BPE vocabulary, F32)
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "tiny_model.h"

int main(int argc, char** argv) {
  using namespace snug::testing;
  if (argc != 2) {
    std::fprintf(stderr, "usage: write_fixture_tool DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  std::vector<std::pair<TinyModelSpec, std::string>> models;
  models.emplace_back(converter_style_spec(TinyVocab::kBpe), "tiny-bpe-f32.gguf");
  models.emplace_back(converter_style_spec(TinyVocab::kSpm), "tiny-spm-f32.gguf");
  for (const char* arch : {"qwen2", "qwen3", "gemma3"}) {
    TinyModelSpec s = converter_style_spec(TinyVocab::kBpe);
    s.architecture = arch;
    s.qk_scale = 2;  // attention that depends on position
    if (s.architecture == "gemma3") {
      s.n_layers = 7;  // layer 5 global, the others over the last 8 positions
      s.sliding_window = 8;
      s.rope_base = 1e6f;
    }
    models.emplace_back(s, std::string("tiny-") + arch + ".gguf");
  }
  // Llama with each rope scaling llama.cpp reads: linear, YaRN (beyond a 64-token original
  // context) and Llama 3's per-pair frequency divisors.
  for (const char* kind : {"linear", "yarn", "freqs"}) {
    TinyModelSpec s = converter_style_spec(TinyVocab::kBpe);
    s.qk_scale = 2;
    if (std::string(kind) == "freqs") {
      s.rope_freqs = true;
    } else {
      s.rope_scaling_type = kind;
      s.rope_scaling_factor = 4.f;
      s.rope_orig_ctx = 64;
    }
    models.emplace_back(s, std::string("tiny-llama-") + kind + ".gguf");
  }
  for (const auto& [spec, name] : models) {
    auto st = build_tiny_model(spec).write(dir + "/" + name);
    if (!st.ok()) {
      std::fprintf(stderr, "write_fixture_tool: %s\n", st.error().message.c_str());
      return 1;
    }
  }
  return 0;
}
