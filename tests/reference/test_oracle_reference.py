"""snug and llama.cpp against an independent float64 forward pass (oracle.py).

On every machine, whatever arithmetic either side takes: over the first
N_TOKENS tokens of tests/data/reference.txt, snug's next-token distributions
must be at least as close to the float64 pass of the same dequantized weights
as llama.cpp's are (mean KL(oracle || x) and top-1 agreement with the oracle),
within oracle.KL_MARGIN and oracle.TOP1_MARGIN (measured rounding noise, see
there). The figures are printed (ctest -V).

The oracle is checked first (oracle.ORACLE_SANE): a wrong norm, rotation or
head mapping in it shows as both runtimes far from it.

Gemma 3 270M is checked over a run three times its sliding window (512), at
the positions past the first window, where its local layers attend over only
the last 512 positions: 1024 positions, as 256 leave the comparison to
rounding noise (snug/llama.cpp mean KL ratios of 0.90-1.13 over 256-position
windows of the same run, 1.03 over all 1024, on an AVX-512 machine).
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
GEMMA3 = ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"
THREADS = 2
N_TOKENS = 256
GEMMA_TOKENS, GEMMA_FROM, GEMMA_CHUNK = 1536, 512, 128

llama_cpp = pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")
if not SMOLLM2.exists() or not GEMMA3.exists():
    pytest.skip("models not fetched (scripts/fetch-models)", allow_module_level=True)


def snug_logits(ids, tmp_path, model=SMOLLM2, first=0):
    """Logits of positions >= first, memory-mapped."""
    out = tmp_path / "snug.f32"
    subprocess.run([EVAL_TOOL, str(model), str(out), str(THREADS)], input=" ".join(map(str, ids)),
                   text=True, check=True, timeout=300, env=dict(os.environ, SNUG_EVAL_FROM=str(first)))
    return np.memmap(out, dtype=np.float32, mode="r").reshape(len(ids) - first, -1)


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


def test_gemma3_past_its_window_as_close_to_float64_as_llama_cpp(tmp_path, arithmetic):
    tok = llama_cpp.Llama(model_path=str(GEMMA3), vocab_only=True, verbose=False)
    ids = tok.tokenize((ROOT / "data" / "text" / "evaluation.txt").read_bytes(), add_bos=True,
                       special=False)[:GEMMA_TOKENS]
    assert len(ids) == GEMMA_TOKENS
    snug = snug_logits(ids, tmp_path, GEMMA3, GEMMA_FROM)
    llm = llama_cpp.Llama(model_path=str(GEMMA3), n_ctx=GEMMA_TOKENS, n_batch=512,
                          n_threads=THREADS, logits_all=True, verbose=False)
    llm.eval(ids)
    llama = llm.scores[GEMMA_FROM:GEMMA_TOKENS]
    # A row of float64 log-probabilities is 2 MiB: the oracle's head runs in chunks.
    w = oracle.Weights(GEMMA3)
    x = oracle.hidden(w, ids)
    kl = {"snug": [], "llama.cpp": []}
    top1 = {"snug": [], "llama.cpp": []}
    for b in range(0, GEMMA_TOKENS - GEMMA_FROM, GEMMA_CHUNK):
        want = oracle.head(w, x[GEMMA_FROM + b:GEMMA_FROM + b + GEMMA_CHUNK])
        for name, logits in (("snug", snug), ("llama.cpp", llama)):
            k, t = oracle.kl_and_top1(want, logits[b:b + GEMMA_CHUNK])
            kl[name].append(k)
            top1[name].append(t)
    oracle.check_distances({n: np.concatenate(v) for n, v in kl.items()},
                           {n: np.concatenate(v) for n, v in top1.items()}, "gemma3 f16 KV")
