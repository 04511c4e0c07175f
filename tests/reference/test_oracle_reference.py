"""snug and llama.cpp against an independent float64 forward pass (oracle.py).

On every machine, whatever arithmetic either side takes: over the first
N_TOKENS tokens of tests/data/reference.txt, snug's next-token distributions
must be at least as close to the float64 pass of the same dequantized weights
as llama.cpp's are (mean KL(oracle || x) and top-1 agreement with the oracle),
within oracle.KL_MARGIN and oracle.TOP1_MARGIN (measured rounding noise, see
there). The figures are printed (ctest -V).

The oracle is checked first (oracle.ORACLE_SANE): a wrong norm, rotation or
head mapping in it shows as both runtimes far from it.
"""
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import oracle

ROOT = Path(os.environ.get("SNUG_SOURCE_DIR", Path(__file__).resolve().parents[2]))
EVAL_TOOL = os.environ.get("SNUG_EVAL_TOOL", str(ROOT / "build" / "tests" / "reference" / "eval_tool"))
SMOLLM2 = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
THREADS = 2
N_TOKENS = 256

llama_cpp = pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")
if not SMOLLM2.exists():
    pytest.skip("SmolLM2 not fetched (scripts/fetch-models)", allow_module_level=True)


def snug_logits(ids, tmp_path):
    out = tmp_path / "snug.f32"
    subprocess.run([EVAL_TOOL, str(SMOLLM2), str(out), str(THREADS)], input=" ".join(map(str, ids)),
                   text=True, check=True, timeout=300)
    return np.fromfile(out, dtype=np.float32).reshape(len(ids), -1)


def llama_logits(ids):
    llm = llama_cpp.Llama(model_path=str(SMOLLM2), n_ctx=2 * N_TOKENS, n_batch=N_TOKENS,
                          n_threads=THREADS, logits_all=True, verbose=False)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def test_snug_at_least_as_close_to_float64_as_llama_cpp(tmp_path, arithmetic):
    tok = llama_cpp.Llama(model_path=str(SMOLLM2), vocab_only=True, verbose=False)
    ids = tok.tokenize((ROOT / "tests" / "data" / "reference.txt").read_bytes(), add_bos=True,
                       special=False)[:N_TOKENS]
    assert len(ids) == N_TOKENS
    want = oracle.forward(oracle.Weights(SMOLLM2), ids)
    oracle.check_as_close(want, snug_logits(ids, tmp_path), llama_logits(ids), "f16 KV")
