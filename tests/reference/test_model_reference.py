"""snug against llama.cpp (llama-cpp-python) on the same GGUF files: SmolLM2
(llama) as fetched (Q4_1) and requantized to Q4_0 by `snug quantize`, and
Gemma 3 270M (gemma3).

Prompts must tokenize identically on every machine. Where both take the same
arithmetic (arith.py: snug on Highway's AVX2 target, llama.cpp built for AVX2
without AVX-512 and loaded as it loads by default, and weight formats whose
snug kernels follow llama.cpp's: SmolLM2 Q4_1 and Q4_0, not Gemma 3's
K-quants), greedy continuations agree token for token and the logits of a
512-token text (one batch) are the same bits. Elsewhere their sums differ in order, near-ties resolve
differently and a greedy continuation diverges after the first one; the bounds
below then check that the two stay close, and test_oracle_reference.py decides
which is more accurate.
"""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import arith

ROOT = Path(os.environ.get("SNUG_SOURCE_DIR", Path(__file__).resolve().parents[2]))
SNUG = os.environ.get("SNUG_BIN", str(ROOT / "build" / "snug"))
EVAL_TOOL = os.environ.get("SNUG_EVAL_TOOL", str(ROOT / "build" / "tests" / "reference" / "eval_tool"))
SMOLLM2 = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3 = ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"
MODELS = {"smollm2": SMOLLM2, "smollm2_q4_0": None, "gemma3": GEMMA3}  # None: written below
THREADS = 2
N_GREEDY = 64

llama_cpp = pytest.importorskip("llama_cpp")
if not SMOLLM2.exists() or not GEMMA3.exists():
    pytest.skip("models not fetched (scripts/fetch-models)", allow_module_level=True)

PLAIN_PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):\n",
    "The three primary colors are",
]
CHAT_PROMPTS = [
    "What is the boiling point of water at sea level?",
    "Write a haiku about autumn leaves.",
    "List three uses of a paperclip.",
]


@pytest.fixture(scope="module")
def smollm2_q4_0(tmp_path_factory):
    """SmolLM2 requantized to Q4_0, its tied token embedding (the output
    matrix) too: every matrix has whole groups of eight rows, so llama.cpp
    repacks each at load on AVX2 (the output as well: it multiplies a
    duplicate of the embedding) and snug's AVX2 kernels take that order
    (qseq_avx2-inl.h)."""
    out = tmp_path_factory.mktemp("q4_0") / "smollm2-q4_0.gguf"
    subprocess.run([SNUG, "quantize", str(SMOLLM2), str(out), "Q4_0", "--keep",
                    "token_embd.weight=q4_0"], check=True, capture_output=True, timeout=600)
    return out


@pytest.fixture(scope="module", params=sorted(MODELS))
def ref(request):
    path = MODELS[request.param] or request.getfixturevalue(request.param)
    # As llama.cpp loads by default: repacking on. snug follows its repacked
    # order for q4_0 and its plain kernels for q4_1 and q8_0, which it never
    # repacks on x86.
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=1024, n_batch=512, n_threads=THREADS,
                          logits_all=False, verbose=False)
    llm.snug_model = path
    return llm


def last_logits(llm):
    # With logits_all=False llama-cpp-python keeps no scores: read the context's last row.
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))


def ref_greedy(llm, prompt_ids, n):
    llm.reset()
    llm.eval(prompt_ids)
    out = []
    for _ in range(n):
        tok = int(np.argmax(last_logits(llm)))
        if llm_is_eog(llm, tok):
            break
        out.append(tok)
        llm.eval([tok])
    return out


def llm_is_eog(llm, tok):
    return bool(llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model), tok))


