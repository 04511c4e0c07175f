"""The web page `snug serve` serves at /, driven in headless Chromium (Debian's
`chromium`) over the DevTools protocol: it picks a model, sends a chat
message, sees the streamed answer, and the memory bar gains a segment when a
second model loads. Runs inside a network namespace with only loopback
(tests/server/CMakeLists.txt), so the browser reaches nothing but the server;
the screenshot it takes is docs/web.png's source."""
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from snug_server import MODEL, SNUG, Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if not MODEL.exists():
    pytest.skip(f"{MODEL} is missing (scripts/fetch-models)", allow_module_level=True)
if CHROMIUM is None:
    pytest.skip("chromium is not installed (scripts/install-deps)", allow_module_level=True)


class DevTools:
    """A minimal WebSocket client (RFC 6455, text frames) speaking the Chrome
    DevTools protocol to one page."""

    def __init__(self, ws_url):
        host_port, path = ws_url[len("ws://"):].split("/", 1)
        host, port = host_port.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert b" 101 " in head.split(b"\r\n", 1)[0], head
        self.next_id = 0

    def _send(self, text):
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                                bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else
                                bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            assert chunk, "DevTools closed the connection"
            buf += chunk
        return buf

    def _recv(self):
        message = b""
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            payload = self._exact(n)
            message += payload
            if b0 & 0x80:
                return json.loads(message)

    def call(self, method, **params):
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = self._recv()
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg.get("result", {})

    def js(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    def wait(self, expr, timeout=60, what=""):
        """Polls `expr` until it is truthy; an exception (the page still
        loading) counts as not yet."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
            v = None if "exceptionDetails" in r else r["result"].get("value")
            if v:
                return v
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what or expr}")


@pytest.fixture
def browser():
    profile = tempfile.mkdtemp(prefix="snug_chromium_")
    proc = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--mute-audio", "--window-size=1400,900",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.time() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            assert proc.poll() is None, "chromium exited"
            assert time.time() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        yield DevTools(pages[0]["webSocketDebuggerUrl"])
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


def test_chat_and_memory_bar(browser, tmp_path):
    q8 = tmp_path / "smollm2-q8_0.gguf"
    subprocess.run([SNUG, "quantize", str(MODEL), str(q8), "Q8_0"], check=True, capture_output=True,
                   timeout=600)
    s = Server("--models", MODEL, q8, "--ctx", 1024, "--parallel", 2, "--memory", "2GiB", model=None)
    try:
        d = browser
        d.call("Page.enable")
        d.call("Page.navigate", url=s.base_url + "/")
        d.wait("Number(document.body.dataset.memoryUpdates || 0) >= 1", what="the memory view")
        assert d.js("document.querySelectorAll('#bar .seg.model').length") == 0
        assert d.js("document.querySelector('#budget-line').textContent").startswith("Budget 2.0 GiB")
        d.js("document.getElementById('temp').value = '0'; true")  # greedy: a sensible answer
        names = d.js("[...document.querySelectorAll('#model option')].map(o => o.value)")
        assert names == [MODEL.stem, "smollm2-q8_0"], names

        def chat(model, text):
            d.js(f"document.getElementById('model').value = {json.dumps(model)};"
                 "document.getElementById('model').dispatchEvent(new Event('change'));"
                 f"document.getElementById('prompt').value = {json.dumps(text)};"
                 "document.getElementById('send').requestSubmit(); true")
            # The model's own conversation: its one answer is done.
            d.wait("document.querySelectorAll('#log .msg[data-done=\"1\"]').length === 1",
                   what="the streamed answer")
            box = d.js("(() => { const m = [...document.querySelectorAll('#log .msg')].pop();"
                       " return {cls: m.className, text: m.querySelector('.text').textContent}; })()")
            assert box["cls"] == "msg assistant", box
            assert box["text"].strip(), box
            return box["text"]

        first = chat(MODEL.stem, "What does a lighthouse do?")
        d.wait("document.querySelectorAll('#bar .seg.model').length === 1", what="one model in the bar")
        second = chat("smollm2-q8_0", "Name three colors.")
        segs = d.wait("(() => { const s = [...document.querySelectorAll('#bar .seg.model')];"
                      " return s.length === 2 && s.map(x => [x.dataset.name, x.getBoundingClientRect().width]); })()",
                      what="two models in the bar")
        assert sorted(n for n, _ in segs) == sorted([MODEL.stem, "smollm2-q8_0"]), segs
        assert all(w > 20 for _, w in segs), segs
        # The page polls /v1/memory once a second, and a small model can load and answer
        # between two polls: the snapshot that first shows both models may still say
        # "loading" for the second. Wait for the next ones rather than read one.
        states_js = "[...document.querySelectorAll('#models tbody tr')].map(r => r.children[1].textContent)"
        try:
            d.wait(f"JSON.stringify({states_js}) === JSON.stringify(['loaded', 'loaded'])", timeout=10,
                   what="both models loaded in the table")
        except AssertionError:
            raise AssertionError(f"model states: {d.js(states_js)}") from None
        shot = base64.b64decode(d.call("Page.captureScreenshot", format="png")["data"])
        out = Path(os.environ.get("SNUG_WEB_SCREENSHOT", tmp_path / "web.png"))
        out.write_bytes(shot)
        print(f"\nanswers: {first[:40]!r} / {second[:40]!r}; screenshot {out} ({len(shot)} bytes)")
    finally:
        assert s.stop() == 0, s.log()
