"""snug from Python: plan a model's memory, and run `snug serve`.

The package holds the two programs `pip install .` built (``snug/bin``) and
talks to them as processes, not through bindings:

* the plan is the CLI's own JSON (``snug plan --json``, ``snug serve
  --dry-run``), so Python sees exactly what the command line sees;
* a server is a process of its own: a crash or an out-of-memory kill of a
  model takes down that process, never the Python interpreter (or the Ray
  actor) that owns it, and the engine's threads never meet the GIL;
* one binary, one set of kernels: nothing is compiled twice.

Example::

    import snug
    p = snug.plan("models/SmolLM2-135M-Instruct.Q4_1.gguf", ctx=2048)
    print(p["predicted_peak_rss_bytes"])
    with snug.Server("models/SmolLM2-135M-Instruct.Q4_1.gguf", memory="1GiB") as s:
        print(s.url)  # http://127.0.0.1:PORT, an OpenAI-compatible API under /v1
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any, Dict, List, Optional, Sequence, Union

__all__ = ["SnugError", "Server", "binary", "plan", "serve_plan", "__version__"]
__version__ = "0.1.0"

PathLike = Union[str, "os.PathLike[str]"]
Size = Union[int, str]


class SnugError(RuntimeError):
    """A snug command failed; the message is its one-line error."""


def binary() -> Path:
    """The `snug` program: $SNUG_BIN if set, else the one installed with this
    package (snug/bin/snug), else `snug` on PATH."""
    env = os.environ.get("SNUG_BIN")
    if env:
        return Path(env)
    bundled = Path(__file__).resolve().parent / "bin" / "snug"
    if bundled.exists():
        return bundled
    found = shutil.which("snug")
    # The console script `snug` of this package is not the program: skip it.
    if found and Path(found).resolve() != Path(__file__).resolve():
        try:
            with open(found, "rb") as f:
                if f.read(2) != b"#!":
                    return Path(found)
        except OSError:
            pass
    raise SnugError("the snug program is not installed with this package and not on PATH "
                    "(set SNUG_BIN)")


def _size(value: Size) -> str:
    return str(value) if isinstance(value, int) else value


def _run_json(args: List[str]) -> Dict[str, Any]:
    r = subprocess.run([str(binary()), *args], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        lines = [x for x in r.stderr.splitlines() if "error" in x] or r.stderr.splitlines() or [
            f"snug exited with {r.returncode}"]
        raise SnugError(lines[-1].removeprefix("snug: error: ").removeprefix("snug: "))
    try:
        out: Dict[str, Any] = json.loads(r.stdout)
    except json.JSONDecodeError as e:
        raise SnugError(f"snug printed no JSON ({e})") from None
    return out


def plan(model: PathLike, *, ctx: Optional[int] = None, parallel: Optional[int] = None,
         memory: Optional[Size] = None, kv_type: Optional[str] = None,
         batch: Optional[int] = None, threads: Optional[int] = None) -> Dict[str, Any]:
    """What running `model` costs, from its header alone: ``snug plan --json``
    (schema ``snug.plan/1``, docs/PLAN.md). ``memory`` is a byte count or a size
    such as "2GiB" (default: what this machine or its cgroup allows); ``ctx``
    None picks the largest that fits. Raises SnugError with snug's one line."""
    args = ["plan", os.fspath(model), "--json"]
    for flag, value in (("--ctx", ctx), ("--parallel", parallel), ("--kv-type", kv_type),
                        ("--batch", batch), ("--threads", threads)):
        if value is not None:
            args += [flag, str(value)]
    if memory is not None:
        args += ["--memory", _size(memory)]
    return _run_json(args)


def _serve_args(models: Sequence[PathLike], ctx: Optional[int], parallel: Optional[int],
                memory: Optional[Size]) -> List[str]:
    if not models:
        raise SnugError("no model given")
    paths = [os.fspath(m) for m in models]
    args = paths if len(paths) == 1 else ["--models", *paths]
    if ctx is not None:
        args += ["--ctx", str(ctx)]
    if parallel is not None:
        args += ["--parallel", str(parallel)]
    if memory is not None:
        args += ["--memory", _size(memory)]
    return args


