// Which per-target code a Highway translation unit may use. Highway numbers
// x86 targets so that a better one has a lower bit (AVX3_DL < AVX3 < AVX2 <
// SSE4), so "at least AVX2" is HWY_TARGET <= HWY_AVX2 on x86. A block for the
// AVX2 target alone would leave every AVX-512 CPU on the portable path; test
// these instead. Evaluated at each #if, so inside a file
// that foreach_target.h re-includes they follow the target being compiled.
#pragma once

#include <hwy/base.h>

// AVX2, FMA and F16C intrinsics are available (AVX2, AVX3, AVX3_DL targets).
#define SNUG_X86_AVX2 (HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2)
// AVX512-VNNI (vpdpbusd) may be used (AVX3_DL target, GCC). Highway 1.0's
// AVX3_DL target string enables AVX-VNNI, the VEX encoding that Zen 4 and
// Ice Lake lack, and not AVX512-VNNI; code in this mode is wrapped in
// SNUG_BEGIN_VNNI/SNUG_END_VNNI, which swap the two so that the compiler emits
// the EVEX form every AVX3_DL CPU has. Clang 14 keeps AVX-VNNI enabled through
// such a wrapper (it emitted VEX vpdpbusd), so with Clang AVX3_DL runs the
// AVX2 instructions instead.
#define SNUG_X86_VNNI512 (HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3_DL && HWY_COMPILER_GCC_ACTUAL)

// Put around per-target code that may use AVX512-VNNI (see SNUG_X86_VNNI512).
// The wrapped code must not call Highway ops (they are compiled for Highway's
// target string and cannot be inlined into functions without AVX-VNNI).
#define SNUG_BEGIN_VNNI HWY_PUSH_ATTRIBUTES("avx512vnni,no-avxvnni")
#define SNUG_END_VNNI HWY_POP_ATTRIBUTES
