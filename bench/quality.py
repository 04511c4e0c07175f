"""What each step down in precision costs: the quality table of docs/QUANTIZATION.md.

For a model (default SmolLM2-135M-Instruct), starting from a lossless F32 base
(the published file's weights dequantized: SmolLM2's Q4_1, Gemma 3's Q4_K_M;
nothing is lost), it writes every quantization
type with `snug quantize`, with and without an importance matrix collected by
`snug imatrix` over data/text/calibration.txt, and measures on the different
text data/text/evaluation.txt with `snug perplexity --kl-base`:
file size, bits per weight, perplexity, KL divergence from the base (mean and
99th percentile), top-token agreement; then generation speed and peak RSS with
`snug run`. KV-cache types (f16, q8_0, q4_0) are measured on the original file.

  bench/quality                       # full table, rewrites docs/QUANTIZATION.md's table
  bench/quality --model gemma3        # Gemma 3 270M's table (its own markers in the doc)
  bench/quality --chunks 4 --types Q8_0,Q4_K_M --no-doc   # a quick look
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Each model's published file and its type.
MODELS = {
    "smollm2": (ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
    "gemma3": (ROOT / "models" / "gemma-3-270m-q4_k_m.gguf", "Q4_K_M"),
}
TYPES = ["F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0", "Q4_K_M", "Q4_K_S",
         "Q4_1", "Q4_0", "Q3_K_M", "Q2_K"]
IMATRIX_TYPES = ["Q4_K_M", "Q3_K_M", "Q2_K"]
KV_TYPES = ["f16", "q8_0", "q4_0"]
PROMPT = "Explain what a lighthouse does in two sentences."


def markers(model):
    """The doc's markers around one model's table (SmolLM2's carry no name)."""
    tag = "quality-table" if model == "smollm2" else f"quality-table:{model}"
    return f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->"


def run(cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"quality: {' '.join(map(str, cmd))} failed:\n{r.stderr.strip()}")
    return r


def quantize(snug, src, dst, qtype, imatrix=None):
    """Writes dst once (kept between runs); returns the bits per weight snug reports."""
    meta = dst.with_suffix(".bpw")
    if not dst.exists() or not meta.exists():
        cmd = [snug, "quantize", src, dst, qtype]
        if imatrix:
            cmd += ["--imatrix", imatrix]
        err = run(cmd).stderr
        m = re.search(r"([0-9.]+) bits/weight", err)
        meta.write_text(m.group(1) if m else "0")
    return float(meta.read_text())


def perplexity(snug, model, base, args, kv="f16"):
    out = Path(args.work) / "ppl.json"
    run([snug, "perplexity", model, "-f", ROOT / "data" / "text" / "evaluation.txt", "-c",
         args.ctx, "--chunks", args.chunks, "-t", args.threads, "--kl-base", base, "--kv-type", kv,
         "--json", out])
    return json.loads(out.read_text())


def generation(snug, model, args, kv="f16"):
    r = run([snug, "run", model, "-p", PROMPT, "-n", args.gen_tokens, "--temp", "0",
             "--ignore-eos", "-c", "1024", "-t", args.threads, "--kv-type", kv, "--json"])
    j = json.loads(r.stdout)
    kernels = j["simd_target"] + ": " + ", ".join(f"{k} {v}" for k, v in j["matmul_kernels"].items())
    return j["generate_tokens_per_second"], j["peak_rss_bytes"], kernels


def measure(snug, label, model, base, bpw, args, kv="f16", imatrix=False):
    t0 = time.time()
    p = perplexity(snug, model, base, args, kv)
    tps, rss, kernels = generation(snug, model, args, kv)
    row = {
        "label": label, "kv": kv, "imatrix": imatrix, "file_bytes": Path(model).stat().st_size,
        "bpw": bpw, "ppl": p["ppl"]["value"], "ppl_err": p["ppl"]["error"],
        "kld": p["kld"]["value"], "kld_err": p["kld"]["error"], "kld_p99": p["kld_p99"],
        "same_top": p["same_top"]["value"], "gen_tps": tps, "peak_rss": rss,
        "ppl_base": p["ppl_base"]["value"], "n_scored": p["n_scored"], "kernels": kernels,
    }
    print(f"{label:<22} kv {kv:<5} {row['bpw']:5.2f} bpw  PPL {row['ppl']:8.4f}  KLD "
          f"{row['kld']:.5f}  top {100 * row['same_top']:6.2f}%  {tps:6.1f} tok/s  "
          f"{rss / 2**20:6.1f} MiB  ({time.time() - t0:.0f} s)  [{kernels}]", flush=True)
    return row


def row_path(row, work, src):
    """The model file a row measured."""
    if row["label"] == "F32 (base)":
        return work / "base-f32.gguf"
    if row["label"].endswith("(original file)"):
        return src
    return work / (row["label"] + ("-imatrix" if row["imatrix"] else "") + ".gguf")


def refresh_speed(snug, rows, work, src, args):
    """Measures generation speed and peak RSS again (quality figures are deterministic;
    speed is only meaningful on a quiet machine)."""
    for r in rows:
        r["gen_tps"], r["peak_rss"], r["kernels"] = generation(snug, row_path(r, work, src), args,
                                                               r["kv"])
        print(f"{r['label']:<22} kv {r['kv']:<5} {r['gen_tps']:6.1f} tok/s "
              f"{r['peak_rss'] / 2**20:6.1f} MiB  [{r['kernels']}]", flush=True)


def table(rows):
    head = ("| Type | imatrix | KV | File | Bits/weight | PPL | KL mean | KL 99% | Same top | "
            "Gen tok/s | Peak RSS |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for r in rows:
        lines.append(
            f"| {r['label']} | {'yes' if r['imatrix'] else ''} | {r['kv']} | "
            f"{r['file_bytes'] / 2**20:.1f} MiB | {r['bpw']:.2f} | {r['ppl']:.4f} ± {r['ppl_err']:.4f} | "
            f"{r['kld']:.5f} | {r['kld_p99']:.4f} | {100 * r['same_top']:.2f}% | "
            f"{r['gen_tps']:.1f} | {r['peak_rss'] / 2**20:.0f} MiB |")
    return head + "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", choices=sorted(MODELS))
    ap.add_argument("--snug", default=str(ROOT / "build" / "snug"))
    ap.add_argument("--work", default=str(ROOT / "build" / "quality"),
                    help="folder for the quantized files (kept between runs)")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=0, help="windows of the evaluation text (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--imatrix-types", default=",".join(IMATRIX_TYPES))
    ap.add_argument("--imatrix-chunks", type=int, default=40,
                    help="windows of 512 calibration tokens for the importance matrix")
    ap.add_argument("--refresh-speed", action="store_true",
                    help="only measure generation speed and RSS again for the rows of the last run")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/QUANTIZATION.md")
    args = ap.parse_args()

    snug, (src, original) = args.snug, MODELS[args.model]
    original_label = f"{original} (original file)"
    if not src.exists():
        sys.exit(f"quality: {src} is missing (scripts/fetch-models)")
    work = Path(args.work) / args.model
    work.mkdir(parents=True, exist_ok=True)
    args.work = str(work)
    if args.refresh_speed:
        rows = json.loads((work / "quality.json").read_text())
        refresh_speed(snug, rows, work, src, args)
        write_results(rows, work, args)
        return
    base = work / "base-f32.gguf"
    quantize(snug, src, base, "F32")
    imatrix = work / "imatrix.gguf"
    if not imatrix.exists():
        run([snug, "imatrix", base, "--file", ROOT / "data" / "text" / "calibration.txt", "-o",
             imatrix, "-t", args.threads, "--chunks", args.imatrix_chunks])
    print(f"base {base} ({base.stat().st_size / 2**20:.1f} MiB), imatrix {imatrix}", flush=True)

    rows = [measure(snug, "F32 (base)", base, base, 32.0, args)]
    rows.append(measure(snug, original_label, src, base,
                        quantize(snug, src, work / "copy-of-original.gguf", original), args))
    for t in [t for t in args.types.split(",") if t]:
        rows.append(measure(snug, t, work / f"{t}.gguf", base,
                            quantize(snug, base, work / f"{t}.gguf", t), args))
    for t in [t for t in args.imatrix_types.split(",") if t]:
        path = work / f"{t}-imatrix.gguf"
        rows.append(measure(snug, t, path, base, quantize(snug, base, path, t, imatrix), args,
                            imatrix=True))
    for kv in KV_TYPES[1:]:
        rows.append(measure(snug, original_label, src, base, rows[1]["bpw"], args, kv=kv))

    write_results(rows, work, args)


