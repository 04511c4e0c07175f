"""snug's dequantize_row/quantize_row against the `gguf` package (numpy).

dequantize must be bit-exact with ggml on real tensors of every type in the
two reference models, and on random blocks of every supported type. quantize
must produce byte-identical blocks for the types gguf.quants can quantize.
The C++ side is tests/tensor/dequant_tool (path in $SNUG_DEQUANT_TOOL).
"""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
import gguf_fast  # noqa: E402  (tests/reference: GGUFReader without its per-element header cost)
from gguf import GGMLQuantizationType as T  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402

TOOL = os.environ.get("SNUG_DEQUANT_TOOL", "")
ROOT = Path(os.environ.get("SNUG_SOURCE_DIR", Path(__file__).resolve().parents[2]))
MODELS = ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"]

NAMES = {T.F32: "f32", T.F16: "f16", T.BF16: "bf16", T.Q4_0: "q4_0", T.Q4_1: "q4_1",
         T.Q5_0: "q5_0", T.Q5_1: "q5_1", T.Q8_0: "q8_0", T.Q2_K: "q2_K", T.Q3_K: "q3_K",
         T.Q4_K: "q4_K", T.Q5_K: "q5_K", T.Q6_K: "q6_K"}
# Types gguf.quants has a quantizer for that snug implements.
QUANTIZABLE = [T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
MAX_ELEMENTS = 1 << 21  # per real tensor, to keep the test fast

pytestmark = pytest.mark.skipif(not TOOL or not Path(TOOL).exists(),
                                reason="SNUG_DEQUANT_TOOL not built")


def run_tool(args, data: bytes) -> bytes:
    r = subprocess.run([TOOL, *args], input=data, capture_output=True, check=True)
    return r.stdout


def snug_dequantize(qtype, raw: bytes, n: int) -> np.ndarray:
    return np.frombuffer(run_tool([NAMES[qtype], str(n)], raw), dtype=np.float32)


def snug_quantize(qtype, x: np.ndarray) -> bytes:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return run_tool(["-q", NAMES[qtype], str(x.size)], x.tobytes())


def assert_bits_equal(got: np.ndarray, want: np.ndarray, what: str):
    """Equal bits; where `want` is NaN (scale bits that encode NaN), any NaN."""
    want = np.ascontiguousarray(want, dtype=np.float32).reshape(-1)
    assert got.shape == want.shape, what
    differ = got.view(np.uint32) != want.view(np.uint32)
    bad = np.flatnonzero(differ & ~(np.isnan(got) & np.isnan(want)))
    assert bad.size == 0, f"{what}: {bad.size} differ, first at {bad[0]}: {got[bad[0]]} vs {want[bad[0]]}"


def real_tensors():
    out = []
    for name in MODELS:
        path = ROOT / "models" / name
        if not path.exists():
            continue
        reader = gguf_fast.Reader(str(path))
        seen = {}
        for t in reader.tensors:
            if t.tensor_type not in NAMES or int(t.n_elements) > MAX_ELEMENTS:
                continue
            if seen.get(t.tensor_type, 0) >= 3:
                continue
            seen[t.tensor_type] = seen.get(t.tensor_type, 0) + 1
            out.append(pytest.param(t, id=f"{name}:{t.name}:{NAMES[t.tensor_type]}"))
    return out


REAL = real_tensors()


@pytest.mark.skipif(not REAL, reason="models/*.gguf not present")
@pytest.mark.parametrize("tensor", REAL)
def test_real_tensor_dequantize_bit_exact(tensor):
    raw = np.ascontiguousarray(tensor.data).tobytes()
    n = int(tensor.n_elements)
    want = dequantize(np.ascontiguousarray(tensor.data).view(np.uint8).reshape(-1), tensor.tensor_type)
    assert_bits_equal(snug_dequantize(tensor.tensor_type, raw, n), want, tensor.name)


@pytest.mark.skipif(not REAL, reason="models/*.gguf not present")
@pytest.mark.parametrize("tensor", REAL)
def test_real_tensor_requantize_byte_identical(tensor):
    x = dequantize(np.ascontiguousarray(tensor.data).view(np.uint8).reshape(-1), tensor.tensor_type)
    x = x.reshape(-1)[: 256 * 64].astype(np.float32)
    for qtype in QUANTIZABLE:
        want = quantize(x.reshape(1, -1), qtype).tobytes()
        assert snug_quantize(qtype, x) == want, f"{tensor.name} -> {NAMES[qtype]}"


def random_data(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-1.5, 0.5, size=n // 32).repeat(32)
    x = rng.standard_normal(n) * scale
    x[rng.random(n) < 0.01] *= 8
    x[:32] = 0  # an all-zero block
    x[32:64] = 1.5  # a constant block
    return x.astype(np.float32)


@pytest.mark.parametrize("qtype", QUANTIZABLE, ids=lambda q: NAMES[q])
def test_random_quantize_byte_identical(qtype):
    x = random_data(256 * 64, 1)
    want = quantize(x.reshape(-1, 256), qtype).tobytes()
    assert snug_quantize(qtype, x) == want


@pytest.mark.parametrize("qtype", list(NAMES), ids=lambda q: NAMES[q])
def test_random_blocks_dequantize_bit_exact(qtype):
    x = random_data(256 * 64, 2)
    raw = snug_quantize(qtype, x)  # snug's own quantizer, including the K types
    want = dequantize(np.frombuffer(raw, dtype=np.uint8), qtype)
    assert_bits_equal(snug_dequantize(qtype, raw, x.size), want, NAMES[qtype])
    # Arbitrary bytes too: any scale bits (subnormal, inf, NaN) and any levels.
    rng = np.random.default_rng(3)
    junk = rng.integers(0, 256, size=len(raw), dtype=np.uint8)
    with np.errstate(invalid="ignore", over="ignore"):
        want = dequantize(junk, qtype).reshape(-1)
    assert_bits_equal(snug_dequantize(qtype, junk.tobytes(), x.size), want, NAMES[qtype] + " junk")
