"""Whether snug and llama.cpp take the same arithmetic on this machine.

Exact identity with llama.cpp (tokens, logits) is a property of one instruction
set, not of correctness: snug's kernels follow ggml's AVX2 code operation for
operation, and llama-cpp-python builds llama.cpp for the CPU it is installed
on, so on an AVX-512 CPU llama.cpp sums in other orders. Identity is asserted
only where both sides report that arithmetic: snug dispatched to Highway's
AVX2 target, llama.cpp built with AVX2 and without any AVX-512 extension.
Everywhere else the tests assert bounds and the float64 oracle
(test_oracle_reference.py) answers which of the two is more accurate.

On AVX2 snug's q4_1, q5_0, q5_1 and q8_0 kernels take ggml's order only when
asked (SNUG_GGML_ORDER=1, which tests/reference/CMakeLists.txt sets for the
identity tests); by default they take block-sum order, as on AVX3_DL, and
`run --json` names them "avx2-blocksum". Identity is asserted only where
snug's kernels for the model's types are ggml-order ones. The same flag keeps
f16 attention in llama.cpp's order on AVX2 ("f16-ggml"), and q8_0/q4_0
attention in llama.cpp's flash order ("avx2-int8"); by default AVX2 takes the
grouped f32 kernels ("avx2-f16-heads", "avx2-dequant-heads"), and `run
--json`'s "attention_kernel" says which.

llama.cpp also repacks some weight types at load (on AVX2: q4_0, the K-quants
and iq4_nl into 8-row interleaved tiles, a second copy of them) and multiplies
those in its own order. snug keeps one mapped copy; on AVX2 its q4_0 kernels
take the repacked order for the matrices llama.cpp repacks (whole groups of 8
rows: tensor/qseq_avx2-inl.h), and its q4_1 and q8_0 kernels ggml's plain
order, for types llama.cpp does not repack on x86. So identity is asserted
against llama.cpp loaded as it loads by default. load_without_repacking
(llama.cpp's --no-repack) gives the same arithmetic for q4_1 and q8_0 files;
there a q4_0 matrix would take ggml's plain order, which snug keeps only for
q4_0 matrices of other shapes.
"""
import json
import subprocess
from dataclasses import dataclass

# The one snug target whose kernels are written to ggml's AVX2 summation order.
IDENTITY_TARGET = "AVX2"
# The weight formats whose AVX2 kernels follow llama.cpp's operation for
# operation (q4_0: its repacked order where it repacks, else ggml's).
# The others (the K-quants, q5_0, ...) sum their integer products in snug's
# own order: measured on Gemma 3 270M's q4_K attn_output against llama.cpp's
# ggml_vec_dot_q4_K_q8_K on the same activations, 40% of rows differ by an
# ulp, and its greedy runs part after about ten tokens. A model with any of
# them is compared by the bounds, not token for token.
IDENTITY_TYPES = frozenset({"q4_0", "q4_1", "q8_0"})

# Bounds between snug and llama.cpp under different arithmetic. Measured on an
# AVX-512 machine (SmolLM2 Q4_1, f16 cache): they agree on the top token at
# 0.96-0.97 of the positions of a text and sit at a mean KL of about 3e-3 from
# each other, each at about 3e-3 from the float64 oracle. The bounds allow
# about twice that disagreement; a defective kernel or layer drops agreement
# far lower and raises KL by orders of magnitude. Which of the two is more
# accurate is the oracle's question (oracle.check_as_close), not these bounds'.
DIFF_GREEDY_AGREE = 0.9  # teacher-forced, per greedy continuation
DIFF_TOP1 = 0.93  # over the positions of a text
DIFF_MEAN_KL = 0.01  # mean KL(llama.cpp || snug) over the positions of a text


def llama_features(system_info) -> dict:
    """llama_print_system_info()'s "CPU : SSE3 = 1 | AVX2 = 1 | ..." as
    {"SSE3": "1", "AVX2": "1", ...}. Builds that list only the features they
    have and builds that print "= 0" for the others read the same."""
    if isinstance(system_info, bytes):
        system_info = system_info.decode(errors="replace")
    features = {}
    for part in system_info.split("|"):
        name, eq, value = part.rpartition("=")
        if eq:
            # "CPU : SSE3" -> "SSE3": the backend's name prefixes the first feature.
            features[name.split(":")[-1].strip()] = value.strip()
    return features


