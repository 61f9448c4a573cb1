"""A real sweep: launch.sweep running one tiny launch.mlp trial on 8 fake devices (the ledger mechanics, plain and
vectorised, are tested with a stand-in launch module in test_sweep_ledger.py; this checks the real flags and
final.json). The trial is vectorised (`--seed=0 --num_seeds=2`), so it also checks that the sweep reads each seed's
numbers from the training loop's own final.json; one trial keeps the test short."""

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
seeds = [0, 1]
vectorize_seeds = true
metrics = ["accuracy", "loss", "wall_seconds"]
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
    workdir = os.path.join("trials", "optimizer-sgd_seeds-0-1")
    assert [(r["key"], r["optimizer"], r["seed"], r["status"], r["workdir"]) for r in rows] == [
        (f"optimizer=sgd,seed={s}", "sgd", str(s), "done", workdir) for s in (0, 1)], out
    final = json.loads(pathlib.Path(sd / workdir / "final.json").read_text())
    assert final["step"] == 10 and [s["seed"] for s in final["seeds"]] == [0, 1]
    for r, mine in zip(rows, final["seeds"], strict=True):
        assert float(r["accuracy"]) == mine["metrics"]["accuracy"] and float(r["loss"]) == mine["metrics"]["loss"]
        assert float(r["wall_seconds"]) == final["wall_seconds"]  # top-level values are shared by the seeds
    flags = pathlib.Path(sd / workdir / "flags.txt").read_text()
    for line in ("--optimizer=sgd", "--seed=0", "--num_seeds=2", "--steps=10"):
        assert line + "\n" in flags
    assert "| sgd | 2 | 0 |" in pathlib.Path(sd / "results.md").read_text()
