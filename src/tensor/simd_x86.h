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
// 512-bit registers and AVX512-VNNI (vpdpbusd) are available (AVX3_DL).
#define SNUG_X86_VNNI512 (HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3_DL)
