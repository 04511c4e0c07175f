"""Several models under one byte budget (`snug serve --models`): three
SmolLM2 files (the Q4_1 the project fetches and Q8_0 and Q4_K_M copies that
`snug quantize` writes) behind one budget that holds two of them. Requests for
all three arrive interleaved from several clients: every answer equals the one
the same model gives with room for all, least-recently-used eviction happens,
no request fails, and the resident set, sampled all along, never exceeds the
budget. Also: a model evicted only once its stream ends, a model that can
never fit refused at once, keep-alive unloading, model names that are paths
or unknown, malformed flags refused at start with one line, two servers
on one file sharing its weight pages (PSS), and tenants: one flooding gets
429s from its own quotas while the other is served, a model outside a
tenant's list is a 403. Traffic goes
to 127.0.0.1 only; everything stops by itself."""
import concurrent.futures
import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from snug_server import MODEL, SNUG, Server, Watch

if not MODEL.exists():
    pytest.skip(f"{MODEL} is missing (scripts/fetch-models)", allow_module_level=True)

NAMES = ["a-q4_1", "b-q8_0", "c-q4_k_m"]
PROMPTS = ["The capital of France is", "Once upon a time", "def fibonacci(n):",
           "The three primary colors are"]
MiB = 1 << 20


@pytest.fixture(scope="module")
def model_dir():
    with tempfile.TemporaryDirectory(prefix="snug_models_") as d:
        d = Path(d)
        (d / "a-q4_1.gguf").symlink_to(MODEL)
        for name, kind in (("b-q8_0", "Q8_0"), ("c-q4_k_m", "Q4_K_M")):
            subprocess.run([SNUG, "quantize", str(MODEL), str(d / f"{name}.gguf"), kind],
                           check=True, capture_output=True, timeout=600)
        yield d


def complete(server, model, prompt, max_tokens=12, stream=False, timeout=120):
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    if model is not None:
        body["model"] = model
    if stream:
        body["stream"] = True
    return server.request("POST", "/v1/completions", body=body, timeout=timeout)


def text_of(resp):
    status, _, body = resp
    assert status == 200, body
    return json.loads(body)["choices"][0]["text"]


def memory(server):
    s, _, b = server.request("GET", "/v1/memory")
    assert s == 200, b
    return json.loads(b)


def expect_error(resp, status, code, needle=""):
    s, _, body = resp
    assert s == status, body
    err = json.loads(body)["error"]
    assert err["code"] == code, err
    assert needle in err["message"], err
    assert "\n" not in err["message"]
    return err


@pytest.fixture(scope="module")
def reference(model_dir):
    """Each model's answers with room for all three, and the budget's shape."""
    s = Server("--models", model_dir, "--ctx", 512, "--parallel", 2, "--memory", "4GiB", model=None)
    try:
        answers = {(m, p): text_of(complete(s, m, p)) for m in NAMES for p in PROMPTS}
        mem = memory(s)
    finally:
        s.stop()
    planned = {m["name"]: m["planned_bytes"] for m in mem["models"]}
    assert sorted(planned) == sorted(NAMES)
    assert all(m["state"] == "loaded" for m in mem["models"]), mem
    return {"answers": answers, "planned": planned, "base": mem["budget"]["base_reserved_bytes"]}


