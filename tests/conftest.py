"""Shared by every pytest file under tests/ (tests/pytest.ini makes this
directory the root, so pytest loads this file for each of them).

- Where the reference comparison is required (CI=true, or
  SNUG_REQUIRE_REFERENCE=1 as .ci/run sets), a skipped test or module is a
  failure: a missing llama_cpp, gguf package, model or helper binary must not
  let CI pass on tests that did not run. Elsewhere skips stay skips, listed by
  -rs (pytest.ini), and a run in which nothing but skips happened exits with
  SKIPPED_EXIT, which ctest shows as "Skipped" (SKIP_RETURN_CODE) rather than
  as passed or, as pytest's "no tests collected" (5), as failed.
- The `arithmetic` fixture: whether snug and llama.cpp take the same
  arithmetic here (tests/reference/arith.py), printed in the summary of every
  session that asked.
"""
import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("SNUG_SOURCE_DIR", TESTS.parent))
sys.path.insert(0, str(TESTS / "reference"))  # arith, oracle: shared by tests in every folder

_ARITH_KEY = pytest.StashKey[str]()
SKIPPED_EXIT = 77


def reference_required():
    """Why skips are failures here, or None where they are allowed."""
    if os.environ.get("SNUG_REQUIRE_REFERENCE", "") not in ("", "0"):
        return "SNUG_REQUIRE_REFERENCE=" + os.environ["SNUG_REQUIRE_REFERENCE"]
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        return "CI=" + os.environ["CI"]
    return None


def _skip_reason(longrepr):
    # A skip's longrepr is (path, line, "Skipped: reason").
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def _fail_skip(report):
    why = reference_required()
    if why and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, but skips fail under {why}: {_skip_reason(report.longrepr)}"
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    return _fail_skip((yield))


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    # Module-level skips (pytest.importorskip, pytest.skip(allow_module_level=True)).
    return _fail_skip((yield))


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    stats = reporter.stats if reporter else {}
    ran = any(stats.get(k) for k in ("passed", "failed", "error", "xfailed", "xpassed"))
    if not reference_required() and stats.get("skipped") and not ran:
        session.exitstatus = SKIPPED_EXIT


@pytest.fixture(scope="session")
def arithmetic(request):
    import arith
    snug = os.environ.get("SNUG_BIN", str(ROOT / "build" / "snug"))
    a = arith.probe(snug, ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    request.config.stash[_ARITH_KEY] = a.line()
    print(f"\n{a.line()}")
    return a


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    line = config.stash.get(_ARITH_KEY, None)
    if line:
        terminalreporter.write_line(f"arithmetic: {line}")
