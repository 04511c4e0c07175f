"""The Python package as `pip install .` installs it (scripts/setup does, into
.venv): `import snug` comes from site-packages with both programs inside it,
snug.plan and snug.serve_plan return the CLI's own JSON, snug.Server runs a
real server that the unmodified OpenAI client talks to, bad inputs raise
SnugError with snug's one line, and the package type-checks (mypy --strict)."""
import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("SNUG_SOURCE_DIR", Path(__file__).resolve().parents[2]))
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
CLI = os.environ.get("SNUG_BIN", str(ROOT / "build" / "snug"))

if not MODEL.exists():
    pytest.skip(f"{MODEL} is missing (scripts/fetch-models)", allow_module_level=True)
os.environ.pop("SNUG_BIN", None)  # the package must find its own program
snug = pytest.importorskip("snug", reason="the package is not installed (scripts/setup)")


def test_installed_with_its_programs():
    site = Path(sysconfig.get_paths()["platlib"]).resolve()
    pkg = Path(snug.__file__).resolve().parent
    assert pkg.parent == site, f"snug imported from {pkg}, not from the installed package"
    assert snug.binary() == pkg / "bin" / "snug"
    for prog in ("snug", "snug-serve"):
        assert os.access(pkg / "bin" / prog, os.X_OK), prog
    assert (pkg / "py.typed").exists()
    # The console script runs the program.
    script = Path(sys.executable).parent / "snug"
    r = subprocess.run([str(script), "plan", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--json" in r.stdout, r.stderr


def test_plan_is_the_clis_json():
    p = snug.plan(MODEL, ctx=1024, parallel=2, memory="1GiB")
    cli = json.loads(subprocess.run([CLI, "plan", str(MODEL), "--ctx", "1024", "--parallel", "2",
                                     "--memory", "1GiB", "--json"], capture_output=True,
                                    check=True, timeout=60).stdout)
    assert p == cli
    assert p["schema"] == "snug.plan/1" and p["request"]["ctx"] == 1024
    sp = snug.serve_plan(MODEL, MODEL.parent / "smollm2-q8_0.gguf", ctx=512, parallel=2) \
        if (MODEL.parent / "smollm2-q8_0.gguf").exists() else snug.serve_plan(MODEL, ctx=512)
    assert sp["schema"] == "snug.serve-plan/1" and "budget" not in sp
    assert sp["memory_bytes_one"] <= sp["memory_bytes_all"]


@pytest.mark.parametrize("call, needle", [
    (lambda: snug.plan("/nonexistent/model.gguf"), "cannot open"),
    (lambda: snug.plan(ROOT / "README.md"), "GGUF"),
    (lambda: snug.plan(MODEL, ctx=0), "ctx"),
    (lambda: snug.plan(MODEL, memory="lots"), "--memory"),
    (lambda: snug.plan(MODEL, kv_type="q3_x"), "q3_x"),
    (lambda: snug.serve_plan(), "no model"),
    (lambda: snug.serve_plan(MODEL, ctx=10**9), "context"),
])
def test_bad_input_raises_one_line(call, needle):
    with pytest.raises(snug.SnugError) as e:
        call()
    msg = str(e.value)
    assert needle in msg and "\n" not in msg, msg


def test_server_answers_the_openai_client():
    openai = pytest.importorskip("openai")
    with snug.Server(MODEL, ctx=512, parallel=2, memory="1GiB") as s:
        assert s.url.startswith("http://127.0.0.1:") and s.health() == 200
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="none")
        r = client.completions.create(model=MODEL.stem, prompt="The capital of France is",
                                      max_tokens=8, temperature=0)
        cli = subprocess.run([CLI, "run", str(MODEL), "--no-chat", "-p",
                              "The capital of France is", "-n", "8", "--temp", "0"],
                             capture_output=True, text=True, check=True, timeout=120).stdout
        assert r.choices[0].text == cli
        pid = s.pid
    assert s.wait(5) == 0  # stopped by the with-block, cleanly
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_server_that_cannot_start_raises_its_error():
    s = snug.Server(MODEL, ctx=8192, parallel=8, memory="128MiB", startup_timeout=60)
    with pytest.raises(snug.SnugError) as e:
        s.start()
    assert "128.0 MiB" in str(e.value) and "\n" not in str(e.value), str(e.value)
    s.close()
    with pytest.raises(snug.SnugError):
        _ = s.url


def test_a_killed_owner_takes_its_server_along():
    code = ("import snug, sys, time\n"
            f"s = snug.Server({str(MODEL)!r}, ctx=256, parallel=1, memory='512MiB').start()\n"
            "print(s.pid, flush=True)\n"
            "time.sleep(120)\n")
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(owner.stdout.readline())
    finally:
        owner.kill()  # SIGKILL: nothing of the owner runs after this
        owner.wait()
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            if "zombie" in Path(f"/proc/{pid}/status").read_text().lower():
                break
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        pytest.fail("the server outlived the process that started it by 20 s")


def test_package_type_checks():
    mypy = pytest.importorskip("mypy.api")
    # The installed files are the sources' copies: check the sources.
    src = ROOT / "python" / "snug"
    for f in src.glob("*.py"):
        assert f.read_bytes() == (Path(snug.__file__).parent / f.name).read_bytes(), \
            f"{f.name}: the installed package is stale (scripts/setup reinstalls it)"
    out, err, rc = mypy.run(["--strict", "--no-error-summary", str(src)])
    assert rc == 0, out + err
