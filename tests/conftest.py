"""Test setup: every test (and every subprocess it starts) sees 8 fake CPU devices.

XLA_FLAGS must be set before JAX initialises its backend, so it is set here, at import time. Caches go to a
per-session temporary directory (removed at the end) so tests never depend on (or pollute) the user's cache;
the session's processes share it, XLA's persistent compilation cache included, so a program that several tests
or launch subprocesses compile is compiled once.
"""

import atexit
import contextlib
import fcntl
import os
import re
import shutil
import sys
import tempfile

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "RESEARCH_CACHE_DIR" not in os.environ:  # the session's first process (xdist workers inherit it)
    os.environ["RESEARCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="research-test-cache-")
    atexit.register(shutil.rmtree, os.environ["RESEARCH_CACHE_DIR"], ignore_errors=True)

import pytest  # noqa: E402

from research.parallel import enable_compilation_cache  # noqa: E402
from research.paths import cache_dir  # noqa: E402

enable_compilation_cache(str(cache_dir("xla")))  # as every launch module does (launch/common.py)

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


@contextlib.contextmanager
def shared(tmp_path_factory, name: str):
    """A directory that every pytest-xdist worker of this session shares, held exclusively while in the block:
    what one worker trains there (finished runs, exports) the others find done."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's directory, above each worker's own
    path = root / name
    path.mkdir(exist_ok=True)
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def launch(module: str, *args: str, timeout: float = 600, cwd: str = REPO, env: dict | None = None):
    """`python -m launch.<module> args...` (from the repository root); the CompletedProcess."""
    import subprocess

    return subprocess.run([sys.executable, "-m", f"launch.{module}", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


# absl's log lines: I1201 15:35:46.814612 139698294922112 loop.py:333] ...
_LOG_LINE = re.compile(r"^[IWE]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [\w./-]+:\d+\] ")


def refusal(proc, code: int = 2) -> str:
    """The strict contract of a refused or stopped launch: exit `code`, no traceback, and one line on stderr
    that starts with `error: ` (for exit 3, a run that trained until its loss turned NaN: the training log's
    own lines before it, and nothing else). Returns that line."""
    lines = proc.stderr.splitlines()
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and lines, proc.stderr[-3000:]
    assert lines[-1].startswith("error: "), proc.stderr[-3000:]
    before = lines[:-1]
    if code == 3:
        before = [row for row in before if not _LOG_LINE.match(row)]
    assert not before, f"stderr holds more than the error line:\n{proc.stderr[-3000:]}"
    return lines[-1]


def tree_digest(path) -> str:
    """sha256 over every file's relative path and bytes under `path` (directories and empty files too)."""
    import hashlib
    import pathlib

    h = hashlib.sha256()
    for p in sorted(pathlib.Path(path).rglob("*")):
        h.update(str(p.relative_to(path)).encode() + b"\0")
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def error_line():
    """The one line on stderr of a refused launch (exit 2; see `refusal`)."""
    return refusal