def snug_run(model, args):
    proc = subprocess.run([SNUG, "run", str(model), "--json", "--temp", "0", "-t", str(THREADS), *args],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# Gemma's turn format, from its model card: the Gemma 3 file carries no template.
GEMMA_TURNS = "<start_of_turn>user\n{}<end_of_turn>\n<start_of_turn>model\n"


def render_chat(llm, user):
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    if "tokenizer.chat_template" not in llm.metadata:
        return GEMMA_TURNS.format(user)
    tmpl = llm.metadata["tokenizer.chat_template"]
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(tmpl).render(messages=[{"role": "user", "content": user}],
                                        add_generation_prompt=True, bos_token="", eos_token="")


def check_greedy(llm, arithmetic, ids, got):
    assert got["prompt_token_ids"] == ids
    want = ref_greedy(llm, ids, N_GREEDY)
    if arithmetic.same_for(got["matmul_kernels"]):
        assert got["token_ids"] == want, first_divergence(got["token_ids"], want)
        return
    agree = arith.teacher_forced_agreement(llm, ids, got["token_ids"])
    print(f"{first_divergence(got['token_ids'], want)}; llama.cpp's top token = snug's greedy token "
          f"at {agree:.3f} of {len(got['token_ids'])} steps")
    assert agree >= arith.DIFF_GREEDY_AGREE


@pytest.mark.parametrize("prompt", PLAIN_PROMPTS)
def test_greedy_plain_matches_llama_cpp(ref, arithmetic, prompt):
    ids = ref.tokenize(prompt.encode(), add_bos=True, special=False)
    check_greedy(ref, arithmetic, ids,
                 snug_run(ref.snug_model, ["--no-chat", "-n", str(N_GREEDY), "-p", prompt]))


@pytest.mark.parametrize("prompt", CHAT_PROMPTS)
def test_greedy_chat_matches_llama_cpp(ref, arithmetic, prompt):
    ids = ref.tokenize(render_chat(ref, prompt).encode(), add_bos=True, special=True)
    check_greedy(ref, arithmetic, ids, snug_run(ref.snug_model, ["-n", str(N_GREEDY), "-p", prompt]))


def first_divergence(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first difference at token {i}: snug {x} vs llama.cpp {y}"
    if len(a) == len(b):
        return "continuations identical"
    return f"lengths differ: snug {len(a)} vs llama.cpp {len(b)}"


def log_softmax(z):
    z = z.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("name", ["smollm2", "smollm2_q4_0"])
def test_logits_over_512_tokens(tmp_path, arithmetic, request, name):
    """One 512-token batch through both (the q4_0 file: snug's eight-row
    kernel against llama.cpp's repacked GEMM)."""
    model = MODELS[name] or request.getfixturevalue(name)
    text = (ROOT / "tests" / "data" / "reference.txt").read_bytes()
    llm = llama_cpp.Llama(model_path=str(model), n_ctx=1024, n_batch=512, n_threads=THREADS,
                          logits_all=True, verbose=False)
    ids = llm.tokenize(text, add_bos=True, special=False)[:512]
    assert len(ids) == 512
    llm.reset()
    llm.eval(ids)
    want = np.array(llm.scores[: len(ids)], dtype=np.float32)
    out = tmp_path / "logits.f32"
    subprocess.run([EVAL_TOOL, str(model), str(out), str(THREADS)], input=" ".join(map(str, ids)),
                   text=True, check=True, timeout=300)
    got = np.fromfile(out, dtype=np.float32).reshape(len(ids), -1)
    assert got.shape == want.shape
    top_agree = float(np.mean(np.argmax(got, axis=1) == np.argmax(want, axis=1)))
    max_diff = float(np.max(np.abs(got - want)))
    mean_diff = float(np.mean(np.abs(got - want)))
    lp_want = log_softmax(want)
    kl = float(np.mean(np.sum(np.exp(lp_want) * (lp_want - log_softmax(got)), axis=1)))
    print(f"\ntop-1 agreement {top_agree:.4f}, max |logit diff| {max_diff:.4g}, "
          f"mean {mean_diff:.5f}, mean KL(llama.cpp || snug) {kl:.6f}")
    (ROOT / "build").mkdir(exist_ok=True)
    (ROOT / "build" / f"reference_logits_{name}.json").write_text(
        json.dumps({"arithmetic": arithmetic.line(), "top1_agreement": top_agree,
                    "max_abs_logit_diff": max_diff, "mean_abs_logit_diff": mean_diff,
                    "mean_kl_llama_snug": kl}))
    if arithmetic.same:
        # The same operations in the same order: the same bits.
        assert max_diff == 0.0, f"same arithmetic, yet logits differ by up to {max_diff:g}"
    else:
        assert top_agree >= arith.DIFF_TOP1
        assert kl < arith.DIFF_MEAN_KL
