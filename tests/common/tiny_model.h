// A tiny Llama-family GGUF model built in memory by the tests: random f32 (or
// quantized) weights, a byte-level BPE vocabulary with a few merges, ChatML
// special tokens and template. Small enough that every test can make its own.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "tensor/dtype.h"

namespace snug::testing {

struct TinyModelSpec {
  int32_t n_layers = 2;
  int32_t n_embd = 64;
  int32_t n_ff = 128;
  int32_t n_heads = 4;
  int32_t n_kv_heads = 2;
  int32_t n_ctx = 256;
  tensor::DType matrix_type = tensor::DType::kF32;
  bool tied_output = true;
  // Multiplies the query and key weights: above 1, attention scores spread
  // wider and attention depends more on position (the default's is nearly flat).
  float qk_scale = 1.f;
  uint32_t seed = 1234;
  std::string architecture = "llama";
};

// Token ids of the vocabulary: 0..255 are the bytes (GPT-2 mapping), then merges, then specials.
constexpr int32_t kTinyEndOfText = 256 + 4;  // "<|endoftext|>" (bos and eos)
constexpr int32_t kTinyImStart = 256 + 5;
constexpr int32_t kTinyImEnd = 256 + 6;
constexpr int32_t kTinyVocab = 256 + 7;

gguf::Writer build_tiny_model(const TinyModelSpec& spec = {});
// Writes it to a file under the temp directory and returns the path.
std::string write_tiny_model(const std::string& name, const TinyModelSpec& spec = {});

}  // namespace snug::testing
