"""An offline batch job on Ray Data (snug.ray_data.run_batch) over a local
three-node cluster, inside a network namespace with only loopback: 500 OpenAI
batch requests through `snug serve` workers that each reserve their plan's
bytes. One worker is killed (SIGKILL) midway; the job still ends with every
custom_id exactly once, answers equal to `snug run`'s, and a rerun computes
nothing. A job resumed from a partial output computes only what is missing."""
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("SNUG_SOURCE_DIR", Path(__file__).resolve().parents[2]))
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
CLI = os.environ.get("SNUG_BIN", str(ROOT / "build" / "snug"))
if not MODEL.exists():
    pytest.skip(f"{MODEL} is missing (scripts/fetch-models)", allow_module_level=True)
ray = pytest.importorskip("ray", reason="ray is not installed (requirements.txt)")
snug = pytest.importorskip("snug", reason="the package is not installed (scripts/setup)")
from ray.cluster_utils import Cluster  # noqa: E402

from snug.ray_data import run_batch  # noqa: E402
from snug.ray_serve import replica_bytes  # noqa: E402

CTX, PARALLEL, N = 256, 4, 500
SUBJECTS = ["cats", "rivers", "bread", "the moon", "trains", "winter", "music", "bees"]


def request(i):
    subject = SUBJECTS[i % len(SUBJECTS)]
    if i % 2:
        return {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/completions",
                "body": {"prompt": f"A short fact about {subject}:", "max_tokens": 4,
                         "temperature": 0}}
    return {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": f"One word about {subject}?"}],
                     "max_tokens": 4, "temperature": 0}}


@pytest.fixture(scope="module")
def cluster():
    plan = replica_bytes(str(MODEL), CTX, PARALLEL)
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "memory": plan // 2, "node_ip_address": "127.0.0.1"})
    try:  # the cluster goes down however the setup or the tests end
        for _ in range(2):
            c.add_node(num_cpus=1, memory=plan * 3 // 2, node_ip_address="127.0.0.1")
        ray.init(address=c.address, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield plan
    finally:
        ray.shutdown()
        c.shutdown()


def read(out):
    return [json.loads(line) for line in Path(out).read_text().splitlines()]


def cli_text(prompt):
    return subprocess.run([CLI, "run", str(MODEL), "--no-chat", "-p", prompt, "-n", "4",
                           "--temp", "0", "--ctx", str(CTX)], capture_output=True, text=True,
                          check=True, timeout=120).stdout


def test_every_id_exactly_once_after_a_worker_is_killed(cluster, tmp_path):
    inp, out = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    inp.write_text("".join(json.dumps(request(i)) + "\n" for i in range(N)))
    parts = tmp_path / "results.jsonl.parts"
    killed = []

    def killer():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            pids = sorted(parts.glob("worker-*.pid")) if parts.exists() else []
            finished = list(parts.glob("part-*.jsonl")) if parts.exists() else []
            if pids and len(finished) >= 2:
                pid = int(pids[0].read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append((pid, len(finished)))
                return
            time.sleep(0.05)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    stats = run_batch(str(inp), str(out), str(MODEL), ctx=CTX, parallel=PARALLEL, workers=2,
                      batch_size=25)
    t.join(5)
    assert killed, "no worker was killed: the job ended before two parts were written"
    rows = read(out)
    ids = [r["custom_id"] for r in rows]
    assert sorted(ids) == sorted(f"req-{i}" for i in range(N)), "not every id exactly once"
    assert ids == [f"req-{i}" for i in range(N)], "not in the input's order"
    assert all(r["error"] is None and r["response"]["status_code"] == 200 for r in rows)
    assert not parts.exists()
    for i in (1, 3):  # completions: the same text as snug run
        body = rows[i]["response"]["body"]
        assert body["choices"][0]["text"] == cli_text(request(i)["body"]["prompt"])
    print(f"\n{N} requests, worker {killed[0][0]} killed after {killed[0][1]} parts: "
          f"{stats['computed']} results in {stats['seconds']:.1f} s, each id once; "
          f"{stats['plan_bytes'] / (1 << 20):.1f} MiB reserved per worker")
    again = run_batch(str(inp), str(out), str(MODEL), ctx=CTX, parallel=PARALLEL, workers=2)
    assert again["computed"] == 0 and again["skipped"] == N and len(read(out)) == N


def test_a_partial_output_is_resumed(cluster, tmp_path):
    inp, out = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    n = 60
    inp.write_text("".join(json.dumps(request(i)) + "\n" for i in range(n)) +
                   "this line is not JSON\n")
    first = run_batch(str(inp), str(out), str(MODEL), ctx=CTX, parallel=PARALLEL, workers=1,
                      batch_size=20)
    assert first["computed"] == n + 1
    rows = read(out)
    bad = [r for r in rows if r["error"] is not None]
    assert len(bad) == 1 and bad[0]["response"] is None and "\n" not in bad[0]["error"]["message"]
    # Keep 25 results and a torn last line, as a kill mid-write would leave.
    text = out.read_text().splitlines()
    out.write_text("\n".join(text[:25]) + "\n" + text[25][: len(text[25]) // 2])
    resumed = run_batch(str(inp), str(out), str(MODEL), ctx=CTX, parallel=PARALLEL, workers=1,
                        batch_size=20)
    assert resumed["skipped"] == 25 and resumed["computed"] == n + 1 - 25
    assert [r["custom_id"] for r in read(out)] == [r["custom_id"] for r in rows]


def test_bad_arguments_are_refused_at_once(cluster, tmp_path):
    with pytest.raises(ValueError, match="not a file"):
        run_batch(str(tmp_path / "missing.jsonl"), str(tmp_path / "o.jsonl"), str(MODEL))
    (tmp_path / "in.jsonl").write_text(json.dumps(request(0)) + "\n")
    with pytest.raises(ValueError, match="at least 1"):
        run_batch(str(tmp_path / "in.jsonl"), str(tmp_path / "o.jsonl"), str(MODEL), workers=0)
    with pytest.raises(snug.SnugError):
        run_batch(str(tmp_path / "in.jsonl"), str(tmp_path / "o.jsonl"), str(ROOT / "README.md"))


def test_a_parquet_dataset(cluster, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    reqs = [request(i) for i in range(40)]
    table = pa.table({"custom_id": [r["custom_id"] for r in reqs],
                      "method": [r["method"] for r in reqs],
                      "url": [r["url"] for r in reqs],
                      "body": [json.dumps(r["body"]) for r in reqs]})
    inp, out = tmp_path / "requests.parquet", tmp_path / "results.jsonl"
    pq.write_table(table, inp)
    stats = run_batch(str(inp), str(out), str(MODEL), ctx=CTX, parallel=PARALLEL, workers=1,
                      batch_size=10)
    rows = read(out)
    assert stats["computed"] == 40 and [r["custom_id"] for r in rows] == [f"req-{i}" for i in
                                                                           range(40)]
    assert all(r["response"]["status_code"] == 200 for r in rows)
