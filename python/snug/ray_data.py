"""Offline batch jobs on Ray Data: OpenAI batch-request lines through `snug
serve` workers placed by the plan's bytes, with output that survives kills.

``run_batch(input, output, model)`` reads a JSONL (or Parquet) file of OpenAI batch
requests (``{"custom_id", "method": "POST", "url": "/v1/chat/completions" |
"/v1/completions", "body": {...}}``, as ``snug batch`` takes), runs them with
``Dataset.map_batches`` over a pool of actors (``SnugBatchWorker``), each of
which owns one `snug serve` and asks Ray for exactly its plan's bytes (Ray's
``memory`` resource), and writes ``snug batch``'s result lines
(``{"id", "custom_id", "response": {"status_code", "request_id", "body"},
"error"}``) to ``output`` in the input's order.

Exactly once, and resumable: each batch's results go to a part file under
``OUTPUT.parts/`` written whole and renamed into place, so a worker killed
mid-batch leaves no part (Ray retries the batch on a restarted worker), and a
retried batch whose part was already written is deduplicated when the parts are
merged. A rerun after the driver itself was killed skips every id already in
``output`` or in a finished part. The merge writes ``output`` through a
temporary file and a rename: it is always either the old file or the new one.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

import ray

from . import Server, serve_plan

__all__ = ["SnugBatchWorker", "run_batch"]

_ROUTES = ("/v1/chat/completions", "/v1/completions")


def _results(output: Path, parts: Path) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """(custom_id, result) of every whole line written so far: the output's,
    then each finished part's; a torn last line of an interrupted write is skipped."""
    for f in ([output] if output.exists() else []) + sorted(parts.glob("*.jsonl")):
        with open(f, "rb") as fh:
            for raw in fh:
                try:
                    r = json.loads(raw)
                    yield str(r["custom_id"]), r
                except (ValueError, KeyError, TypeError):
                    continue


def _done_ids(output: Path, parts: Path) -> Set[str]:
    return {cid for cid, _ in _results(output, parts)}


