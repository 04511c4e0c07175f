"""snug serve under concurrent streaming clients, beside llama.cpp decoding the
same sequences together in one batch, with the same KV memory and threads.

  bench/serve [--model PATH] [--concurrency 1,4,16,64] [--requests N] [--max-tokens 64]
              [--ctx 512] [--parallel P] [--batch-tokens 256] [--prefill-chunk N] [--threads 2] [--json OUT] [--quick]
              [--gen-rounds 5] [--gen-tokens 96] [--gen-single 3]

snug: one `snug serve MODEL --port 0` for the whole run, started with
--parallel P (default: the largest concurrency) and --ctx N, so its paged KV
pool holds P*N tokens. For each concurrency C, C clients (asyncio, plain HTTP
on 127.0.0.1) send streaming POST /v1/completions requests (greedy,
ignore_eos, max_tokens fixed) until a fixed number of requests is done.
Measured from the SSE chunk arrival times: aggregate generated tokens per
second (all completion tokens over the wall time from the first request to the
last finish), time to first token and inter-token latency (gaps between token
chunks) at p50/p99, the server's VmHWM against the plan's predicted peak, and
/metrics (preemptions, prefix-cache hits) before and after.

llama.cpp: a child process per concurrency drives llama-cpp-python's low-level
C API the way llama.cpp's batched-bench does: the same requests in waves of C
sequences (seq id = slot), each wave a prefill of the C prompts packed into
llama_decode batches of --batch-tokens, then one llama_decode per generated
token carrying one token of every sequence, greedy argmax over
llama_get_logits. n_ctx = P*N (snug's pool: the same KV memory), n_seq_max = C,
kv_unified off (llama.cpp's default: each sequence has its own stream of
n_ctx / C cells and attends over its own cells only), flash attention auto.
TTFT is batch-synchronous (wave start to the end of the prefill batch holding
the prompt's last token), ITL is the decode step time; both sides count
prefill in the aggregate tok/s.

Generation-bound phase (the batching goal: sixteen streams against one):
prompts of about ten tokens and --gen-tokens generated each, so that the steps
carry decodes rather than the prompt chunks that the phases above mix in
(their prompts average ~130 tokens against 64 generated). One stream
(--gen-single requests in turn) and then sixteen at once, snug over HTTP and
llama.cpp in one batch, alternated for --gen-rounds rounds; the report gives
each side's medians and 16 / 1.

Admission at equal memory: for M tokens of KV and the request mix (prompt +
max_tokens), llama.cpp's fixed slots of n_ctx / n_parallel must each hold the
longest request, so it serves floor(M / max L) at once; snug's paged pool
admits sequences while sum(ceil(L_i / 16) * 16) <= M. Computed for several M
and measured on a second snug server whose pool is --admission-ctx tokens
(peak of the running-sequences gauge in /metrics under a burst of requests).

Each phase also records how much CPU other processes took while it ran (the
machine's busy time less the benchmark's own); on a shared machine a phase
above a few percent is not a quiet figure, and the report says so.

The JSON (--json) holds the parameters, machine (CPU, SIMD targets, load
average), per-concurrency results of both sides with raw latencies, and the
admission table.
"""
import argparse
import asyncio
import copy
import json
import math
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from compare import cpu_name  # bench/compare.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
KV_BLOCK_TOKENS = 16
LLAMA_CTX_PAD = 256  # llama.cpp rounds each sequence's context up to a multiple of this
LLAMA_KV_TYPES = {"q8_0": 8, "q4_0": 2}  # ggml_type ids of the quantized KV types

GEN_STREAMS = 16  # the generation-bound phase: one stream against this many (the issue's goal)

# Prompt lengths in tokens (before a short unique header): mostly short with a
# few long ones, as chat and completion traffic is. Mean ~130, max 420.
PROMPT_LENGTHS = [32, 200, 64, 420, 48, 128, 16, 280, 96, 24, 160, 56]


# ---------------------------------------------------------------------------
# Prompts


def make_prompts(model, n):
    """n distinct prompts: "Note i." and a slice of reference.txt of a length
    from PROMPT_LENGTHS. The distinct header makes every prompt's first KV block
    unique, so snug's prefix cache finds nothing to share (llama.cpp's batch has
    no prefix cache). Returns [{"text", "ids"}]; ids as llama.cpp tokenizes
    the text (snug's tokenizer gives the same ids: tests/reference)."""
    llm = vocab(model)
    source = llm.tokenize((ROOT / "tests" / "data" / "reference.txt").read_bytes(), add_bos=False,
                          special=False)
    prompts = []
    for i in range(n):
        length = PROMPT_LENGTHS[i % len(PROMPT_LENGTHS)]
        start = (i * 37) % (len(source) - length)
        body = llm.detokenize(source[start:start + length]).decode("utf-8", errors="ignore")
        text = f"Note {i}.{body}" if body.startswith(" ") else f"Note {i}. {body}"
        ids = llm.tokenize(text.encode(), add_bos=True, special=False)
        prompts.append({"text": text, "ids": ids})
    return prompts


def make_short_prompts(model, n, first):
    """n prompts of about ten tokens ("Note i. The history of the
    lighthouse", i from `first`, so none repeats another phase's), for the
    generation-bound phase: its steps carry decodes, not prompt chunks."""
    llm = vocab(model)
    out = []
    for i in range(first, first + n):
        text = f"Note {i}. The history of the lighthouse"
        out.append({"text": text, "ids": llm.tokenize(text.encode(), add_bos=True, special=False)})
    return out


_LOG_CALLBACK = None
_VOCAB = {}


def vocab(model):
    """llama.cpp's tokenizer for `model` (a vocab-only load), cached."""
    if model not in _VOCAB:
        from llama_cpp import Llama
        quiet_llama_log()
        _VOCAB[model] = Llama(model_path=str(model), vocab_only=True, verbose=False)
    return _VOCAB[model]


def quiet_llama_log():
    """Drops llama.cpp's log lines (a vocab-only load warns about n_ctx_train)."""
    global _LOG_CALLBACK
    import ctypes
    import llama_cpp as L
    if _LOG_CALLBACK is None:
        _LOG_CALLBACK = L.llama_log_callback(lambda level, text, user: None)
        L.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p())


