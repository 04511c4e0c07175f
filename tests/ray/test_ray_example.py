"""The README's Ray example as a user runs it (deploy/ray/example.py, with the
package `pip install .` put in .venv): two models over a simulated three-node
cluster; both answer, and all three replicas are placed and ready."""
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("SNUG_SOURCE_DIR", Path(__file__).resolve().parents[2]))
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
CLI = os.environ.get("SNUG_BIN", str(ROOT / "build" / "snug"))
if not MODEL.exists():
    pytest.skip(f"{MODEL} is missing (scripts/fetch-models)", allow_module_level=True)
pytest.importorskip("ray", reason="ray is not installed (requirements.txt)")


def test_the_readme_example_serves_two_models():
    with tempfile.TemporaryDirectory() as d:
        q8 = Path(d) / "smollm2-q8_0.gguf"
        subprocess.run([CLI, "quantize", str(MODEL), str(q8), "Q8_0"], check=True,
                       capture_output=True, timeout=600)
        env = {k: v for k, v in os.environ.items() if k != "SNUG_BIN"}  # the package's own
        r = subprocess.run([sys.executable, str(ROOT / "deploy/ray/example.py"), str(MODEL),
                            str(q8)], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    print("\n" + r.stdout)
    assert re.search(r"^SmolLM2-135M-Instruct\.Q4_1: ' Paris", r.stdout, re.M), r.stdout
    assert re.search(r"^smollm2-q8_0: ' Paris", r.stdout, re.M), r.stdout
    assert r.stdout.count("ready: True") == 3, r.stdout
