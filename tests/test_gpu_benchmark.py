"""The GPU suite (`python -m benchmarks.run --suite=gpu`, benchmarks/gpu.py) keeps working: its `--quick` form
runs here on the CPU, with or without PyTorch, and prints its one table with every row and finite numbers."""

import math
import os
import re
import subprocess
import sys

import pytest

from benchmarks.gpu import FAMILIES, QUICK
from tests.conftest import REPO


def _cells(text: str) -> dict[str, list[str]]:
    """measurement -> [unit, value, baseline, ratio] of the suite's markdown table."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 5 and cells[0] != "measurement":
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.slow
def test_gpu_suite_quick_prints_every_row_with_finite_numbers():
    # One CPU device (not the 8 fake ones the tests use): the suite times single-device programs.
    xla = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", "")).strip()
    env = {**os.environ, "XLA_FLAGS": xla, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--suite=gpu", "--quick"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("### GPU suite") == 1, proc.stdout  # one table
    rows = _cells(proc.stdout)
    k, n = QUICK.steps_per_call, QUICK.num_seeds
    expected = [f"{f} quickstart" for f in FAMILIES]
    expected += [f"{f} {what}" for f in QUICK.gains for what in (f"--steps_per_call={k} vs 1", f"--num_seeds={n} vs 1")]
    expected.append("mlp quickstart --compute_dtype=bfloat16 vs float32")
    for name in expected:
        assert name in rows, f"missing row {name!r} in\n{proc.stdout}"
    kernel = [r for r in rows if "bfloat16 vs float32" in r and not r.startswith("mlp quickstart")]
    dcgan = [r for r in rows if r.startswith("dcgan ")]
    lstm = [r for r in rows if r.startswith("lstm LM")]
    assert len(kernel) == 1 and len(dcgan) == 1 and len(lstm) == 2, proc.stdout
    torch_ran = "PyTorch rows skipped" not in proc.stdout
    for name, (unit, value, baseline, ratio) in rows.items():
        assert unit in ("steps/s", "seed-steps/s", "tokens/s"), name
        assert math.isfinite(float(value)) and float(value) > 0, (name, value)
        twin = name in dcgan + lstm
        if name.endswith("quickstart"):
            assert baseline == ratio == "", name
        elif twin and not torch_ran:
            assert baseline == "skipped" and ratio == "", name
        else:
            assert math.isfinite(float(baseline)) and float(baseline) > 0, (name, baseline)
            assert float(ratio) == pytest.approx(float(value) / float(baseline), rel=5e-3), name
