// What one core sustains of the instructions the AVX2 integer kernels are
// made of, alone and in pairs: the floor a kernel's instruction mix puts on
// its cycles per block. Each line runs a loop of independent instructions
// (every destination written fresh, so no dependency chain limits it) and
// prints cycles per loop, against a clock read from a chain of dependent
// scalar adds (one a cycle on every x86-64 core). A pair that takes as long
// as its two halves one after the other shares their execution ports.
//
//   build/bench/pipes        # pin it for steadier figures: taskset -c 1
#include <cstdio>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <chrono>

namespace {

constexpr long kIters = 50'000'000;

// Seconds per loop of `body` (the loop's counter is the one scalar chain).
#define SNUG_PIPES_TIME(body)                                                                \
  [] {                                                                                       \
    long n = kIters;                                                                         \
    const auto t0 = std::chrono::steady_clock::now();                                        \
    __asm__ volatile("1:\n" body "dec %0\njnz 1b\n"                                          \
                     : "+r"(n)                                                               \
                     :                                                                       \
                     : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "cc", \
                       "memory");                                                            \
    const std::chrono::duration<double> d = std::chrono::steady_clock::now() - t0;           \
    return d.count() / static_cast<double>(kIters);                                          \
  }()

// Eight instructions: `a` into ymm0, ymm2, ymm4, ymm6 and `b` into the odd
// ones, each from ymm8 and ymm9 (or, for a load, from the stack).
#define SNUG_PIPES_I(op, d) op " %%ymm8, %%ymm9, %%ymm" #d "\n"
#define SNUG_PIPES_PAIR(a, b)                                                                    \
  SNUG_PIPES_I(a, 0)                                                                             \
  SNUG_PIPES_I(b, 1)                                                                             \
  SNUG_PIPES_I(a, 2) SNUG_PIPES_I(b, 3) SNUG_PIPES_I(a, 4) SNUG_PIPES_I(b, 5) SNUG_PIPES_I(a, 6) \
      SNUG_PIPES_I(b, 7)

void report(const char* name, double seconds, double cycle) {
  std::printf("%-38s %5.2f cycles per 8\n", name, seconds / cycle);
}

}  // namespace