def requests_for(c, args):
    """Requests measured at concurrency c: --requests, or enough to keep c
    streams busy for a few rounds, capped so 64 stays within the time budget."""
    if args.requests:
        return max(args.requests, c)
    if args.quick:
        return c
    return {1: 6, 4: 16, 16: 48}.get(c, max(2 * c, min(4 * c, 96)))


# ---------------------------------------------------------------------------
# Statistics


def percentile(xs, p):
    """Linear-interpolated percentile (p in 0..100); None for no data."""
    if not xs:
        return None
    s = sorted(xs)
    k = (len(s) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def latency_summary(xs):
    return {"p50": percentile(xs, 50), "p99": percentile(xs, 99),
            "mean": statistics.fmean(xs) if xs else None, "n": len(xs)}


def vm_hwm(pid):
    """Peak resident set (VmHWM) of a process in bytes, 0 when unreadable."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def busy_cpu_seconds():
    """CPU seconds all processes on the machine have used since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / CLOCK_TICKS  # user nice system irq softirq steal


def process_cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime stime
    except OSError:
        return 0.0


def own_cpu_seconds(server_pid=None):
    """CPU seconds of this process, its reaped children and the server."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system + \
        (process_cpu_seconds(server_pid) if server_pid else 0.0)


class Interference:
    """How much CPU other processes took while a phase ran: the machine's busy
    time minus this benchmark's own (client, server, llama.cpp child), as a
    fraction of all cores over the phase's wall time. The figures of a phase
    with more than a few percent are not the quiet machine's."""

    def __init__(self, server_pid=None):
        self.server_pid = server_pid
        self.t0 = time.monotonic()
        self.busy0 = busy_cpu_seconds()
        self.own0 = own_cpu_seconds(server_pid)
        self.load = os.getloadavg()

    def result(self):
        wall = time.monotonic() - self.t0
        others = (busy_cpu_seconds() - self.busy0) - (own_cpu_seconds(self.server_pid) - self.own0)
        return {"others_cpu_fraction": max(0.0, others) / (wall * (os.cpu_count() or 1)),
                "load_average_before": self.load}


# ---------------------------------------------------------------------------
# snug: the server and the streaming clients


class Server:
    """A `snug serve` child on 127.0.0.1 with an OS-chosen port. Collects its
    stderr (the startup log) in a thread so the pipe never fills."""

    def __init__(self, args, parallel, ctx, max_seqs):
        self.cmd = [str(args.snug), "serve", str(args.model), "--host", "127.0.0.1", "--port", "0",
                    "--ctx", str(ctx), "--parallel", str(parallel), "--batch-tokens", str(args.batch_tokens),
                    "--max-seqs", str(max_seqs), "--queue", str(max(256, max_seqs)), "--threads", str(args.threads)]
        if args.memory:
            self.cmd += ["--memory", args.memory]
        if args.repack:
            self.cmd += ["--repack"]
        if args.pack_dir:
            self.cmd += ["--pack-dir", str(args.pack_dir)]
        self.cmd += ["--kv-type", args.kv_type]
        if args.prefill_chunk:
            self.cmd += ["--prefill-chunk", str(args.prefill_chunk)]
        self.log = []
        self.port = None
        self._ready = threading.Event()
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, errors="replace")
        threading.Thread(target=self._read_log, daemon=True).start()
        if not self._ready.wait(args.startup_timeout) or self.port is None:
            self.stop()
            raise RuntimeError("snug serve did not report its port:\n" + "".join(self.log[-20:]))
        deadline = time.monotonic() + args.startup_timeout
        while http_get("127.0.0.1", self.port, "/health")[0] != 200:  # 503 while loading
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("snug serve never became healthy:\n" + "".join(self.log[-20:]))
            time.sleep(0.05)
        status, body = http_get("127.0.0.1", self.port, "/v1/models")
        models = json.loads(body).get("data", []) if status == 200 else []
        self.model_id = models[0]["id"] if models else None

    def _read_log(self):
        for line in self.proc.stderr:
            self.log.append(line)
            m = re.search(r"listening on http://[^:\s]+:(\d+)", line)
            if m and self.port is None:
                self.port = int(m.group(1))
                self._ready.set()
        self._ready.set()  # exited

    def metrics(self):
        status, body = http_get("127.0.0.1", self.port, "/metrics")
        return parse_prometheus(body) if status == 200 else {}

    def check_alive(self, when):
        """Raises with the log's tail when the server has exited."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"snug serve exited ({self.proc.returncode}) {when}:\n" + "".join(self.log[-30:]))

    def peak_rss(self):
        return vm_hwm(self.proc.pid)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def http_get(host, port, path, timeout=10):
    """(status, body text); (0, error) when the connection fails."""
    import http.client
    try:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read().decode("utf-8", errors="replace")
        conn.close()
        return r.status, body
    except OSError as e:
        return 0, str(e)


def parse_prometheus(text):
    """{metric name with labels: value} from Prometheus text format."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)", line)
        if m:
            try:
                out[m.group(1)] = float(m.group(2))
            except ValueError:
                pass
    return out


def metric(metrics, name, label=""):
    """Sum of the samples of metric `name` whose labels contain `label`
    (e.g. 'state="running"'); None when there is none."""
    values = [v for k, v in metrics.items() if k.split("{", 1)[0] == name and label in k]
    return sum(values) if values else None


