// A tiny Llama-family (or Gemma 3) GGUF model built in memory by the tests: random f32 (or
// quantized) weights, a byte-level BPE vocabulary with a few merges, ChatML
// special tokens and template. Small enough that every test can make its own.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "gguf/gguf.h"
#include "tensor/dtype.h"

namespace snug::testing {

enum class TinyVocab {
  kBpe,  // byte-level BPE with a few merges and ChatML specials (the ids below)
  kSpm,  // the SentencePiece vocabulary of tiny_spm.h (<unk> 0, <s> 1, </s> 2; adds BOS)
};

struct TinyModelSpec {
  std::string name = "tiny test model";  // general.name
  int32_t n_layers = 2;
  int32_t n_embd = 64;
  int32_t n_ff = 128;
  // When larger than n_ff: the feed-forward tensors are this wide, the units past n_ff all
  // zero, so the model computes what the n_ff-wide one with the same seed does.
  int32_t n_ff_stored = 0;
  int32_t n_heads = 4;
  int32_t n_kv_heads = 2;
  int32_t n_ctx = 256;
  tensor::DType matrix_type = tensor::DType::kF32;
  bool tied_output = true;
  // Multiplies the query and key weights: above 1, attention scores spread
  // wider and attention depends more on position (the default's is nearly flat).
  float qk_scale = 1.f;
  float embd_scale = 1.f;  // standard deviation of token_embd (tied: also of the output rows)
  uint32_t seed = 1234;
  // Or "gemma3" (q/k norms, post-norms, sliding window), "qwen2" (q/k/v biases), "qwen3" (q/k
  // norms).
  std::string architecture = "llama";
  // attn_output.bias and ffn_down.bias, which llama.cpp's llama graph adds when a file has them
  // (snug's structured cuts write them).
  bool output_biases = false;
  int32_t sliding_window = 8;  // gemma3.attention.sliding_window (gemma3 only; 0: absent)
  float rope_base = 10000.f;   // <arch>.rope.freq_base
  // Rope scaling keys, written when set: rope.scaling.type ("linear", "yarn"), .factor,
  // .original_context_length; and Llama 3's rope_freqs.weight (random divisors in [1, 8]).
  std::string rope_scaling_type;
  float rope_scaling_factor = 0.f;
  int32_t rope_orig_ctx = 0;
  bool rope_freqs = false;
  TinyVocab vocab = TinyVocab::kBpe;
  std::string bpe_pre = "gpt2";  // tokenizer.ggml.pre of the BPE vocabulary
  // tokenizer.ggml.<key> (u32) written instead of the vocabulary's own value or added, e.g.
  // {"padding_token_id", 0xFFFFFFFF}: the "none" that llama.cpp's converters write.
  std::vector<std::pair<std::string, uint32_t>> special_ids;
};

// Token ids of the vocabulary: 0..255 are the bytes (GPT-2 mapping), then merges, then specials.
constexpr int32_t kTinyEndOfText = 256 + 4;  // "<|endoftext|>" (bos and eos)
constexpr int32_t kTinyImStart = 256 + 5;
constexpr int32_t kTinyImEnd = 256 + 6;
constexpr int32_t kTinyVocab = 256 + 7;
constexpr int32_t kTinySpmVocab = 3 + 256 + 22;

int32_t tiny_vocab_size(const TinyModelSpec& spec);

// A model as llama.cpp's converters write them: F32 weights everywhere, a feed-forward width
// that is not a multiple of 32, tokenizer.ggml.seperator_token_id = -1 (0xFFFFFFFF, "none")
// and a padding_token_id one past the vocabulary (a token nothing uses).
TinyModelSpec converter_style_spec(TinyVocab vocab);

gguf::Writer build_tiny_model(const TinyModelSpec& spec = {});
// Writes it to a file under the temp directory and returns the path.
std::string write_tiny_model(const std::string& name, const TinyModelSpec& spec = {});

}  // namespace snug::testing
