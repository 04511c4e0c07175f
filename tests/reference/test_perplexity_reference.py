"""`snug perplexity` against llama.cpp's perplexity method run on llama.cpp's own logits.

llama-cpp-python ships no perplexity binary, so the reference is llama.cpp's
algorithm (tools/perplexity/perplexity.cpp: windows of n_ctx tokens from an empty
cache, BOS first when the vocabulary adds one, the second half scored, the sum of
exponentials in double) applied to the logits llama-cpp-python returns. The
issue's bar: snug's perplexity within 1% of it; KL divergence and top-token
agreement against a base model are checked the same way. Where both take the
same arithmetic (tests/reference/arith.py) the logits are equal and the match
is far closer; elsewhere the bounds are those of rounding noise (below).
"""
import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest


ROOT = Path(os.environ.get("SNUG_SOURCE_DIR", Path(__file__).resolve().parents[2]))
SNUG = os.environ.get("SNUG_BIN", str(ROOT / "build" / "snug"))
SMOLLM2 = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXT = ROOT / "data" / "text" / "evaluation.txt"
THREADS = 2
N_CTX = 256
CHUNKS = 4
# Different arithmetic: the bounds of rounding noise, as measured against the
# float64 oracle (tests/reference/oracle.py: KL_MARGIN, TOP1_MARGIN): one
# runtime's mean KL moves by 5-7% and its top-token share by 2 points when only
# its summation order changes. The 99th percentile rests on the 5 largest of
# 508 values, and the largest KL of the two runtimes differed by 25% against the
# oracle. A method error (a wrong window, a missing BOS, KL in the wrong
# direction) moves these by far more. Measured on an AVX-512 machine: KL 1.7%,
# same top 0.2 points, p99 2.4% apart.
DIFF_KL_REL = 0.10
DIFF_SAME_TOP = 0.02
DIFF_P99_REL = 0.20

llama_cpp = pytest.importorskip("llama_cpp")
if not SMOLLM2.exists():
    pytest.skip("SmolLM2 not fetched (scripts/fetch-models)", allow_module_level=True)


def window_log_probs(model_path, tokens, n_ctx, chunks):
    """log-softmax rows of the scored positions of each window, llama.cpp's way."""
    llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=n_ctx, n_batch=n_ctx,
                          n_threads=THREADS, logits_all=True, verbose=False)
    add_bos = llm._model.add_bos_token() if hasattr(llm._model, "add_bos_token") else False
    bos = llm.token_bos()
    first = n_ctx // 2
    rows, targets = [], []
    for c in range(chunks):
        window = list(tokens[c * n_ctx:(c + 1) * n_ctx])
        if add_bos:
            window[0] = bos
        llm.reset()
        llm.eval(window)
        logits = np.array(llm.scores[first:n_ctx - 1], dtype=np.float32)
        m = logits.max(axis=1, keepdims=True)
        lse = np.log(np.exp((logits - m).astype(np.float32)).astype(np.float64).sum(axis=1,
                                                                                     keepdims=True))
        rows.append(logits.astype(np.float64) - m - lse)
        targets.extend(tokens[c * n_ctx + first + 1:(c + 1) * n_ctx])
    del llm
    return np.concatenate(rows), np.array(targets)


def snug_perplexity(*args):
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "r.json"
        subprocess.run([SNUG, "perplexity", *map(str, args), "-f", str(TEXT), "-c", str(N_CTX),
                        "--chunks", str(CHUNKS), "-t", str(THREADS), "--json", str(out)],
                       check=True, capture_output=True)
        return json.loads(out.read_text())


@pytest.fixture(scope="module")
def tokens():
    llm = llama_cpp.Llama(model_path=str(SMOLLM2), n_ctx=N_CTX, vocab_only=True, verbose=False)
    return llm.tokenize(TEXT.read_bytes(), add_bos=True, special=False)


@pytest.fixture(scope="module")
def q8_base():
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "smollm2-q8_0.gguf"
        subprocess.run([SNUG, "quantize", str(SMOLLM2), str(path), "Q8_0"], check=True,
                       capture_output=True)
        yield path


def test_perplexity_matches_llama_cpp(tokens, arithmetic):
    lp, targets = window_log_probs(SMOLLM2, tokens, N_CTX, CHUNKS)
    nll = -lp[np.arange(len(targets)), targets]
    ref_ppl = float(np.exp(nll.mean()))
    got = snug_perplexity(SMOLLM2)
    assert got["n_scored"] == len(targets)
    print(f"\nperplexity: snug {got['ppl']['value']:.6f}, llama.cpp {ref_ppl:.6f}")
    assert abs(got["ppl"]["value"] / ref_ppl - 1) < 0.01
    if arithmetic.same:  # equal logits: much closer than 1%
        assert abs(got["ppl"]["value"] / ref_ppl - 1) < 1e-4


def test_kl_divergence_matches_llama_cpp(tokens, q8_base, arithmetic):
    base_lp, targets = window_log_probs(q8_base, tokens, N_CTX, CHUNKS)
    model_lp, _ = window_log_probs(SMOLLM2, tokens, N_CTX, CHUNKS)
    kld = (np.exp(base_lp) * (base_lp - model_lp)).sum(axis=1)
    same_top = float((base_lp.argmax(axis=1) == model_lp.argmax(axis=1)).mean())
    got = snug_perplexity(SMOLLM2, "--kl-base", q8_base)
    print(f"\nKL: snug {got['kld']['value']:.6f} llama.cpp {kld.mean():.6f}; same top: snug "
          f"{got['same_top']['value']:.4f} llama.cpp {same_top:.4f}")
    print(f"KL p99: snug {got['kld_p99']:.6f} llama.cpp {np.percentile(kld, 99):.6f}")
    assert got["kld"]["value"] > 0
    p99 = np.percentile(kld, 99)
    if arithmetic.same:
        # The Q8_0 base runs through kernels that are not bit-exact with llama.cpp's
        # for every format, so allow a few percent on a small mean.
        assert abs(got["kld"]["value"] - kld.mean()) < 0.05 * kld.mean() + 1e-4
        assert abs(got["same_top"]["value"] - same_top) < 0.01
        assert abs(got["kld_p99"] - p99) < 0.1 * p99 + 1e-3
    else:
        assert abs(got["kld"]["value"] - kld.mean()) < DIFF_KL_REL * kld.mean()
        assert abs(got["same_top"]["value"] - same_top) < DIFF_SAME_TOP
        assert abs(got["kld_p99"] - p99) < DIFF_P99_REL * p99


def test_kl_against_itself_is_zero():
    got = snug_perplexity(SMOLLM2, "--kl-base", SMOLLM2)
    assert abs(got["kld"]["value"]) < 1e-6
    assert got["same_top"]["value"] == 1.0
    assert got["ppl"]["value"] == got["ppl_base"]["value"]
