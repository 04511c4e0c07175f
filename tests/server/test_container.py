"""snug in a container: the memory limit of its cgroup is the budget it plans
against, and a model that cannot fit the limit is refused with one line
instead of being killed by the kernel. A container's memory limit is its
cgroup's, so the test makes a cgroup of its own below the one it runs in (v1
memory.limit_in_bytes or v2 memory.max), starts `snug serve` and `snug run`
inside it without --memory, and reads the budget back from /v1/memory.

The Dockerfile cannot be built here (no Docker engine runs on the project's
machines), so what it relies on is checked instead: its stages and user, that
every path it copies exists in the repository, that the sources it copies
configure without the rest of the tree, that `cmake --install` puts both
programs where its ENTRYPOINT runs them (and snug finds snug-serve there), that
the runtime packages it installs hold every library the programs link, and
that its CMD names the model scripts/fetch-models writes."""
import contextlib
import json
import os
import re
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from snug_server import MODEL, ROOT, SNUG, Server

if not MODEL.exists():
    pytest.skip(f"{MODEL} is missing (scripts/fetch-models)", allow_module_level=True)

MiB = 1 << 20


def own_memory_cgroup():
    """(version, directory) of this process's memory cgroup, or None."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            d = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            if (d / "memory.limit_in_bytes").exists():
                return 1, d
        if controllers == "":
            d = Path("/sys/fs/cgroup") / path.lstrip("/")
            if (d / "cgroup.controllers").exists() and \
                    "memory" in (d / "cgroup.subtree_control").read_text().split():
                return 2, d
    return None


@contextlib.contextmanager
def memory_cgroup(limit):
    """A new cgroup below ours with a memory limit of `limit` bytes; yields a
    preexec_fn that moves a child process into it."""
    found = own_memory_cgroup()
    if found is None:
        pytest.skip("no writable memory cgroup (v1 memory controller or v2 with memory delegated)")
    version, parent = found
    d = parent / f"snug-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        d.mkdir()
    except OSError as e:
        pytest.skip(f"cannot create a cgroup below {parent}: {e}")
    try:
        (d / ("memory.limit_in_bytes" if version == 1 else "memory.max")).write_text(str(limit))
        procs = str(d / "cgroup.procs")

        def enter():
            with open(procs, "w") as f:
                f.write("0")

        yield enter, version, d
    finally:
        for _ in range(100):  # the processes in it have exited; rmdir may lag a moment
            try:
                d.rmdir()
                break
            except OSError:
                time.sleep(0.05)


def stat_of(d, version, v1, v2):
    f = d / (v1 if version == 1 else v2)
    return int(f.read_text().split()[0]) if f.exists() else None


def test_the_budget_is_the_container_limit():
    limit = 400 * MiB
    with memory_cgroup(limit) as (enter, version, d):
        s = Server(preexec_fn=enter)
        try:
            s_, _, b = s.request("GET", "/v1/memory")
            assert s_ == 200, b
            budget = json.loads(b)["budget"]
            assert budget["source"].startswith(f"cgroup v{version} limit"), budget
            # limit - what the new cgroup holds + the process's own RSS, less 10% headroom
            assert 0.8 * limit <= budget["limit_bytes"] <= limit, budget
            st, _, body = s.request("POST", "/v1/completions", body={
                "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0})
            assert st == 200, body
            peak = s.vm("VmHWM")
            predicted = s.predicted_peak()
            assert predicted <= budget["limit_bytes"]
            failcnt = stat_of(d, version, "memory.failcnt", "memory.events")
            print(f"\ncgroup v{version} limit {limit / MiB:.0f} MiB: budget "
                  f"{budget['limit_bytes'] / MiB:.1f} MiB ({budget['source']}), predicted peak "
                  f"{predicted / MiB:.1f} MiB, peak RSS {peak / MiB:.1f} MiB")
            if version == 1:
                assert failcnt == 0, "the cgroup hit its limit"
        finally:
            assert s.stop() == 0, s.log()


@pytest.mark.parametrize("command", ["serve", "run"])
def test_a_model_too_large_for_the_container_is_refused_not_killed(command):
    limit = 64 * MiB  # SmolLM2 Q4_1's weights alone are 92 MiB
    with memory_cgroup(limit) as (enter, version, d):
        args = [SNUG, command, str(MODEL)]
        args += ["--port", "0", "--host", "127.0.0.1"] if command == "serve" else ["-p", "Hi", "-n", "4"]
        r = subprocess.run(args, capture_output=True, timeout=120, preexec_fn=enter)
        err = r.stderr.decode()
        assert r.returncode == 1, f"exit {r.returncode} (a negative code is a signal):\n{err}"
        lines = [x for x in err.splitlines() if "error:" in x]
        assert len(lines) == 1, err
        assert f"cgroup v{version} limit" in lines[0], lines[0]
        if version == 1:
            assert stat_of(d, version, "memory.failcnt", "") == 0, "it touched the limit"
        print(f"\n{command} in {limit / MiB:.0f} MiB: {lines[0]}")


# --- the Dockerfile ----------------------------------------------------------

def dockerfile():
    """[(instruction, arguments)] with continuation lines joined."""
    out, cur = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        cur += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            word, _, rest = cur.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            cur = ""
    return out


def stages():
    """[(name, [(instruction, arguments)])] per FROM."""
    out = []
    for ins, args in dockerfile():
        if ins == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.I)
            out.append((m.group(2) or "", [(ins, args)]))
        else:
            out[-1][1].append((ins, args))
    return out


def test_dockerfile_stages_user_and_copied_paths():
    st = stages()
    assert len(st) >= 2, "a multi-stage build"
    names = {n for n, _ in st if n}
    final = st[-1][1]
    users = [a for i, a in final if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    for name, body in st:
        for ins, args in body:
            if ins != "COPY":
                continue
            parts = shlex.split(args)
            srcs = [p for p in parts[:-1] if not p.startswith("--")]
            if any(p.startswith("--from=") for p in parts):
                assert parts[0].split("=", 1)[1] in names, args
                continue
            for src in srcs:  # from the build context: the repository
                assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    ignore = (ROOT / ".dockerignore").read_text().split()
    copied = [src.rstrip("/") for _, body in st for ins, a in body if ins == "COPY"
              and "--from" not in a for src in shlex.split(a)[:-1]]
    for src in copied:
        assert f"!{src}" in ignore or f"!{src}/" in ignore, f"{src} is excluded by .dockerignore"


def test_dockerfile_sources_configure_alone_and_install_where_it_runs_them(tmp_path):
    st = stages()
    build = st[0][1]
    ctx = tmp_path / "context"
    ctx.mkdir()
    for ins, args in build:
        if ins == "COPY" and "--from" not in args:
            parts = shlex.split(args)
            for src in parts[:-1]:
                dst = ctx / src
                dst.parent.mkdir(parents=True, exist_ok=True)
                subprocess.run(["cp", "-r", str(ROOT / src), str(dst)], check=True)
    runs = " ".join(a for i, a in build if i == "RUN")
    cmake_configure = re.search(r"cmake -S \. -B build ([^&]*)", runs).group(1).split()
    r = subprocess.run(["cmake", "-S", str(ctx), "-B", str(tmp_path / "b"), *cmake_configure],
                       capture_output=True, timeout=300)
    assert r.returncode == 0, "the copied sources do not configure alone:\n" + r.stderr.decode()
    # The programs this build made, installed as the Dockerfile installs them.
    build_dir = Path(SNUG).parent
    prefix = tmp_path / "opt" / "snug"
    r = subprocess.run(["cmake", "--install", str(build_dir), "--prefix", str(prefix)],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    entry = json.loads([a for i, a in st[-1][1] if i == "ENTRYPOINT"][-1])
    cmd = json.loads([a for i, a in st[-1][1] if i == "CMD"][-1])
    assert entry[0].startswith("/opt/snug/bin/") and entry[1] == "serve", entry
    installed = prefix / "bin" / Path(entry[0]).name
    assert installed.exists(), entry[0]
    # Installed, snug finds snug-serve beside it: serve --help comes from it.
    r = subprocess.run([str(installed), "serve", "--help"], capture_output=True, timeout=60)
    assert r.returncode == 0 and b"--models" in r.stdout, r.stderr.decode()
    # The runtime stage installs the packages holding every library they link.
    pk = subprocess.run([str(ROOT / "deploy/docker/runtime-packages"), str(prefix / "bin")],
                        capture_output=True, timeout=120)
    assert pk.returncode == 0, pk.stderr.decode()
    packages = pk.stdout.decode().split()
    assert {"libhwy1", "libfmt9", "libcpp-httplib0.11", "libssl3"} <= set(packages), packages
    for p in packages:
        assert subprocess.run(["dpkg", "-s", p], capture_output=True).returncode == 0, p
    # CMD's model is the file scripts/fetch-models writes, where the build stage moves it.
    model = Path(cmd[0])
    assert f"{model.name}" in (ROOT / "scripts/fetch-models").read_text()
    assert f"/opt/snug/models/" in runs and model.parent == Path("/models"), (cmd, runs)
    assert "--host" in cmd and cmd[cmd.index("--host") + 1] == "0.0.0.0", cmd
    print(f"\nruntime packages: {' '.join(packages)}")
