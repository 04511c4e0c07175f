"""Converter-style tiny models, snug against llama.cpp (llama-cpp-python) on the same files.

write_fixture_tool (tests/model) writes, with snug's own GGUF writer, two models shaped like
the files llama.cpp's converters produce: F32 weights everywhere, a feed-forward width of
100 (not a multiple of 32), tokenizer.ggml.seperator_token_id = 0xFFFFFFFF (-1, "none") and
a padding_token_id one past the vocabulary; one with a byte-level BPE vocabulary (untied
output), one with a SentencePiece vocabulary that adds BOS (tied output).

Also written: tiny Qwen 2 (q/k/v biases), Qwen 3 (q/k norms) and Gemma 3 models (q/k norms,
post-norms, GeGLU, seven layers of which six attend over the last 8 positions: the 200-token
run below is mostly outside the window), with the families' tensor names and metadata: llama.cpp's
logits on a random-weight model are the oracle for the architecture. And Llamas with each rope
scaling llama.cpp reads from metadata: linear (factor 4), YaRN (factor 4 over a 64-token
original context) and Llama 3's rope_freqs divisors.

Checked: llama.cpp loads and runs them (and reports both ids as bad special tokens, keeping
"none"); snug loads and runs them with one warning line; special ids, end-of-generation
sets, tokenization and detokenization are identical; logits agree within float32 rounding; greedy tokens
agree wherever llama.cpp's top-2 margin is clear of that rounding.
"""
import ctypes
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(os.environ.get("SNUG_SOURCE_DIR", Path(__file__).resolve().parents[2]))
BUILD = ROOT / "build"
SNUG = os.environ.get("SNUG_BIN", str(BUILD / "snug"))
EVAL_TOOL = os.environ.get("SNUG_EVAL_TOOL", str(BUILD / "tests" / "reference" / "eval_tool"))
TOKENIZE_TOOL = os.environ.get("SNUG_TOKENIZE_TOOL", str(BUILD / "tests" / "text" / "tokenize_tool"))
FIXTURE_TOOL = os.environ.get("SNUG_FIXTURE_TOOL",
                              str(BUILD / "tests" / "model" / "write_fixture_tool"))
THREADS = 2
FIXTURES = {"bpe": ("tiny-bpe-f32.gguf", 263), "spm": ("tiny-spm-f32.gguf", 281)}
FAMILIES = {f: (f"tiny-{f}.gguf", 263) for f in ("qwen2", "qwen3", "gemma3", "llama-linear",
                                                 "llama-yarn", "llama-freqs")}
ALL = {**FIXTURES, **FAMILIES}

# Logits of these F32 models are O(1) (|logit| < 4 by construction). Both sides compute each
# one through chains of float32 dot products of at most 263 terms and round K and V (and, on
# llama.cpp's f16 path, Q) to f16. Reordering a K-term float32 sum (AVX2 vs AVX-512 lanes,
# tiles) moves it by at most ~K * 2^-24 of the sum of |terms|: ~1e-5 relative. Such a move
# can flip the f16 rounding of a K/V element by one f16 ulp (2^-10 relative), which attention
# dilutes to ~1e-4 at the logits; a few such flips stay below LOGIT_TOL, and the mean stays at
# rounding level (~1e-6). A real defect (a lost feed-forward unit, a wrong rope or norm) moves
# logits by 1e-2 or more, everywhere.
LOGIT_TOL = 2e-3
MEAN_TOL = 1e-4
# The family and rope fixtures have sharper attention than the two above: Qwen 3 and Gemma 3
# RMS-normalise every query and key head, the others draw q/k weights twice as large (qk_scale
# 2, so that a wrong rotation shows). They get twice the maximum and four times the mean. On
# AVX-512, snug's attention keeps the query in f32 where llama.cpp rounds it to f16 (2^-11
# relative per element), which sharper attention carries further into the logits. Measured
# against an AVX-512 llama.cpp, max |diff| / mean: snug on AVX3_DL 2.0e-3 / 2.8e-4 (gemma3),
# 1.3e-3 / 1.1e-4 (qwen3), 1.0e-3 / 1.2e-4 (llama-yarn); snug forced to its AVX2 (f16-query)
# path 9.2e-4 / 7.2e-5, 1.2e-4 / 1.8e-6 and 1.1e-4 / 7.5e-7. A wrong window, norm, rotation
# or scaling moves logits by 1e-2 and more (forward_oracle_test shows 0.3-0.8 relative).
SHARP_ATTENTION = {"qwen2", "qwen3", "gemma3", "llama-linear", "llama-yarn", "llama-freqs"}