class SnugBatchWorker:
    """A Ray Data map_batches worker: one `snug serve` for the model, fed up
    to ``parallel`` requests at a time; writes each batch's results as one part."""

    def __init__(self, model: str, ctx: int, parallel: int, memory_bytes: int, threads: int,
                 parts: str) -> None:
        self._server = Server(model, ctx=ctx, parallel=parallel, memory=memory_bytes,
                              args=["--threads", str(threads)], startup_timeout=600).start()
        self._parallel = parallel
        self._parts = Path(parts)
        (self._parts / f"worker-{os.getpid()}.pid").write_text(str(os.getpid()))

    def _one(self, line: str, index: int) -> Dict[str, Any]:
        import urllib.error
        import urllib.request

        out: Dict[str, Any] = {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": None,
                               "response": None, "error": None, "line": index}
        try:
            req = json.loads(line)
            if not isinstance(req, dict) or not isinstance(req.get("custom_id"), str):
                raise ValueError("a request needs a string custom_id")
            out["custom_id"] = req["custom_id"]
            url, body = req.get("url"), req.get("body")
            if url not in _ROUTES or not isinstance(body, dict):
                raise ValueError(f"url must be one of {', '.join(_ROUTES)} with a JSON body")
        except ValueError as e:
            out["custom_id"] = out["custom_id"] or f"line-{index + 1}"
            out["error"] = {"code": "invalid_request", "message": str(e)[:200]}
            return out
        data = json.dumps(body).encode()
        http = urllib.request.Request(self._server.url + url, data=data,
                                      headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(http, timeout=3600) as r:
                status, payload = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, payload = e.code, e.read()
        try:
            parsed = json.loads(payload)
        except ValueError:
            parsed = {"error": {"message": payload.decode("utf-8", "replace")[:200]}}
        out["response"] = {"status_code": status, "request_id": out["id"], "body": parsed}
        return out

    def __call__(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        lines = [str(x) for x in batch["text"]]
        indices = [int(x) for x in batch["index"]]
        todo = [(line, index) for line, index in zip(lines, indices) if line.strip()]
        with concurrent.futures.ThreadPoolExecutor(max(1, 2 * self._parallel)) as pool:
            results = list(pool.map(lambda li: self._one(*li), todo))
        if results:
            # One part per batch, whole or absent: written aside, then renamed.
            name = f"part-{min(i for _, i in todo):09d}-{uuid.uuid4().hex[:8]}"
            tmp = self._parts / (name + ".tmp")
            with open(tmp, "w") as f:
                for r in results:
                    f.write(json.dumps(r, separators=(",", ":")) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._parts / (name + ".jsonl"))
        return {"custom_id": [str(r["custom_id"]) for r in results],
                "ok": [r["error"] is None and r["response"]["status_code"] == 200
                       for r in results]}


def run_batch(input: str, output: str, model: str, *, ctx: int = 2048, parallel: int = 4,
              workers: int = 2, threads: int = 1, batch_size: int = 32,
              on_result: Optional[Callable[[int], None]] = None) -> Dict[str, Any]:
    """Runs the requests of `input` not yet in `output` on `workers` actors
    and merges everything into `output`. Returns counts: "requests" (lines in
    the input), "skipped" (already done), "computed", "ok", "seconds",
    "plan_bytes" (what each worker reserves). ``on_result(n)`` is called as
    the n-th result arrives."""
    t0 = time.monotonic()
    inp, out = Path(input), Path(output)
    if not inp.is_file():
        raise ValueError(f"the input '{input}' is not a file")
    if workers < 1 or batch_size < 1:
        raise ValueError("workers and batch_size must be at least 1")
    parts = out.parent / (out.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    for stale in parts.glob("*.tmp"):
        stale.unlink()
    done = _done_ids(out, parts)
    lines = _input_lines(inp)
    plan_bytes = int(serve_plan(model, ctx=ctx, parallel=parallel)["memory_bytes_one"])
    items: List[Dict[str, Any]] = [{"text": line, "index": i} for i, line in enumerate(lines)
                                   if line.strip()]
    todo = [it for it in items if (_custom_id(str(it["text"])) or "") not in done]
    computed = ok = 0
    if todo:
        ds = ray.data.from_items(todo)
        results = ds.map_batches(
            SnugBatchWorker, batch_size=batch_size, concurrency=workers,
            fn_constructor_kwargs={"model": model, "ctx": ctx, "parallel": parallel,
                                   "memory_bytes": plan_bytes, "threads": threads,
                                   "parts": str(parts)},
            memory=plan_bytes, num_cpus=threads, max_restarts=-1, max_task_retries=-1)
        for row in results.iter_rows():
            computed += 1
            ok += bool(row["ok"])
            if on_result is not None:
                on_result(computed)
    merged = _merge(inp, out, parts, lines)
    return {"requests": len(items), "skipped": len(items) - len(todo), "computed": computed,
            "ok": ok, "written": merged, "seconds": time.monotonic() - t0,
            "plan_bytes": plan_bytes}


def _input_lines(inp: Path) -> List[str]:
    """The requests as JSON lines: a JSONL file's lines, or a Parquet file's
    rows (columns custom_id, method, url, body; body a struct or a JSON string)."""
    if inp.suffix != ".parquet":
        return inp.read_text().splitlines()
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    lines = []
    for row in pq.read_table(inp).to_pylist():
        if isinstance(row.get("body"), str):
            try:
                row["body"] = json.loads(row["body"])
            except ValueError:
                pass  # left a string: answered as a bad request
        lines.append(json.dumps(row))
    return lines


def _custom_id(line: str) -> Optional[str]:
    try:
        cid = json.loads(line).get("custom_id")
    except (ValueError, AttributeError):
        return None
    return None if cid is None else str(cid)


def _merge(inp: Path, out: Path, parts: Path, lines: List[str]) -> int:
    """`output` = what it held + every part's results, each id once, in the
    input's order; then the parts go."""
    rows: Dict[str, Dict[str, Any]] = {}
    order = {}
    for i, line in enumerate(lines):
        cid = _custom_id(line)
        if cid is not None and cid not in order:
            order[cid] = i
    for cid, r in _results(out, parts):
        rows.setdefault(cid, r)
    tmp = out.parent / (out.name + ".tmp")
    with open(tmp, "w") as fh:
        for cid in sorted(rows, key=lambda c: (order.get(c, len(lines)), c)):
            r = dict(rows[cid])
            r.pop("line", None)
            fh.write(json.dumps(r, separators=(",", ":")) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out)
    for f in parts.iterdir():
        f.unlink()
    parts.rmdir()
    return len(rows)
