"""End-to-end runs of `python -m launch.mlp` (subprocesses, 8 fake devices from conftest)."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

QUICK = ["--flagfile=experiments/mlp/quickstart.flags", "--progress=log"]


def _tree_digest(path):
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


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


@pytest.mark.parametrize("args, message", [
    (["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
    (["--flagfile=experiments/mlp/missing.flags"], "Unable to open flagfile"),
    (["--optimizer=lion"], "--optimizer"),
    (["--learning_rate=abc"], "could not convert"),
    (["extra_positional"], "unexpected arguments"),
    (["--replica=1"], "--replica applies to --mode=sample"),
    (["--replica=0"], "--replica applies to --mode=sample"),
])
def test_bad_flags_fail_fast_with_one_line(run_launch, error_line, tmp_path, args, message):
    proc = run_launch("mlp", *QUICK, f"--workdir={tmp_path}", *args, check=False)
    assert proc.returncode == 2 and message in error_line(proc)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_bad_values_and_workdirs_are_refused_without_touching_checkpoints(run_launch, error_line, tmp_path):
    # Each check is one process that must fail before training; the ConfigErrors themselves (batch that does
    # not divide, bad optimizer values, unknown dataset) are unit-tested beside their modules.
    wd = tmp_path / "run"
    run_launch("mlp", *QUICK, "--steps=20", "--checkpoint_every=10", "--hidden=16", f"--workdir={wd}")
    digest = _tree_digest(wd / "checkpoints")
    proc = run_launch("mlp", *QUICK, "--steps=20", "--checkpoint_every=10", "--hidden=16", f"--workdir={wd}",
                      "--hidden=32", "--learning_rate=0.5", check=False)
    assert proc.returncode == 2 and "holds a run with other flags" in error_line(proc)
    proc = run_launch("mlp", *QUICK, f"--workdir={tmp_path / 'bad'}", "--dataset=imagenet_offline", check=False)
    assert proc.returncode == 2 and "unknown dataset 'imagenet_offline'" in error_line(proc)
    assert not (tmp_path / "bad" / "checkpoints").exists()
    file_as_dir = tmp_path / "file"
    file_as_dir.write_text("")
    proc = run_launch("mlp", *QUICK, f"--workdir={file_as_dir / 'run'}", check=False)
    assert proc.returncode == 2 and "not writable" in error_line(proc)
    # A checkpoint from another architecture: the 16-wide run's checkpoints in a workdir whose flags say 32.
    other = tmp_path / "other"
    shutil.copytree(wd / "checkpoints", other / "checkpoints")
    (other / "flags.txt").write_text((wd / "flags.txt").read_text().replace("--hidden=16", "--hidden=32"))
    proc = run_launch("mlp", *QUICK, "--steps=20", "--checkpoint_every=10", "--hidden=32", f"--workdir={other}",
                      check=False)
    assert proc.returncode == 2 and "different architecture" in error_line(proc)
    assert _tree_digest(other / "checkpoints") == digest == _tree_digest(wd / "checkpoints")
    assert os.path.exists(wd / "final.json")
