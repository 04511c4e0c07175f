"""snug against llama.cpp on the same GGUF file, same threads, interleaved.

Each sample is a fresh process (so peak RSS is that run's own): prompt
processing of --pp tokens, then --tg generated tokens (greedy, end-of-text
ignored). llama.cpp runs at both flash-attention settings; each metric's
ratio is taken against the setting that did better on it (both are in the
JSON). Samples come in A B B A order: a pair is snug, llama.cpp without and
with flash attention (and ik_llama.cpp, the fastest CPU fork, where
.venv-ik holds PyPI's ik-llama-cpp-python built from source), and the next
pair the reverse, after one warm-up pair,
because this machine's speed drifts over minutes; ratios are per pair.

llama.cpp's peak RSS is its process's VmHWM less the VmRSS the interpreter
had before the model was loaded (Python, numpy and llama_cpp imported, the
library mapped): the model's, context's and compute buffers' share, which
leaves the library's code pages out, in llama.cpp's favour.

  bench/compare [--model PATH]... [--threads 1,2] [--pairs 7] [--pp 512] [--tg 128] [--json OUT]

The JSON holds, per model and thread count, the medians gen_ratio, pp_ratio,
rss_ratio and ttft_ratio (snug over llama.cpp at its better setting) beside
the raw samples, the load average before each pair, the SIMD target snug
dispatched to, llama.cpp's CPU features, and how many of the greedy tokens
agree (random-weight models have near-ties everywhere: expect them to part).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"

# The peers run in child processes (their own interpreter: ik_llama.cpp has
# its own environment). A child is CHILD_HEAD, the peer's part, which imports
# its bindings, takes `before` (VmRSS), loads the model and defines
# prefill(ids), step(tok, pos), logits() and system_info, then CHILD_TAIL, which times them and reports like
# `snug run --json`. argv: model, threads, pp, tg, prompt file, flash (0/1).
CHILD_HEAD = r"""
import ctypes, json, sys, time
import numpy as np


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


model, threads, pp, tg, prompt_file, flash = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                                               sys.argv[5], sys.argv[6] == "1")
ids = [int(x) for x in open(prompt_file).read().split()]
"""
CHILD_TAIL = r"""
t0 = time.perf_counter()
prefill(ids)
t1 = time.perf_counter()
tok = int(np.argmax(logits()))
ttft = time.perf_counter() - t0
out = []
t2 = time.perf_counter()
for i in range(tg):
    out.append(tok)
    step(tok, len(ids) + i)
    tok = int(np.argmax(logits()))
t3 = time.perf_counter()
hwm = status("VmHWM")
print(json.dumps({"prompt_tokens_per_second": len(ids) / (t1 - t0), "generate_tokens_per_second": tg / (t3 - t2),
                  "time_to_first_token": ttft, "peak_rss_bytes": hwm - before, "process_peak_rss_bytes": hwm,
                  "interpreter_rss_bytes": before, "token_ids": out, "system_info": system_info,
                  "flash_attn": flash}))
"""

# llama.cpp through llama-cpp-python.
LLAMA_PART = r"""
import llama_cpp
before = status("VmRSS")  # the interpreter with the bindings imported, the library mapped
llm = llama_cpp.Llama(model_path=model, n_ctx=pp + tg + 8, n_batch=pp, n_ubatch=pp, n_threads=threads,
                      n_threads_batch=threads, flash_attn=flash, verbose=False)
llm.reset()
prefill = lambda ids: llm.eval(ids)
step = lambda tok, pos: llm.eval([tok])
logits = lambda: np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
system_info = llama_cpp.llama_print_system_info().decode()
"""

# ik_llama.cpp (PyPI ik-llama-cpp-python, built from source with native CPU
# flags into its own environment) through its C API, run-time repacking on,
# flash attention as asked (bench/compare asks for on, that fork's CPU default).
IK_PART = r"""
from ik_llama_cpp import _ctypes_api as C
from ik_llama_cpp._internals import make_batch_range, make_batch_single
before = status("VmRSS")
C.llama_backend_init()
mp = C.llama_model_default_params()
mp.repack_tensors = True
mp.flash_attn = flash
m = C.llama_model_load_from_file(model.encode(), mp)
assert m, "ik_llama.cpp could not load the model"
cp = C.llama_context_default_params()
cp.n_ctx, cp.n_batch, cp.n_ubatch = pp + tg + 8, pp, pp
cp.n_threads = cp.n_threads_batch = threads
cp.flash_attn = flash
ctx = C.llama_init_from_model(m, cp)
n_vocab = C.llama_vocab_n_tokens(C.llama_model_get_vocab(m))


