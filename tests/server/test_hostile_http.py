"""Hostile HTTP against `snug serve`: each attack gets its status code in
OpenAI's error shape, other clients are served meanwhile, the server stays up,
and its peak RSS stays under the plan it printed. Classes: oversized and
endless bodies (Content-Length and chunked), deep JSON, invalid UTF-8, wrong
types, unknown model, absurd max_tokens, out-of-range and non-finite
temperatures, missing and wrong API keys, oversized and too many headers, a
slow client dripping bytes, a client vanishing mid-stream (its KV blocks freed,
read from /metrics), a flood of 1000 requests at a queue of 64, and SIGTERM
with a stream running. Traffic goes to 127.0.0.1 only; everything stops by
itself."""
import concurrent.futures
import json
import os
import signal
import socket
import tempfile
import time

import pytest

from snug_server import MODEL, Server, Watch

if not MODEL.exists():
    pytest.skip(f"{MODEL} is missing (scripts/fetch-models)", allow_module_level=True)

KEY = "test-key-0123456789"
AUTH = {"Authorization": "Bearer " + KEY}
CHAT = "/v1/chat/completions"
DONE = b"data: [DONE]"


@pytest.fixture(scope="module")
def server():
    fd, keys = tempfile.mkstemp(prefix="snug_keys_")
    os.write(fd, f"# test tenants\n{KEY}\nother-tenant-key-42\n".encode())
    os.close(fd)
    s = Server("--ctx", 512, "--parallel", 2, "--queue", 64, "--memory", "1GiB",
               "--api-key-file", keys, "--model-alias", "smol")
    yield s
    if s.proc.poll() is None:
        s.stop()
    os.unlink(keys)


def post(server, body, path="/v1/completions", headers=None):
    h = dict(AUTH)
    h.update(headers or {})
    return server.request("POST", path, body=body, headers=h)


def expect_error(resp, status, needle=""):
    s, _, body = resp
    assert s == status, body
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert needle in err["message"], err
    assert "\n" not in err["message"]
    return err


def raw(server, data, read_timeout=30, shutdown=False):
    """Sends bytes on a fresh socket and returns what came back until close."""
    s = socket.create_connection(("127.0.0.1", server.port), timeout=read_timeout)
    try:
        try:
            s.sendall(data)
            if shutdown:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_all(s)
    finally:
        s.close()


def read_all(s):
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except (ConnectionResetError, socket.timeout):
        pass
    return out


def status_of(response):
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else None


def test_served_normally(server):
    s, _, b = post(server, {"model": "smol", "prompt": "Hello", "max_tokens": 2, "temperature": 0})
    assert s == 200, b
    assert json.loads(b)["usage"]["completion_tokens"] == 2


def test_keys(server):
    assert server.request("GET", "/health")[0] == 200  # public
    body = {"prompt": "x", "max_tokens": 1}
    e = expect_error(post(server, body, headers={"Authorization": ""}), 401)
    assert e["code"] == "invalid_api_key" and e["type"] == "authentication_error"
    expect_error(post(server, body, headers={"Authorization": "Bearer " + KEY[:-1]}), 401)
    expect_error(post(server, body, headers={"Authorization": "Bearer " + KEY + "x"}), 401)
    expect_error(post(server, body, headers={"Authorization": KEY}), 401)
    expect_error(server.request("GET", "/metrics"), 401)
    expect_error(server.request("GET", "/v1/models"), 401)
    other = {"Authorization": "Bearer other-tenant-key-42"}
    assert post(server, body, headers=other)[0] == 200


