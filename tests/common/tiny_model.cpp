#include "tiny_model.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <random>

#include "base/check.h"
#include "tensor/kernels.h"
#include "text/unicode.h"
#include "tiny_spm.h"

namespace snug::testing {
namespace {

std::string utf8(uint32_t cpt) {
  std::string s;
  if (cpt < 0x80) {
    s += static_cast<char>(cpt);
  } else if (cpt < 0x800) {
    s += static_cast<char>(0xC0 | (cpt >> 6));
    s += static_cast<char>(0x80 | (cpt & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (cpt >> 12));
    s += static_cast<char>(0x80 | ((cpt >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cpt & 0x3F));
  }
  return s;
}

std::vector<float> random_floats(std::mt19937& rng, int64_t rows, int64_t cols, float scale) {
  std::normal_distribution<float> nd(0.f, scale);
  std::vector<float> f(static_cast<size_t>(rows * cols));
  for (auto& x : f) x = nd(rng);
  return f;
}

// Row-major rows x cols floats in `type`'s row format.
std::vector<uint8_t> pack(tensor::DType type, const std::vector<float>& f, int64_t rows,
                          int64_t cols) {
  const size_t rb = *tensor::row_bytes(type, cols);
  std::vector<uint8_t> out(rb * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r)
    tensor::quantize_row(type, &f[static_cast<size_t>(r * cols)], out.data() + r * rb, cols);
  return out;
}

std::vector<uint8_t> random_matrix(std::mt19937& rng, tensor::DType type, int64_t rows,
                                   int64_t cols, float scale) {
  return pack(type, random_floats(rng, rows, cols, scale), rows, cols);
}

// Zero rows appended (to_rows > rows) or zero columns appended to every row (to_cols > cols).
std::vector<float> zero_pad(const std::vector<float>& f, int64_t rows, int64_t cols,
                            int64_t to_rows, int64_t to_cols) {
  std::vector<float> out(static_cast<size_t>(to_rows * to_cols), 0.f);
  for (int64_t r = 0; r < rows; ++r)
    std::copy_n(&f[static_cast<size_t>(r * cols)], cols, &out[static_cast<size_t>(r * to_cols)]);
  return out;
}

std::vector<uint8_t> norm_weights(std::mt19937& rng, int64_t n) {
  std::uniform_real_distribution<float> u(0.8f, 1.2f);
  std::vector<float> f(static_cast<size_t>(n));
  for (auto& x : f) x = u(rng);
  std::vector<uint8_t> out(f.size() * 4);
  std::memcpy(out.data(), f.data(), out.size());
  return out;
}

// The vocabulary's own special ids, with spec.special_ids replacing or adding keys.
void set_special_ids(gguf::Writer& w, const TinyModelSpec& s,
                     std::vector<std::pair<std::string, uint32_t>> ids) {
  for (const auto& override_id : s.special_ids) {
    auto it = std::find_if(ids.begin(), ids.end(),
                           [&](const auto& p) { return p.first == override_id.first; });
    if (it != ids.end()) {
      it->second = override_id.second;
    } else {
      ids.push_back(override_id);
    }
  }
  for (const auto& [key, value] : ids) w.set_u32("tokenizer.ggml." + key, value);
}

int32_t write_bpe_vocab(gguf::Writer& w, const TinyModelSpec& s) {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  for (int b = 0; b < 256; ++b) {
    tokens.push_back(utf8(text::unicode::byte_to_cpt(static_cast<uint8_t>(b))));
    types.push_back(1);
  }
  const std::string sp = utf8(text::unicode::byte_to_cpt(' '));
  for (const char* m : {"he", "ll", "llo"}) {
    tokens.emplace_back(m);
    types.push_back(1);
  }
  tokens.push_back(sp + "t");
  types.push_back(1);
  for (const char* special : {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}) {
    tokens.emplace_back(special);
    types.push_back(3);
  }
  SNUG_CHECK(static_cast<int32_t>(tokens.size()) == kTinyVocab);
  w.set_string("tokenizer.ggml.model", "gpt2");
  w.set_string("tokenizer.ggml.pre", s.bpe_pre);
  w.set_strings("tokenizer.ggml.tokens", tokens);
  w.set_i32s("tokenizer.ggml.token_type", types);
  w.set_strings("tokenizer.ggml.merges", {"h e", "l l", "ll o", sp + " t"});
  set_special_ids(w, s, {{"bos_token_id", kTinyEndOfText}, {"eos_token_id", kTinyEndOfText}});
  w.set_bool("tokenizer.ggml.add_bos_token", false);
  w.set_string("tokenizer.chat_template",
               "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
               "message['content'] + "
               "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
               "'<|im_start|>assistant\n' }}{% endif %}");

  return kTinyVocab;
}

int32_t write_spm_vocab(gguf::Writer& w, const TinyModelSpec& s) {
  const TinySpmTokens t = tiny_spm_tokens();
  SNUG_CHECK(static_cast<int32_t>(t.tokens.size()) == kTinySpmVocab);
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_strings("tokenizer.ggml.tokens", t.tokens);
  w.set_f32s("tokenizer.ggml.scores", t.scores);
  w.set_i32s("tokenizer.ggml.token_type", t.types);
  set_special_ids(w, s, {{"unknown_token_id", 0}, {"bos_token_id", 1}, {"eos_token_id", 2}});
  return kTinySpmVocab;
}

}  // namespace

int32_t tiny_vocab_size(const TinyModelSpec& spec) {
  return spec.vocab == TinyVocab::kSpm ? kTinySpmVocab : kTinyVocab;
}

TinyModelSpec converter_style_spec(TinyVocab vocab) {
  TinyModelSpec s;
  s.vocab = vocab;
  s.n_ff = 100;
  s.matrix_type = tensor::DType::kF32;
  s.tied_output = vocab == TinyVocab::kSpm;
  s.embd_scale = 0.05f;  // tied logits of a few units, not tens: close calls in greedy runs
  s.bpe_pre = "gpt-2";   // a name llama.cpp knows ("gpt2" is snug's alias)
  s.special_ids = {{"seperator_token_id", 0xFFFFFFFFu},
                   {"padding_token_id", static_cast<uint32_t>(tiny_vocab_size(s))}};
  return s;
}

gguf::Writer build_tiny_model(const TinyModelSpec& s) {
  gguf::Writer w;
  const std::string a = s.architecture + ".";
  w.set_string("general.architecture", s.architecture);
  w.set_string("general.name", s.name);
  w.set_u32(a + "block_count", static_cast<uint32_t>(s.n_layers));
  w.set_u32(a + "context_length", static_cast<uint32_t>(s.n_ctx));
  w.set_u32(a + "embedding_length", static_cast<uint32_t>(s.n_embd));
  w.set_u32(a + "feed_forward_length", static_cast<uint32_t>(std::max(s.n_ff, s.n_ff_stored)));
  w.set_u32(a + "attention.head_count", static_cast<uint32_t>(s.n_heads));
  w.set_u32(a + "attention.head_count_kv", static_cast<uint32_t>(s.n_kv_heads));
  w.set_f32(a + "rope.freq_base", s.rope_base);
  w.set_f32(a + "attention.layer_norm_rms_epsilon", 1e-5f);
  if (!s.rope_scaling_type.empty()) w.set_string(a + "rope.scaling.type", s.rope_scaling_type);
  if (s.rope_scaling_factor != 0.f) w.set_f32(a + "rope.scaling.factor", s.rope_scaling_factor);
  if (s.rope_orig_ctx != 0)
    w.set_u32(a + "rope.scaling.original_context_length", static_cast<uint32_t>(s.rope_orig_ctx));
  const bool gemma = s.architecture == "gemma3";
  const bool qk_norms = gemma || s.architecture == "qwen3";
  const bool biases = s.architecture == "qwen2";
  if (gemma && s.sliding_window > 0)
    w.set_u32(a + "attention.sliding_window", static_cast<uint32_t>(s.sliding_window));

  const int32_t n_vocab =
      s.vocab == TinyVocab::kSpm ? write_spm_vocab(w, s) : write_bpe_vocab(w, s);

  std::mt19937 rng(s.seed);
  const int64_t hd = s.n_embd / s.n_heads;
  const float ws = 0.5f / std::sqrt(static_cast<float>(s.n_embd));
  auto add = [&w](const std::string& name, tensor::DType t, std::vector<int64_t> dims,
                  std::vector<uint8_t> data) { w.add_tensor(name, t, std::move(dims), data); };
  add("token_embd.weight", tensor::DType::kF32, {s.n_embd, n_vocab},
      random_matrix(rng, tensor::DType::kF32, n_vocab, s.n_embd, s.embd_scale));
  add("output_norm.weight", tensor::DType::kF32, {s.n_embd}, norm_weights(rng, s.n_embd));
  if (s.rope_freqs) {
    std::uniform_real_distribution<float> divisor(1.f, 8.f);
    std::vector<float> f(static_cast<size_t>(hd / 2));
    for (float& x : f) x = divisor(rng);
    add("rope_freqs.weight", tensor::DType::kF32, {hd / 2},
        pack(tensor::DType::kF32, f, 1, hd / 2));
  }
  if (!s.tied_output)
    add("output.weight", s.matrix_type, {s.n_embd, n_vocab},
        random_matrix(rng, s.matrix_type, n_vocab, s.n_embd, ws));
  for (int32_t l = 0; l < s.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    const auto mt = s.matrix_type;
    add(p + "attn_norm.weight", tensor::DType::kF32, {s.n_embd}, norm_weights(rng, s.n_embd));
    add(p + "attn_q.weight", mt, {s.n_embd, s.n_heads * hd},
        random_matrix(rng, mt, s.n_heads * hd, s.n_embd, ws * s.qk_scale));
    add(p + "attn_k.weight", mt, {s.n_embd, s.n_kv_heads * hd},
        random_matrix(rng, mt, s.n_kv_heads * hd, s.n_embd, ws * s.qk_scale));
    add(p + "attn_v.weight", mt, {s.n_embd, s.n_kv_heads * hd},
        random_matrix(rng, mt, s.n_kv_heads * hd, s.n_embd, ws));
    add(p + "attn_output.weight", mt, {s.n_heads * hd, s.n_embd},
        random_matrix(rng, mt, s.n_embd, s.n_heads * hd, ws));
    add(p + "ffn_norm.weight", tensor::DType::kF32, {s.n_embd}, norm_weights(rng, s.n_embd));
    // Drawn for n_ff units whatever the stored width, so a padded twin has the same weights.
    const int64_t ff = std::max(s.n_ff, s.n_ff_stored);
    const auto gate = random_floats(rng, s.n_ff, s.n_embd, ws);
    const auto up = random_floats(rng, s.n_ff, s.n_embd, ws);
    const auto down = random_floats(rng, s.n_embd, s.n_ff, ws);
    add(p + "ffn_gate.weight", mt, {s.n_embd, ff},
        pack(mt, zero_pad(gate, s.n_ff, s.n_embd, ff, s.n_embd), ff, s.n_embd));
    add(p + "ffn_up.weight", mt, {s.n_embd, ff},
        pack(mt, zero_pad(up, s.n_ff, s.n_embd, ff, s.n_embd), ff, s.n_embd));
    add(p + "ffn_down.weight", mt, {ff, s.n_embd},
        pack(mt, zero_pad(down, s.n_embd, s.n_ff, s.n_embd, ff), s.n_embd, ff));
    if (qk_norms) {
      add(p + "attn_q_norm.weight", tensor::DType::kF32, {hd}, norm_weights(rng, hd));
      add(p + "attn_k_norm.weight", tensor::DType::kF32, {hd}, norm_weights(rng, hd));
    }
    if (biases) {
      for (auto [name, rows] : {std::pair{"attn_q.bias", s.n_heads * hd},
                                {"attn_k.bias", s.n_kv_heads * hd},
                                {"attn_v.bias", s.n_kv_heads * hd}}) {
        add(p + name, tensor::DType::kF32, {rows},
            pack(tensor::DType::kF32, random_floats(rng, 1, rows, 0.5f), 1, rows));
      }
    }
    if (s.output_biases) {
      for (const char* name : {"attn_output.bias", "ffn_down.bias"}) {
        add(p + name, tensor::DType::kF32, {s.n_embd},
            pack(tensor::DType::kF32, random_floats(rng, 1, s.n_embd, 0.5f), 1, s.n_embd));
      }
    }
    if (gemma) {
      add(p + "post_attention_norm.weight", tensor::DType::kF32, {s.n_embd},
          norm_weights(rng, s.n_embd));
      add(p + "post_ffw_norm.weight", tensor::DType::kF32, {s.n_embd}, norm_weights(rng, s.n_embd));
    }
  }
  return w;
}

std::string write_tiny_model(const std::string& name, const TinyModelSpec& spec) {
  auto dir = std::filesystem::temp_directory_path() / "snug_tests";
  std::filesystem::create_directories(dir);
  std::string path = (dir / name).string();
  auto st = build_tiny_model(spec).write(path);
  SNUG_CHECK(st.ok());
  return path;
}

}  // namespace snug::testing
