"""snug's GELU against llama.cpp's own table.

ggml computes GELU (Gemma's GeGLU) by looking the input, rounded to f16, up in
ggml_table_gelu_f16, which ggml_cpu_init fills with the tanh approximation.
How that table is built depends on the compiler (GCC contracts one multiply-add
into an fma when FMA is available), so tensor::gelu_mul is checked against the
table of the llama.cpp that llama-cpp-python built on this machine, entry for
entry, and against the exact formula in float64.
"""
import ctypes
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(os.environ.get("SNUG_SOURCE_DIR", Path(__file__).resolve().parents[2]))
EVAL_TOOL = os.environ.get("SNUG_EVAL_TOOL", str(ROOT / "build" / "tests" / "reference" / "eval_tool"))

llama_cpp = pytest.importorskip("llama_cpp")


def ggml_gelu_table():
    lib_dir = Path(os.environ.get("LLAMA_CPP_LIB_PATH", Path(llama_cpp.__file__).parent / "lib"))
    cpu = ctypes.CDLL(str(lib_dir / "libggml-cpu.so"))
    cpu.ggml_cpu_init()
    table = (ctypes.c_uint16 * 65536).in_dll(cpu, "ggml_table_gelu_f16")
    return np.frombuffer(table, dtype=np.uint16).view(np.float16).astype(np.float32)


def test_gelu_is_llama_cpp_table_entry_for_entry(tmp_path):
    out = tmp_path / "gelu.f32"
    subprocess.run([EVAL_TOOL, "--gelu", str(out)], check=True, timeout=60)
    snug = np.fromfile(out, dtype=np.float32)
    x = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
    looked_up = np.isfinite(x) & (x > -10) & (x < 10)  # outside, ggml's geglu bypasses the table
    want = ggml_gelu_table()
    differ = looked_up & (snug != want)
    assert not differ.any(), f"{int(differ.sum())} entries differ, first at x = {x[differ][0]}"
    # Outside the table: 0 at or below -10, the identity at or above 10.
    assert np.all(snug[np.isfinite(x) & (x <= -10)] == 0)
    big = np.isfinite(x) & (x >= 10)
    assert np.all(snug[big] == x[big])
    # And the table is GELU: within f16 rounding of the input and the output.
    xd = x[looked_up].astype(np.float64)
    exact = 0.5 * xd * (1 + np.tanh(np.sqrt(2 / np.pi) * (xd + 0.044715 * xd**3)))
    slope = np.abs(0.5 * (1 + np.tanh(np.sqrt(2 / np.pi) * xd))) + 0.2
    assert np.all(np.abs(snug[looked_up] - exact) <= 2**-10 * (np.abs(exact) + slope * np.abs(xd)) + 1e-7)