class RssSampler(threading.Thread):
    """VmRSS every 10 ms, and a timeline of the models' states from
    /v1/memory (every 50 ms, a line when a state changes)."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server, self.peak, self.samples, self.done = server, 0, 0, threading.Event()
        self.timeline, self.t0 = [], time.time()
        self.start()

    def run(self):
        last, n = None, 0
        while not self.done.is_set() and self.server.proc.poll() is None:
            rss = self.server.vm("VmRSS")
            self.peak = max(self.peak, rss)
            self.samples += 1
            n += 1
            if n % 5 == 0:
                mem = memory(self.server)
                states = tuple((m["name"], m["state"]) for m in mem["models"])
                if states != last:
                    last = states
                    self.timeline.append((time.time() - self.t0, dict(states),
                                          mem["budget"]["reserved_bytes"], rss))
            time.sleep(0.01)

    def stop(self):
        self.done.set()
        self.join()
        return self.peak


def test_three_models_in_a_budget_for_two(model_dir, reference):
    planned, base = reference["planned"], reference["base"]
    two = sorted(planned.values())[-2:]
    budget = base + sum(two) + 4 * MiB
    assert budget < base + sum(planned.values()), "the budget must not hold all three"
    s = Server("--models", model_dir, "--ctx", 512, "--parallel", 2, "--memory", budget, model=None)
    try:
        rss = RssSampler(s)
        jobs = [(NAMES[i % 3], PROMPTS[(i // 3) % len(PROMPTS)]) for i in range(36)]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda j: (j, complete(s, *j)), jobs))
        peak = rss.stop()
        for (m, p), resp in results:
            assert text_of(resp) == reference["answers"][(m, p)], (m, p)
        metrics = s.metrics()
        evictions = sum(v for k, v in metrics.items() if k.startswith("snug_model_evictions_total{"))
        loads = sum(v for k, v in metrics.items() if k.startswith("snug_model_loads_total{"))
        print(f"\n36 requests over 3 models in {budget / MiB:.1f} MiB: {loads:.0f} loads, "
              f"{evictions:.0f} evictions, peak RSS {peak / MiB:.1f} MiB ({rss.samples} samples)")
        print("timeline (s: a-q4_1 b-q8_0 c-q4_k_m | reserved | RSS, MiB):")
        for t, states, reserved, rss_now in rss.timeline[:24]:
            print(f"  {t:6.2f}: " + " ".join(f"{states[n]:>9}" for n in NAMES) +
                  f" | {reserved / MiB:6.1f} | {rss_now / MiB:6.1f}")
        assert evictions >= 1 and loads >= 4
        assert peak <= budget, f"peak RSS {peak} over the budget {budget}"
        mem = memory(s)
        assert mem["budget"]["reserved_bytes"] <= budget
        assert sum(m["state"] == "loaded" for m in mem["models"]) <= 2
    finally:
        assert s.stop() == 0, s.log()


def test_a_model_in_use_is_not_evicted(model_dir, reference):
    planned, base = reference["planned"], reference["base"]
    budget = base + max(planned.values()) + 4 * MiB  # one model at a time
    s = Server("--models", model_dir, "--ctx", 512, "--parallel", 2, "--memory", budget, model=None)
    try:
        long = Watch(lambda: complete(s, "a-q4_1", PROMPTS[0], max_tokens=120))
        deadline = time.time() + 30
        while time.time() < deadline:
            states = {m["name"]: m for m in memory(s)["models"]}
            if states["a-q4_1"]["requests_in_flight"] > 0:
                break
            time.sleep(0.01)
        t0 = time.time()
        other = complete(s, "b-q8_0", PROMPTS[1])
        long.join(120)
        assert long.error is None, long.error
        a_text = text_of(long.result)
        assert text_of(other) == reference["answers"][("b-q8_0", PROMPTS[1])]
        assert a_text.startswith(reference["answers"][("a-q4_1", PROMPTS[0])])
        metrics = s.metrics()
        assert metrics['snug_model_evictions_total{model="a-q4_1"}'] == 1
        print(f"\nb-q8_0 waited {time.time() - t0:.2f} s for a-q4_1's 120-token stream to end")
    finally:
        assert s.stop() == 0, s.log()


def test_a_busy_model_cannot_starve_another(model_dir, reference):
    """Six clients keep a-q4_1 busy back to back in a budget for one model.
    A request for b-q8_0 closes a-q4_1 to new requests: it is answered once
    the requests a-q4_1 holds end (a second or so), not whenever the flood
    happens to leave a-q4_1 idle for an instant (9 s in one run without the
    closing, 600 s at worst), and the flood's requests that arrived meanwhile
    wait their turn and all succeed."""
    planned, base = reference["planned"], reference["base"]
    budget = base + max(planned.values()) + 4 * MiB  # one model at a time
    s = Server("--models", model_dir, "--ctx", 512, "--parallel", 2, "--memory", budget, model=None)
    stop, lock, flood = threading.Event(), threading.Lock(), []

    def client(k):
        while not stop.is_set():
            p = PROMPTS[k % len(PROMPTS)]
            resp = complete(s, "a-q4_1", p, max_tokens=8)
            with lock:
                flood.append((time.time(), p, resp))

    try:
        assert text_of(complete(s, "a-q4_1", PROMPTS[0], max_tokens=8))
        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(6)]
        for t in threads:
            t.start()
        time.sleep(1.5)  # the flood is on: a-q4_1 always has requests in flight
        t0 = time.time()
        other = Watch(lambda: complete(s, "b-q8_0", PROMPTS[1]))
        other.join(25)
        waited = time.time() - t0
        time.sleep(1.5)  # the flood goes on after b-q8_0, on a reloaded a-q4_1
        stop.set()
        for t in threads:
            t.join(60)
        assert other.error is None and other.result is not None, "b-q8_0 was not answered in 25 s"
        assert waited < 5, f"b-q8_0 waited {waited:.2f} s for a flood of a-q4_1 to pause"
        assert text_of(other.result) == reference["answers"][("b-q8_0", PROMPTS[1])]
        statuses = [r[0] for _, _, r in flood]
        assert statuses.count(200) == len(flood), statuses
        for _, p, resp in flood:  # 8 tokens: the start of the 12 the reference got
            assert reference["answers"][("a-q4_1", p)].startswith(text_of(resp)), p
        after = [f for f in flood if f[0] > t0 + waited]
        assert after, "no request for a-q4_1 was answered after b-q8_0"
        metrics = s.metrics()
        assert metrics['snug_model_loads_total{model="a-q4_1"}'] >= 2
        assert metrics['snug_model_evictions_total{model="a-q4_1"}'] >= 1
        print(f"\nb-q8_0 answered {waited:.2f} s into a flood of a-q4_1 ({len(flood)} requests, "
              f"{len(after)} after it, all 200)")
    finally:
        stop.set()
        assert s.stop() == 0, s.log()


def dry_run(*args):
    r = subprocess.run([SNUG, "serve", *map(str, args), "--dry-run"], capture_output=True,
                       timeout=60)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def test_dry_run_prints_the_plan_the_server_keeps(model_dir, reference):
    """`snug serve --dry-run` plans exactly as the server does (the bytes each
    model reserves, what the process and HTTP server hold), binds and loads
    nothing; without --memory it plans without a budget (what a deployment
    needs); a model too large for a given budget still shows its need."""
    rc, out, err = dry_run("--models", model_dir, "--ctx", 512, "--parallel", 2, "--memory", "4GiB")
    assert rc == 0, err
    plan = json.loads(out)
    assert plan["schema"] == "snug.serve-plan/1"
    planned = {m["name"]: m["planned_bytes"] for m in plan["models"]}
    assert planned == reference["planned"]
    base = plan["process_bytes"] + plan["server_bytes"]
    assert base == reference["base"]
    assert plan["memory_bytes_all"] == base + sum(planned.values())
    assert plan["memory_bytes_one"] == base + max(planned.values())
    assert all(m["fits"] and m["context_length"] == 512 for m in plan["models"])
    assert "listening" not in err
    rc, out, err = dry_run("--models", model_dir, "--ctx", 512, "--parallel", 2)
    assert rc == 0, err
    unbounded = json.loads(out)
    assert "budget" not in unbounded
    assert {m["name"]: m["planned_bytes"] for m in unbounded["models"]} == planned
    rc, out, err = dry_run("--models", model_dir, "--ctx", 512, "--parallel", 2, "--memory", "64MiB")
    assert rc == 0, err
    small = json.loads(out)
    for m in small["models"]:
        assert not m["fits"] and "64.0 MiB" in m["refusal"] and "\n" not in m["refusal"]
        assert m["planned_bytes"] == planned[m["name"]]
    rc, out, err = dry_run(MODEL, "--models", model_dir)
    assert rc != 0 and out == "" and "not both" in err


def test_too_large_unknown_and_path_names(model_dir, reference):
    planned, base = reference["planned"], reference["base"]
    small = min(planned, key=planned.get)
    budget = base + planned[small] + 4 * MiB  # the largest can never fit
    big = max(planned, key=planned.get)
    s = Server("--models", model_dir, "--ctx", 512, "--parallel", 2, "--memory", budget, model=None)
    try:
        states = {m["id"]: m for m in json.loads(s.request("GET", "/v1/models")[2])["data"]}
        assert states[big]["state"] == "too_large"
        t0 = time.time()
        expect_error(complete(s, big, "hi"), 400, "model_too_large", "budget")
        assert time.time() - t0 < 2
        for name in ["../a-q4_1", str(model_dir / "a-q4_1.gguf"), "a-q4_1.gguf", "nope", "A-Q4_1",
                     "a-q4_1\n", "a" * 5000]:
            expect_error(complete(s, name, "hi"), 404, "model_not_found", "does not exist")
        # No model, or an empty name, with several served: which one is meant?
        for body in ({"prompt": "hi", "max_tokens": 2}, {"model": "", "prompt": "hi"}):
            s_, _, b = s.request("POST", "/v1/completions", body=body)
            assert s_ == 400 and b"must name its model" in b, b
        expect_error(s.request("POST", "/v1/completions", body={"model": 7, "prompt": "hi"}), 400,
                     None, "model")
        assert text_of(complete(s, small, PROMPTS[0])) == reference["answers"][(small, PROMPTS[0])]
    finally:
        assert s.stop() == 0, s.log()


def test_keep_alive_unloads_idle_models(model_dir, reference):
    s = Server("--models", model_dir / "a-q4_1.gguf", model_dir / "b-q8_0.gguf", "--ctx", 512,
               "--parallel", 2, "--memory", "2GiB", "--keep-alive", "1s", "--pin", "b-q8_0",
               model=None)
    try:
        for m in ("a-q4_1", "b-q8_0"):
            assert text_of(complete(s, m, PROMPTS[2])) == reference["answers"][(m, PROMPTS[2])]
        deadline = time.time() + 20
        while time.time() < deadline:
            states = {m["name"]: m["state"] for m in memory(s)["models"]}
            if states["a-q4_1"] == "unloaded":
                break
            time.sleep(0.2)
        assert states == {"a-q4_1": "unloaded", "b-q8_0": "loaded"}, states
        assert s.metrics()['snug_model_idle_unloads_total{model="a-q4_1"}'] == 1
        assert text_of(complete(s, "a-q4_1", PROMPTS[2])) == reference["answers"][("a-q4_1", PROMPTS[2])]
    finally:
        assert s.stop() == 0, s.log()


@pytest.mark.parametrize("args,needle", [
    (["--models", "/nonexistent/dir/"], "cannot open '/nonexistent/dir/'"),
    (["--models", "{dir}", "--pin", "missing"], "--pin: no model is named 'missing'"),
    (["--models", "{dir}", "--keep-alive", "soon"], "is not a duration"),
    (["--models", "{dir}", "--keep-alive", "zzz=5m"], "--keep-alive: no model is named 'zzz'"),
    (["--models", "{dir}", "{dir}"], "two models are named"),
    (["{dir}/a-q4_1.gguf", "--models", "{dir}"], "not both"),
    (["--pin", "x"], "go with --models"),
    (["--models", "{dir}", "--tenants", "/nonexistent/tenants.json"], "cannot read the tenants file"),
    (["--models", "{dir}", "--tenants", "{dir}/a-q4_1.gguf"], "not valid JSON"),
    (["--models", "{dir}", "--tenants", "x", "--api-key-file", "y"], "not both"),
])
def test_malformed_flags_are_refused_at_start(model_dir, args, needle):
    args = [a.replace("{dir}", str(model_dir)) for a in args]
    r = subprocess.run([SNUG, "serve", "--host", "127.0.0.1", "--port", "0", *args],
                       capture_output=True, timeout=60)
    err = r.stderr.decode()
    assert r.returncode != 0, err
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert len(lines) == 1 and needle in lines[0], err


def mapping_kib(pid, path):
    """(Rss, Pss) in bytes of the process's mappings of `path` (/proc/PID/smaps)."""
    rss = pss = 0
    inside = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5 and not line.startswith(("Rss", "Pss")):
                inside = len(head) >= 6 and Path(head[-1]).resolve() == path
            elif inside and line.startswith("Rss:"):
                rss += int(head[1]) * 1024
            elif inside and line.startswith("Pss:"):
                pss += int(head[1]) * 1024
    return rss, pss


