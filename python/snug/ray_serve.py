"""snug on Ray: `snug serve` replicas placed by the plan's bytes, behind an
OpenAI-compatible Ray Serve ingress.

* Each replica is one `snug serve` process for one model, owned by a Ray actor
  (``SnugReplica``) that asks Ray for exactly the bytes ``snug serve --dry-run``
  plans for it (Ray's ``memory`` resource) and passes the same figure to the
  server as ``--memory``. Ray places the actor only on a node whose unreserved
  memory holds it, so no node is ever promised more planned bytes than it has.
  The actor's server is reached through the actor (Ray calls), never over the
  node's network: snug listens on 127.0.0.1 inside the actor's node.
* The ingress (``SnugIngress``, a Ray Serve deployment) routes by the request's
  ``model``: to the replica that already holds the longest part of the
  prompt's prefix (by the block hashes the server computes for it, see
  ``/v1/prefix``), else to the one with the fewest requests in flight.
* A replica whose server or actor process dies is restarted by Ray (the actor
  is restartable, and exits when its server does); a request it held is
  retried once on another replica if nothing of its answer was sent yet, and
  otherwise ends with a clean error.
* The ingress adds a replica of a model when its replicas' queues stay long
  or their KV pools stay nearly full, and removes one that stays idle, between ``min_replicas`` and
  ``max_replicas``; a replica Ray cannot place waits (pending) and is given
  up after ``placement_timeout_s``.

Run it with ``serve run snug.ray_serve:build_app models=...`` (docs/DEPLOY.md)
or ``serve.run(build_app({...}))``.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple, cast

import aiohttp
import ray
from ray import serve
from ray.exceptions import RayActorError, RayError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from . import Server, serve_plan

__all__ = ["SnugReplica", "SnugIngress", "ModelConfig", "build_app", "replica_bytes"]

Headers = Dict[str, str]


def replica_bytes(model: str, ctx: int, parallel: int) -> int:
    """The bytes one replica serving `model` takes: the server's plan (the
    model's weights, KV pool and workspace, the process and the HTTP server)."""
    return int(serve_plan(model, ctx=ctx, parallel=parallel)["memory_bytes_one"])


@ray.remote(max_restarts=-1, max_task_retries=0)
class SnugReplica:
    """One `snug serve` process for one model, owned by this actor. Created
    with ``.options(memory=replica_bytes(...))`` so that Ray reserves the
    plan's bytes on the node it chooses."""

    def __init__(self, model: str, ctx: int, parallel: int, memory_bytes: int,
                 threads: int = 1) -> None:
        self._server = Server(model, ctx=ctx, parallel=parallel, memory=memory_bytes,
                              args=["--threads", str(threads)], startup_timeout=600).start()
        self._session: Optional[aiohttp.ClientSession] = None
        self._stopping = False
        # A server that dies takes the actor with it, and Ray restarts both.
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        code = self._server.wait()
        if not self._stopping:
            os._exit(70 if code is None else 71)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                base_url=self._server.url, timeout=aiohttp.ClientTimeout(total=None))
        return self._session

    def info(self) -> Dict[str, Any]:
        ctx = ray.get_runtime_context()
        return {"node_id": ctx.get_node_id(), "actor_pid": os.getpid(),
                "server_pid": self._server.pid, "url": self._server.url}

    async def request(self, method: str, path: str, body: bytes,
                      headers: Headers) -> Tuple[int, Headers, bytes]:
        async with self._client().request(method, path, data=body or None,
                                          headers=headers) as r:
            data = await r.read()
            return r.status, {"content-type": r.headers.get("content-type", "")}, data

    async def stream(self, path: str, body: bytes, headers: Headers) -> AsyncIterator[bytes]:
        """The server's answer as it comes: first a JSON line with the status
        and content type, then the body's chunks."""
        async with self._client().post(path, data=body, headers=headers) as r:
            yield json.dumps({"status": r.status,
                              "content-type": r.headers.get("content-type", "")}).encode()
            async for chunk in r.content.iter_any():
                yield chunk

    async def load(self) -> Dict[str, float]:
        """Running and waiting sequences, KV blocks and prefix-cache blocks
        looked up and hit, from the server's /metrics (summed over models),
        and this actor's pid: a call queued while Ray restarted the actor is
        answered by the new process, and the pid is how the caller tells."""
        async with self._client().get("/metrics") as r:
            text = await r.text()
        wanted = {'snug_sequences{state="running"}': "running",
                  'snug_sequences{state="waiting"}': "waiting",
                  'snug_kv_blocks{state="used"}': "kv_used",
                  "snug_kv_blocks_total": "kv_total",
                  "snug_prefix_cache_lookup_blocks_total": "prefix_lookup_blocks",
                  "snug_prefix_cache_hit_blocks_total": "prefix_hit_blocks"}
        out = {v: 0.0 for v in wanted.values()}
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            name, value = line.rsplit(" ", 1)
            # Drop the model label: model="...", first in every label set.
            key = re.sub(r'model="(?:[^"\\]|\\.)*",?', "", name).replace("{}", "")
            if key in wanted:
                out[wanted[key]] += float(value)
        out["actor_pid"] = float(os.getpid())
        return out

    def shutdown(self) -> Optional[int]:
        self._stopping = True
        return self._server.stop()


