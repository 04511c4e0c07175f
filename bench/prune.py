"""What pruning costs and saves: the table of docs/PRUNING.md.

For a model (default SmolLM2-135M-Instruct), it prunes the published file's
decoder matrices with `snug prune` (each method x sparsity x pattern, written
as Q8_0 so that pruned weights stay exactly zero), calibrating Wanda and
SparseGPT on data/text/calibration.txt, and measures on the different text
data/text/evaluation.txt with `snug perplexity --kl-base` against the unpruned
model (the published weights dequantized to F32, nothing lost): perplexity,
KL divergence, top-token agreement; then file size, peak RSS, prompt and
generation speed with `snug run`. The dense Q8_0 row is the reference a pruned
row should be compared with (same type, no weight removed).

N:M rows (2:4, 4:8) are stored in snug's N:M-sparse types (q8_0_nm, q4_0_nm),
as `snug prune` writes them; a ":dense" suffix stores the zeros in the dense
type instead (`--dense`), and "@q4_0" writes a row in Q4_0 instead of Q8_0.
Then the speed pairs: each sparse row against the dense file of its type,
`snug run` alternating A B B A for --pairs rounds at 1 and 2 threads, medians
of generation and prompt speed and their ratios (the table's single runs are
too noisy on a shared machine to compare 1.2x).

  bench/prune                                   # full table, rewrites docs/PRUNING.md's table
  bench/prune --chunks 4 --rows magnitude:0.5 --no-doc   # a quick look
  bench/prune --rows "" --pairs 5               # the speed pairs alone
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "smollm2": ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": ROOT / "models" / "gemma-3-270m-q4_k_m.gguf",
}
# method:sparsity or method:N:M; "dense" is the unpruned Q8_0 reference;
# "original" the published file and "structured:CUT" (parts joined by "+")
# a structured cut of it, in the published types.
ROWS = ["dense", "magnitude:0.25", "wanda:0.25", "magnitude:0.5", "wanda:0.5", "sparsegpt:0.5",
        "magnitude:2:4", "wanda:2:4", "wanda:2:4:dense", "sparsegpt:2:4", "magnitude:4:8",
        "wanda:4:8", "dense@q4_0", "wanda:2:4@q4_0", "original",
        "structured:ffn=0.25", "structured:ffn=0.25+heads=0.34+layers=2"]
# (dense reference, sparse row) for the speed pairs.
PAIRS = [("dense", "wanda:2:4"), ("dense@q4_0", "wanda:2:4@q4_0")]


def markers(kind, model):
    """docs/PRUNING.md's begin and end markers of a block for a model
    (SmolLM2's carry no model name)."""
    name = kind if model == "smollm2" else f"{kind}-{model}"
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def run(cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"prune: {' '.join(map(str, cmd))} failed:\n{r.stderr.strip()}")
    return r


def prompt_text():
    """About 500 tokens of the reference text, for prompt-processing speed."""
    return (ROOT / "tests" / "data" / "reference.txt").read_text()[:2200]


def parse_spec(spec):
    """(spec without suffixes, output type, stored dense)."""
    typ = "q8_0"
    if "@" in spec:
        spec, typ = spec.split("@", 1)
    dense = spec.endswith(":dense")
    return (spec[:-len(":dense")] if dense else spec), typ, dense


def make_row_file(snug, src, spec, work, args):
    """The pruned (or dense) Q8_0 file of a row, written once and kept."""
    if spec == "original":
        return src
    name = spec.replace(":", "-").replace("+", "_").replace("@", "_") + ".gguf"
    path = work / name
    if path.exists():
        return path
    spec, typ, dense = parse_spec(spec)
    if spec.startswith("structured:"):
        run([snug, "prune", src, path, "--structured", spec.split(":", 1)[1].replace("+", ","),
             "--calib", ROOT / "data" / "text" / "calibration.txt", "--calib-chunks",
             args.calib_chunks, "-t", args.threads])
        return path
    if spec == "dense":
        run([snug, "quantize", src, path, typ.upper()])
        return path
    method, rest = spec.split(":", 1)
    cmd = [snug, "prune", src, path, "--method", method, "--type", typ, "-t", args.threads]
    cmd += ["--pattern", rest] if ":" in rest else ["--sparsity", rest]
    if dense:
        cmd.append("--dense")
    if method in ("wanda", "sparsegpt"):
        cmd += ["--calib", ROOT / "data" / "text" / "calibration.txt",
                "--calib-chunks", args.calib_chunks]
    run(cmd)
    return path


def measure(snug, spec, path, base, args):
    t0 = time.time()
    out = Path(args.work) / "ppl.json"
    run([snug, "perplexity", path, "-f", ROOT / "data" / "text" / "evaluation.txt", "-c", args.ctx,
         "--chunks", args.chunks, "-t", args.threads, "--kl-base", base, "--json", out])
    p = json.loads(out.read_text())
    r = run([snug, "run", path, "-p", prompt_text(), "-n", args.gen_tokens, "--temp", "0",
             "--ignore-eos", "-c", "1024", "-t", args.threads, "--json"])
    j = json.loads(r.stdout)
    row = {
        "row": spec, "file_bytes": path.stat().st_size, "ppl": p["ppl"]["value"],
        "ppl_err": p["ppl"]["error"], "kld": p["kld"]["value"], "same_top": p["same_top"]["value"],
        "pp_tps": j["prompt_tokens_per_second"], "gen_tps": j["generate_tokens_per_second"],
        "peak_rss": j["peak_rss_bytes"], "n_scored": p["n_scored"],
        "kernels": j["simd_target"] + ": " + ", ".join(f"{k} {v}"
                                                        for k, v in j["matmul_kernels"].items()),
    }
    print(f"{spec:<16} PPL {row['ppl']:9.4f}  KLD {row['kld']:.5f}  top "
          f"{100 * row['same_top']:6.2f}%  pp {row['pp_tps']:6.1f}  gen {row['gen_tps']:6.1f} tok/s  "
          f"{row['peak_rss'] / 2**20:6.1f} MiB  ({time.time() - t0:.0f} s)", flush=True)
    return row


def table(rows):
    head = ("| Pruning | File | Peak RSS | PPL | KL mean | Same top | pp tok/s | gen tok/s |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for r in rows:
        label = {"dense": "dense Q8_0 (reference)", "dense@q4_0": "dense Q4_0 (reference)",
                 "original": "original file (published types)"}.get(r["row"])
        if label is None:
            spec, typ, dense = parse_spec(r["row"])
            label = spec.replace(":", " ", 1).replace("+", ", ")
            if ":" in spec.split(":", 1)[-1]:  # N:M
                label += f", {typ.upper()} stored " + ("dense" if dense else "sparse")
            elif typ != "q8_0":
                label += f", {typ.upper()}"
        lines.append(f"| {label} | {r['file_bytes'] / 2**20:.1f} MiB | "
                     f"{r['peak_rss'] / 2**20:.0f} MiB | {r['ppl']:.3f} ± {r['ppl_err']:.3f} | "
                     f"{r['kld']:.4f} | {100 * r['same_top']:.2f}% | {r['pp_tps']:.0f} | "
                     f"{r['gen_tps']:.1f} |")
    return head + "\n".join(lines) + "\n"


def run_speed(snug, path, threads, args):
    r = run([snug, "run", path, "-p", prompt_text(), "-n", args.gen_tokens, "--temp", "0",
             "--ignore-eos", "-c", "1024", "-t", threads, "--json"])
    j = json.loads(r.stdout)
    return j["prompt_tokens_per_second"], j["generate_tokens_per_second"]


def speed_pairs(snug, src, work, args):
    """Each sparse row against its dense reference, A B B A, medians."""
    out = []
    for dense_spec, sparse_spec in PAIRS:
        a = make_row_file(snug, src, dense_spec, work, args)
        b = make_row_file(snug, src, sparse_spec, work, args)
        for threads in (1, 2):
            runs = {"a": [], "b": []}
            for k in range(args.pairs):
                for which in ("ab" if k % 2 == 0 else "ba"):
                    runs[which].append(run_speed(snug, a if which == "a" else b, threads, args))
            med = {w: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
                   for w, v in runs.items()}
            row = {"dense": dense_spec, "sparse": sparse_spec, "threads": threads,
                   "dense_pp": med["a"][0], "dense_gen": med["a"][1],
                   "sparse_pp": med["b"][0], "sparse_gen": med["b"][1],
                   "dense_bytes": a.stat().st_size, "sparse_bytes": b.stat().st_size}
            print(f"{sparse_spec:<16} vs {dense_spec:<11} {threads} thr: gen {row['sparse_gen']:6.1f} / "
                  f"{row['dense_gen']:6.1f} = {row['sparse_gen'] / row['dense_gen']:.2f}x, pp "
                  f"{row['sparse_pp']:6.0f} / {row['dense_pp']:6.0f} = "
                  f"{row['sparse_pp'] / row['dense_pp']:.2f}x", flush=True)
            out.append(row)
    return out


def speed_table(rows):
    head = ("| Sparse row | Dense reference | Threads | File | gen tok/s | gen ratio | pp tok/s | "
            "pp ratio |\n|---|---|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for r in rows:
        lines.append(f"| {r['sparse']} | {r['dense']} | {r['threads']} | "
                     f"{r['sparse_bytes'] / 2**20:.1f} / {r['dense_bytes'] / 2**20:.1f} MiB | "
                     f"{r['sparse_gen']:.1f} / {r['dense_gen']:.1f} | "
                     f"**{r['sparse_gen'] / r['dense_gen']:.2f}x** | "
                     f"{r['sparse_pp']:.0f} / {r['dense_pp']:.0f} | "
                     f"{r['sparse_pp'] / r['dense_pp']:.2f}x |")
    return head + "\n".join(lines) + "\n"


def replace_block(doc, begin, end, text):
    body = doc.read_text()
    if begin not in body or end not in body:
        sys.exit(f"prune: {doc} lacks the {begin} / {end} markers")
    pre, rest = body.split(begin, 1)
    post = rest.split(end, 1)[1]
    doc.write_text(pre + begin + "\n" + text + end + post)


def cpu_name():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", choices=sorted(MODELS))
    ap.add_argument("--snug", default=str(ROOT / "build" / "snug"))
    ap.add_argument("--work", default=str(ROOT / "build" / "prune"),
                    help="folder for the pruned files (kept between runs)")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=0, help="windows of the evaluation text (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--calib-chunks", type=int, default=32,
                    help="chunks of 512 calibration tokens for wanda and sparsegpt")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--pairs", type=int, default=5,
                    help="A B B A rounds of the sparse-against-dense speed pairs (0: none)")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/PRUNING.md")
    args = ap.parse_args()

    snug, src = args.snug, MODELS[args.model]
    if not src.exists():
        sys.exit(f"prune: {src} is missing (scripts/fetch-models)")
    work = Path(args.work) / args.model
    work.mkdir(parents=True, exist_ok=True)
    args.work = str(work)
    base = work / "base-f32.gguf"
    if not base.exists():
        run([snug, "quantize", src, base, "F32"])
    # Rows measured before are kept; the ones asked for now are measured again.
    saved = work / "prune.json"
    by_spec = {r["row"]: r for r in json.loads(saved.read_text())} if saved.exists() else {}
    for spec in [r for r in args.rows.split(",") if r]:
        by_spec[spec] = measure(snug, spec, make_row_file(snug, src, spec, work, args), base, args)
    order = {spec: k for k, spec in enumerate(ROWS)}
    rows = sorted(by_spec.values(), key=lambda r: order.get(r["row"], len(ROWS)))
    saved.write_text(json.dumps(rows, indent=2) + "\n")
    text = table(rows)
    print(text)
    pairs = speed_pairs(snug, src, work, args) if args.pairs > 0 else []
    if pairs:
        (work / "speed.json").write_text(json.dumps(pairs, indent=2) + "\n")
    if args.no_doc:
        return
    doc = ROOT / "docs" / "PRUNING.md"
    # The command as a reader reruns it (--snug only names a copy of build/snug).
    argv = sys.argv[1:]
    if "--snug" in argv:
        k = argv.index("--snug")
        argv = argv[:k] + argv[k + 2:]
    cmd = " ".join(["bench/prune"] + argv)
    if pairs:
        stamp = (f"Measured {time.strftime('%Y-%m-%d')} with `{cmd}` on {cpu_name()}, "
                 f"{os.cpu_count()} cores, SIMD target {rows[0]['kernels'].split(':')[0] if rows else '?'}: "
                 f"{args.model}, `snug run` with a prompt of about 500 tokens and {args.gen_tokens} "
                 f"generated, medians of {args.pairs} A B B A rounds.\n\n")
        replace_block(doc, *markers("nm-speed", args.model), stamp + speed_table(pairs))
    if not args.rows:
        print(f"prune: wrote the speed pairs into {doc}")
        return
    stamp = (f"Measured {time.strftime('%Y-%m-%d')} on {cpu_name()}, {os.cpu_count()} cores, by "
             f"`bench/prune` runs whose rows merge (build/prune/{args.model}/prune.json; the last: "
             f"`{cmd}`): "
             f"{args.model}, evaluation text windows of {args.ctx} tokens, "
             f"{rows[0]['n_scored']} positions scored, KL against the unpruned model in F32; "
             f"{args.calib_chunks} calibration chunks of 512 tokens; prompt of about 500 tokens, {args.gen_tokens} generated, {args.threads} threads; "
             f"SIMD target {rows[0]['kernels'].split(':')[0]}.\n\n")
    replace_block(doc, *markers("prune-table", args.model), stamp + text)
    print(f"prune: wrote {doc}")


if __name__ == "__main__":
    main()