def serve_plan(*models: PathLike, ctx: Optional[int] = None, parallel: Optional[int] = None,
               memory: Optional[Size] = None) -> Dict[str, Any]:
    """What serving `models` takes: ``snug serve --dry-run`` (schema
    ``snug.serve-plan/1``, docs/SERVING.md): each model's planned bytes, what
    the process and HTTP server hold, ``memory_bytes_all`` and
    ``memory_bytes_one``. Without ``memory`` nothing is fitted to this machine."""
    return _run_json(["serve", *_serve_args(models, ctx, parallel, memory), "--dry-run"])


class Server:
    """A `snug serve` process on 127.0.0.1 (by default) and a free port.

    ``Server(model)`` serves one model; ``Server(a, b, ...)`` serves several
    under one budget (``--models``). ``start()`` returns once ``/health`` says
    200 (or raises SnugError with the server's error); ``stop()`` sends SIGTERM
    (running requests get ``shutdown_timeout`` seconds) and returns the exit
    code. Also a context manager. The server stops by itself when this
    process ends, even killed outright (``--exit-with-parent``)."""

    def __init__(self, *models: PathLike, ctx: Optional[int] = None,
                 parallel: Optional[int] = None, memory: Optional[Size] = None,
                 host: str = "127.0.0.1", port: int = 0, api_key_file: Optional[PathLike] = None,
                 tenants: Optional[PathLike] = None, args: Sequence[str] = (),
                 startup_timeout: float = 120.0) -> None:
        # --exit-with-parent: an interpreter killed outright takes its server along.
        self._args = ["serve", *_serve_args(models, ctx, parallel, memory), "--host", host,
                      "--port", str(port), "--exit-with-parent"]
        if api_key_file is not None:
            self._args += ["--api-key-file", os.fspath(api_key_file)]
        if tenants is not None:
            self._args += ["--tenants", os.fspath(tenants)]
        self._args += list(args)
        self._host = host
        self._startup_timeout = startup_timeout
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._log: Optional[IO[bytes]] = None
        self._log_path = ""
        self.port: Optional[int] = None

    @property
    def url(self) -> str:
        """http://HOST:PORT of the running server."""
        if self.port is None:
            raise SnugError("the server is not running")
        host = "127.0.0.1" if self._host in ("0.0.0.0", "") else self._host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    def log(self) -> str:
        """What the server wrote to stderr so far."""
        if not self._log_path:
            return ""
        with open(self._log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def _error_line(self) -> str:
        lines = [x for x in self.log().splitlines() if "error" in x]
        return lines[-1].removeprefix("snug: error: ") if lines else "exited"

    def health(self) -> int:
        """The status of GET /health (0 when nothing answers)."""
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except OSError:
            return 0

    def start(self) -> "Server":
        if self._proc is not None:
            raise SnugError("the server was already started")
        fd, self._log_path = tempfile.mkstemp(prefix="snug_serve_", suffix=".log")
        os.close(fd)
        self._log = open(self._log_path, "wb")
        self._proc = subprocess.Popen([str(binary()), *self._args], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=self._log)
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._error_line()
                self.stop()
                raise SnugError(f"snug serve did not start: {err}")
            if self.port is None:
                m = re.search(r"listening on http://\S+:(\d+)", self.log())
                if m:
                    self.port = int(m.group(1))
            if self.port is not None and self.health() == 200:
                return self
            time.sleep(0.05)
        self.stop()
        raise SnugError(f"snug serve was not ready in {self._startup_timeout:.0f} s")

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Waits for the process to end; its exit code (None on timeout)."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 30.0) -> Optional[int]:
        """SIGTERM, then SIGKILL after `timeout` s; the exit code."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        self.port = None  # nothing listens there any more
        return self._proc.returncode

    def close(self) -> None:
        """Stops the server and removes its log."""
        self.stop()
        if self._log_path:
            try:
                os.unlink(self._log_path)
            except OSError:
                pass
            self._log_path = ""

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()
