"""A real sweep: launch.sweep running one tiny launch.mlp trial on 8 fake devices (the ledger mechanics are tested
with a stand-in launch module in test_sweep_ledger.py; this checks the real flags and final.json)."""

import csv
import io
import json
import os
import pathlib

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_mlp_sweep_end_to_end(tmp_path, run_launch):
    spec = tmp_path / "tiny.toml"
    spec.write_text(f"""
launch = "launch.mlp"
flagfile = "{os.path.join(REPO, 'experiments/mlp/quickstart.flags')}"
seeds = [0]
metrics = ["accuracy", "loss"]
[flags]
steps = 10
batch_size = 32
log_every = 5
eval_every = 0
checkpoint_every = 0
[axes.optimizer]
sgd = {{ optimizer = "sgd", learning_rate = 0.05 }}
""")
    sd = tmp_path / "sweep"
    out = run_launch("sweep", f"--spec={spec}", f"--sweep_dir={sd}", "--workers=1").stdout
    rows = list(csv.DictReader(io.StringIO((sd / "results.csv").read_text())))
    assert [(r["optimizer"], r["status"]) for r in rows] == [("sgd", "done")], out
    for r in rows:
        final = json.loads(pathlib.Path(sd / r["workdir"] / "final.json").read_text())
        assert final["step"] == 10 and float(r["accuracy"]) == pytest.approx(final["metrics"]["accuracy"])
        flags = pathlib.Path(sd / r["workdir"] / "flags.txt").read_text()
        assert f"--optimizer={r['optimizer']}\n" in flags and "--seed=0\n" in flags and "--steps=10\n" in flags
    assert "| sgd | 1 | 0 |" in pathlib.Path(sd / "results.md").read_text()
