// Kernel microbenchmarks: matmul_rows per weight format at SmolLM2-135M and
// Gemma-3-270M shapes (rows x cols = outputs x inputs), single thread, for
// generation (n_tok = 1), batched generation (16 sequences: n_tok = 16) and
// prompt processing (n_tok = 128); the scalar
// reference beside the SIMD path at n_tok = 1; dot and dequantize throughput.
// Each SIMD matmul runs once per Highway target this CPU supports from AVX2 up
// (name suffix /AVX3_DL, /AVX3, /AVX2), so that a wider target is seen side
// by side with the one below it on the same machine.
// Counters: weight_bytes/s (weight bytes streamed per second, the bound for
// n_tok = 1) and FLOP/s (2 * rows * cols * n_tok per call).
//
//   build-tensor/bench/kernels_bench --benchmark_filter=matmul/q4_1
#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <hwy/targets.h>

#include "base/thread_pool.h"
#include "memory/buffer.h"
#include "memory/ledger.h"
#include "tensor/fp16.h"
#include "tensor/kernels.h"
#include "tensor/kernels_ref.h"

namespace snug::tensor {
namespace {

std::vector<float> values(int64_t n, uint32_t seed) {
  std::vector<float> v(static_cast<size_t>(n));
  uint32_t s = seed;
  for (auto& x : v) {
    s = s * 1664525u + 1013904223u;
    x = static_cast<float>(static_cast<int32_t>(s >> 8) - (1 << 23)) / (1 << 23);
  }
  return v;
}

struct Shape {
  const char* model;
  int64_t rows, cols;
};

constexpr Shape kShapes[] = {
    {"smollm2", 576, 576},
    {"smollm2", 1536, 576},
    {"smollm2", 576, 1536},
    {"smollm2", 49152, 576},
    {"gemma3", 1024, 640},
    {"gemma3", 2048, 640},
    {"gemma3", 640, 2048},
    // SmolLM2-1.7B (bench/wide-model): larger than the last-level cache of most machines
    {"wide", 2048, 2048},
    {"wide", 8192, 2048},
    {"wide", 2048, 8192},
    {"wide", 49152, 2048},  // its tied output head: beyond any last-level cache
};
constexpr DType kTypes[] = {DType::kF32,  DType::kF16,    DType::kBF16,  DType::kQ4_0,
                            DType::kQ4_1, DType::kQ5_0,   DType::kQ5_1,  DType::kQ8_0,
                            DType::kQ2_K, DType::kQ3_K,   DType::kQ4_K,  DType::kQ5_K,
                            DType::kQ6_K, DType::kQ8_0NM, DType::kQ4_0NM};

void BM_Matmul(benchmark::State& st, DType type, Shape sh, int64_t n_tok, bool reference,
               int64_t target, bool packed) {
  hwy::SetSupportedTargetsForTest(target);
  const size_t rb = *row_bytes(type, sh.cols);
  std::vector<uint8_t> w(rb * sh.rows);
  const auto wf = values(sh.cols * 64, 1);  // 64 distinct rows, repeated
  for (int64_t r = 0; r < sh.rows; ++r) {
    quantize_row(type, wf.data() + (r % 64) * sh.cols, w.data() + r * rb, sh.cols);
  }
  const auto x = values(sh.cols * n_tok, 2);
  std::vector<uint8_t> qx(matmul_scratch_bytes(type, sh.cols, n_tok));
  quantize_activations(type, x.data(), sh.cols, sh.cols, n_tok, qx.data());
  std::vector<float> y(sh.rows * n_tok);
  MatView mv{type, w.data(), sh.rows, sh.cols, rb};
  // The packed form (MatView::packed), where the target takes one.
  std::vector<uint8_t> pk;
  if (packed) {
    pk.resize(static_cast<size_t>(matmul_packed_bytes(mv)) + 64);
    void* at = pk.data() + (64 - reinterpret_cast<uintptr_t>(pk.data()) % 64) % 64;
    matmul_pack(mv, at);
    mv.packed = at;
  }
  for ([[maybe_unused]] auto _ : st) {
    if (reference) {
      ref::matmul_rows(mv, qx.data(), n_tok, 0, sh.rows, y.data(), sh.rows);
    } else {
      matmul_rows(mv, qx.data(), n_tok, 0, sh.rows, y.data(), sh.rows);
    }
    benchmark::DoNotOptimize(y.data());
  }
  const double it = static_cast<double>(st.iterations());
  st.counters["weight_bytes/s"] =
      benchmark::Counter(it * static_cast<double>(w.size()), benchmark::Counter::kIsRate);
  st.counters["FLOP/s"] =
      benchmark::Counter(it * 2.0 * sh.rows * sh.cols * n_tok, benchmark::Counter::kIsRate);
  hwy::SetSupportedTargetsForTest(0);
}

// Every product of one SmolLM2-135M step, single thread: the 30 layers'
// q/k/v, output, gate/up and down matrices (106 M weights, 66 MB of q4_1:
// twice a 32 MiB last-level cache) each in its own place, one call per matrix
// over n_tok tokens, as a step calls them; unlike the shapes above, the rows
// arrive from DRAM, as in a server. pages: 4 KiB (a file's small folios) or
// 2 MiB (huge). threads > 1: each matrix split over a pool as the model's
// forward pass splits it (matmul_multi_converted). Counter: steps/s.
void BM_MatmulStep(benchmark::State& st, DType type, int64_t n_tok, bool packed, bool huge,
                   int threads, int64_t target) {
  hwy::SetSupportedTargetsForTest(target);
  struct Mat {
    int64_t rows, cols;
  };
  const Mat kLayer[] = {{960, 576}, {576, 576}, {3072, 576}, {576, 1536}};
  constexpr int kLayers = 30;
  std::vector<MatView> mats;
  std::vector<size_t> offsets, packed_offsets;
  size_t bytes = 0, packed_bytes = 0;
  for (int l = 0; l < kLayers; ++l) {
    for (const Mat& m : kLayer) {
      const size_t rb = *row_bytes(type, m.cols);
      mats.push_back(MatView{type, nullptr, m.rows, m.cols, rb});
      offsets.push_back(bytes);
      bytes += (rb * m.rows + 63) / 64 * 64;
      packed_offsets.push_back(packed_bytes);
      packed_bytes +=
          (static_cast<size_t>(std::max<int64_t>(matmul_packed_bytes(mats.back()), 0)) + 63) / 64 *
          64;
    }
  }
  auto buf = memory::Buffer::allocate(packed ? packed_bytes + bytes : bytes, nullptr,
                                      memory::Category::kScratch);
  if (!buf.ok()) {
    st.SkipWithError(buf.error().message.c_str());
    return;
  }
  if (huge) {
    buf->advise_huge_pages();
  } else {
    ::madvise(buf->data(), buf->size(), MADV_NOHUGEPAGE);
  }
  const auto wf = values(1536 * 64, 1);  // 64 distinct rows, repeated
  for (size_t i = 0; i < mats.size(); ++i) {
    uint8_t* at = buf->data() + offsets[i];
    for (int64_t r = 0; r < mats[i].rows; ++r) {
      quantize_row(type, wf.data() + (r % 64) * mats[i].cols, at + r * mats[i].row_bytes,
                   mats[i].cols);
    }
    mats[i].data = at;
  }
  if (packed) {
    for (size_t i = 0; i < mats.size(); ++i) {
      void* at = buf->data() + bytes + packed_offsets[i];
      matmul_pack(mats[i], at);
      mats[i].packed = at;
    }
  }
  // The activations of either width, converted once.
  std::vector<uint8_t> q576(matmul_scratch_bytes(type, 576, n_tok)),
      q1536(matmul_scratch_bytes(type, 1536, n_tok));
  quantize_activations(type, values(576 * n_tok, 2).data(), 576, 576, n_tok, q576.data());
  quantize_activations(type, values(1536 * n_tok, 3).data(), 1536, 1536, n_tok, q1536.data());
  std::vector<float> y(static_cast<size_t>(3072 * n_tok));
  ThreadPool pool(threads);
  for ([[maybe_unused]] auto _ : st) {
    for (const MatView& m : mats) {
      const void* qx = m.cols == 576 ? q576.data() : q1536.data();
      if (threads > 1) {
        float* outs[1] = {y.data()};
        const int64_t strides[1] = {m.rows};
        matmul_multi_converted(&m, 1, qx, n_tok, outs, strides, pool);
      } else {
        matmul_rows(m, qx, n_tok, 0, m.rows, y.data(), m.rows);
      }
    }
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["steps/s"] =
      benchmark::Counter(static_cast<double>(st.iterations()), benchmark::Counter::kIsRate);
  hwy::SetSupportedTargetsForTest(0);
}

// The targets the matmul benchmarks run on: every supported one from AVX2 up on
// x86 (the best alone elsewhere).
std::vector<int64_t> bench_targets() {
  std::vector<int64_t> out;
  for (int64_t t : hwy::SupportedAndGeneratedTargets()) {
#if HWY_ARCH_X86
    if (t <= HWY_AVX2) out.push_back(t);
#endif
  }
  if (out.empty()) out.push_back(hwy::SupportedAndGeneratedTargets().front());
  return out;
}

void BM_Dequantize(benchmark::State& st, DType type) {
  const int64_t n = 1 << 16;
  const auto x = values(n, 3);
  std::vector<uint8_t> q(*row_bytes(type, n));
  quantize_row(type, x.data(), q.data(), n);
  std::vector<float> y(n);
  for ([[maybe_unused]] auto _ : st) {
    dequantize_row(type, q.data(), y.data(), n);
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["elements/s"] =
      benchmark::Counter(static_cast<double>(st.iterations()) * n, benchmark::Counter::kIsRate);
}

// A 16-token step's activation conversion for the 32-element formats
// (BlockQ8A, ggml's q8_1) at SmolLM2's widths: 576 (the attention and FFN
// inputs, the head) and 1536 (the down projection's). Run per target: AVX2's
// converts a block at a time, AVX-512's sixteen at once.
void BM_QuantizeActivations(benchmark::State& st, int64_t cols, int64_t target) {
  hwy::SetSupportedTargetsForTest(target);
  constexpr int64_t kTok = 16;
  const auto x = values(cols * kTok, 7);
  std::vector<uint8_t> q(matmul_scratch_bytes(DType::kQ4_1, cols, kTok));
  for ([[maybe_unused]] auto _ : st) {
    quantize_activations(DType::kQ4_1, x.data(), cols, cols, kTok, q.data());
    benchmark::DoNotOptimize(q.data());
  }
  hwy::SetSupportedTargetsForTest(0);
  st.counters["elements/s"] = benchmark::Counter(static_cast<double>(st.iterations()) * cols * kTok,
                                                 benchmark::Counter::kIsRate);
}

// The norm before each projection at a 16-token step: 16 rows of 576
// (SmolLM2-135M's width), each scaled by its RMS and the norm's weight.
void BM_RmsNormRows(benchmark::State& st, int64_t target) {
  hwy::SetSupportedTargetsForTest(target);
  constexpr int64_t kTok = 16, kCols = 576;
  const auto x = values(kCols * kTok, 8), w = values(kCols, 9);
  std::vector<float> y(static_cast<size_t>(kCols * kTok));
  for ([[maybe_unused]] auto _ : st) {
    rms_norm_rows(x.data(), w.data(), y.data(), kCols, kTok, 1e-5f);
    benchmark::DoNotOptimize(y.data());
  }
  hwy::SetSupportedTargetsForTest(0);
  st.counters["elements/s"] = benchmark::Counter(
      static_cast<double>(st.iterations()) * kCols * kTok, benchmark::Counter::kIsRate);
}

// The SwiGLU of a 16-token step: 16 rows of 1536 (SmolLM2-135M's n_ff),
// silu(gate) x up in place, from the same gate values every iteration.
void BM_SiluMul(benchmark::State& st, int64_t target) {
  hwy::SetSupportedTargetsForTest(target);
  constexpr int64_t kN = 1536 * 16;
  const auto g0 = values(kN, 10), up = values(kN, 11);
  std::vector<float> g(static_cast<size_t>(kN));
  for ([[maybe_unused]] auto _ : st) {
    std::copy(g0.begin(), g0.end(), g.begin());
    silu_mul(g.data(), up.data(), kN);
    benchmark::DoNotOptimize(g.data());
  }
  hwy::SetSupportedTargetsForTest(0);
  st.counters["elements/s"] =
      benchmark::Counter(static_cast<double>(st.iterations()) * kN, benchmark::Counter::kIsRate);
}

// A decode step's attention over a paged KV cache at SmolLM2-135M's shape
// (30 layers, 3 KV heads of 3 query heads each, head size 64): for each of
// n_seq sequences, layer and KV head, one call over n_pos positions whose
// 16-row blocks lie shuffled over one pool. f16: attention_f16_heads; q8_0
// and q4_0: attention_kv_heads, or with `flash` attention_flash_ggml head by
// head (llama.cpp's flash arithmetic, what SNUG_GGML_ORDER=1 takes). 16
// sequences of 256 positions are 94 MB of f16 K and V (beyond any last-level
// cache), 50 MB of q8_0; one is 6 MB (in it). Counter kv_bytes/s: K and V
// bytes read per second.
void BM_AttentionStep(benchmark::State& st, DType kv, bool flash, int64_t n_seq, int64_t n_pos) {
  constexpr int64_t kLayers = 30, kKvHeads = 3, kGroup = 3, kDim = 64, kBt = 16;
  const int64_t items = n_seq * kLayers * kKvHeads, nb = (n_pos + kBt - 1) / kBt;
  const int64_t blocks = items * nb * 2;  // K and V
  const auto rb = static_cast<int64_t>(*row_bytes(kv, kDim));
  const int64_t block_bytes = (kBt * rb + 63) / 64 * 64;
  // The pool as KvCache's BlockPool allocates it: anonymous, on huge pages
  // where the kernel grants them.
  auto buf = memory::Buffer::allocate(static_cast<uint64_t>(blocks * block_bytes), nullptr,
                                      memory::Category::kKvCache);
  if (!buf) {
    st.SkipWithError(buf.error().message.c_str());
    return;
  }
  buf->advise_huge_pages();
  uint8_t* bytes = buf->data();
  const auto* pool16 = reinterpret_cast<const uint16_t*>(bytes);
  const auto f = values(kBt * kDim * 64, 4);
  for (int64_t r = 0; r < blocks * kBt; ++r) {
    quantize_kv_row(kv, f.data() + (r % (kBt * 64)) * kDim,
                    bytes + (r / kBt) * block_bytes + (r % kBt) * rb, kDim);
  }
  std::vector<int64_t> order(static_cast<size_t>(blocks));
  uint32_t s = 5;
  for (int64_t i = 0; i < blocks; ++i) order[static_cast<size_t>(i)] = i;
  for (int64_t i = blocks - 1; i > 0; --i) {  // Fisher-Yates with an LCG
    s = s * 1664525u + 1013904223u;
    const auto j = static_cast<size_t>(uint64_t{s >> 8} % static_cast<uint64_t>(i + 1));
    std::swap(order[static_cast<size_t>(i)], order[j]);
  }
  std::vector<const uint8_t*> table(static_cast<size_t>(blocks));
  std::vector<const uint16_t*> table16(static_cast<size_t>(blocks));
  for (int64_t i = 0; i < blocks; ++i) {
    const int64_t at = order[static_cast<size_t>(i)] * block_bytes;
    table[static_cast<size_t>(i)] = bytes + at;
    table16[static_cast<size_t>(i)] = pool16 + at / 2;
  }
  const auto q = values(kGroup * kDim, 6);
  std::vector<float> out(kGroup * kDim);
  std::vector<float> scratch(
      static_cast<size_t>(std::max(attention_heads_scratch_floats(n_pos, kGroup, kDim, kDim),
                                   attention_kv_heads_scratch_floats(n_pos, kGroup, kDim, kDim))));
  for ([[maybe_unused]] auto _ : st) {
    for (int64_t it = 0; it < items; ++it) {
      const size_t kb = static_cast<size_t>(2 * it * nb), vb = kb + static_cast<size_t>(nb);
      if (kv == DType::kF16) {
        const PagedRows k{table16.data() + kb, kBt, kDim, 0};
        const PagedRows v{table16.data() + vb, kBt, kDim, 0};
        attention_f16_heads(q.data(), kGroup, k, v, n_pos, kDim, kDim, 0.125f, SumOrder::kVecDot,
                            out.data(), scratch.data());
        continue;
      }
      const PagedKvRows k{table.data() + kb, kBt, static_cast<uint64_t>(rb), kv, 0};
      const PagedKvRows v{table.data() + vb, kBt, static_cast<uint64_t>(rb), kv, 0};
      if (flash) {
        for (int64_t h = 0; h < kGroup; ++h) {
          attention_flash_ggml(q.data() + h * kDim, k, v, n_pos, kDim, kDim, 0.125f,
                               out.data() + h * kDim, scratch.data());
        }
      } else {
        attention_kv_heads(q.data(), kGroup, k, v, n_pos, kDim, kDim, 0.125f, out.data(),
                           scratch.data());
      }
    }
    benchmark::DoNotOptimize(out.data());
  }
  st.counters["kv_bytes/s"] =
      benchmark::Counter(static_cast<double>(st.iterations()) * static_cast<double>(items) *
                             static_cast<double>(n_pos) * static_cast<double>(rb) * 2,
                         benchmark::Counter::kIsRate);
}

void register_all() {
  struct Kv {
    DType type;
    bool flash;
    const char* name;  // "" for f16, the names earlier figures were recorded under
  };
  for (Kv kv : {Kv{DType::kF16, false, ""}, Kv{DType::kQ8_0, false, "q8_0/"},
                Kv{DType::kQ8_0, true, "q8_0-flash/"}, Kv{DType::kQ4_0, false, "q4_0/"}}) {
    for (int64_t n_seq : {1, 16}) {
      for (int64_t n_pos : {64, 256, 1024}) {
        if (n_seq * n_pos > 4096) continue;
        benchmark::RegisterBenchmark(("attention/smollm2/" + std::string(kv.name) + "seqs" +
                                      std::to_string(n_seq) + "/pos" + std::to_string(n_pos))
                                         .c_str(),
                                     BM_AttentionStep, kv.type, kv.flash, n_seq, n_pos)
            ->Unit(benchmark::kMicrosecond);
      }
    }
  }
  for (int64_t target : bench_targets()) {
    hwy::SetSupportedTargetsForTest(target);
    const bool packs = matmul_packed_bytes(MatView{DType::kQ4_1, nullptr, 576, 576,
                                                   *row_bytes(DType::kQ4_1, 576)}) > 0;
    hwy::SetSupportedTargetsForTest(0);
    for (int64_t n_tok : {1, 4, 16, 64}) {  // one stream, a few, many, a crowd
      for (const bool packed : {false, true}) {
        if (packed && !packs) continue;
        for (const bool huge : {false, true}) {
          for (const int threads : {1, 2}) {
            const std::string name = std::string("step/q4_1/smollm2/tok") + std::to_string(n_tok) +
                                     (packed ? "/packed" : "/mapped") + (huge ? "/2MiB" : "/4KiB") +
                                     "/threads" + std::to_string(threads) + "/" +
                                     hwy::TargetName(target);
            benchmark::RegisterBenchmark(name.c_str(), BM_MatmulStep, DType::kQ4_1, n_tok, packed,
                                         huge, threads, target)
                ->Unit(benchmark::kMillisecond)
                ->UseRealTime();
          }
        }
      }
    }
  }
  for (DType t : kTypes) {
    for (const Shape& sh : kShapes) {
      if (sh.cols % info(t).block_size != 0) continue;
      for (int64_t n_tok : {1, 2, 4, 8, 16, 128}) {  // decode, batched decode, prompt
        const std::string name = "matmul/" + std::string(dtype_name(t)) + "/" + sh.model + "/" +
                                 std::to_string(sh.rows) + "x" + std::to_string(sh.cols) + "/tok" +
                                 std::to_string(n_tok);
        for (int64_t target : bench_targets()) {
          benchmark::RegisterBenchmark((name + "/" + hwy::TargetName(target)).c_str(), BM_Matmul, t,
                                       sh, n_tok, false, target, false)
              ->Unit(benchmark::kMicrosecond);
          hwy::SetSupportedTargetsForTest(target);
          const bool packs = matmul_packed_bytes(
                                 MatView{t, nullptr, sh.rows, sh.cols, *row_bytes(t, sh.cols)}) > 0;
          hwy::SetSupportedTargetsForTest(0);
          if (packs) {
            benchmark::RegisterBenchmark((name + "/" + hwy::TargetName(target) + "/packed").c_str(),
                                         BM_Matmul, t, sh, n_tok, false, target, true)
                ->Unit(benchmark::kMicrosecond);
          }
        }
        if (n_tok == 1 && sh.rows <= 2048) {
          benchmark::RegisterBenchmark((name + "/scalar_ref").c_str(), BM_Matmul, t, sh, n_tok,
                                       true, int64_t{0}, false)
              ->Unit(benchmark::kMicrosecond);
        }
      }
    }
    benchmark::RegisterBenchmark(("dequantize/" + std::string(dtype_name(t))).c_str(),
                                 BM_Dequantize, t)
        ->Unit(benchmark::kMicrosecond);
  }
  for (const int64_t cols : {576, 1536}) {
    for (int64_t target : bench_targets()) {
      benchmark::RegisterBenchmark(
          ("quantize_activations/q8a/" + std::to_string(cols) + "/tok16/" + hwy::TargetName(target))
              .c_str(),
          BM_QuantizeActivations, int64_t{cols}, target)
          ->Unit(benchmark::kMicrosecond);
    }
  }
  for (int64_t target : bench_targets()) {
    benchmark::RegisterBenchmark(
        ("rms_norm_rows/576/tok16/" + std::string(hwy::TargetName(target))).c_str(), BM_RmsNormRows,
        target)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(
        ("silu_mul/1536/tok16/" + std::string(hwy::TargetName(target))).c_str(), BM_SiluMul, target)
        ->Unit(benchmark::kMicrosecond);
  }
}

}  // namespace
}  // namespace snug::tensor

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  snug::tensor::register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
