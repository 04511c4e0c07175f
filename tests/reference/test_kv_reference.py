"""snug's quantized KV cache against llama.cpp's (llama-cpp-python) on SmolLM2.

llama.cpp stores a q8_0 / q4_0 cache only with flash attention, whose CPU kernel
snug's attention_flash_ggml follows operation for operation (q converted to
q8_0, integer dot products, online softmax, values dequantized to f32). This
llama.cpp also rotates Q, K and V by a Walsh-Hadamard matrix when the cache is
quantized (LLAMA_ATTN_ROT_DISABLE turns that off); snug does not rotate yet, so
the comparison is made with the rotation off. Where both take the same
arithmetic (arith.py), the logits over a 300-token text and greedy
continuations then agree exactly; the bounds leave room for another compiler's
rounding. Elsewhere a K or V value that lands near a rounding boundary of the
4- or 8-bit cache rounds differently on each side, so the two are not compared
with each other: each is compared with the float64 oracle (no cache
quantization), and snug must be at least as close to it as llama.cpp with the
same cache types. Figures are printed (ctest -V, pytest -s).
"""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import arith
import oracle

ROOT = Path(os.environ.get("SNUG_SOURCE_DIR", Path(__file__).resolve().parents[2]))
SNUG = os.environ.get("SNUG_BIN", str(ROOT / "build" / "snug"))
EVAL_TOOL = os.environ.get("SNUG_EVAL_TOOL", str(ROOT / "build" / "tests" / "reference" / "eval_tool"))
SMOLLM2 = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
THREADS = 2
N_TOKENS = 300

os.environ["LLAMA_ATTN_ROT_DISABLE"] = "1"  # read when a context's KV cache is made
llama_cpp = pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")
if not SMOLLM2.exists():
    pytest.skip("SmolLM2 not fetched (scripts/fetch-models)", allow_module_level=True)

GGML_TYPE = {"f16": 1, "q8_0": 8, "q4_0": 2}
# (K, V) -> (least top-1 agreement, largest |logit diff|) against llama.cpp.
BOUNDS = {("q8_0", "q8_0"): (0.99, 0.5), ("q4_0", "q4_0"): (0.99, 0.5)}
# Different arithmetic: mean KL from the float64 oracle above which the
# comparison itself is wrong. A q4_0 cache alone costs about 0.14 on SmolLM2
# (measured in both runtimes: 0.138, 0.139 over 256 tokens), q8_0 about 0.0034.
ORACLE_SANE = {("q8_0", "q8_0"): oracle.ORACLE_SANE, ("q4_0", "q4_0"): 0.5}


@pytest.fixture(scope="module")
def ids():
    tok = llama_cpp.Llama(model_path=str(SMOLLM2), vocab_only=True, verbose=False)
    ids = tok.tokenize((ROOT / "tests" / "data" / "reference.txt").read_bytes(), add_bos=True,
                       special=False)[:N_TOKENS]
    assert len(ids) == N_TOKENS
    return ids


@pytest.fixture(scope="module")
def float64_log_probs(ids, arithmetic):
    return None if arithmetic.same else oracle.forward(oracle.Weights(SMOLLM2), ids)


def logits_pair(tmp_path, ids, k, v):
    llm = llama_cpp.Llama(model_path=str(SMOLLM2), n_ctx=1024, n_batch=512, n_threads=THREADS,
                          logits_all=True, verbose=False, flash_attn=True,
                          type_k=GGML_TYPE[k], type_v=GGML_TYPE[v])
    llm.reset()
    llm.eval(ids)
    want = np.array(llm.scores[: len(ids)], dtype=np.float32)
    out = tmp_path / f"logits_{k}_{v}.f32"
    subprocess.run([EVAL_TOOL, str(SMOLLM2), str(out), str(THREADS), "64", k, v],
                   input=" ".join(map(str, ids)), text=True, check=True, timeout=300)
    got = np.fromfile(out, dtype=np.float32).reshape(len(ids), -1)
    assert got.shape == want.shape
    return got, want


@pytest.mark.parametrize("k,v", list(BOUNDS))
def test_quantized_kv_logits_match_llama_cpp(tmp_path, arithmetic, ids, float64_log_probs, k, v):
    got, want = logits_pair(tmp_path, ids, k, v)
    if not arithmetic.same:
        oracle.check_as_close(float64_log_probs, got, want, f"KV {k}/{v}", ORACLE_SANE[(k, v)])
        return
    top_agree = float(np.mean(np.argmax(got, axis=1) == np.argmax(want, axis=1)))
    diff = np.abs(got - want)
    max_diff, mean_diff = float(diff.max()), float(diff.mean())
    print(f"KV {k}/{v} vs llama.cpp (flash attention, same cache types), {N_TOKENS} tokens: "
          f"top-1 agreement {top_agree:.4f}, max |logit diff| {max_diff:.4f}, mean {mean_diff:.5f}")
    min_agree, max_allowed = BOUNDS[(k, v)]
    assert top_agree >= min_agree
    assert max_diff < max_allowed


def snug_greedy(prompt, kv_type, n):
    proc = subprocess.run([SNUG, "run", str(SMOLLM2), "--json", "--temp", "0", "-t", str(THREADS),
                           "--no-chat", "-n", str(n), "-p", prompt, "--kv-type", kv_type],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["token_ids"]


def ref_greedy(llm, ids, n):
    llm.reset()
    llm.eval(ids)
    out = []
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    for _ in range(n):
        tok = int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))))
        if llama_cpp.llama_vocab_is_eog(vocab, tok):
            break
        out.append(tok)
        llm.eval([tok])
    return out


def test_q8_0_greedy_matches_llama_cpp(arithmetic):
    prompts = ["The capital of France is", "Once upon a time, in a small village by the sea,",
               "def fibonacci(n):\n", "The three primary colors are"]
    n = 64
    llm = llama_cpp.Llama(model_path=str(SMOLLM2), n_ctx=1024, n_batch=512, n_threads=THREADS,
                          verbose=False, flash_attn=True, type_k=8, type_v=8)
    same_as_f16, total = 0, 0
    for p in prompts:
        ids = llm.tokenize(p.encode(), add_bos=True, special=False)
        got, want = snug_greedy(p, "q8_0", n), ref_greedy(llm, ids, n)
        if arithmetic.same:
            assert got == want, f"prompt {p!r}: snug {got} vs llama.cpp {want}"
        else:
            agree = arith.teacher_forced_agreement(llm, ids, got)
            print(f"\nprompt {p!r}: llama.cpp's top token = snug's greedy token at {agree:.3f} of steps")
            assert agree >= arith.DIFF_GREEDY_AGREE, p
        base = snug_greedy(p, "f16", n)
        total += len(base)
        same_as_f16 += sum(a == b for a, b in zip(base, got))
    # Not a bound: how much a q8_0 cache changes this small model's greedy text.
    print(f"\nq8_0 KV greedy checked against llama.cpp on {len(prompts)} x {n} tokens; "
          f"{same_as_f16}/{total} tokens equal to snug's f16-KV output by position")


def test_unknown_kv_type_is_one_line_error():
    proc = subprocess.run([SNUG, "run", str(SMOLLM2), "-n", "1", "-p", "x", "--kv-type", "q5_1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "q5_1" in lines[0], proc.stderr