int main() {
  if (!__builtin_cpu_supports("avx2")) {
    std::puts("pipes: this CPU has no AVX2");
    return 0;
  }
  long n = kIters;
  const auto t0 = std::chrono::steady_clock::now();
  __asm__ volatile(
      "1:\nadd $1, %%rax\nadd $1, %%rax\nadd $1, %%rax\nadd $1, %%rax\ndec %0\njnz 1b\n"
      : "+r"(n)
      :
      : "rax", "cc");
  const std::chrono::duration<double> d = std::chrono::steady_clock::now() - t0;
  const double cycle = d.count() / static_cast<double>(4 * kIters);
  std::printf("clock from a chain of dependent adds: %.2f GHz\n", 1e-9 / cycle);
  __asm__ volatile("vpxor %%ymm8, %%ymm8, %%ymm8\nvpcmpeqb %%ymm9, %%ymm9, %%ymm9\n" ::
                       : "xmm8", "xmm9");
  report("8 vpmaddubsw", SNUG_PIPES_TIME(SNUG_PIPES_PAIR("vpmaddubsw", "vpmaddubsw")), cycle);
  report("8 vpmaddwd", SNUG_PIPES_TIME(SNUG_PIPES_PAIR("vpmaddwd", "vpmaddwd")), cycle);
  report("8 vfmadd231ps", SNUG_PIPES_TIME(SNUG_PIPES_PAIR("vfmadd231ps", "vfmadd231ps")), cycle);
  report("8 vpaddw", SNUG_PIPES_TIME(SNUG_PIPES_PAIR("vpaddw", "vpaddw")), cycle);
  report("8 vpsignb", SNUG_PIPES_TIME(SNUG_PIPES_PAIR("vpsignb", "vpsignb")), cycle);
  report("4 vpmaddubsw + 4 vpmaddwd", SNUG_PIPES_TIME(SNUG_PIPES_PAIR("vpmaddubsw", "vpmaddwd")),
         cycle);
  report("4 vpmaddubsw + 4 vfmadd231ps",
         SNUG_PIPES_TIME(SNUG_PIPES_PAIR("vpmaddubsw", "vfmadd231ps")), cycle);
  report("4 vpmaddubsw + 4 vpaddw", SNUG_PIPES_TIME(SNUG_PIPES_PAIR("vpmaddubsw", "vpaddw")),
         cycle);
  report("4 vpmaddubsw + 4 vpsignb", SNUG_PIPES_TIME(SNUG_PIPES_PAIR("vpmaddubsw", "vpsignb")),
         cycle);
  report("4 vpmaddubsw + 4 vpand", SNUG_PIPES_TIME(SNUG_PIPES_PAIR("vpmaddubsw", "vpand")), cycle);
  report("8 vpsrlw $4",
         SNUG_PIPES_TIME("vpsrlw $4, %%ymm8, %%ymm0\nvpsrlw $4, %%ymm8, %%ymm1\n"
                         "vpsrlw $4, %%ymm8, %%ymm2\nvpsrlw $4, %%ymm8, %%ymm3\n"
                         "vpsrlw $4, %%ymm8, %%ymm4\nvpsrlw $4, %%ymm8, %%ymm5\n"
                         "vpsrlw $4, %%ymm8, %%ymm6\nvpsrlw $4, %%ymm8, %%ymm7\n"),
         cycle);
  report(
      "4 vpmaddubsw + 4 vpsrlw $4",
      SNUG_PIPES_TIME(SNUG_PIPES_I("vpmaddubsw", 0) "vpsrlw $4, %%ymm8, %%ymm1\n" SNUG_PIPES_I(
          "vpmaddubsw",
          2) "vpsrlw $4, %%ymm8, %%ymm3\n" SNUG_PIPES_I("vpmaddubsw",
                                                        4) "vpsrlw $4, %%ymm8, "
                                                           "%%ymm5\n" SNUG_PIPES_I("vpmaddubsw",
                                                                                   6) "vpsrlw $4, "
                                                                                      "%%ymm8, "
                                                                                      "%%ymm7\n"),
      cycle);
  report("8 vpbroadcastd from memory",
         SNUG_PIPES_TIME("vpbroadcastd -8(%%rsp), %%ymm0\nvpbroadcastd -12(%%rsp), %%ymm1\n"
                         "vpbroadcastd -16(%%rsp), %%ymm2\nvpbroadcastd -20(%%rsp), %%ymm3\n"
                         "vpbroadcastd -24(%%rsp), %%ymm4\nvpbroadcastd -28(%%rsp), %%ymm5\n"
                         "vpbroadcastd -32(%%rsp), %%ymm6\nvpbroadcastd -36(%%rsp), %%ymm7\n"),
         cycle);
  report("8 vcvtdq2ps",
         SNUG_PIPES_TIME("vcvtdq2ps %%ymm8, %%ymm0\nvcvtdq2ps %%ymm8, %%ymm1\n"
                         "vcvtdq2ps %%ymm8, %%ymm2\nvcvtdq2ps %%ymm8, %%ymm3\n"
                         "vcvtdq2ps %%ymm8, %%ymm4\nvcvtdq2ps %%ymm8, %%ymm5\n"
                         "vcvtdq2ps %%ymm8, %%ymm6\nvcvtdq2ps %%ymm8, %%ymm7\n"),
         cycle);
  report("8 vcvtph2ps",
         SNUG_PIPES_TIME("vcvtph2ps %%xmm8, %%ymm0\nvcvtph2ps %%xmm8, %%ymm1\n"
                         "vcvtph2ps %%xmm8, %%ymm2\nvcvtph2ps %%xmm8, %%ymm3\n"
                         "vcvtph2ps %%xmm8, %%ymm4\nvcvtph2ps %%xmm8, %%ymm5\n"
                         "vcvtph2ps %%xmm8, %%ymm6\nvcvtph2ps %%xmm8, %%ymm7\n"),
         cycle);
  return 0;
}

#else
int main() {
  std::puts("pipes: x86-64 with GCC or Clang only");
  return 0;
}
#endif