async def read_body(reader, headers):
    """Yields the response body in pieces as they arrive (chunked, sized or
    until close)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readline()
            if not size_line:
                return
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return
            data = await reader.readexactly(size)
            await reader.readexactly(2)
            yield data
    elif "content-length" in headers:
        left = int(headers["content-length"])
        while left > 0:
            data = await reader.read(min(left, 65536))
            if not data:
                return
            left -= len(data)
            yield data
    else:
        while data := await reader.read(65536):
            yield data


class Connection:
    """One client's keep-alive HTTP/1.1 connection to the server; reopened
    when the server closes it."""

    def __init__(self, port):
        self.port = port
        self.reader = self.writer = None

    async def open(self):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def stream_completion(self, body, timeout):
        """One streaming completion. Returns the arrival time of every token
        chunk (seconds after the request was sent), the text, the usage and
        the finish reason; raises on an HTTP error or a bad stream."""
        await self.open()
        reader, writer = self.reader, self.writer
        payload = json.dumps(body).encode()
        t0 = time.perf_counter()
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                     b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout)
        parts = status_line.decode("latin-1").split()
        status = int(parts[1]) if len(parts) > 1 else 0
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        arrivals, text, usage, finish, buf, done = [], [], None, None, b"", False
        async for piece in iterate_with_timeout(read_body(reader, headers), timeout):
            if status != 200:
                buf += piece
                continue
            now = time.perf_counter()
            buf += piece.replace(b"\r\n", b"\n")
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        done = True
                        continue
                    chunk = json.loads(data)
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or []:
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
                        if choice.get("text"):
                            arrivals.append(now - t0)
                            text.append(choice["text"])
        if status == 0 or headers.get("connection", "").lower() == "close" or \
                ("chunked" not in headers.get("transfer-encoding", "") and "content-length" not in headers):
            self.close()
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {buf[:300].decode('utf-8', errors='replace')}")
        if not done:
            raise RuntimeError("stream ended without data: [DONE]")
        return {"arrivals": arrivals, "text": "".join(text), "usage": usage, "finish_reason": finish,
                "seconds": time.perf_counter() - t0}


async def iterate_with_timeout(gen, timeout):
    it = gen.__aiter__()
    while True:
        try:
            yield await asyncio.wait_for(it.__anext__(), timeout)
        except StopAsyncIteration:
            return


async def run_clients(server, prompts, concurrency, args):
    """`concurrency` clients, each on its own keep-alive connection (opened
    before the clock starts), sending `prompts` in order, each taking the next
    one when its stream ends. Returns per-request records and the wall time
    from the first request to the last finish."""
    queue = list(enumerate(prompts))
    queue.reverse()
    results = [None] * len(prompts)
    conns = [Connection(server.port) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in conns))

    async def client(conn):
        while queue:
            i, p = queue.pop()
            body = {"model": server.model_id, "prompt": p["text"], "max_tokens": args.max_tokens,
                    "temperature": 0, "stream": True, "ignore_eos": True,
                    "stream_options": {"include_usage": True}}
            t = time.perf_counter()
            try:
                r = await conn.stream_completion(body, args.request_timeout)
            except (OSError, asyncio.IncompleteReadError):
                conn.close()  # the server closed an idle keep-alive connection: once more
                r = await conn.stream_completion(body, args.request_timeout)
            r["start"] = t
            results[i] = r

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(client(c) for c in conns))
    finally:
        for c in conns:
            c.close()
    return results, time.perf_counter() - t0


def snug_concurrency(server, prompts, c, args):
    before = server.metrics()
    watch = Interference(server.proc.pid)
    results, wall = asyncio.run(run_clients(server, prompts, c, args))
    interference = watch.result()
    server.check_alive(f"after the requests at concurrency {c}")
    after = server.metrics()
    ttft, gaps, per_request_itl, tokens, chunks = [], [], [], 0, 0
    for r in results:
        a = r["arrivals"]
        n = (r["usage"] or {}).get("completion_tokens", len(a))
        tokens += n
        chunks += len(a)
        if a:
            ttft.append(a[0])
            gaps += [y - x for x, y in zip(a, a[1:])]
            if n > 1:
                per_request_itl.append((a[-1] - a[0]) / (n - 1))

    def delta(name):
        x, y = metric(before, name), metric(after, name)
        return None if x is None or y is None else y - x

    return {
        "requests": len(prompts), "generated_tokens": tokens, "token_chunks": chunks, "wall_seconds": wall,
        "tokens_per_second": tokens / wall,
        "ttft": latency_summary(ttft), "itl": latency_summary(gaps),
        "itl_per_request_mean": latency_summary(per_request_itl),
        "decode_rate": c / percentile(gaps, 50) if gaps else None,
        "finish_reasons": sorted({r["finish_reason"] for r in results if r["finish_reason"]}),
        "peak_rss_bytes": server.peak_rss(),
        "preemptions": delta("snug_preemptions_total"),
        "prefix_cache_hit_blocks": delta("snug_prefix_cache_hit_blocks_total"),
        "scheduler_steps": delta("snug_scheduler_steps_total"),
        "predicted_peak_rss_bytes": metric(after, "snug_predicted_peak_resident_bytes"),
        **interference,
        "ttft_samples": ttft,
        "texts": [r["text"] for r in results],
    }


def measure_admission(args, prompts):
    """The same burst of requests, all at once, against the same KV memory of
    --admission-ctx tokens on both sides. snug: a second server with
    --parallel 1 --ctx M (one pool of M tokens, paged) and --max-seqs the
    burst; the running-sequences gauge and used KV blocks are sampled from
    /metrics every 20 ms. llama.cpp: n_ctx M split into M // max L fixed slots
    (each must hold the longest request), the burst decoded in waves of that
    many sequences."""
    m = args.admission_ctx
    longest = max(len(p["ids"]) + args.max_tokens for p in prompts)
    out = {"pool_tokens": m, "requests": len(prompts), "longest_request_tokens": longest}
    if not args.no_snug:
        server = Server(args, parallel=1, ctx=m, max_seqs=len(prompts))
        try:
            samples, stop = [], threading.Event()

            def poll():
                while not stop.is_set():
                    now = server.metrics()
                    running = metric(now, "snug_sequences", 'state="running"')
                    used = metric(now, "snug_kv_blocks", 'state="used"')
                    if running is not None:
                        samples.append((running, used or 0))
                    time.sleep(0.02)

            poller = threading.Thread(target=poll, daemon=True)
            before = server.metrics()
            poller.start()
            results, wall = asyncio.run(run_clients(server, prompts, len(prompts), args))
            stop.set()
            poller.join()
            server.check_alive("after the admission burst")
            after = server.metrics()
            pre = [metric(x, "snug_preemptions_total") for x in (before, after)]
            busy = [x for x in samples if x[0] > 0]
            tokens = sum((r["usage"] or {}).get("completion_tokens", len(r["arrivals"])) for r in results)
            out["snug"] = {
                "peak_running": int(max((x[0] for x in samples), default=0)),
                "mean_running": statistics.fmean(x[0] for x in busy) if busy else None,
                "mean_kv_used_fraction": statistics.fmean(x[1] * KV_BLOCK_TOKENS / m for x in busy)
                if busy else None,
                "all_completed": all(r is not None and r["arrivals"] for r in results),
                "preemptions": None if None in pre else pre[1] - pre[0],
                "wall_seconds": wall, "generated_tokens": tokens, "tokens_per_second": tokens / wall}
        finally:
            server.stop()
    slots = m // llama_slot_tokens(longest)
    out["llama_slots"] = slots
    if not args.no_llama and slots > 0:
        j = llama_concurrency(args, prompts, slots, m)
        out["llama"] = {"slots": slots, "slot_tokens": j["n_ctx_seq"], "wall_seconds": j["wall_seconds"],
                        "generated_tokens": j["generated_tokens"], "tokens_per_second": j["tokens_per_second"],
                        "peak_rss_bytes": j["peak_rss_bytes"]}
    return out


def snug_plan(args, parallel, ctx, max_seqs):
    """predicted_peak_rss_bytes and KV bytes per token from `snug plan --json`
    for the server's shape."""
    cmd = [str(args.snug), "plan", str(args.model), "--json", "--ctx", str(ctx), "--parallel", str(parallel),
           "--batch", str(args.batch_tokens), "--threads", str(args.threads)]
    if args.memory:
        cmd += ["--memory", args.memory]
    if args.repack:
        cmd += ["--repack"]
    if args.pack_dir:
        cmd += ["--pack-dir", str(args.pack_dir)]
    cmd += ["--kv-type", args.kv_type]
    r = subprocess.run(cmd, capture_output=True, text=True)
    try:
        j = json.loads(r.stdout)
    except json.JSONDecodeError:
        return {"error": r.stderr.strip()}
    return {"predicted_peak_rss_bytes": j["predicted_peak_rss_bytes"],
            "kv_bytes_per_token": j["kv_cache"]["bytes_per_token"], "kv_bytes": j["kv_cache"]["bytes"],
            "command": " ".join(cmd[1:])}


