// Read bandwidth of main memory: each thread sums its own 256 MiB buffer
// (far larger than the caches) with 256-bit loads; prints GB/s for 1..N threads
// as "threads=N gbps=X" lines. The roofline of token generation is this
// bandwidth divided by the weight bytes read per token.
//   membw [max_threads]
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

constexpr size_t kBytes = size_t{256} << 20;

__attribute__((target("avx2"))) float sum_buffer(const float* p, size_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
  }
  float out[8];
  _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  return out[0] + out[7];
}

}  // namespace

int main(int argc, char** argv) {
  const int max_threads = argc > 1 ? std::atoi(argv[1]) : 2;
  std::vector<float*> bufs;
  for (int t = 0; t < max_threads; ++t) {
    auto* p = static_cast<float*>(std::aligned_alloc(64, kBytes));
    std::memset(p, 1, kBytes);
    bufs.push_back(p);
  }
  volatile float sink = 0;
  for (int n = 1; n <= max_threads; ++n) {
    double best = 0;
    for (int rep = 0; rep < 5; ++rep) {
      std::vector<std::thread> th;
      std::vector<float> res(static_cast<size_t>(n));
      const auto t0 = std::chrono::steady_clock::now();
      for (int t = 0; t < n; ++t) {
        th.emplace_back([&, t] { res[static_cast<size_t>(t)] = sum_buffer(bufs[static_cast<size_t>(t)], kBytes / 4); });
      }
      for (auto& x : th) x.join();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      for (float r : res) sink = sink + r;
      best = std::max(best, static_cast<double>(kBytes) * n / s / 1e9);
    }
    std::printf("threads=%d gbps=%.2f\n", n, best);
  }
  for (float* p : bufs) std::free(p);
  return 0;
}
