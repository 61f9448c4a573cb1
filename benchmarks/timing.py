"""Timing helpers shared by the benchmarks: medians over repeats, launch-module runs, a results table."""

from __future__ import annotations

import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

REPO = pathlib.Path(__file__).resolve().parent.parent


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn()` (which must block until its work is done) over `repeats` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def launch(module: str, args: Sequence[str], *, env: dict | None = None) -> dict:
    """Run `python -m launch.<module> args` in a fresh workdir; returns wall seconds from the command to the
    first completed train call and to the end, the steps/s measured between the first and last log lines, and
    final.json."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        cmd = [sys.executable, "-m", f"launch.{module}", *args, f"--workdir={tmp}/run", "--progress=log"]
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})})
        total = time.time() - t0
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        first = re.search(r"first call done: [0-9.]+ s after the loop started \(unix time ([0-9.]+)\)", proc.stderr)
        rows = [json.loads(line) for line in pathlib.Path(tmp, "run", "metrics.jsonl").read_text().splitlines()]
        train = [r for r in rows if r["split"] == "train"]
        rate = ((train[-1]["step"] - train[0]["step"]) / (train[-1]["elapsed"] - train[0]["elapsed"])
                if len(train) > 1 and train[-1]["elapsed"] > train[0]["elapsed"] else float("nan"))
        final = json.loads(pathlib.Path(tmp, "run", "final.json").read_text())
    return {"to_first_step": float(first.group(1)) - t0 if first else float("nan"), "total": total,
            "steps_per_second": rate, "final": final}


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table (what benchmarks/README.md records)."""
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    return text
