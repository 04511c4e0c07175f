// Header-only Llama-layout GGUF files (tensor infos without data) for the
// planner tests: Llama 3.1 70B's shapes by default, or absurd ones.
#pragma once

#include <filesystem>
#include <string>

#include "gguf/gguf.h"

namespace snug::testing {

// Llama 3.1 70B's shapes, tensor infos only (the file is a few tens of KB).
inline std::string write_llama_header(const std::string& name, int32_t layers = 80,
                                      int32_t kv_heads = 8, int32_t head_dim = 128,
                                      int32_t heads = 64, int32_t embd = 8192) {
  gguf::Writer w;
  w.set_string("general.architecture", "llama");
  w.set_string("general.name", "Llama-shaped 70B (header only)");
  w.set_u32("llama.block_count", static_cast<uint32_t>(layers));
  w.set_u32("llama.context_length", 131072);
  w.set_u32("llama.embedding_length", static_cast<uint32_t>(embd));
  w.set_u32("llama.feed_forward_length", 28672);
  w.set_u32("llama.attention.head_count", static_cast<uint32_t>(heads));
  w.set_u32("llama.attention.head_count_kv", static_cast<uint32_t>(kv_heads));
  w.set_u32("llama.attention.key_length", static_cast<uint32_t>(head_dim));
  w.set_u32("llama.attention.value_length", static_cast<uint32_t>(head_dim));
  const int64_t vocab = 128256, ff = 28672, E = embd;
  const int64_t q = int64_t{heads} * head_dim, kv = int64_t{kv_heads} * head_dim;
  w.add_tensor_info("token_embd.weight", tensor::DType::kQ4_K, {E, vocab});
  w.add_tensor_info("output_norm.weight", tensor::DType::kF32, {E});
  w.add_tensor_info("output.weight", tensor::DType::kQ6_K, {E, vocab});
  for (int32_t l = 0; l < layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    w.add_tensor_info(p + "attn_norm.weight", tensor::DType::kF32, {E});
    w.add_tensor_info(p + "ffn_norm.weight", tensor::DType::kF32, {E});
    w.add_tensor_info(p + "attn_q.weight", tensor::DType::kQ4_K, {E, q});
    w.add_tensor_info(p + "attn_k.weight", tensor::DType::kQ4_K, {E, kv});
    w.add_tensor_info(p + "attn_v.weight", tensor::DType::kQ6_K, {E, kv});
    w.add_tensor_info(p + "attn_output.weight", tensor::DType::kQ4_K, {q, E});
    w.add_tensor_info(p + "ffn_gate.weight", tensor::DType::kQ4_K, {E, ff});
    w.add_tensor_info(p + "ffn_up.weight", tensor::DType::kQ4_K, {E, ff});
    w.add_tensor_info(p + "ffn_down.weight", tensor::DType::kQ6_K, {ff, E});
  }
  const auto path = (std::filesystem::temp_directory_path() / name).string();
  if (!w.write(path).ok()) return "";
  return path;
}

}  // namespace snug::testing