def decode(batch):
    assert C.llama_decode(ctx, batch) == 0
    C.llama_batch_free(batch)


prefill = lambda ids: decode(make_batch_range(ids, pos_start=0, logits_last=True))
step = lambda tok, pos: decode(make_batch_single(tok, pos))
logits = lambda: np.ctypeslib.as_array(C.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
info = C._lib.llama_print_system_info
info.restype = ctypes.c_char_p
system_info = info().decode()
"""


def child_sample(python, part, args, threads, prompt_file, flash):
    cmd = [str(python), "-c", CHILD_HEAD + part + CHILD_TAIL, str(args.model), str(threads), str(args.pp),
           str(args.tg), str(prompt_file), "1" if flash else "0"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def snug_sample(args, threads, prompt_file):
    cmd = [str(args.snug), "run", str(args.model), "--json", "--no-chat", "--temp", "0", "--ignore-eos",
           "-n", str(args.tg), "-t", str(threads), "-b", str(args.pp), "--ctx", str(args.pp + args.tg + 8),
           "--token-ids-file", str(prompt_file)]
    if args.repack:
        cmd.append("--repack")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    j = json.loads(out)
    j["time_to_first_token"] = j["prompt_seconds"]
    return j


def prompt_ids(model, n):
    from llama_cpp import Llama
    llm = Llama(model_path=str(model), vocab_only=True, verbose=False)
    text = (ROOT / "tests" / "data" / "reference.txt").read_bytes()
    ids = llm.tokenize(text, add_bos=True, special=False)
    while len(ids) < n:
        ids += llm.tokenize(text, add_bos=False, special=False)
    return ids[:n]


def weight_bytes_per_token(model):
    """Bytes of weights a generated token reads: every tensor once (a tied
    output head reads the whole embedding matrix; the lookup one row of it)."""
    from gguf import GGUFReader
    return sum(int(t.n_bytes) for t in GGUFReader(str(model)).tensors)


def kv_bytes_per_token(model, context):
    """Bytes of f16 KV cache a generated token reads at `context` positions:
    keys and values of every layer (sliding-window layers counted in full)."""
    from gguf import GGUFReader
    r = GGUFReader(str(model))

    def value(key, default=None):
        f = r.fields.get(key)
        return default if f is None else f.parts[f.data[0]].tolist()[0]

    arch = bytes(r.fields["general.architecture"].parts[r.fields["general.architecture"].data[0]]).decode()
    heads = value(f"{arch}.attention.head_count")
    kv_heads = value(f"{arch}.attention.head_count_kv", heads)
    head_dim = value(f"{arch}.attention.key_length", value(f"{arch}.embedding_length") // heads)
    return value(f"{arch}.block_count") * 2 * kv_heads * head_dim * 2 * context


def memory_bandwidth(max_threads, runs=3):
    """GB/s per thread count from build/bench/membw, the best of `runs` (this
    shared machine's bandwidth varies by 1.5x from minute to minute; the best
    is the ceiling). None when not built."""
    tool = ROOT / "build" / "bench" / "membw"
    if not tool.exists():
        return None
    bw = {}
    for _ in range(runs):
        out = subprocess.run([str(tool), str(max_threads)], capture_output=True, text=True, check=True).stdout
        for line in out.split():
            if line.startswith("threads="):
                n = int(line.split("=")[1])
            elif line.startswith("gbps="):
                bw[n] = max(bw.get(n, 0.0), float(line.split("=")[1]))
    return bw


def summary(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, action="append",
                    help="GGUF file (repeatable; default SmolLM2-135M-Instruct Q4_1)")
    ap.add_argument("--snug", type=Path, default=ROOT / "build" / "snug")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--pp", type=int, default=512)
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--repack", action="store_true",
                    help="snug --repack: its matrices packed once at load (llama.cpp and ik_llama.cpp "
                         "repack theirs at load too)")
    ap.add_argument("--ik-python", type=Path, default=ROOT / ".venv-ik" / "bin" / "python",
                    help="interpreter with ik-llama-cpp-python installed (skipped when absent)")
    args = ap.parse_args()
    if not args.ik_python.exists():
        print(f"{args.ik_python} not found: ik_llama.cpp left out", file=sys.stderr)
        args.ik_python = None
    models = args.model or [DEFAULT_MODEL]
    thread_list = [int(t) for t in args.threads.split(",")]
    bandwidth = memory_bandwidth(max(thread_list)) or {}
    report = {"pp_tokens": args.pp, "tg_tokens": args.tg, "pairs": args.pairs, "cpu": cpu_name(),
              "snug_repack": args.repack,
              "memory_bandwidth_gbps": bandwidth, "models": []}
    for model in models:
        args.model = model
        report["models"].append(run_model(args, thread_list, bandwidth))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print("\n" + markdown(report))


def run_model(args, thread_list, bandwidth):
    prompt_file = ROOT / "build" / "bench_prompt_ids.txt"
    prompt_file.parent.mkdir(exist_ok=True)
    prompt_file.write_text(" ".join(map(str, prompt_ids(args.model, args.pp))))
    weights = weight_bytes_per_token(args.model)
    kv = kv_bytes_per_token(args.model, args.pp + args.tg // 2)  # the average context while generating
    per_token = weights + kv
    out = {"model": str(args.model), "weight_bytes_per_token": weights, "kv_bytes_per_token": kv, "results": []}
    print(f"\nmodel {args.model.name}, pp {args.pp}, tg {args.tg}, {args.pairs} interleaved pairs after a warm-up")
    for threads in thread_list:
        snug_s, fa_s, ik_s = [], {False: [], True: []}, []
        loads = []
        for i in range(args.pairs + 1):
            load = os.getloadavg()[0]
            order = ["snug", False, True] + (["ik"] if args.ik_python else [])
            if i % 2:
                order.reverse()
            got = {}
            for who in order:
                if who == "snug":
                    got[who] = snug_sample(args, threads, prompt_file)
                elif who == "ik":
                    got[who] = child_sample(args.ik_python, IK_PART, args, threads, prompt_file, True)
                else:
                    got[who] = child_sample(sys.executable, LLAMA_PART, args, threads, prompt_file, who)
            if i == 0:
                continue  # warm-up: page cache, CPU frequency
            loads.append(load)
            snug_s.append(got["snug"])
            fa_s[False].append(got[False])
            fa_s[True].append(got[True])
            if "ik" in got:
                ik_s.append(got["ik"])
        # Which code made the figures: snug's dispatched target and kernels,
        # llama.cpp's compiled CPU features.
        row = {"threads": threads, "snug_simd_target": snug_s[0]["simd_target"],
               "snug_matmul_kernels": snug_s[0]["matmul_kernels"],
               "llama_system_info": fa_s[False][0]["system_info"], "load_average_before_pairs": loads,
               "greedy_tokens_agreeing": {}}
        for flash in (False, True):
            agree = []
            for a, b in zip(snug_s, fa_s[flash]):
                n = 0
                while n < min(len(a["token_ids"]), len(b["token_ids"])) and a["token_ids"][n] == b["token_ids"][n]:
                    n += 1
                agree.append(n)
            row["greedy_tokens_agreeing"]["fa_on" if flash else "fa_off"] = min(agree)
        for key, name, higher_better in [("prompt_tokens_per_second", "pp", True),
                                         ("generate_tokens_per_second", "gen", True),
                                         ("peak_rss_bytes", "rss", False), ("time_to_first_token", "ttft", False)]:
            a = [x[key] for x in snug_s]
            per_setting = {flash: [x[key] for x in fa_s[flash]] for flash in (False, True)}
            medians = {flash: statistics.median(v) for flash, v in per_setting.items()}
            best = max(medians, key=lambda f: medians[f] if higher_better else -medians[f])
            b = per_setting[best]
            row[f"snug_{name}"] = summary(a)
            row[f"llama_{name}"] = summary(b)
            row[f"llama_{name}_flash_attn"] = best
            # Median of the per-pair ratios snug / llama.cpp (for ttft and rss lower is better).
            row[f"{name}_ratio"] = statistics.median([x / y for x, y in zip(a, b)])
            row[f"snug_{name}_samples"] = a
            row[f"llama_fa_off_{name}_samples"] = per_setting[False]
            row[f"llama_fa_on_{name}_samples"] = per_setting[True]
            if ik_s:
                c = [x[key] for x in ik_s]
                row[f"ik_{name}"] = summary(c)
                row[f"ik_{name}_ratio"] = statistics.median([x / y for x, y in zip(a, c)])
                row[f"ik_{name}_samples"] = c
        if ik_s:
            row["ik_system_info"] = ik_s[0]["system_info"]
        if threads in bandwidth:
            ceiling = bandwidth[threads] * 1e9 / per_token
            row["roofline_gen_tokens_per_second"] = ceiling
            row["snug_gen_fraction_of_roofline"] = row["snug_gen"]["median"] / ceiling
            row["llama_gen_fraction_of_roofline"] = row["llama_gen"]["median"] / ceiling
        out["results"].append(row)
        print_row(row)
        if "roofline_gen_tokens_per_second" in row:
            print(f"  roofline: {weights / 1e6:.1f} MB of weights + {kv / 1e6:.1f} MB of KV per token at {bandwidth[threads]:.1f} GB/s -> "
                  f"{row['roofline_gen_tokens_per_second']:.0f} tok/s ceiling; snug reaches "
                  f"{100 * row['snug_gen_fraction_of_roofline']:.0f}%, llama.cpp "
                  f"{100 * row['llama_gen_fraction_of_roofline']:.0f}%")
    return out


def markdown(report):
    """The rows as docs/BENCHMARKS.md's table: medians, ratios snug / peer."""
    ik = any("ik_pp" in r for m in report["models"] for r in m["results"])
    head = ["model", "threads", "pp tok/s snug / llama.cpp", "ratio", "gen tok/s snug / llama.cpp", "ratio",
            "peak RSS MiB snug / llama.cpp", "ratio"]
    if ik:
        head += ["pp / gen / RSS vs ik_llama.cpp"]
    head += ["gen % of roofline snug / llama.cpp"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in report["models"]:
        name = Path(m["model"]).name.replace(".gguf", "")
        for r in m["results"]:
            med = lambda k: r[k]["median"]
            cells = [name, str(r["threads"]),
                     f"{med('snug_pp'):.1f} / {med('llama_pp'):.1f}", f"**{r['pp_ratio']:.2f}**",
                     f"{med('snug_gen'):.1f} / {med('llama_gen'):.1f}", f"**{r['gen_ratio']:.2f}**",
                     f"{med('snug_rss') / 2**20:.0f} / {med('llama_rss') / 2**20:.0f}", f"{r['rss_ratio']:.2f}"]
            if ik:
                cells.append(f"{r['ik_pp_ratio']:.2f} / {r['ik_gen_ratio']:.2f} / {r['ik_rss_ratio']:.2f}"
                             if "ik_pp" in r else "-")
            if "roofline_gen_tokens_per_second" in r:
                cells.append(f"{100 * r['snug_gen_fraction_of_roofline']:.0f}% / "
                             f"{100 * r['llama_gen_fraction_of_roofline']:.0f}%")
            else:
                cells.append("-")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_row(r):
    t = r["threads"]
    kernels = ", ".join(f"{k} {v}" for k, v in r["snug_matmul_kernels"].items())
    print(f"\nsnug kernels: {r['snug_simd_target']}: {kernels}")
    print(f"llama.cpp: {r['llama_system_info'].strip()}")
    print(f"load average before the pairs: {', '.join(f'{x:.2f}' for x in r['load_average_before_pairs'])}; "
          f"greedy tokens agreeing (fewest over the pairs): flash attention off "
          f"{r['greedy_tokens_agreeing']['fa_off']}, on {r['greedy_tokens_agreeing']['fa_on']}")
    print(f"threads {t}            snug median (min-max)            llama.cpp median (min-max)  FA   ratio")
    for name, unit, scale in [("pp", "tok/s", 1), ("gen", "tok/s", 1), ("ttft", "s", 1), ("rss", "MiB", 1 / 2**20)]:
        s, l = r[f"snug_{name}"], r[f"llama_{name}"]
        fmt = lambda d: f"{d['median']*scale:9.2f} ({d['min']*scale:.2f}-{d['max']*scale:.2f})"
        fa = "on " if r[f"llama_{name}_flash_attn"] else "off"
        print(f"  {name:4} {unit:6}  {fmt(s):32} {fmt(l):27} {fa}  {r[f'{name}_ratio']:.2f}x")
    if "ik_pp" in r:
        print("  ik_llama.cpp (run-time repacking, flash attention on):")
        for name, unit, scale in [("pp", "tok/s", 1), ("gen", "tok/s", 1), ("ttft", "s", 1), ("rss", "MiB", 1 / 2**20)]:
            d = r[f"ik_{name}"]
            print(f"  {name:4} {unit:6}  {d['median']*scale:9.2f} ({d['min']*scale:.2f}-{d['max']*scale:.2f})"
                  f"   snug / ik_llama.cpp {r[f'ik_{name}_ratio']:.2f}x")


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