def write_results(rows, work, args):
    (work / "quality.json").write_text(json.dumps(rows, indent=2) + "\n")
    text = table(rows)
    print(text)
    if args.no_doc:
        return
    doc = ROOT / "docs" / "QUANTIZATION.md"
    body = doc.read_text()
    BEGIN, END = markers(args.model)
    if BEGIN not in body or END not in body:
        sys.exit(f"quality: {doc} lacks the {BEGIN} / {END} markers")
    cmd = " ".join(["bench/quality"] + [a for a in sys.argv[1:] if a != "--refresh-speed"])
    stamp = (f"Measured {time.strftime('%Y-%m-%d')} with `{cmd}` on {os.cpu_count()} cores: "
             f"{args.model}, evaluation text windows of {args.ctx} tokens, "
             f"{rows[0]['n_scored']} positions scored; generation {args.gen_tokens} tokens, "
             f"{args.threads} threads, context 1024; SIMD target "
             f"{rows[0].get('kernels', 'unrecorded').split(':')[0]} (kernels per row in quality.json)"
             f"{' (re-measured alone with --refresh-speed)' if args.refresh_speed else ''}.\n\n")
    pre, rest = body.split(BEGIN, 1)
    post = rest.split(END, 1)[1]
    doc.write_text(pre + BEGIN + "\n" + stamp + text + END + post)
    print(f"quality: wrote {doc}")


if __name__ == "__main__":
    main()
