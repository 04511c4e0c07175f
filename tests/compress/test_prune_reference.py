"""snug prune's outputs in llama.cpp (llama-cpp-python), on the real SmolLM2.

- Structured pruning writes a standard GGUF of smaller dimensions: llama.cpp
  loads it with the new layer count, feed-forward width and head counts (and
  the head size from key_length, not from the narrower head count), and the
  two runtimes compute the same function on the same pruned file: greedy
  tokens identical where both take the same arithmetic (tests/reference/
  arith.py; the cut file keeps SmolLM2's Q4_1 and Q8_0); elsewhere, over 256
  tokens of text, the top token agreeing and the KL divergence within arith's
  bounds (a pruned model's flatter distributions have more near-ties, so a
  greedy continuation is not the measure there).
- An unstructured file (a quarter of the weights zero, in Q8_0) is an
  ordinary file to llama.cpp: it loads and agrees with snug the same way.
  (Not a 2:4 magnitude file: at PPL ~1500 nearly every top token is a
  near-tie, and agreement measures noise.)
"""
import json
import os
import subprocess
from pathlib import Path

import pytest

import numpy as np

import arith

ROOT = Path(os.environ.get("SNUG_SOURCE_DIR", Path(__file__).resolve().parents[2]))
SNUG = os.environ.get("SNUG_BIN", str(ROOT / "build" / "snug"))
EVAL_TOOL = os.environ.get("SNUG_EVAL_TOOL", str(ROOT / "build" / "tests" / "reference" / "eval_tool"))
SMOLLM2 = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
CALIB = ROOT / "data" / "text" / "calibration.txt"
THREADS = 2
N_GREEDY = 32
PROMPTS = ["The capital of France is", "Once upon a time, in a small village by the sea,"]

llama_cpp = pytest.importorskip("llama_cpp")
if not SMOLLM2.exists():
    pytest.skip("models not fetched (scripts/fetch-models)", allow_module_level=True)


def run(*args):
    proc = subprocess.run([SNUG, *map(str, args)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def structured(tmp_path_factory):
    out = tmp_path_factory.mktemp("prune") / "structured.gguf"
    # --no-refit: this test is about the shapes, and a refit over only 4
    # calibration chunks (2048 rows for a 1536-wide Hessian) fits noise and
    # leaves flatter distributions with more near-ties.
    proc = run("prune", SMOLLM2, out, "--structured", "ffn=0.25,heads=0.34,layers=2", "--calib",
               CALIB, "--calib-chunks", 4, "--no-refit", "-t", THREADS)
    print(proc.stderr.strip())
    return out


@pytest.fixture(scope="module")
def refitted(tmp_path_factory):
    out = tmp_path_factory.mktemp("prune") / "refitted.gguf"
    # With the refit (16 chunks: 8192 rows for the 1536-wide down projection):
    # every kept layer gets attn_output.bias and ffn_down.bias, which
    # llama.cpp's llama graph adds after those projections.
    proc = run("prune", SMOLLM2, out, "--structured", "ffn=0.125,heads=0.34", "--calib", CALIB,
               "--calib-chunks", 16, "-t", THREADS)
    print(proc.stderr.strip())
    return out


@pytest.fixture(scope="module")
def unstructured(tmp_path_factory):
    out = tmp_path_factory.mktemp("prune") / "mag-0.25.gguf"
    run("prune", SMOLLM2, out, "--method", "magnitude", "--sparsity", "0.25", "--type", "q8_0")
    return out


def load(path):
    return arith.load_without_repacking(llama_cpp, model_path=str(path), n_ctx=512, n_batch=512,
                                        n_threads=THREADS, logits_all=False, verbose=False)


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def check_agreement(path, arithmetic, tmp_path):
    llm = load(path)
    if arithmetic.same_for(["q4_1", "q8_0"]):
        for prompt in PROMPTS:
            got = json.loads(run("run", path, "--json", "--temp", "0", "--no-chat", "-t", THREADS,
                                 "-n", N_GREEDY, "-p", prompt).stdout)
            ids = llm.tokenize(prompt.encode(), add_bos=True, special=False)
            assert got["prompt_token_ids"] == ids
            assert got["token_ids"] == arith.llama_greedy(llama_cpp, llm, ids, N_GREEDY)
        return llm
    text = (ROOT / "tests" / "data" / "reference.txt").read_bytes()
    ids = llm.tokenize(text, add_bos=True, special=False)[:256]
    scored = llama_cpp.Llama(model_path=str(path), n_ctx=512, n_batch=512, n_threads=THREADS,
                             logits_all=True, verbose=False)
    scored.eval(ids)
    want = np.array(scored.scores[: len(ids)], dtype=np.float32)
    out = tmp_path / (path.stem + ".f32")
    subprocess.run([EVAL_TOOL, str(path), str(out), str(THREADS)], input=" ".join(map(str, ids)),
                   text=True, check=True, timeout=300)
    got = np.fromfile(out, dtype=np.float32).reshape(len(ids), -1)
    top = float(np.mean(np.argmax(got, axis=1) == np.argmax(want, axis=1)))
    lp = log_softmax(want)
    kl = float(np.mean(np.sum(np.exp(lp) * (lp - log_softmax(got)), axis=1)))
    print(f"{path.name}: top-1 agreement {top:.4f}, mean KL(llama.cpp || snug) {kl:.6f}")
    assert top >= arith.DIFF_TOP1
    assert kl < arith.DIFF_MEAN_KL
    return llm


def test_structured_cut_loads_in_llama_cpp_with_its_new_shape(structured, arithmetic, tmp_path):
    llm = check_agreement(structured, arithmetic, tmp_path)
    md = llm.metadata
    assert md["llama.block_count"] == "28"
    assert md["llama.feed_forward_length"] == "1152"  # 1536 - 384, whole blocks of 32
    assert md["llama.attention.head_count"] == "6"    # one of SmolLM2's 3 KV groups of 3 heads
    assert md["llama.attention.head_count_kv"] == "2"
    assert llama_cpp.llama_model_n_layer(llm.model) == 28
    assert llama_cpp.llama_model_n_head(llm.model) == 6


def test_refitted_cut_with_output_biases_agrees_with_llama_cpp(refitted, arithmetic, tmp_path):
    import gguf
    names = {t.name for t in gguf.GGUFReader(str(refitted)).tensors}
    for l in range(30):
        assert f"blk.{l}.attn_output.bias" in names
        assert f"blk.{l}.ffn_down.bias" in names
    llm = check_agreement(refitted, arithmetic, tmp_path)
    assert llm.metadata["llama.feed_forward_length"] == "1344"  # 1536 - 192


def test_unstructured_file_loads_in_llama_cpp(unstructured, arithmetic, tmp_path):
    check_agreement(unstructured, arithmetic, tmp_path)
