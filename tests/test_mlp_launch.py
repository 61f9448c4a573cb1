"""End-to-end runs of `python -m launch.mlp` (subprocesses, 8 fake devices from conftest)."""

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

QUICK = ["--flagfile=experiments/mlp/quickstart.flags", "--progress=log"]


@pytest.mark.slow
def test_quickstart_trains_and_writes_the_workdir(run_launch, tmp_path):
    wd = tmp_path / "run"
    proc = run_launch("mlp", *QUICK, "--steps=300", f"--workdir={wd}")
    final = json.loads((wd / "final.json").read_text())
    assert final["metrics"]["accuracy"] >= 0.95 and final["step"] == 300
    assert {"f1", "auc", "precision", "recall"} <= final["metrics"].keys()
    assert "final test metrics" in proc.stdout and "steps/s" in proc.stderr
    assert (wd / "tensorboard").is_dir() and any((wd / "tensorboard").iterdir())
    rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in rows} == {"train", "test"} and rows[-1]["step"] == 300
    flags_txt = (wd / "flags.txt").read_text()
    assert "--dataset=digits" in flags_txt and "--steps=300" in flags_txt
    # flags.txt is itself a valid flagfile that reproduces the run bit for bit
    run_launch("mlp", f"--flagfile={wd / 'flags.txt'}", f"--workdir={tmp_path / 'again'}", "--progress=log")
    again = json.loads((tmp_path / "again" / "final.json").read_text())
    assert again["params_sha256"] == final["params_sha256"] and again["metrics"] == final["metrics"]


@pytest.mark.slow
def test_regressor_on_diabetes(run_launch, tmp_path):
    run_launch("mlp", "--flagfile=experiments/mlp/diabetes_sgd.flags", "--steps=300", "--batch_size=32",
               f"--workdir={tmp_path}")
    metrics = json.loads((tmp_path / "final.json").read_text())["metrics"]
    assert metrics["r2"] > 0.3 and 30 < metrics["rmse"] < 80  # rmse in the target's units (disease progression)


@pytest.mark.slow
def test_kill_and_resume_is_bitwise_equal_to_an_uninterrupted_run(run_launch, tmp_path):
    args = [*QUICK, "--steps=400", "--checkpoint_every=40", "--log_every=20", "--dropout=0.2"]
    run_launch("mlp", *args, f"--workdir={tmp_path / 'straight'}")
    wd = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "launch.mlp", *args, f"--workdir={wd}"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        steps = [p for p in (wd / "checkpoints").glob("*") if p.name.isdigit()] if (wd / "checkpoints").exists() else []
        if len(steps) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (wd / "final.json").exists()
    resumed = run_launch("mlp", *args, f"--workdir={wd}")
    assert "resumed from" in resumed.stderr
    a = json.loads((tmp_path / "straight" / "final.json").read_text())
    b = json.loads((wd / "final.json").read_text())
    assert a["params_sha256"] == b["params_sha256"]
    assert a["metrics"] == b["metrics"] and a["train_metrics"] == b["train_metrics"]
    strip = lambda p: [{k: v for k, v in json.loads(line).items() if k not in ("time", "elapsed")}
                       for line in (p / "metrics.jsonl").read_text().splitlines()]
    assert strip(tmp_path / "straight") == strip(wd)