def plan_from_log(log):
    """The predicted peak the server's startup log prints, when it does."""
    for line in log:
        if re.search(r"predicted peak", line, re.I):
            m = re.search(r"([\d.]+)\s*(KiB|MiB|GiB|B)\b", line.split("predicted peak", 1)[-1])
            if m:
                scale = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[m.group(2)]
                return int(float(m.group(1)) * scale)
    return None


def snug_kernels(args):
    """snug's dispatched SIMD target and kernels (`snug run --json`)."""
    cmd = [str(args.snug), "run", str(args.model), "--json", "--no-chat", "-p", "Hello", "-n", "1", "--ctx", "64",
           "-t", str(args.threads), "--kv-type", args.kv_type]
    r = subprocess.run(cmd, capture_output=True, text=True)
    try:
        j = json.loads(r.stdout)
        return {"simd_target": j.get("simd_target"), "matmul_kernels": j.get("matmul_kernels"),
                "attention_kernel": j.get("attention_kernel")}
    except json.JSONDecodeError:
        return {"error": r.stderr.strip()}


# ---------------------------------------------------------------------------
# llama.cpp: batched decoding through the C API, in a child process


def llama_child(spec):
    """Runs in the child (serve.py --llama-child SPEC_FILE): decodes spec's
    prompts in waves of spec["concurrency"] sequences; prints one JSON line."""
    import ctypes
    import numpy as np
    import llama_cpp as L

    quiet_llama_log()
    L.llama_backend_init()
    mparams = L.llama_model_default_params()
    model = L.llama_model_load_from_file(spec["model"].encode(), mparams)
    if not model:
        raise SystemExit("llama.cpp could not load " + spec["model"])
    n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    c = spec["concurrency"]
    n_batch = max(spec["batch_tokens"], c)
    cp = L.llama_context_default_params()
    cp.n_ctx = spec["n_ctx"]
    cp.n_batch = n_batch
    cp.n_ubatch = n_batch
    cp.n_seq_max = c
    cp.n_threads = spec["threads"]
    cp.n_threads_batch = spec["threads"]
    cp.kv_unified = spec["kv_unified"]
    if spec["kv_type"] != "f16":  # llama.cpp keeps a quantized V only with flash attention
        cp.type_k = cp.type_v = LLAMA_KV_TYPES[spec["kv_type"]]
        cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED
    cp.no_perf = True
    ctx = L.llama_init_from_model(model, cp)
    if not ctx:
        raise SystemExit(f"llama.cpp could not create a context of {spec['n_ctx']} tokens")
    mem = L.llama_get_memory(ctx)
    batch = L.llama_batch_init(n_batch, 0, 1)

    def decode(items):
        """items: [(seq, pos, token, wants_logits)]; returns the logits rows
        of the items that want them, in order."""
        for j, (s, pos, tok, out) in enumerate(items):
            batch.token[j] = tok
            batch.pos[j] = pos
            batch.n_seq_id[j] = 1
            batch.seq_id[j][0] = s
            batch.logits[j] = 1 if out else 0
        batch.n_tokens = len(items)
        rc = L.llama_decode(ctx, batch)
        if rc != 0:
            raise SystemExit(f"llama_decode returned {rc} (KV cache full?)")
        n_out = sum(1 for it in items if it[3])
        return np.ctypeslib.as_array(L.llama_get_logits(ctx), shape=(n_out, n_vocab))

    # Warm-up: thread pool, page cache, first-use allocations.
    decode([(0, p, t, p == 7) for p, t in enumerate(spec["prompts"][0][:8])])
    L.llama_memory_clear(mem, True)

    ttft, steps, prefill_seconds, decode_seconds, generated, token_ids = [], [], 0.0, 0.0, 0, []
    t_all = time.perf_counter()
    for w in range(0, len(spec["prompts"]), c):
        wave = spec["prompts"][w:w + c]
        L.llama_memory_clear(mem, True)
        t0 = time.perf_counter()
        pending = [(s, pos, tok, pos == len(p) - 1) for s, p in enumerate(wave) for pos, tok in enumerate(p)]
        next_tok = [0] * len(wave)
        for k in range(0, len(pending), n_batch):
            items = pending[k:k + n_batch]
            logits = decode(items)
            outs = [it[0] for it in items if it[3]]
            if outs:
                picks = logits.argmax(axis=1)
                now = time.perf_counter() - t0
                for s, tok in zip(outs, picks):
                    next_tok[s] = int(tok)
                    ttft.append(now)
        prefill_seconds += time.perf_counter() - t0
        tokens = [[t] for t in next_tok]
        pos = [len(p) for p in wave]
        t1 = time.perf_counter()
        for _ in range(spec["max_tokens"] - 1):
            ts = time.perf_counter()
            logits = decode([(s, pos[s], next_tok[s], True) for s in range(len(wave))])
            next_tok = [int(t) for t in logits.argmax(axis=1)]
            for s in range(len(wave)):
                tokens[s].append(next_tok[s])
                pos[s] += 1
            steps.append(time.perf_counter() - ts)
        decode_seconds += time.perf_counter() - t1
        generated += sum(len(t) for t in tokens)
        token_ids += tokens
    wall = time.perf_counter() - t_all
    out = {"n_ctx": L.llama_n_ctx(ctx), "n_ctx_seq": L.llama_n_ctx_seq(ctx), "n_seq_max": L.llama_n_seq_max(ctx),
           "n_batch": n_batch, "kv_unified": spec["kv_unified"],
           "flash_attn": "auto" if spec["kv_type"] == "f16" else "on", "kv_type": spec["kv_type"],
           "generated_tokens": generated, "wall_seconds": wall, "prefill_seconds": prefill_seconds,
           "decode_seconds": decode_seconds, "ttft_samples": ttft, "step_samples": steps, "token_ids": token_ids,
           "peak_rss_bytes": vm_hwm(os.getpid()), "system_info": L.llama_print_system_info().decode().strip()}
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    L.llama_model_free(model)
    print(json.dumps(out))


