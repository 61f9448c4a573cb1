"""Test setup: every test (and every subprocess it starts) sees 8 fake CPU devices.

XLA_FLAGS must be set before JAX initialises its backend, so it is set here, at import time. Caches go to a
per-session temporary directory so tests never depend on (or pollute) the user's cache.
"""

import os
import sys
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("RESEARCH_CACHE_DIR", tempfile.mkdtemp(prefix="research-test-cache-"))

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def run_launch(tmp_path):
    """Run `python -m launch.<module> args...` from the repository root; returns the CompletedProcess."""
    import subprocess

    def run(module: str, *args: str, timeout: float = 600, check: bool = True):
        proc = subprocess.run([sys.executable, "-m", f"launch.{module}", *args], cwd=REPO, capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if check and proc.returncode != 0:
            raise AssertionError(f"launch.{module} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        return proc

    return run


@pytest.fixture
def error_line():
    """The one `error: ...` line a refused launch printed to stderr (asserts there is exactly one)."""

    def line(proc) -> str:
        lines = [row for row in proc.stderr.splitlines() if row.startswith("error: ")]
        assert len(lines) == 1, proc.stderr[-2000:]
        return lines[0]

    return line
