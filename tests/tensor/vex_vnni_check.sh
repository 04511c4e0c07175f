#!/bin/sh
# Fails when the kernel library holds a VEX-encoded VNNI instruction
# ({vex} vpdpbusd, vpdpwssd...). Those need AVX-VNNI, which Zen 4 and Ice Lake
# lack although Highway 1.0's AVX3_DL target enables it for the compiler: such
# an instruction would crash those CPUs with SIGILL. See src/tensor/simd_x86.h.
#   vex_vnni_check.sh LIBRARY
set -eu
lib=$1
command -v objdump >/dev/null || { echo "objdump (binutils) is required" >&2; exit 1; }
[ -f "$lib" ] || { echo "no library at $lib" >&2; exit 1; }
found=$(objdump -d "$lib" | grep -c '{vex} vpdp' || true)
evex=$(objdump -d "$lib" | grep -c 'vpdpbusd' || true)
echo "$lib: $evex vpdpbusd instructions, $found VEX-encoded VNNI instructions"
[ "$found" -eq 0 ]