@dataclass
class ModelConfig:
    path: str
    name: str = ""  # the API's "model": the file name without .gguf
    ctx: int = 2048
    parallel: int = 4
    threads: int = 1
    replicas: int = 1
    min_replicas: int = 1
    max_replicas: int = 0  # 0: replicas (no autoscaling)

    def __post_init__(self) -> None:
        if not self.name:
            self.name = Path(self.path).stem
        if self.max_replicas <= 0:
            self.max_replicas = self.replicas
        if not 1 <= self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(f"model '{self.name}': need 1 <= min_replicas <= replicas <= "
                             f"max_replicas, got {self.min_replicas}, {self.replicas}, "
                             f"{self.max_replicas}")


@dataclass
class _Replica:
    actor: Any
    created: float
    info: Optional[Dict[str, Any]] = None  # set once its server answered
    in_flight: int = 0
    blocks: Dict[str, float] = field(default_factory=dict)  # prefix hash -> last use
    load: Dict[str, float] = field(default_factory=dict)
    ready_ref: Any = None
    pid: Optional[int] = None  # the actor process last seen ready


_RETRYABLE = (RayActorError, aiohttp.ClientError, ConnectionError)


class _Model:
    def __init__(self, cfg: ModelConfig, plan_bytes: int) -> None:
        self.cfg = cfg
        self.plan_bytes = plan_bytes
        self.replicas: List[_Replica] = []
        self.pending_since: Dict[int, float] = {}
        self.busy_since: Optional[float] = None
        self.idle_since: Optional[float] = None
        self.averages: Dict[str, float] = {}

    def smooth(self, key: str, sample: float) -> float:
        """An exponential average of `sample` (half weight to the newest)."""
        value = 0.5 * self.averages.get(key, sample) + 0.5 * sample
        self.averages[key] = value
        return value


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0},
                  max_ongoing_requests=1000)
