"""Sweep reports from the ledger alone: mean ± std against a hand computation, paper columns, CSV, plots."""

import csv
import io
import math
import os
import pathlib

import pytest

from research.sweep import report
from research.sweep import spec as spec_lib
from research.sweep.ledger import Ledger, storage_url


def test_mean_std_by_hand():
    # (0.9 + 0.8 + 0.7) / 3 = 0.8; deviations ±0.1, 0 -> sample variance (0.01 + 0 + 0.01) / 2 = 0.01 -> std 0.1
    mean, std, n = report.mean_std([0.9, 0.8, 0.7])
    assert (round(mean, 12), round(std, 12), n) == (0.8, 0.1, 3)
    assert report.mean_std([2.0, None, 4.0, float("nan")]) == (3.0, math.sqrt(2.0), 2)
    assert report.mean_std([5.0]) == (5.0, None, 1) and report.mean_std([]) == (None, None, 0)
    assert report.fmt(0.8, 0.1) == "0.8 ± 0.1" and report.fmt(5.0) == "5" and report.fmt(None) == "—"


@pytest.fixture
def finished(tmp_path):
    """A grid of 2 optimizers x 3 seeds with hand-picked accuracies; adam's seed 2 failed."""
    spec = spec_lib.parse({
        "launch": "fake_trial", "seeds": [0, 1, 2], "metrics": ["accuracy", "wall_seconds"],
        "axes": {"opt": {"sgd": {"lr": 0.1}, "adam": {"lr": 0.001}}},
        "paper": {"source": "A. Author (2020), Table 1", "rows": [{"opt": "adam", "accuracy": 0.95}]}},
        str(tmp_path / "rep.toml"))
    ledger = Ledger.open(storage_url(None, str(tmp_path / "sd")), spec)
    ledger.top_up(max_retries=2)
    accuracy = {"opt=sgd,seed=0": 0.90, "opt=sgd,seed=1": 0.80, "opt=sgd,seed=2": 0.70,
                "opt=adam,seed=0": 0.96, "opt=adam,seed=1": 0.94}
    for _ in range(6):
        c = ledger.claim()
        if c.key in accuracy:
            final = {"metrics": {"accuracy": accuracy[c.key]}, "wall_seconds": 10.0}
            assert ledger.succeed(c, [{"seed": c.runs[0][0], "workdir": c.runs[0][1], "final": final}], 12.0)
        else:
            ledger.fail(c, 3, "non-finite loss or norm (exit 3)", "step 5\nerror: loss is NaN at step 7",
                        retriable=False)
    return ledger, spec, accuracy


def test_markdown_csv_and_plots(finished, tmp_path):
    ledger, spec, _ = finished
    text, rows = report.write(str(tmp_path / "sd"), ledger)
    assert len(rows) == 6
    # sgd: 0.9, 0.8, 0.7 -> 0.8 ± 0.1; adam: 0.96, 0.94 -> 0.95 ± sqrt(2 * 0.01**2 / 1) = 0.95 ± 0.014
    assert "| opt | n | failed | accuracy (paper) | accuracy (ours) | wall_seconds |" in text
    assert "| sgd | 3 | 0 | — | 0.8 ± 0.1 | 10 ± 0 |" in text
    assert "| adam | 2 | 1 | 0.95 | 0.95 ± 0.014 | 10 ± 0 |" in text
    assert "Paper: A. Author (2020), Table 1." in text
    assert "6 runs: 5 done, 1 failed." in text
    assert "- `opt=adam,seed=2` (trial 5): non-finite loss or norm (exit 3) — `error: loss is NaN at step 7`" in text
    table = list(csv.DictReader(io.StringIO(pathlib.Path(tmp_path / "sd" / "results.csv").read_text())))
    assert [r["key"] for r in table] == [p.key for p in spec.points()]
    by_key = {r["key"]: r for r in table}
    assert float(by_key["opt=sgd,seed=2"]["accuracy"]) == 0.7 and by_key["opt=sgd,seed=2"]["status"] == "done"
    assert by_key["opt=sgd,seed=2"]["flags"] == "--lr=0.1"
    for name in ("accuracy.png", "wall_seconds.png"):
        assert os.path.getsize(tmp_path / "sd" / "plots" / name) > 1000


def test_unfinished_runs_and_report_from_the_ledger_alone(finished, tmp_path):
    """A second ledger handle (as `--report` opens it) reports the same; a later point still waiting is counted."""
    ledger, spec, _ = finished
    again = Ledger.load(storage_url(None, str(tmp_path / "sd")), spec.name)
    assert again.record["paper"]["source"] == "A. Author (2020), Table 1"
    ledger.study.enqueue_trial({"opt": "adam", "seed": 2}, user_attrs={"key": "opt=adam,seed=2", "name": "x"})
    text, rows = report.write(str(tmp_path / "sd2"), again)
    assert [r["status"] for r in rows][-1] == "waiting"
    assert "| adam | 2 | 0 (+1 unfinished) | 0.95 | 0.95 ± 0.014 | 10 ± 0 |" in text