def llama_concurrency(args, prompts, c, n_ctx):
    spec = {"model": str(args.model), "concurrency": c, "n_ctx": n_ctx, "batch_tokens": args.batch_tokens,
            "threads": args.threads, "kv_unified": args.kv_unified, "kv_type": args.kv_type,
            "max_tokens": args.max_tokens,
            "prompts": [p["ids"] for p in prompts]}
    spec_file = ROOT / "build" / f"bench_serve_llama_{c}.json"
    spec_file.parent.mkdir(exist_ok=True)
    spec_file.write_text(json.dumps(spec))
    watch = Interference()
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--llama-child", str(spec_file)],
                       capture_output=True, text=True)
    interference = watch.result()
    spec_file.unlink()
    if r.returncode != 0:
        raise RuntimeError(f"llama.cpp child failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    j = json.loads(r.stdout.strip().splitlines()[-1])
    j["requests"] = len(prompts)
    j["tokens_per_second"] = j["generated_tokens"] / j["wall_seconds"]
    j["decode_tokens_per_second"] = (j["generated_tokens"] - len(prompts)) / j["decode_seconds"] \
        if j["decode_seconds"] > 0 else None
    j["ttft"] = latency_summary(j["ttft_samples"])
    j["itl"] = latency_summary(j["step_samples"])
    j["decode_rate"] = c / j["itl"]["p50"] if j["itl"]["p50"] else None
    j.update(interference)
    return j


def generation_phase(server, args, pool_tokens, first):
    """The batching goal measured where it is defined: generation, not
    prefill. Prompts of about ten tokens and --gen-tokens generated each, one
    stream (--gen-single requests in turn) against sixteen at once, on both
    sides, alternated for --gen-rounds rounds (the host's speed drifts over
    minutes; a ratio of figures taken far apart measures the drift too).
    Returns the rounds and, per side, the medians and the ratio 16 / 1."""
    gargs = copy.copy(args)
    gargs.max_tokens = args.gen_tokens
    per_round = args.gen_single + GEN_STREAMS
    prompts = make_short_prompts(args.model, args.gen_rounds * per_round, first)
    sides = [name for name, on in (("snug", server is not None), ("llama", not args.no_llama)) if on]
    rounds = []
    for r in range(args.gen_rounds):
        batch = prompts[r * per_round:(r + 1) * per_round]
        row = {}
        for c, part in ((1, batch[:args.gen_single]), (GEN_STREAMS, batch[args.gen_single:])):
            for side in sides:
                if side == "snug":
                    x = snug_concurrency(server, part, c, gargs)
                else:
                    x = llama_concurrency(gargs, part, c, pool_tokens)
                row[f"{side}_{c}"] = {"tokens_per_second": x["tokens_per_second"],
                                      "generated_tokens": x["generated_tokens"],
                                      "wall_seconds": x["wall_seconds"],
                                      "others_cpu_fraction": x.get("others_cpu_fraction")}
        rounds.append(row)
        print("generation round " + str(r + 1) + ": " + ", ".join(
            f"{side} {row[f'{side}_1']['tokens_per_second']:.1f} / {row[f'{side}_{GEN_STREAMS}']['tokens_per_second']:.1f}"
            for side in sides) + f" tok/s (1 / {GEN_STREAMS} streams)", file=sys.stderr)
    out = {"prompt_tokens": [len(p["ids"]) for p in prompts[:per_round]], "max_tokens": args.gen_tokens,
           "single_stream_requests": args.gen_single, "rounds": rounds}
    for side in sides:
        one = [row[f"{side}_1"]["tokens_per_second"] for row in rounds]
        many = [row[f"{side}_{GEN_STREAMS}"]["tokens_per_second"] for row in rounds]
        ratios = [m / o for m, o in zip(many, one)]
        out[side] = {"median_1": statistics.median(one), "median_16": statistics.median(many),
                     "ratio_of_medians": statistics.median(many) / statistics.median(one),
                     "median_round_ratio": statistics.median(ratios),
                     "min_round_ratio": min(ratios), "max_round_ratio": max(ratios)}
    return out


def same_text(model, snug_texts, llama_ids):
    """Share of requests whose greedy completion is the same text on both
    sides (a check that both did the same work; llama.cpp's batched decoding
    is not batch invariant, so long prompts split over batches may differ)."""
    llm = vocab(model)
    same = sum(1 for t, ids in zip(snug_texts, llama_ids)
               if t == llm.detokenize(ids).decode("utf-8", errors="replace"))
    return same / len(snug_texts) if snug_texts else None


# ---------------------------------------------------------------------------
# Admission at equal memory


def llama_slot_tokens(longest):
    """A llama.cpp slot that holds `longest` tokens: n_ctx / n_seq_max, which
    llama.cpp rounds up to a multiple of 256."""
    return math.ceil(longest / LLAMA_CTX_PAD) * LLAMA_CTX_PAD


def admission_table(lengths, memories, block=KV_BLOCK_TOKENS):
    """For each memory M (tokens of KV): how many of the requests (total lengths
    `lengths`, taken in order, cycling) run at once. llama.cpp: n_parallel
    slots of n_ctx / n_parallel tokens (a multiple of 256) that must each hold
    the longest request; snug: paged blocks, admitted first come first served
    while their blocks fit."""
    longest = llama_slot_tokens(max(lengths))
    rows = []
    for m in memories:
        used, admitted = 0, 0
        while True:
            need = math.ceil(lengths[admitted % len(lengths)] / block) * block
            if used + need > m:
                break
            used += need
            admitted += 1
        rows.append({"memory_tokens": m, "longest_request_tokens": max(lengths), "llama_slot_tokens": longest,
                     "llama_sequences": m // longest,
                     "snug_sequences": admitted, "snug_tokens_used": used})
    return rows


# ---------------------------------------------------------------------------
# Report


def fmt_ms(x):
    return "-" if x is None else f"{1000 * x:.0f}" if x >= 0.1 else f"{1000 * x:.1f}"


def print_report(report):
    m = report["machine"]
    print(f"\n{m['cpu']}, {m['cores']} cores; snug {m['snug_simd']}; load average at start "
          f"{' '.join(f'{x:.2f}' for x in m['load_average_start'])}; {report['elapsed_seconds']:.0f} s in all")
    print(f"llama.cpp: {m['llama_system_info']}")
    p = report["params"]
    print(f"model {Path(p['model']).name}; {p['max_tokens']} tokens per request, greedy, ignore_eos; threads "
          f"{p['threads']}; snug --ctx {p['ctx']} --parallel {p['parallel']} --batch-tokens {p['batch_tokens']}"
          f"{' --prefill-chunk ' + str(p['prefill_chunk']) if p.get('prefill_chunk') else ''}; "
          f"llama.cpp n_ctx {p['llama_n_ctx']} (same KV tokens), kv_unified {p['kv_unified']}; "
          f"KV {p.get('kv_type', 'f16')} on both sides"
          f"{', snug attention ' + m['snug_kernels']['attention_kernel'] if (m.get('snug_kernels') or {}).get('attention_kernel') else ''}\n")
    rows = report["results"]
    side = lambda row, name: row.get(name) or {}
    num = lambda x, w, f=".1f": f"{x:>{w}{f}}" if x is not None else f"{'-':>{w}}"
    pct = lambda x: f"{100 * x:.0f}%" if x is not None else "-"
    print("throughput: generated tokens over the wall time, prefill included; decode = C / p50 inter-token "
          "latency (a step of C decoding sequences without a prompt chunk); others = CPU that other processes "
          "took, of all cores")
    hdr = (f"{'C':>3} {'reqs':>4} | {'snug tok/s':>10} {'llama tok/s':>11} {'ratio':>5} | "
           f"{'decode snug':>11} {'llama':>6} | {'others snug/llama':>17}")
    print(hdr)
    print("-" * len(hdr))
    for row in rows:
        s_, l_ = side(row, "snug"), side(row, "llama")
        print(f"{row['concurrency']:>3} {row['requests']:>4} | {num(s_.get('tokens_per_second'), 10)} "
              f"{num(l_.get('tokens_per_second'), 11)} {num(row.get('ratio'), 5, '.2f')} | "
              f"{num(s_.get('decode_rate'), 11)} {num(l_.get('decode_rate'), 6)} | "
              f"{pct(s_.get('others_cpu_fraction')) + '/' + pct(l_.get('others_cpu_fraction')):>17}")
    noisy = [f"C={row['concurrency']} {name}" for row in rows for name in ("snug", "llama")
             if side(row, name).get("others_cpu_fraction", 0) > 0.05]
    if noisy:
        print(f"warning: other processes took over 5% of the CPUs during {', '.join(noisy)}: not quiet figures")
    for name, key in [("snug", "snug_speedup_16_over_1"), ("llama.cpp", "llama_speedup_16_over_1")]:
        if report.get(key):
            print(f"{name} 16 / {name} 1: {report[key]['aggregate']:.2f}x aggregate tok/s, "
                  f"{report[key]['decode']:.2f}x decode")
    g = report.get("generation")
    if g:
        lens = g["prompt_tokens"]
        print(f"\ngeneration-bound: prompts of {min(lens)}-{max(lens)} tokens, {g['max_tokens']} generated each; "
              f"one stream ({g['single_stream_requests']} requests in turn) and sixteen at once, alternated for "
              f"{len(g['rounds'])} rounds")
        for key, name in (("snug", "snug"), ("llama", "llama.cpp")):
            x = g.get(key)
            if not x:
                continue
            per = " ".join(f"{row[f'{key}_1']['tokens_per_second']:.0f}/{row[f'{key}_{GEN_STREAMS}']['tokens_per_second']:.0f}"
                           for row in g["rounds"])
            print(f"  {name:9}: 1 stream {x['median_1']:.1f} tok/s, 16 streams {x['median_16']:.1f} (medians); "
                  f"16 / 1 = {x['ratio_of_medians']:.2f}x (rounds {x['min_round_ratio']:.2f}-"
                  f"{x['max_round_ratio']:.2f}, median {x['median_round_ratio']:.2f}); rounds 1/16: {per}")
        if g.get("snug") and g.get("llama"):
            print(f"  snug / llama.cpp: {g['snug']['median_1'] / g['llama']['median_1']:.2f}x at one stream, "
                  f"{g['snug']['median_16'] / g['llama']['median_16']:.2f}x at sixteen")
    print("\nlatency (ms; llama.cpp: TTFT from its wave's start, ITL = decode step) and memory")
    hdr = (f"{'C':>3} | {'TTFT p50/p99 snug':>17} {'llama':>12} | {'ITL p50/p99 snug':>16} {'llama':>10} | "
           f"{'RSS MiB snug/plan':>17} {'llama':>5} | preempt | same text")
    print(hdr)
    print("-" * len(hdr))
    pair = lambda d: f"{fmt_ms(d['p50'])}/{fmt_ms(d['p99'])}" if d else "-"
    for row in rows:
        s_, l_ = side(row, "snug"), side(row, "llama")
        plan = s_.get("predicted_peak_rss_bytes") or report.get("snug_plan", {}).get("predicted_peak_rss_bytes")
        rss = "-" if not s_ else f"{s_['peak_rss_bytes'] / 2**20:.0f}/" + (f"{plan / 2**20:.0f}" if plan else "-")
        print(f"{row['concurrency']:>3} | {pair(s_.get('ttft')):>17} {pair(l_.get('ttft')):>12} | "
              f"{pair(s_.get('itl')):>16} {pair(l_.get('itl')):>10} | {rss:>17} "
              f"{num(l_['peak_rss_bytes'] / 2**20 if l_ else None, 5, '.0f')} | "
              f"{num(s_.get('preemptions'), 7, '.0f')} | {pct(row.get('same_text')):>9}")
    lengths = report["admission"]["lengths"]
    print(f"\nadmission at equal KV memory: requests of prompt + max_tokens tokens ({min(lengths)}..{max(lengths)}, "
          f"mean {statistics.fmean(lengths):.0f}), in order; llama.cpp's slots must hold the longest, "
          f"rounded up to {LLAMA_CTX_PAD}")
    print(f"{'KV tokens':>9} {'KV MiB':>7} | {'llama.cpp slots':>22} | {'snug paged (16-token blocks)':>28}")
    bpt = report.get("snug_plan", {}).get("kv_bytes_per_token")
    for r in report["admission"]["computed"]:
        mib = f"{r['memory_tokens'] * bpt / 2**20:.0f}" if bpt else "-"
        print(f"{r['memory_tokens']:>9} {mib:>7} | {r['llama_sequences']:>13} of {r['llama_slot_tokens']:>4}  | "
              f"{r['snug_sequences']:>28}")
    meas = report["admission"].get("measured")
    if meas:
        print(f"measured, {meas['requests']} requests at once into {meas['pool_tokens']} KV tokens "
              f"(longest request {meas['longest_request_tokens']} tokens):")
        s, l = meas.get("snug"), meas.get("llama")
        if s:
            print(f"  snug paged:      {s['mean_running']:.1f} sequences running on average (peak {s['peak_running']}), "
                  f"{100 * s['mean_kv_used_fraction']:.0f}% of the pool in use, {s['preemptions']:.0f} preemptions, "
                  f"{s['tokens_per_second']:.1f} tok/s, {s['wall_seconds']:.1f} s, all completed: {s['all_completed']}")
        if l:
            print(f"  llama.cpp slots: {l['slots']} slots of {l['slot_tokens']} tokens, "
                  f"{l['tokens_per_second']:.1f} tok/s, {l['wall_seconds']:.1f} s")


# ---------------------------------------------------------------------------


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--llama-child":
        llama_child(json.loads(Path(sys.argv[2]).read_text()))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--snug", type=Path, default=ROOT / "build" / "snug")
    ap.add_argument("--concurrency", default="1,4,16,64")
    ap.add_argument("--requests", type=int, default=0,
                    help="requests per concurrency (default: a few rounds of each, fewer at 64)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--ctx", type=int, default=512, help="tokens per sequence (snug --ctx)")
    ap.add_argument("--parallel", type=int, default=0,
                    help="snug --parallel: the pool holds parallel * ctx tokens (default: the largest concurrency)")
    ap.add_argument("--batch-tokens", type=int, default=256, help="snug --batch-tokens; llama.cpp n_batch = n_ubatch")
    ap.add_argument("--prefill-chunk", type=int, default=0,
                    help="snug --prefill-chunk: prompt tokens a step takes beside decodes (0: what --batch-tokens leaves)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory", help="snug --memory (default: snug's own)")
    ap.add_argument("--repack", action="store_true",
                    help="snug --repack: the matrices packed once at load in private memory")
    ap.add_argument("--pack-dir", type=Path,
                    help="snug --pack-dir: the matrices packed once into a shared file there")
    ap.add_argument("--kv-unified", action="store_true", help="llama.cpp: one KV stream shared by all sequences")
    ap.add_argument("--kv-type", choices=sorted(LLAMA_KV_TYPES) + ["f16"], default="f16",
                    help="keys and values on both sides (snug --kv-type; llama.cpp type_k/type_v, "
                         "quantized with flash attention on, as llama.cpp requires)")
    ap.add_argument("--admission-ctx", type=int, default=4096,
                    help="KV tokens of the second server that measures admission (0: skip)")
    ap.add_argument("--gen-rounds", type=int, default=5,
                    help="rounds of the generation-bound phase: 1 stream then 16 on each side (0: skip)")
    ap.add_argument("--gen-tokens", type=int, default=96, help="tokens generated per request in that phase")
    ap.add_argument("--gen-single", type=int, default=3, help="one-stream requests per round in that phase")
    ap.add_argument("--no-snug", action="store_true", help="llama.cpp side only")
    ap.add_argument("--no-llama", action="store_true", help="snug side only")
    ap.add_argument("--quick", action="store_true", help="smoke run: concurrency 1,4, 16 tokens, few requests")
    ap.add_argument("--startup-timeout", type=float, default=120)
    ap.add_argument("--request-timeout", type=float, default=300)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.quick:
        if args.concurrency == ap.get_default("concurrency"):
            args.concurrency = "1,4"
        args.max_tokens = min(args.max_tokens, 16)
        args.admission_ctx = min(args.admission_ctx, 1024) if args.admission_ctx else 0
        args.gen_rounds = min(args.gen_rounds, 1)
        args.gen_tokens = min(args.gen_tokens, 16)
    conc = [int(c) for c in args.concurrency.split(",")]
    # The generation-bound phase runs GEN_STREAMS streams whatever --concurrency says.
    widest = max(conc + ([GEN_STREAMS] if args.gen_rounds > 0 else []))
    parallel = args.parallel or widest
    pool_tokens = parallel * args.ctx
    if args.gen_rounds > 0 and (args.gen_single < 1 or args.gen_tokens < 1):
        ap.error("--gen-single and --gen-tokens must be at least 1 (--gen-rounds 0 skips the phase)")
    if args.gen_rounds > 0 and args.gen_tokens + 16 > args.ctx:
        ap.error(f"--ctx {args.ctx} cannot hold a generation-bound request (~10 prompt tokens plus --gen-tokens)")
    if max(len_ + args.max_tokens for len_ in PROMPT_LENGTHS) + 8 > args.ctx:
        ap.error(f"--ctx {args.ctx} cannot hold the longest prompt ({max(PROMPT_LENGTHS)}) plus --max-tokens")

    counts = [requests_for(c, args) for c in conc]
    n_admission = 0 if not args.admission_ctx else (8 if args.quick else 64)
    prompts = make_prompts(args.model, 1 + sum(counts) + n_admission)
    warmup, prompts = prompts[0], prompts[1:]
    lengths = [len(p["ids"]) + args.max_tokens for p in prompts]
    report = {
        "schema": "snug.bench.serve/1",
        "params": {"model": str(args.model), "concurrency": conc, "max_tokens": args.max_tokens, "ctx": args.ctx,
                   "parallel": parallel, "pool_tokens": pool_tokens, "batch_tokens": args.batch_tokens,
                   "prefill_chunk": args.prefill_chunk,
                   "threads": args.threads, "memory": args.memory, "repack": args.repack,
                   "gen_rounds": args.gen_rounds, "gen_tokens": args.gen_tokens, "gen_single": args.gen_single,
                   "pack_dir": str(args.pack_dir) if args.pack_dir else None,
                   "llama_n_ctx": pool_tokens,
                   "kv_unified": args.kv_unified, "kv_type": args.kv_type, "prompt_tokens": [len(p["ids"]) for p in prompts]},
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "load_average_start": os.getloadavg()},
        "results": [],
    }
    server = None
    t_start = time.monotonic()
    try:
        if not args.no_snug:
            report["machine"]["snug_kernels"] = snug_kernels(args)
            server = Server(args, parallel, args.ctx, max_seqs=widest)
            report["snug_command"] = " ".join(server.cmd[1:])
            report["snug_plan"] = snug_plan(args, parallel, args.ctx, widest)
            logged = plan_from_log(server.log)
            if logged:
                report["snug_plan"]["logged_peak_rss_bytes"] = logged
            report["snug_startup_log"] = server.log[:60]
            asyncio.run(run_clients(server, [warmup], 1, args))
        k = report["machine"].get("snug_kernels", {})
        report["machine"]["snug_simd"] = f"{k.get('simd_target')}: " + ", ".join(
            f"{a} {b}" for a, b in (k.get("matmul_kernels") or {}).items()) if k.get("simd_target") else "-"
        start = 0
        for c, n in zip(conc, counts):
            batch = prompts[start:start + n]
            start += n
            row = {"concurrency": c, "requests": n}
            if server:
                row["snug"] = snug_concurrency(server, batch, c, args)
            if not args.no_llama:
                row["llama"] = llama_concurrency(args, batch, c, pool_tokens)
                if server:
                    server.check_alive(f"while llama.cpp ran at concurrency {c}")
                report["machine"]["llama_system_info"] = row["llama"]["system_info"]
            if row.get("snug") and row.get("llama"):
                row["ratio"] = row["snug"]["tokens_per_second"] / row["llama"]["tokens_per_second"]
                row["same_text"] = same_text(args.model, row["snug"]["texts"], row["llama"]["token_ids"])
            report["results"].append(row)
            print(f"C={c}: " + ", ".join(f"{side} {row[side]['tokens_per_second']:.1f} tok/s"
                                          for side in ("snug", "llama") if side in row), file=sys.stderr)
        report["machine"].setdefault("llama_system_info", "-")
        by_c = {r["concurrency"]: r for r in report["results"]}
        for side in ("snug", "llama"):
            if 1 in by_c and 16 in by_c and side in by_c[1]:
                report[f"{side}_speedup_16_over_1"] = {
                    "aggregate": by_c[16][side]["tokens_per_second"] / by_c[1][side]["tokens_per_second"],
                    "decode": by_c[16][side]["decode_rate"] / by_c[1][side]["decode_rate"]}
        if args.gen_rounds > 0:
            report["generation"] = generation_phase(server, args, pool_tokens, 1 + len(prompts))
        report["admission"] = {"lengths": lengths,
                               "computed": admission_table(lengths, sorted({1024, 2048, 4096, 8192, pool_tokens}))}
        if n_admission:
            if server:
                server.stop()
            report["admission"]["measured"] = measure_admission(args, prompts[start:start + n_admission])
    finally:
        if server:
            server.stop()
    report["machine"]["load_average_end"] = os.getloadavg()
    report["elapsed_seconds"] = time.monotonic() - t_start
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