class SnugIngress:
    """OpenAI-compatible routes over the models' replicas: POST /v1/completions
    and /v1/chat/completions (streaming or not), GET /v1/models, GET /health,
    and GET /v1/replicas (where each replica runs and what it reserved)."""

    def __init__(self, models: List[Dict[str, Any]], placement_timeout_s: float = 120.0,
                 scale_interval_s: float = 2.0, scale_up_waiting: float = 2.0,
                 scale_up_kv: float = 0.9, scale_down_idle_s: float = 60.0,
                 max_prefix_entries: int = 100000) -> None:
        self._models: Dict[str, _Model] = {}
        for m in models:
            cfg = ModelConfig(**m)
            if cfg.name in self._models:
                raise ValueError(f"two models are named '{cfg.name}'")
            model = _Model(cfg, replica_bytes(cfg.path, cfg.ctx, cfg.parallel))
            self._models[cfg.name] = model
            for _ in range(cfg.replicas):
                self._add_replica(model)
        self._placement_timeout_s = placement_timeout_s
        self._scale_interval_s = scale_interval_s
        self._scale_up_waiting = scale_up_waiting
        self._scale_up_kv = scale_up_kv
        self._scale_down_idle_s = scale_down_idle_s
        self._max_prefix_entries = max_prefix_entries
        self._events: List[Dict[str, Any]] = []
        self._control: Optional[asyncio.Task[None]] = None
        # The control loop, /v1/replicas and a request waiting for a replica
        # all refresh; one at a time, or two could give up the same replica.
        self._refreshing = asyncio.Lock()

    # -- replicas ------------------------------------------------------------

    def _add_replica(self, model: _Model) -> _Replica:
        cfg = model.cfg
        actor = cast(Any, SnugReplica).options(memory=model.plan_bytes, num_cpus=cfg.threads).remote(
            cfg.path, cfg.ctx, cfg.parallel, model.plan_bytes, cfg.threads)
        r = _Replica(actor=actor, created=time.monotonic())
        r.ready_ref = actor.info.remote()
        model.replicas.append(r)
        return r

    async def _refresh(self) -> None:
        """Marks replicas ready, gives up on ones Ray could not place in time,
        and refreshes every ready replica's load."""
        async with self._refreshing:
            await self._refresh_locked()

    async def _refresh_locked(self) -> None:
        for model in self._models.values():
            for r in list(model.replicas):
                if r not in model.replicas:
                    continue  # scaled down while this round awaited another
                now = time.monotonic()
                if r.info is None and r.ready_ref is not None:
                    done, _ = ray.wait([r.ready_ref], timeout=0)
                    if done:
                        try:
                            r.info = await r.ready_ref
                        except RayError:  # died or cancelled while starting: ask again
                            r.ready_ref = r.actor.info.remote()
                        else:
                            self._seen(model, r)
                    elif now - r.created > self._placement_timeout_s:
                        ray.kill(r.actor, no_restart=True)
                        model.replicas.remove(r)
                        self._event("unplaceable", model.cfg.name,
                                    f"no node had {model.plan_bytes} bytes free")
                if r.info is not None:
                    try:
                        load = await asyncio.wait_for(r.actor.load.remote(), 10)
                    except (RayError, asyncio.TimeoutError):
                        self._mark_failed(r)
                        continue
                    if int(load.pop("actor_pid", -1)) != r.pid:
                        # Ray restarted the actor since the last round, and no
                        # call was in flight to see it die: the listing's
                        # pids and the prefix blocks it held are stale.
                        self._mark_failed(r)
                        continue
                    r.load = load

    def _seen(self, model: _Model, r: _Replica) -> None:
        """`r` answered with its info: a new process is a new server, whose
        prefix cache is empty."""
        assert r.info is not None
        pid = int(r.info["actor_pid"])
        if r.pid is not None and pid != r.pid:
            r.blocks.clear()
            self._event("replica_restarted", model.cfg.name,
                        f"actor pid {r.pid} -> {pid}, server pid {r.info['server_pid']}")
        r.pid = pid

    async def _autoscale(self) -> None:
        now = time.monotonic()
        for model in self._models.values():
            ready = [r for r in model.replicas if r.info is not None]
            if not ready or len(ready) < len(model.replicas):
                continue  # one is still loading or being placed: decide later
            # Averaged over the last few samples: a queue that drains for an
            # instant between two requests does not reset the decision.
            waiting = model.smooth("waiting", sum(r.load.get("waiting", 0.0)
                                                  for r in ready) / len(ready))
            kv = model.smooth("kv", sum(r.load.get("kv_used", 0.0) /
                                        max(r.load.get("kv_total", 0.0), 1.0)
                                        for r in ready) / len(ready))
            running = sum(r.load.get("running", 0.0) + r.in_flight for r in ready)
            if waiting >= self._scale_up_waiting or kv >= self._scale_up_kv:
                model.idle_since = None
                model.busy_since = model.busy_since or now
                if now - model.busy_since >= self._scale_interval_s and \
                        len(model.replicas) < model.cfg.max_replicas:
                    self._add_replica(model)
                    model.busy_since = None
                    self._event("scale_up", model.cfg.name,
                                f"{waiting:.1f} waiting per replica, KV {kv:.0%} used; now "
                                f"{len(model.replicas)}")
            elif running == 0:
                model.busy_since = None
                model.idle_since = model.idle_since or now
                if now - model.idle_since >= self._scale_down_idle_s and \
                        len(model.replicas) > model.cfg.min_replicas:
                    victim = model.replicas.pop()
                    victim.actor.shutdown.remote()
                    model.idle_since = now
                    self._event("scale_down", model.cfg.name,
                                f"idle; now {len(model.replicas)}")
            else:
                model.busy_since = model.idle_since = None

    @staticmethod
    def _mark_failed(r: _Replica) -> None:
        """Not ready until it answers again (Ray restarts its actor)."""
        r.info, r.ready_ref = None, r.actor.info.remote()

    def _event(self, kind: str, model: str, detail: str) -> None:
        self._events.append({"time": time.time(), "event": kind, "model": model,
                             "detail": detail})
        del self._events[:-200]

    async def _control_loop(self) -> None:
        while True:
            try:
                await self._refresh()
                await self._autoscale()
            except Exception as e:  # noqa: BLE001 - the loop must outlive one bad round
                self._event("control_error", "", repr(e))
            await asyncio.sleep(self._scale_interval_s / 2)

    def _ensure_control(self) -> None:
        if self._control is None or self._control.done():
            self._control = asyncio.get_running_loop().create_task(self._control_loop())

    # -- routing -------------------------------------------------------------

    async def _prefix_hashes(self, model: _Model, body: bytes, headers: Headers,
                             path: str) -> List[str]:
        """The prompt's full-block hashes as the server computes them (its
        /v1/prefix), from any ready replica; [] when none answers."""
        for r in model.replicas:
            if r.info is None:
                continue
            try:
                status, _, data = await r.actor.request.remote("POST", "/v1/prefix", body,
                                                               headers)
            except _RETRYABLE:
                continue
            if status == 200:
                return list(json.loads(data).get("block_hashes", []))
            return []
        return []

    def _choose(self, model: _Model, hashes: List[str],
                exclude: Optional[_Replica] = None) -> Optional[_Replica]:
        ready = [r for r in model.replicas if r.info is not None and r is not exclude]
        if not ready:
            return None

        def held(r: _Replica) -> int:
            n = 0
            for h in hashes:
                if h not in r.blocks:
                    break
                n += 1
            return n

        # Longest cached prefix first, then fewest requests in flight.
        return max(ready, key=lambda r: (held(r), -r.in_flight,
                                         -r.load.get("waiting", 0.0)))

    def _remember(self, r: _Replica, hashes: List[str]) -> None:
        now = time.monotonic()
        for h in hashes:
            r.blocks[h] = now
        if len(r.blocks) > self._max_prefix_entries:
            for h, _ in sorted(r.blocks.items(), key=lambda kv: kv[1])[: len(r.blocks) // 4]:
                del r.blocks[h]

    async def _wait_for_replica(self, model: _Model, hashes: List[str],
                                exclude: Optional[_Replica] = None,
                                timeout: float = 120.0) -> Optional[_Replica]:
        """A ready replica, preferring one other than `exclude` (which failed:
        it is taken again only once it is ready again, restarted by Ray)."""
        deadline = time.monotonic() + timeout
        while True:
            r = self._choose(model, hashes, exclude) or self._choose(model, hashes)
            if r is not None:
                return r
            if time.monotonic() > deadline:
                return None
            await self._refresh()
            await asyncio.sleep(0.2)

    async def __call__(self, request: Request) -> Response:
        self._ensure_control()
        path = request.url.path
        if request.method == "GET" and path == "/health":
            ok = all(any(r.info for r in m.replicas) for m in self._models.values())
            return JSONResponse({"status": "ok" if ok else "loading"}, status_code=200 if ok else 503)
        if request.method == "GET" and path == "/v1/models":
            return JSONResponse({"object": "list", "data": [
                {"id": name, "object": "model", "owned_by": "snug",
                 "planned_bytes": m.plan_bytes,
                 "replicas": sum(1 for r in m.replicas if r.info is not None)}
                for name, m in self._models.items()]})
        if request.method == "GET" and path == "/v1/replicas":
            await self._refresh()
            return JSONResponse({"models": {name: {
                "planned_bytes": m.plan_bytes,
                "replicas": [{"ready": r.info is not None, "in_flight": r.in_flight,
                              "prefix_entries": len(r.blocks), **(r.info or {}), **r.load}
                             for r in m.replicas]} for name, m in self._models.items()},
                "events": self._events})
        if request.method != "POST" or path not in ("/v1/completions", "/v1/chat/completions"):
            return _error(404, "not_found", f"no route for {request.method} {path}")
        body = await request.body()
        try:
            parsed = json.loads(body)
        except ValueError:
            return _error(400, "invalid_json", "the body is not JSON")
        if not isinstance(parsed, dict):
            return _error(400, "invalid_request", "the body must be a JSON object")
        name = parsed.get("model")
        if name is None and len(self._models) == 1:
            name = next(iter(self._models))
        model = self._models.get(name) if isinstance(name, str) else None
        if model is None:
            return _error(404, "model_not_found",
                          f"the model '{str(name)[:64]}' does not exist; this deployment has " +
                          ", ".join(f"'{n}'" for n in self._models))
        headers = {"content-type": "application/json"}
        if "authorization" in request.headers:
            headers["authorization"] = request.headers["authorization"]
        # The prefix only matters where there is a choice of replica.
        ready = sum(1 for r in model.replicas if r.info is not None)
        hashes = await self._prefix_hashes(model, body, headers, path) if ready > 1 else []
        if parsed.get("stream"):
            return await self._stream(model, path, body, headers, hashes)
        return await self._once(model, path, body, headers, hashes)

    async def _once(self, model: _Model, path: str, body: bytes, headers: Headers,
                    hashes: List[str]) -> Response:
        failed: Optional[_Replica] = None
        for attempt in range(2):
            r = await self._wait_for_replica(model, hashes, exclude=failed)
            if r is None:
                return _error(503, "no_replica", f"no replica of '{model.cfg.name}' is ready")
            r.in_flight += 1
            try:
                status, h, data = await r.actor.request.remote("POST", path, body, headers)
            except _RETRYABLE as e:
                self._event("replica_failed", model.cfg.name, f"{type(e).__name__}; "
                            f"{'retrying' if attempt == 0 else 'giving up'}")
                self._mark_failed(r)
                failed = r
                continue
            finally:
                r.in_flight -= 1
            if status == 200:
                self._remember(r, hashes)
            return Response(data, status_code=status, media_type=h.get("content-type"))
        return _error(502, "replica_failed",
                      f"the replica serving '{model.cfg.name}' failed twice; retry later")

    async def _stream(self, model: _Model, path: str, body: bytes, headers: Headers,
                      hashes: List[str]) -> Response:
        failed: Optional[_Replica] = None
        for attempt in range(2):
            r = await self._wait_for_replica(model, hashes, exclude=failed)
            if r is None:
                return _error(503, "no_replica", f"no replica of '{model.cfg.name}' is ready")
            r.in_flight += 1
            gen = r.actor.stream.options(num_returns="streaming").remote(path, body, headers)
            try:
                head = json.loads(await (await gen.__anext__()))
            except (StopAsyncIteration, *_RETRYABLE) as e:
                r.in_flight -= 1
                self._event("replica_failed", model.cfg.name, f"{type(e).__name__} before the "
                            f"first byte; {'retrying' if attempt == 0 else 'giving up'}")
                self._mark_failed(r)
                failed = r
                continue
            if head["status"] != 200:
                chunks = [await ref async for ref in gen]
                r.in_flight -= 1
                return Response(b"".join(chunks), status_code=head["status"],
                                media_type=head["content-type"])
            self._remember(r, hashes)
            return StreamingResponse(self._relay(model, r, gen), media_type=head["content-type"])
        return _error(502, "replica_failed",
                      f"the replica serving '{model.cfg.name}' failed twice; retry later")

    async def _relay(self, model: _Model, r: _Replica, gen: Any) -> AsyncIterator[bytes]:
        try:
            async for ref in gen:
                yield await ref
        except _RETRYABLE as e:
            # Part of the answer was sent: end the stream with an error event.
            self._event("replica_failed", model.cfg.name, f"{type(e).__name__} mid-stream")
            self._mark_failed(r)
            err = {"error": {"message": "the replica serving this stream failed; retry",
                             "type": "server_error", "code": "replica_failed"}}
            yield f"data: {json.dumps(err)}\n\ndata: [DONE]\n\n".encode()
        finally:
            r.in_flight -= 1


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error"
                                   if status < 500 else "server_error", "code": code}},
                        status_code=status)


