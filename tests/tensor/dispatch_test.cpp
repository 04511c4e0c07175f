// Which kernel runs where. On a CPU with AVX2 or better, every Highway target
// the CPU can run from AVX2 up (AVX2, AVX3, AVX3_DL) must run the x86 int8
// kernels for every weight and KV format the models use: the portable path is
// several times slower, and an AVX-512 CPU once fell to it for every format
// because the kernels were compiled for the AVX2 target alone. Targets this
// CPU cannot run are held to the same rule at compile time (matmul_simd.cpp's
// static_assert).
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include "tensor/kernels.h"

namespace snug::tensor {
namespace {

const DType kWeightFormats[] = {DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1,
                                DType::kQ8_0, DType::kQ2_K, DType::kQ3_K, DType::kQ4_K,
                                DType::kQ5_K, DType::kQ6_K};
const DType kFloatFormats[] = {DType::kF32, DType::kF16, DType::kBF16};
const DType kKvFormats[] = {DType::kQ8_0, DType::kQ4_0};

bool is_generic(const char* name) {
  return name == nullptr || std::strcmp(name, "generic") == 0;
}

// The compiled targets this CPU runs that are at least AVX2 on x86.
std::vector<int64_t> avx2_plus_targets() {
  std::vector<int64_t> out;
#if HWY_ARCH_X86
  for (int64_t t : hwy::SupportedAndGeneratedTargets()) {
    if (t <= HWY_AVX2) out.push_back(t);
  }
#endif
  return out;
}

TEST(Dispatch, BestTargetIsReported) {
  const std::string name = simd_target();
  EXPECT_FALSE(name.empty());
  std::printf("dispatched target: %s\n", name.c_str());
#if HWY_ARCH_X86
  if (!avx2_plus_targets().empty()) {
    EXPECT_NE(name, "SSE4") << "CPU has AVX2";
  }
#endif
}

TEST(Dispatch, NoFormatFallsToGenericOnAvx2OrBetter) {
  const std::vector<int64_t> targets = avx2_plus_targets();
  std::printf("targets from AVX2 up on this CPU:");
  for (int64_t t : targets) std::printf(" %s", hwy::TargetName(t));
  std::printf("%s\n", targets.empty() ? " none (the rule has nothing to check here)" : "");
  for (int64_t t : targets) {
    hwy::SetSupportedTargetsForTest(t);
    ASSERT_STREQ(simd_target(), hwy::TargetName(t));
    for (DType w : kWeightFormats) {
      const char* k = matmul_kernel(w);
      std::printf("  %-8s matmul %-5s -> %s\n", hwy::TargetName(t),
                  std::string(dtype_name(w)).c_str(), k ? k : "none");
      EXPECT_FALSE(is_generic(k)) << hwy::TargetName(t) << " " << dtype_name(w);
    }
    for (DType w : kFloatFormats) EXPECT_STREQ(matmul_kernel(w), "hwy-float");
    for (DType kv : kKvFormats) {
      const char* k = attention_kernel(kv);
      EXPECT_FALSE(is_generic(k)) << hwy::TargetName(t) << " KV " << dtype_name(kv);
    }
    // f16 KV: all of a KV head's query heads in one pass, in f32, on AVX-512
    // and on AVX2; with ggml's order asked for, AVX2 takes llama.cpp's order
    // head by head (llama.cpp's bits) and AVX-512 keeps its kernel.
    EXPECT_STREQ(attention_kernel(DType::kF16),
                 t == HWY_AVX2 ? "avx2-f16-heads" : "avx512-f16-heads");
    // q8_0 and q4_0 KV: the grouped kernel over the dequantized rows on every
    // x86 target (sixteen lanes on AVX-512), or with ggml's order asked for
    // llama.cpp's flash kernel.
    const char* dequant = t == HWY_AVX2 ? "avx2-dequant-heads" : "avx512-dequant-heads";
    for (DType kv : {DType::kQ8_0, DType::kQ4_0}) EXPECT_STREQ(attention_kernel(kv), dequant);
    set_ggml_order(true);
    EXPECT_STREQ(attention_kernel(DType::kF16), t == HWY_AVX2 ? "f16-ggml" : "avx512-f16-heads");
    for (DType kv : {DType::kQ8_0, DType::kQ4_0}) EXPECT_STRNE(attention_kernel(kv), dequant);
    set_ggml_order(false);
  }
  hwy::SetSupportedTargetsForTest(0);
}

// SNUG_ONE_TOKEN_KERNEL names the one-token kernel; any other value (a typo,
// a kernel that does not exist) is a one-line warning and the CPU's default.
TEST(Dispatch, OneTokenKernelFromTheEnvironment) {
  set_one_token_kernel(OneTokenKernel::kAuto);
  const OneTokenKernel cpu_default = one_token_kernel();
  ASSERT_NE(cpu_default, OneTokenKernel::kAuto);
  setenv("SNUG_ONE_TOKEN_KERNEL", "eight-rows", 1);
  set_one_token_kernel(OneTokenKernel::kAuto);
  EXPECT_EQ(one_token_kernel(), OneTokenKernel::kEightRows);
  setenv("SNUG_ONE_TOKEN_KERNEL", "one-row", 1);
  set_one_token_kernel(OneTokenKernel::kAuto);
  EXPECT_EQ(one_token_kernel(), OneTokenKernel::kOneRow);
  setenv("SNUG_ONE_TOKEN_KERNEL", "fast", 1);
  testing::internal::CaptureStderr();
  set_one_token_kernel(OneTokenKernel::kAuto);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(one_token_kernel(), cpu_default);
  EXPECT_EQ(err,
            "snug: warning: SNUG_ONE_TOKEN_KERNEL=fast: expected one-row or eight-rows; the CPU's "
            "default is used\n");
  unsetenv("SNUG_ONE_TOKEN_KERNEL");
  set_one_token_kernel(OneTokenKernel::kAuto);
  EXPECT_EQ(one_token_kernel(), cpu_default);
}

// Below AVX2 (SSE4 and the portable fallback, SCALAR or EMU128 by build) the
// portable integer kernels serve every quantized format.
TEST(Dispatch, TargetsBelowAvx2UseGenericKernels) {
  int checked = 0;
  for (int64_t t : hwy::SupportedAndGeneratedTargets()) {
#if HWY_ARCH_X86
    if (t <= HWY_AVX2) continue;
#endif
    hwy::SetSupportedTargetsForTest(t);
    EXPECT_STREQ(simd_target(), hwy::TargetName(t));
    for (DType w : kWeightFormats) {
      EXPECT_STREQ(matmul_kernel(w), "generic") << hwy::TargetName(t) << " " << dtype_name(w);
    }
    ++checked;
  }
  hwy::SetSupportedTargetsForTest(0);
  EXPECT_GE(checked, 1) << "no portable target compiled in";
}

}  // namespace
}  // namespace snug::tensor
