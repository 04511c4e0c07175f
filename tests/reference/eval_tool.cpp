// Test helper: evaluates a token sequence with snug and writes the logits of
// every position, so the reference test can compare them with llama.cpp's.
//   eval_tool MODEL OUT.f32 [THREADS] [CHUNK] [K_TYPE] [V_TYPE] < "id id id ..."
// K_TYPE, V_TYPE: the KV cache's types (f16, q8_0, q4_0; default f16).
//   eval_tool --gelu OUT.f32   writes gelu(x) by tensor::gelu_mul for every f16 x
// OUT.f32 holds n_tokens x n_vocab little-endian floats, or with
// SNUG_EVAL_FROM=P in the environment only the rows of positions >= P (a long
// run of a large-vocabulary model without gigabytes of logits).
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string_view>
#include <vector>

#include "kv/kv_cache.h"
#include "model/model.h"
#include "tensor/fp16.h"
#include "tensor/kernels.h"

int main(int argc, char** argv) {
  using namespace snug;
  if (argc < 3) {
    std::fprintf(stderr, "usage: eval_tool MODEL OUT.f32 [THREADS] < token ids\n");
    return 2;
  }
  if (std::string_view(argv[1]) == "--gelu") {
    std::vector<float> x(1u << 16), one(1u << 16, 1.f);
    for (uint32_t i = 0; i < x.size(); ++i)
      x[i] = tensor::detail::f16_to_f32(static_cast<uint16_t>(i));
    tensor::gelu_mul(x.data(), one.data(), static_cast<int64_t>(x.size()));
    std::FILE* out = std::fopen(argv[2], "wb");
    if (!out || std::fwrite(x.data(), sizeof(float), x.size(), out) != x.size()) return 1;
    return std::fclose(out) == 0 ? 0 : 1;
  }
  // As the snug binary: SNUG_SIMD_TARGET=AVX2 runs the AVX2 kernels on an
  // AVX-512 CPU (the reference tests' identity case on any AVX2-capable CPU).
  if (const char* t = std::getenv("SNUG_SIMD_TARGET"); t != nullptr && *t != 0) {
    const Status st = tensor::limit_simd_target(t);
    if (!st.ok()) {
      std::fprintf(stderr, "eval_tool: %s\n", st.error().message.c_str());
      return 2;
    }
  }
  std::vector<int32_t> ids;
  for (int32_t id; std::cin >> id;) ids.push_back(id);
  memory::Ledger ledger;
  auto m = model::Model::load(argv[1], &ledger);
  if (!m.ok()) {
    std::fprintf(stderr, "eval_tool: %s\n", m.error().message.c_str());
    return 1;
  }
  const auto& c = (*m)->config();
  const int threads = argc > 3 ? std::atoi(argv[3]) : 2;
  const int chunk = argc > 4 ? std::atoi(argv[4]) : 64;  // tokens per forward pass
  const auto n = static_cast<int32_t>(ids.size());
  const char* from_env = std::getenv("SNUG_EVAL_FROM");
  const int32_t from = from_env != nullptr ? std::atoi(from_env) : 0;
  auto layout = (*m)->kv_layout(tensor::DType::kF16);
  for (int i = 5; i < argc && i < 7; ++i) {
    tensor::DType& t = i == 5 ? layout.k_type : layout.v_type;
    const std::string_view name = argv[i];
    if (name == "q8_0") {
      t = tensor::DType::kQ8_0;
    } else if (name == "q4_0") {
      t = tensor::DType::kQ4_0;
    } else if (name != "f16") {
      std::fprintf(stderr, "eval_tool: unknown KV type '%s'\n", argv[i]);
      return 2;
    }
  }
  model::WorkspaceShape shape{
      .max_tokens = chunk, .max_logits = chunk, .max_ctx = n, .n_threads = threads};
  // What the plan counts: sliding-window layers give their blocks back as the text goes.
  auto cache = kv::KvCache::create(
      layout, static_cast<int32_t>(layout.sequence_blocks(n, shape.max_tokens)), &ledger);
  auto ws =
      model::Workspace::create(c, model::plan_workspace(c, (*m)->matrix_types(), shape), &ledger);
  if (!cache.ok() || !ws.ok()) return 1;
  ThreadPool pool(threads);
  kv::SeqId seq = cache->create_sequence();
  std::FILE* out = std::fopen(argv[2], "wb");
  if (!out) return 1;
  model::Batch batch;
  for (int32_t off = 0; off < n; off += shape.max_tokens) {
    batch.clear();
    const int32_t len = std::min(shape.max_tokens, n - off);
    // A one-token chunk takes llama.cpp's single-token order, as llama.cpp's does.
    for (int32_t i = 0; i < len; ++i)
      batch.add(ids[static_cast<size_t>(off + i)], seq, off + i >= from, /*generated=*/len == 1);
    auto st = (*m)->forward(batch, *cache, *ws, pool);
    if (!st.ok()) {
      std::fprintf(stderr, "eval_tool: %s\n", st.error().message.c_str());
      return 1;
    }
    std::fwrite(ws->logits, sizeof(float),
                static_cast<size_t>(batch.n_logits()) * static_cast<size_t>(c.n_vocab), out);
  }
  std::fclose(out);
  return 0;
}