def build_app(args: Dict[str, Any]) -> Any:
    """The Ray Serve application: ``args`` is {"models": [path, ...] or
    [{"path", "ctx", "parallel", "replicas", ...}, ...], and defaults for
    every model: "ctx", "parallel", "threads", "replicas", "min_replicas",
    "max_replicas"; and the ingress's "placement_timeout_s",
    "scale_interval_s", "scale_up_waiting", "scale_up_kv", "scale_down_idle_s"}."""
    defaults = {k: args[k] for k in ("ctx", "parallel", "threads", "replicas", "min_replicas",
                                     "max_replicas") if k in args}
    models = args.get("models")
    if isinstance(models, str):
        models = [m for m in models.split(",") if m]
    if not models:
        raise ValueError("build_app: 'models' lists no model")
    specs = []
    for m in models:
        spec = {**defaults, **({"path": m} if isinstance(m, str) else dict(m))}
        for k in ("ctx", "parallel", "threads", "replicas", "min_replicas", "max_replicas"):
            if k in spec:
                spec[k] = int(spec[k])
        if "min_replicas" not in spec:
            spec["min_replicas"] = min(1, int(spec.get("replicas", 1)))
        if not Path(spec["path"]).is_file():
            raise ValueError(f"build_app: '{spec['path']}' is not a file")
        specs.append(spec)
    ingress = {k: float(args[k]) for k in ("placement_timeout_s", "scale_interval_s",
                                           "scale_up_waiting", "scale_up_kv",
                                           "scale_down_idle_s") if k in args}
    return cast(Any, SnugIngress).bind(specs, **ingress)
