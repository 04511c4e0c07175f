"""A bandwidth-bound model for the benchmarks: random weights in SmolLM2-1.7B's
shapes (24 layers, width 2048, 32 heads without grouping, feed-forward 8192,
tied 49152-token embedding: 1.71 B parameters) with SmolLM2-135M's tokenizer,
written as F16 and quantized by `snug quantize` to Q4_0, Q4_1, Q8_0 and Q4_K_M.

  bench/wide-model [--out-dir build/wide] [--types Q4_0,Q4_1,Q8_0,Q4_K_M]

Speed does not depend on the weights' values, only on their shapes and type;
the files are far larger than any last-level cache, so generation reads every
weight from DRAM at each token. Files already present are kept.
"""
import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_SOURCE = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"

# SmolLM2-1.7B (HuggingFaceTB/SmolLM2-1.7B config.json).
LAYERS, WIDTH, HEADS, FFN, VOCAB, CTX, ROPE_BASE = 24, 2048, 32, 8192, 49152, 8192, 130000.0


def copy_tokenizer(reader, writer):
    """Every tokenizer.* key of the source file, with its type."""
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        kind = field.types[0]
        if kind == GGUFValueType.ARRAY:
            sub = field.types[1]
            if sub == GGUFValueType.STRING:
                values = [bytes(field.parts[i]).decode("utf-8", "surrogateescape") for i in field.data]
            else:
                values = [field.parts[i].tolist()[0] for i in field.data]
            writer.add_key_value(key, values, kind, sub_type=sub)
        elif kind == GGUFValueType.STRING:
            writer.add_key_value(key, bytes(field.parts[field.data[0]]).decode("utf-8"), kind)
        else:
            writer.add_key_value(key, field.parts[field.data[0]].tolist()[0], kind)


def write_f16(path, seed):
    rng = np.random.default_rng(seed)
    reader = GGUFReader(str(TOKENIZER_SOURCE))
    tmp = path.with_suffix(".partial")
    w = GGUFWriter(str(tmp), "llama")
    w.add_name("random SmolLM2-1.7B shape")
    w.add_block_count(LAYERS)
    w.add_context_length(CTX)
    w.add_embedding_length(WIDTH)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(HEADS)
    w.add_rope_freq_base(ROPE_BASE)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(VOCAB)
    w.add_rope_dimension_count(WIDTH // HEADS)
    w.add_file_type(1)  # mostly F16
    copy_tokenizer(reader, w)

    def matrix(rows, cols):
        # Scaled so that activations stay in range through 24 layers.
        return (rng.standard_normal((rows, cols), dtype=np.float32) * (0.5 / np.sqrt(cols))).astype(np.float16)

    ones = np.ones(WIDTH, dtype=np.float32)
    w.add_tensor("token_embd.weight", matrix(VOCAB, WIDTH))
    for i in range(LAYERS):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", ones)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(p + name + ".weight", matrix(WIDTH, WIDTH))
        w.add_tensor(p + "ffn_norm.weight", ones)
        w.add_tensor(p + "ffn_gate.weight", matrix(FFN, WIDTH))
        w.add_tensor(p + "ffn_up.weight", matrix(FFN, WIDTH))
        w.add_tensor(p + "ffn_down.weight", matrix(WIDTH, FFN))
    w.add_tensor("output_norm.weight", ones)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()
    tmp.rename(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "build" / "wide")
    ap.add_argument("--types", default="Q4_0,Q4_1,Q8_0,Q4_K_M")
    ap.add_argument("--snug", type=Path, default=ROOT / "build" / "snug")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    f16 = args.out_dir / "smollm2-1.7b-shape-f16.gguf"
    if not f16.exists():
        print(f"writing {f16} (3.4 GB)", file=sys.stderr)
        write_f16(f16, args.seed)
    for t in args.types.split(","):
        out = args.out_dir / f"smollm2-1.7b-shape-{t.lower()}.gguf"
        if out.exists():
            continue
        tmp = out.with_suffix(".partial")
        subprocess.run([str(args.snug), "quantize", str(f16), str(tmp), t], check=True)
        tmp.rename(out)
        print(out)


if __name__ == "__main__":
    main()