def tolerance_factor(kind):
    return 2 if kind in SHARP_ATTENTION else 1

try:
    import llama_cpp
except ImportError:  # pragma: no cover - the environment decides
    if os.environ.get("CI") == "true" or os.environ.get("SNUG_REQUIRE_REFERENCE") == "1":
        raise
    pytest.skip("llama_cpp does not import (.venv without llama-cpp-python)", allow_module_level=True)


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("converter_fixtures")
    subprocess.run([FIXTURE_TOOL, str(d)], check=True, timeout=60)
    return d


def load_llama(path, capfd=None, logits_all=False):
    return llama_cpp.Llama(model_path=str(path), n_ctx=256, n_batch=256, n_threads=THREADS,
                           logits_all=logits_all, verbose=capfd is not None)


def run_tool(path, requests):
    inp = "".join(json.dumps(r) + "\n" for r in requests)
    proc = subprocess.run([TOKENIZE_TOOL, str(path)], input=inp.encode(), capture_output=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return [json.loads(line) for line in proc.stdout.decode().splitlines()]


def vocab_of(llm):
    return llama_cpp.llama_model_get_vocab(llm.model)


@pytest.mark.parametrize("kind", sorted(FIXTURES))
def test_llama_cpp_and_snug_load_them(fixture_dir, kind, capfd):
    name, n_vocab = FIXTURES[kind]
    path = fixture_dir / name
    capfd.readouterr()
    llm = load_llama(path, capfd)
    err = capfd.readouterr().err
    # llama.cpp (llama-vocab.cpp): an id outside the vocabulary keeps the default, here none.
    assert "bad special token: 'tokenizer.ggml.seperator_token_id' = 4294967295" in err, err[-3000:]
    assert f"bad special token: 'tokenizer.ggml.padding_token_id' = {n_vocab}" in err, err[-3000:]
    v = vocab_of(llm)
    assert llama_cpp.llama_vocab_sep(v) == -1
    assert llama_cpp.llama_vocab_pad(v) == -1
    assert llm.n_vocab() == n_vocab

    info = run_tool(path, [{"info": True}])[0]
    assert info["n_vocab"] == n_vocab
    assert info["bos"] == llama_cpp.llama_vocab_bos(v)
    assert info["eos"] == llama_cpp.llama_vocab_eos(v)
    assert info["eog"] == [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(v, t)]

    proc = subprocess.run([SNUG, "run", str(path), "--no-chat", "--temp", "0", "-n", "4",
                           "-t", str(THREADS), "-p", "hello"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == (f"snug: warning: '{path}': tokenizer.ggml.padding_token_id = {n_vocab} "
                           f"is outside the vocabulary of {n_vocab} tokens; ignored\n")


TEXTS = ["hello", "Hello, world!", " hello the world", "the the the", "aaaa aaaaaaaa a",
         "héllo é", "😀 hello 😀", "  two  spaces", "\n\nnewlines\n", "tab\tand\rcr",
         "<|im_start|>user\nhello<|im_end|>\n", "<s>hello</s>", "<|user|>hi", "<start_of_turn>x",
         "<|endoftext|>", "<unk>", "<0x41>", "日本語", "x" * 200, "the quick brown fox 12345",
         "'s 've 're", "", " "]


@pytest.mark.parametrize("kind", sorted(FIXTURES))
def test_tokenization_is_identical(fixture_dir, kind):
    path = fixture_dir / FIXTURES[kind][0]
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    texts = [t.encode() for t in TEXTS] + [b"\xff\xfe", b"a\xc3(b"]
    requests = [{"hex": t.hex(), "special": sp, "add_special": add}
                for t in texts for sp in (False, True) for add in (False, True)]
    results = run_tool(path, requests)
    mismatches, decode_mismatches = [], []
    for req, res in zip(requests, results):
        text = bytes.fromhex(req["hex"])
        want = llm.tokenize(text, add_bos=req["add_special"], special=req["special"])
        if res.get("ids") != want:
            mismatches.append((text, req["special"], req["add_special"], res.get("ids"), want))
        elif bytes.fromhex(res["decoded_hex"]) != llama_detokenize(llm, want):
            decode_mismatches.append((text, bytes.fromhex(res["decoded_hex"])))
    assert not mismatches, mismatches[:5]
    assert not decode_mismatches, decode_mismatches[:5]


def llama_detokenize(llm, ids):
    """llama_detokenize(remove_special = false, unparse_special = false), as snug's decode()."""
    arr = (llama_cpp.llama_token * max(len(ids), 1))(*ids)
    size = 256 + 64 * len(ids)
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_detokenize(vocab_of(llm), arr, len(ids), buf, size, False, False)
    assert n >= 0
    return buf.raw[:n]


def snug_logits(path, ids, tmp_path):
    out = tmp_path / "logits.f32"
    subprocess.run([EVAL_TOOL, str(path), str(out), str(THREADS)], input=" ".join(map(str, ids)),
                   text=True, check=True, timeout=120)
    return np.fromfile(out, dtype=np.float32).reshape(len(ids), -1)


@pytest.mark.parametrize("kind", sorted(ALL))
def test_logits_agree(fixture_dir, kind, tmp_path):
    path = fixture_dir / ALL[kind][0]
    llm = load_llama(path, logits_all=True)
    text = b" hello the world, the quick brown fox jumps over the lazy dog. aaaa " * 3
    ids = llm.tokenize(text, add_bos=True, special=False)
    rng = np.random.default_rng(7)
    ids += [int(t) for t in rng.integers(0, llm.n_vocab(), size=200 - len(ids))]
    llm.reset()
    llm.eval(ids)
    want = np.array(llm.scores[: len(ids)], dtype=np.float32)
    got = snug_logits(path, ids, tmp_path)
    assert got.shape == want.shape
    diff = np.abs(got - want)
    top_agree = float(np.mean(np.argmax(got, axis=1) == np.argmax(want, axis=1)))
    print(f"\n{kind}: {len(ids)} positions, max |logit| {np.abs(want).max():.3f}, "
          f"max |diff| {diff.max():.2e}, mean {diff.mean():.2e}, top-1 agreement {top_agree:.4f}")
    tol = tolerance_factor(kind)
    assert diff.max() < tol * LOGIT_TOL
    assert diff.mean() < tol * tol * MEAN_TOL
    # Where the top two differ by more than the tolerance, the top token must be the same.
    srt = np.sort(want, axis=1)
    clear = (srt[:, -1] - srt[:, -2]) > 2 * tol * LOGIT_TOL
    assert np.all(np.argmax(got, axis=1)[clear] == np.argmax(want, axis=1)[clear])


def ref_greedy(llm, prompt_ids, n):
    """llama.cpp's greedy continuation, and its top-2 margin at each step evaluated (also at
    the step that chose an end-of-generation token, where the continuation stops)."""
    llm.reset()
    llm.eval(prompt_ids)
    toks, margins = [], []
    for _ in range(n):
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
        top2 = np.sort(logits)[-2:]
        margins.append(float(top2[1] - top2[0]))
        tok = int(np.argmax(logits))
        if llama_cpp.llama_vocab_is_eog(vocab_of(llm), tok):
            break
        toks.append(tok)
        llm.eval([tok])
    return toks, margins


@pytest.mark.parametrize("kind", sorted(ALL))
@pytest.mark.parametrize("prompt", ["hello", "the world of aaaa", "é😀 the"])
def test_greedy_agrees_where_the_margin_is_clear(fixture_dir, kind, prompt):
    path = fixture_dir / ALL[kind][0]
    llm = load_llama(path)
    n = 48
    proc = subprocess.run([SNUG, "run", str(path), "--json", "--no-chat", "--temp", "0", "-n",
                           str(n), "-t", str(THREADS), "-p", prompt], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    ids = llm.tokenize(prompt.encode(), add_bos=True, special=False)
    assert got["prompt_token_ids"] == ids
    want, margins = ref_greedy(llm, ids, n)
    # Identical up to the first step whose top-2 margin is within the logit tolerance (a
    # near tie either side may break, also between a token and the end of generation);
    # after a legitimate split the contexts differ and nothing more is compared.
    snug_ids = got["token_ids"]
    agreed = 0
    for i in range(max(len(snug_ids), len(want))):
        a = snug_ids[i] if i < len(snug_ids) else "end"
        b = want[i] if i < len(want) else "end"
        if a != b:
            assert margins[i] <= 2 * tolerance_factor(kind) * LOGIT_TOL, (
                f"snug {a} vs llama.cpp {b} at step {i} with margin {margins[i]:.2e}: "
                f"snug {snug_ids} llama.cpp {want}")
            break
        agreed += 1
    print(f"\n{kind} {prompt!r}: {agreed} of {len(want)} greedy tokens identical, "
          f"smallest margin {min(margins) if margins else float('nan'):.2e}")