def llama_simd(system_info) -> str:
    """The widest x86 vector extension llama.cpp was built with, as a short name."""
    f = llama_features(system_info)
    if any(k.startswith("AVX512") and v == "1" for k, v in f.items()):
        return "AVX512"
    if f.get("AVX2") == "1":
        return "AVX2"
    return "no AVX2"


def ggml_order_kernels(kernels) -> bool:
    """Whether snug's matmul kernels (run --json "matmul_kernels": type ->
    kernel) all follow ggml's order: none of them in block-sum order."""
    return not any("blocksum" in k for k in (kernels or {}).values())


def ggml_order_attention(attention) -> bool:
    """Whether snug's attention kernel (run --json "attention_kernel") takes
    llama.cpp's order: not one of the grouped f32 ones ("...-heads")."""
    return attention is None or not attention.endswith("-heads")


def same_arithmetic(snug_target: str, system_info, kernels=None, attention=None) -> bool:
    """kernels: snug's matmul kernels for the probe model, attention its
    attention kernel (None: not known, taken as ggml-order ones)."""
    return (snug_target == IDENTITY_TARGET and llama_simd(system_info) == "AVX2"
            and ggml_order_kernels(kernels) and ggml_order_attention(attention))


@dataclass(frozen=True)
class Arithmetic:
    snug_target: str  # snug's simd_target ("AVX2", "AVX3", ...)
    llama: str  # llama_simd() of llama.cpp's system info
    same: bool

    def same_for(self, weight_types) -> bool:
        """Whether identity holds for a model whose matrices have these
        types (snug's run --json "matmul_kernels" keys)."""
        return self.same and set(weight_types) <= IDENTITY_TYPES

    def line(self) -> str:
        who = f"snug {self.snug_target}, llama.cpp {self.llama}"
        if self.same:
            return f"same arithmetic ({who}): identity asserted"
        return f"different arithmetic ({who}): identity not asserted, oracle bounds apply"


def decide(snug_target: str, system_info, kernels=None, attention=None) -> Arithmetic:
    return Arithmetic(snug_target, llama_simd(system_info),
                      same_arithmetic(snug_target, system_info, kernels, attention))


def snug_simd_target(snug_bin, model):
    """The target the snug binary under test dispatches to, its matmul
    kernels for the model and its attention kernel, as `run --json` reports
    them."""
    proc = subprocess.run([str(snug_bin), "run", str(model), "--json", "--no-chat", "--temp", "0",
                           "-n", "1", "-p", "x"], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"snug run failed: {proc.stderr.strip()}")
    got = json.loads(proc.stdout)
    return got["simd_target"], got["matmul_kernels"], got["attention_kernel"]


def probe(snug_bin, model) -> Arithmetic:
    import llama_cpp
    target, kernels, attention = snug_simd_target(snug_bin, model)
    return decide(target, llama_cpp.llama_print_system_info(), kernels, attention)


def load_without_repacking(llama_cpp, **kwargs):
    """llama_cpp.Llama(**kwargs) with its model's use_extra_bufts off
    (llama.cpp's --no-repack): every weight multiplied in the mapped file's
    layout, by ggml's plain kernels."""
    import llama_cpp.llama_cpp as api  # the module llama_cpp.Llama takes its defaults from
    default = api.llama_model_default_params

    def no_repack():
        params = default()
        params.use_extra_bufts = False
        return params

    api.llama_model_default_params = no_repack
    try:
        return llama_cpp.Llama(**kwargs)
    finally:
        api.llama_model_default_params = default


def llama_greedy(llama_cpp, llm, prompt_ids, n):
    """llama.cpp's greedy continuation of prompt_ids (up to n tokens, stopping
    at an end-of-generation token): llm is a llama_cpp.Llama."""
    import numpy as np
    llm.reset()
    llm.eval(prompt_ids)
    out = []
    for _ in range(n):
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
        tok = int(np.argmax(logits))
        if llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model), tok):
            break
        out.append(tok)
        llm.eval([tok])
    return out


def teacher_forced_agreement(llm, prompt_ids, tokens) -> float:
    """Fraction of `tokens` (snug's greedy continuation) that are llama.cpp's
    top token after the same prefix: llm is a llama_cpp.Llama."""
    import numpy as np
    llm.reset()
    llm.eval(prompt_ids)
    agree = 0
    for tok in tokens:
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
        agree += int(np.argmax(logits)) == tok
        llm.eval([tok])
    return agree / max(len(tokens), 1)
