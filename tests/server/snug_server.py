"""Starting and stopping `snug serve` for the server tests: port 0, the real
port read from the startup log, /health polled until the model is loaded.
Every server listens on 127.0.0.1 only and is stopped by the test that
started it (SIGTERM, then SIGKILL if it hangs)."""
import http.client
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
ROOT = Path(os.environ.get("SNUG_SOURCE_DIR", TESTS.parent))
SNUG = os.environ.get("SNUG_BIN", str(ROOT / "build" / "snug"))
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


class Server:
    def __init__(self, *args, model=MODEL, timeout=60, preexec_fn=None):
        self.log_path = tempfile.mktemp(prefix="snug_serve_", suffix=".log")
        self._log = open(self.log_path, "wb")
        # model None: the arguments name the models (--models).
        cmd = [SNUG, "serve", *([str(model)] if model is not None else []),
               "--host", "127.0.0.1", "--port", "0", *map(str, args)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._log,
                                     preexec_fn=preexec_fn)
        self.port = None
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.log())
            if m:
                self.port = int(m.group(1))
                if self.health()[0] == 200:
                    break
            time.sleep(0.1)
        if self.proc.poll() is not None or self.port is None or self.health()[0] != 200:
            self.stop()
            raise RuntimeError("snug serve did not start:\n" + self.log())
        self.base_url = f"http://127.0.0.1:{self.port}"

    def log(self):
        if self._log.closed:
            return self._final_log
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def predicted_peak(self):
        """The predicted peak RSS in bytes the startup log printed."""
        m = re.search(r"predicted peak RSS [^(]*\((\d+) bytes", self.log())
        assert m, self.log()
        return int(m.group(1))

    def vm(self, key):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(key)

    def request(self, method, path, body=None, headers=None, timeout=60):
        """(status, headers dict, body bytes) of one request on a new connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
            h = {"Content-Type": "application/json"} if data is not None else {}
            h.update(headers or {})
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def health(self):
        try:
            s, _, b = self.request("GET", "/health", timeout=5)
            return s, b
        except OSError:
            return None, b""

    def metrics(self, headers=None):
        s, _, b = self.request("GET", "/metrics", headers=headers)
        assert s == 200, b
        out, summed = {}, {}
        for line in b.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
                # Per-model series also under their name without the model label,
                # summed over the models (one model: the same figure).
                bare = re.sub(r'model="(?:[^"\\]|\\.)*",?', "", name).replace(",}", "}")
                if bare != name:
                    bare = bare.replace("{}", "")
                    summed[bare] = summed.get(bare, 0.0) + float(value)
        for k, v in summed.items():
            out.setdefault(k, v)
        return out

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Signals the server and returns its exit code (killed if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._final_log = self.log()
            self._log.close()
            os.unlink(self.log_path)
        return self.proc.returncode


def snug_run(*args):
    """stdout of `snug run` (the generated text only)."""
    r = subprocess.run([SNUG, "run", str(MODEL), *map(str, args)], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


class Watch(threading.Thread):
    """Runs fn in the background and keeps its result or exception."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.result, self.error = fn, None, None
        self.start()

    def run(self):
        try:
            self.result = self.fn()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e
