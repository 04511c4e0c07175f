"""bench/serve --quick runs end to end and writes the figures the docs quote.

Checks the benchmark, not the server's speed: both sides generated every
token they were asked for (ignore_eos), latencies and RSS were measured, the
server's peak RSS stayed within its plan, and the admission table holds the
paged pool's advantage that follows from the request mix.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("SNUG_SOURCE_DIR", Path(__file__).resolve().parents[2]))
SNUG = os.environ.get("SNUG_BIN", str(ROOT / "build" / "snug"))
SMOLLM2 = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"

pytest.importorskip("llama_cpp")
if not SMOLLM2.exists():
    pytest.skip("SmolLM2 not fetched (scripts/fetch-models)", allow_module_level=True)

sys.path.insert(0, str(ROOT / "bench"))
import serve  # noqa: E402


def test_admission_table():
    rows = serve.admission_table([100, 500, 20], [1000, 1600])
    # llama.cpp: slots of the longest request (500) rounded up to 512; snug:
    # blocks of 16, in order 112, 512, 32, 112, 512, 32, 112 (1424 tokens),
    # and the next 512 is over.
    assert rows[0]["llama_sequences"] == 1 and rows[0]["snug_sequences"] == 4
    assert rows[1]["llama_sequences"] == 3 and rows[1]["snug_sequences"] == 7


def test_percentile():
    assert serve.percentile([3, 1, 2], 50) == 2
    assert serve.percentile([0, 10], 99) == pytest.approx(9.9)
    assert serve.percentile([], 50) is None


@pytest.mark.parametrize("flags, message", [
    (["--gen-single", "0"], "--gen-single and --gen-tokens must be at least 1"),
    (["--gen-tokens", "-3"], "--gen-single and --gen-tokens must be at least 1"),
    (["--gen-tokens", "600"], "cannot hold a generation-bound request"),
])
def test_bad_generation_phase_flags_are_refused_in_one_line(flags, message):
    r = subprocess.run([str(ROOT / "bench" / "serve"), "--snug", SNUG, "--model", str(SMOLLM2), *flags],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert message in r.stderr.strip().splitlines()[-1]


def test_quick_run(tmp_path):
    out = tmp_path / "serve.json"
    r = subprocess.run([str(ROOT / "bench" / "serve"), "--quick", "--snug", SNUG, "--model", str(SMOLLM2),
                        "--json", str(out)], capture_output=True, text=True, timeout=540)
    print(r.stdout)
    assert r.returncode == 0, r.stderr[-3000:]
    j = json.loads(out.read_text())
    p = j["params"]
    assert [row["concurrency"] for row in j["results"]] == [1, 4]
    for row in j["results"]:
        for side in ("snug", "llama"):
            s = row[side]
            assert s["generated_tokens"] == row["requests"] * p["max_tokens"], side
            assert s["tokens_per_second"] > 0 and s["peak_rss_bytes"] > 0
            assert s["ttft"]["n"] == row["requests"] and s["ttft"]["p50"] > 0
            assert s["itl"]["p50"] > 0
        s = row["snug"]
        assert s["finish_reasons"] == ["length"]
        assert s["preemptions"] is not None
        assert s["peak_rss_bytes"] <= s["predicted_peak_rss_bytes"] * 1.05, "server RSS over its plan"
        assert row["ratio"] > 0 and row["same_text"] is not None
    assert j["machine"]["snug_kernels"].get("simd_target")
    assert "AVX" in j["machine"]["llama_system_info"] or "NEON" in j["machine"]["llama_system_info"]
    computed = j["admission"]["computed"]
    assert all(a["snug_sequences"] > a["llama_sequences"] for a in computed)
    meas = j["admission"]["measured"]
    assert meas["snug"]["all_completed"]
    assert meas["snug"]["generated_tokens"] == meas["llama"]["generated_tokens"] == meas["requests"] * p["max_tokens"]
    assert meas["snug"]["peak_running"] > meas["llama"]["slots"]
    g = j["generation"]
    assert len(g["rounds"]) == p["gen_rounds"] == 1
    for key in ("snug_1", "snug_16", "llama_1", "llama_16"):
        streams = int(key.split("_")[1])
        x = g["rounds"][0][key]
        assert x["generated_tokens"] == p["gen_tokens"] * (g["single_stream_requests"] if streams == 1 else 16), key
        assert x["tokens_per_second"] > 0
    assert max(g["prompt_tokens"]) < 16  # generation-bound: no prompt fills a KV block
    for side in ("snug", "llama"):
        assert g[side]["ratio_of_medians"] > 0