def test_bad_bodies(server):
    expect_error(post(server, b"{\"prompt\": \"x\", \"deep\": " + b"[" * 100000), 400, "nests deeper")
    expect_error(post(server, b"{\"prompt\": \"\xff\xfe\"}"), 400, "invalid JSON")
    expect_error(post(server, b"not json"), 400, "invalid JSON")
    expect_error(post(server, {"prompt": "x", "max_tokens": "many"}), 400, "integer")
    expect_error(post(server, {"prompt": {"a": 1}}), 400, "prompt")
    expect_error(post(server, {"messages": "hi"}, path=CHAT), 400, "messages")
    e = expect_error(post(server, {"model": "gpt-5", "prompt": "x"}), 404)
    assert e["code"] == "model_not_found"
    expect_error(post(server, {"prompt": "x", "max_tokens": 10**12}), 400, "context")
    expect_error(post(server, {"prompt": "x", "temperature": -1}), 400, "temperature")
    expect_error(post(server, {"prompt": "x", "temperature": 1e999}), 400)
    expect_error(post(server, b'{"prompt": "x", "temperature": NaN}'), 400, "invalid JSON")
    expect_error(post(server, {"prompt": "x", "temperature": "NaN"}), 400, "number")
    expect_error(post(server, {"prompt": [1] * 600}), 400, "context holds 512")
    expect_error(server.request("GET", "/v2/anything", headers=AUTH), 404)


def test_oversized_and_endless_bodies(server):
    big = b'{"prompt": "' + b"a" * (2 << 20) + b'"}'
    expect_error(post(server, big), 413)
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: application/json\r\n")
    # An endless body: the server stops reading after its cap and answers 413.
    for framing in ("Content-Length: 1000000000000\r\n", "Transfer-Encoding: chunked\r\n"):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        s.sendall((head + framing + "\r\n").encode())
        chunk = b"a" * 65536
        if "chunked" in framing:
            chunk = b"10000\r\n" + chunk + b"\r\n"
        sent, t0 = 0, time.time()
        try:
            while time.time() - t0 < 30:
                s.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
        reply = read_all(s)
        s.close()
        assert sent < 64 << 20, "the server kept reading"
        assert status_of(reply) == 413, reply[:200]


def test_oversized_headers(server):
    long = f"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {'b' * 20000}\r\n\r\n".encode()
    assert status_of(raw(server, long)) == 431
    many = "GET /health HTTP/1.1\r\n" + "".join(f"X-H{i}: v\r\n" for i in range(100)) + "\r\n"
    assert status_of(raw(server, many.encode())) == 431
    endless = b"GET /health HTTP/1.1\r\nX-Endless: " + b"e" * (1 << 20)
    assert status_of(raw(server, endless)) == 431


def test_slow_client_is_cut_off_and_others_are_served(server):
    def drip():
        s = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        t0 = time.time()
        try:
            for b in b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n":
                s.sendall(bytes([b]))
                time.sleep(3)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = read_all(s)
        s.close()
        return time.time() - t0, reply
    slow = Watch(drip)
    time.sleep(1)
    t0 = time.time()
    s, _, _ = post(server, {"prompt": "Hello", "max_tokens": 2})
    assert s == 200 and time.time() - t0 < 20
    slow.join(60)
    assert slow.error is None, slow.error
    elapsed, reply = slow.result
    assert elapsed < 25, f"a client dripping a byte every 3 s held a connection {elapsed:.0f} s"
    assert status_of(reply) in (408, None), reply[:200]


def metric(server, name):
    return server.metrics(AUTH).get(name, 0.0)


def test_disconnect_mid_stream_frees_blocks(server):
    body = json.dumps({"prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True,
                       "temperature": 0, "stream": True}).encode()
    cancelled = metric(server, 'snug_requests_finished_total{reason="cancelled"}')
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
              b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
              b"\r\n\r\n" + body)
    got = b""
    while got.count(b"data: ") < 3:
        got += s.recv(4096)
    assert metric(server, 'snug_kv_blocks{state="used"}') > 0
    s.close()
    deadline = time.time() + 5
    while time.time() < deadline and metric(server, 'snug_sequences{state="running"}') > 0:
        time.sleep(0.05)
    assert metric(server, 'snug_sequences{state="running"}') == 0
    assert metric(server, 'snug_kv_blocks{state="used"}') == 0
    assert metric(server, 'snug_requests_finished_total{reason="cancelled"}') == cancelled + 1

    # Not streamed: nothing is written before the end, the server notices the hang-up itself.
    body = json.dumps({"prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True,
                       "temperature": 0}).encode()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
              b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    deadline = time.time() + 10
    while time.time() < deadline and metric(server, 'snug_kv_blocks{state="used"}') == 0:
        time.sleep(0.02)
    s.close()
    deadline = time.time() + 5
    while time.time() < deadline and metric(server, 'snug_sequences{state="running"}') > 0:
        time.sleep(0.05)
    assert metric(server, 'snug_kv_blocks{state="used"}') == 0
    assert metric(server, 'snug_requests_finished_total{reason="cancelled"}') == cancelled + 2