def total_pss(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    raise KeyError("Pss")


def test_weight_pages_are_shared_between_processes(tmp_path):
    """Two servers on one model file: the weight pages are the page cache's,
    mapped by both, so the second server adds its own KV pool, workspace and
    heap to the machine, not a second copy of the weights. The file is a
    private copy: a server of another test running at the same time (ctest
    -j2) would share the fetched model's pages too and split their PSS three
    ways."""
    path = tmp_path / MODEL.name
    shutil.copyfile(MODEL, path)
    path = path.resolve()
    a = Server("--ctx", 512, "--parallel", 2, model=path)
    try:
        alone_pss = total_pss(a.proc.pid)
        a_rss_w, _ = mapping_kib(a.proc.pid, path)
        b = Server("--ctx", 512, "--parallel", 2, model=path)
        try:
            for s in (a, b):
                assert text_of(complete(s, None, PROMPTS[0]))
            a_rss_w, a_pss_w = mapping_kib(a.proc.pid, path)
            b_rss_w, b_pss_w = mapping_kib(b.proc.pid, path)
            b_rss = b.vm("VmRSS")
            both = total_pss(a.proc.pid) + total_pss(b.proc.pid)
            added = both - alone_pss
            print(f"\nweights resident {b_rss_w / MiB:.1f} MiB in each server, PSS of that mapping "
                  f"{a_pss_w / MiB:.1f} + {b_pss_w / MiB:.1f} MiB; second server RSS "
                  f"{b_rss / MiB:.1f} MiB, machine PSS added {added / MiB:.1f} MiB")
            assert b_rss_w > 0.9 * MODEL.stat().st_size, "the weights should be resident"
            for rss_w, pss_w in ((a_rss_w, a_pss_w), (b_rss_w, b_pss_w)):
                assert abs(pss_w - rss_w / 2) < 0.05 * rss_w, (rss_w, pss_w)
            # What the second server added is its RSS without the shared weights (within 16 MiB
            # of page-cache and library noise), far below its RSS.
            assert added < b_rss - 0.9 * b_rss_w + 16 * MiB, (added, b_rss, b_rss_w)
        finally:
            assert b.stop() == 0
    finally:
        assert a.stop() == 0


TENANTS = {"tenants": [
    {"name": "flood", "keys": ["sk-flood-000001"], "max_concurrent": 2, "tokens_per_minute": 200},
    {"name": "calm", "keys": ["sk-calm-0000001"], "kv_bytes": "8MiB"},
    {"name": "narrow", "keys": ["sk-narrow-00001"], "models": ["a-q4_1"], "kv_bytes": 1048576},
]}


def as_tenant(key):
    return {"Authorization": "Bearer " + key}


def test_tenants_one_flooding(model_dir):
    """One tenant floods: it gets 429s with Retry-After from its own quotas,
    while the other's requests all succeed at about their usual latency; a
    tenant asks for a model it may not use: 403."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(TENANTS, f)
    s = Server("--models", model_dir / "a-q4_1.gguf", model_dir / "c-q4_k_m.gguf", "--ctx", 512,
               "--parallel", 4, "--memory", "2GiB", "--tenants", f.name, model=None)
    body = {"model": "a-q4_1", "prompt": PROMPTS[1], "max_tokens": 16, "temperature": 0}

    def calm_once():
        t0 = time.time()
        st, _, b = s.request("POST", "/v1/completions", body=body, headers=as_tenant("sk-calm-0000001"))
        assert st == 200, b
        return time.time() - t0

    try:
        alone = sorted(calm_once() for _ in range(3))[1]

        def flood_client(_):
            return [s.request("POST", "/v1/completions", body=body,
                              headers=as_tenant("sk-flood-000001")) for _ in range(12)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            flood = pool.map(flood_client, range(8))
            during = [calm_once() for _ in range(5)]
            flood = [r for client in flood for r in client]
        codes = [r[0] for r in flood]
        limited = [r for r in flood if r[0] == 429]
        print(f"\nflood: {codes.count(200)} served, {len(limited)} refused with 429; calm alone "
              f"{alone:.2f} s, during the flood max {max(during):.2f} s")
        assert codes.count(200) >= 2 and len(limited) >= 10, codes
        assert set(codes) <= {200, 429}, codes
        for st, headers, b in limited:
            err = json.loads(b)["error"]
            assert err["type"] == "rate_limit_error", err
            assert err["code"] in ("concurrency_limit_exceeded", "rate_limit_exceeded"), err
            assert int(headers["retry-after"]) >= 1
        assert max(during) < 5 * alone + 2, (alone, during)
        m = s.metrics(as_tenant("sk-calm-0000001"))
        assert m['snug_tenant_requests_total{tenant="flood",outcome="rate_limited"}'] + \
            m['snug_tenant_requests_total{tenant="flood",outcome="concurrency_limited"}'] == len(limited)
        assert m['snug_tenant_requests_total{tenant="calm",outcome="admitted"}'] == 8
        # The rate quota holds after the flood: the flood tenant's next request waits its turn.
        st, headers, _ = s.request("POST", "/v1/completions", body=body,
                                   headers=as_tenant("sk-flood-000001"))
        assert st == 429 and int(headers["retry-after"]) >= 1
        # A model outside the tenant's list: 403, and the model is not loaded for it.
        narrow = dict(body, model="c-q4_k_m")
        st, _, b = s.request("POST", "/v1/completions", body=narrow,
                             headers=as_tenant("sk-narrow-00001"))
        assert st == 403 and json.loads(b)["error"]["code"] == "model_not_allowed", b
        states = {x["name"]: x["state"] for x in memory_as(s, "sk-calm-0000001")["models"]}
        assert states["c-q4_k_m"] == "unloaded", states
        st, _, _ = s.request("POST", "/v1/completions", body=body, headers=as_tenant("sk-narrow-00001"))
        assert st == 200
        # A KV share of 1 MiB (2 blocks of 16 tokens): a request that may grow past it is refused.
        st, _, b = s.request("POST", "/v1/completions", body=dict(body, max_tokens=100),
                             headers=as_tenant("sk-narrow-00001"))
        assert st == 400 and b"tenant's KV share is 2 blocks" in b, b
        model = {m["name"]: m for m in memory_as(s, "sk-calm-0000001")["models"]}["a-q4_1"]
        assert set(model["tenant_kv_blocks"]) == {"flood", "calm", "narrow"}, model
        tenants = {t["name"]: t for t in memory_as(s, "sk-calm-0000001")["tenants"]}
        assert tenants["calm"]["kv_bytes"] == 8 << 20
        assert tenants["flood"]["tokens_per_minute"] == 200
        assert tenants["flood"]["tokens_last_minute"] >= 200
        assert {r[2] and json.loads(r[2])["error"]["code"] for r in limited} == \
            {"concurrency_limit_exceeded", "rate_limit_exceeded"}
    finally:
        assert s.stop() == 0, s.log()
        Path(f.name).unlink()


def memory_as(server, key):
    s, _, b = server.request("GET", "/v1/memory", headers=as_tenant(key))
    assert s == 200, b
    return json.loads(b)
