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

  bench/prune                                   # full table, rewrites docs/PRUNING.md's table
  bench/prune --chunks 4 --rows magnitude:0.5 --no-doc   # a quick look
"""
import argparse
import json
import os
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
        "magnitude:2:4", "wanda:2:4", "sparsegpt:2:4", "magnitude:4:8", "wanda:4:8", "original",
        "structured:ffn=0.25", "structured:ffn=0.25+heads=0.34+layers=2"]
BEGIN, END = "<!-- prune-table:begin -->", "<!-- prune-table:end -->"


def run(cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"prune: {' '.join(map(str, cmd))} failed:\n{r.stderr.strip()}")
    return r


def prompt_text():
    """About 500 tokens of the reference text, for prompt-processing speed."""
    return (ROOT / "tests" / "data" / "reference.txt").read_text()[:2200]


def make_row_file(snug, src, spec, work, args):
    """The pruned (or dense) Q8_0 file of a row, written once and kept."""
    if spec == "original":
        return src
    name = spec.replace(":", "-").replace("+", "_") + ".gguf"
    path = work / name
    if path.exists():
        return path
    if spec.startswith("structured:"):
        run([snug, "prune", src, path, "--structured", spec.split(":", 1)[1].replace("+", ","),
             "--calib", ROOT / "data" / "text" / "calibration.txt", "--calib-chunks",
             args.calib_chunks, "-t", args.threads])
        return path
    if spec == "dense":
        run([snug, "quantize", src, path, "Q8_0"])
        return path
    method, rest = spec.split(":", 1)
    cmd = [snug, "prune", src, path, "--method", method, "--type", "q8_0", "-t", args.threads]
    cmd += ["--pattern", rest] if ":" in rest else ["--sparsity", rest]
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
        label = {"dense": "dense Q8_0 (reference)",
                 "original": "original file (published types)"}.get(r["row"])
        if label is None:
            label = r["row"].replace(":", " ", 1).replace("+", ", ")
        lines.append(f"| {label} | {r['file_bytes'] / 2**20:.1f} MiB | "
                     f"{r['peak_rss'] / 2**20:.0f} MiB | {r['ppl']:.3f} ± {r['ppl_err']:.3f} | "
                     f"{r['kld']:.4f} | {100 * r['same_top']:.2f}% | {r['pp_tps']:.0f} | "
                     f"{r['gen_tps']:.1f} |")
    return head + "\n".join(lines) + "\n"


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
    if args.no_doc:
        return
    doc = ROOT / "docs" / "PRUNING.md"
    body = doc.read_text()
    if BEGIN not in body or END not in body:
        sys.exit(f"prune: {doc} lacks the {BEGIN} / {END} markers")
    cmd = " ".join(["bench/prune"] + sys.argv[1:])
    stamp = (f"Measured {time.strftime('%Y-%m-%d')} with `{cmd}` on {os.cpu_count()} cores: "
             f"{args.model}, evaluation text windows of {args.ctx} tokens, "
             f"{rows[0]['n_scored']} positions scored, KL against the unpruned model in F32; "
             f"{args.calib_chunks} calibration chunks of 512 tokens; prompt of about 500 tokens, {args.gen_tokens} generated, {args.threads} threads; "
             f"SIMD target {rows[0]['kernels'].split(':')[0]}.\n\n")
    pre, rest = body.split(BEGIN, 1)
    post = rest.split(END, 1)[1]
    doc.write_text(pre + BEGIN + "\n" + stamp + text + END + post)
    print(f"prune: wrote {doc}")


if __name__ == "__main__":
    main()