def test_flood_at_a_full_queue(server):
    body = {"prompt": "Hi", "max_tokens": 4, "ignore_eos": True, "temperature": 0}

    def one(_):
        try:
            s, h, b = post(server, body)
            return s, h.get("retry-after"), b
        except OSError as e:
            return None, None, repr(e).encode()
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=120) as pool:
        results = list(pool.map(one, range(1000)))
    elapsed = time.time() - t0
    statuses = [r[0] for r in results]
    assert statuses.count(None) == 0, [r[2] for r in results if r[0] is None][:3]
    assert set(statuses) <= {200, 503}, {s: statuses.count(s) for s in set(statuses)}
    busy = [r for r in results if r[0] == 503]
    assert busy, "a queue of 64 never filled under 120 concurrent clients"
    assert all(r[1] == "1" for r in busy)
    assert statuses.count(200) >= 16  # the running sequences and the queue served some
    for _, _, b in busy:
        assert json.loads(b)["error"]["type"] == "server_error"
    print(f"\nflood: {statuses.count(200)} served, {len(busy)} told to retry, {elapsed:.1f} s")
    assert server.health()[0] == 200
    assert post(server, body)[0] == 200


def test_connection_cap(server):
    # 80 handler threads (8 running + 64 queued + 8) and 80 waiting connections: 200 idle
    # sockets fill both, and the next connection is answered 503 at once instead of waiting.
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(200)]
    try:
        t0 = time.time()
        reply = raw(server, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(reply) == 503, reply[:300]
        assert b"Retry-After: 1" in reply and b"server_busy" in reply
        assert time.time() - t0 < 5
    finally:
        for c in idle:
            c.close()
    deadline = time.time() + 15
    while time.time() < deadline and server.health()[0] != 200:
        time.sleep(0.1)
    assert server.health()[0] == 200
    assert metric(server, "snug_http_connections_refused_total") > 0


def test_rss_stays_under_the_plan(server):
    peak, planned = server.vm("VmHWM"), server.predicted_peak()
    print(f"\npeak RSS {peak / 2**20:.1f} MiB, predicted {planned / 2**20:.1f} MiB")
    assert peak <= planned


def test_sigterm_drains_and_exits_0(server):
    body = json.dumps({"prompt": "Once upon a time", "max_tokens": 300, "ignore_eos": True,
                       "stream": True, "temperature": 0}).encode()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
              b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    first = b""
    while b"data: " not in first:
        first += s.recv(4096)
    t0 = time.time()
    server.proc.send_signal(signal.SIGTERM)
    reply = first + read_all(s)
    s.close()
    assert server.proc.wait(30) == 0, server.log()
    assert time.time() - t0 < 15
    # The stream ended properly: finished, or cancelled at the deadline with an error event.
    assert DONE in reply, reply[-300:]
    assert b'"finish_reason":"length"' in reply or b'"error"' in reply


def test_shutdown_deadline_cancels_what_is_left():
    s = Server("--ctx", 1024, "--parallel", 1, "--memory", "1GiB", "--shutdown-timeout", 1)
    try:
        body = json.dumps({"prompt": "Once upon a time", "max_tokens": 900, "ignore_eos": True,
                           "stream": True}).encode()
        c = socket.create_connection(("127.0.0.1", s.port), timeout=30)
        c.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                  str(len(body)).encode() + b"\r\n\r\n" + body)
        got = b""
        while b"data: " not in got:
            got += c.recv(4096)
        t0 = time.time()
        s.proc.send_signal(signal.SIGTERM)
        got += read_all(c)
        c.close()
        assert s.proc.wait(20) == 0, s.log()
        assert time.time() - t0 < 5
        # Cut at the deadline: an error event in OpenAI's shape, then [DONE].
        events = [e for e in got.split(b"\n\n") if b"data: " in e]
        assert events[-1].endswith(DONE), got[-300:]
        err = json.loads(events[-2].split(b"data: ", 1)[1])["error"]
        assert err["code"] == "shutting_down", err
    finally:
        s.stop()
