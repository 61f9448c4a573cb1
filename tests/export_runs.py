"""Tiny trained runs and their exports, made once per test session for tests/test_export.py and test_serve.py.

Runs go through the real launch modules (subprocesses, 8 fake devices from conftest), two at a time, and are
cached for the session in a directory every xdist worker shares (conftest.shared): a test asks
`runs.workdirs("mlp", "gan")` and gets trained workdirs, then `runs.export("mlp")` an export of one. Every run is
a few dozen steps: these tests check the plumbing (the exported function computes what the in-process model
computes), not the quality of the models.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import REPO, shared

COMMON = ["--progress=log", "--eval_every=0"]
RUNS = {  # name -> (launch module, flags)
    "mlp": ("mlp", ["--dataset=digits", "--hidden=32", "--batch_norm=true", "--dropout=0.1", "--batch_size=64",
                    "--steps=30", "--log_every=10", "--checkpoint_every=15"]),
    "seeds": ("mlp", ["--dataset=digits", "--hidden=16", "--batch_size=64", "--steps=20", "--num_seeds=2",
                      "--log_every=10", "--checkpoint_every=20"]),
    "regress": ("mlp", ["--dataset=diabetes", "--task=regress", "--hidden=16", "--batch_size=32", "--steps=20",
                        "--optimizer=sgd", "--learning_rate=0.01", "--log_every=10", "--checkpoint_every=20"]),
    "vae": ("autoencoder", ["--dataset=digits", "--arch=dense", "--encoder=32", "--latent=4", "--variational=true",
                            "--batch_size=64", "--steps=20", "--log_every=10", "--checkpoint_every=20"]),
    "gan": ("gan", ["--dataset=digits", "--architecture=dcgan", "--conditional=true", "--z_dim=16", "--g_width=8",
                    "--d_width=8", "--batch_size=64", "--steps=10", "--evaluator=none", "--num_eval_samples=64",
                    "--eval_batch_size=64", "--grid_size=16", "--log_every=5", "--checkpoint_every=10"]),
    "ring": ("gan", ["--dataset=gaussians_ring8", "--architecture=mlp", "--z_dim=4", "--g_hidden=16,16",
                     "--d_hidden=16,16", "--batch_size=64", "--steps=20", "--num_eval_samples=256",
                     "--eval_batch_size=64", "--log_every=10", "--checkpoint_every=20"]),
    "adding": ("rnn", ["--task=adding", "--length=10", "--hidden=16", "--batch_size=64", "--steps=20",
                       "--log_every=10", "--checkpoint_every=20"]),
    "char_lm": ("rnn", ["--task=char_lm", "--dataset=tiny_shakespeare", "--hidden=32", "--layers=2", "--embed=16",
                        "--unroll=16", "--batch_size=16", "--steps=20", "--max_eval_chars=2000", "--sample_chars=0",
                        "--log_every=10", "--checkpoint_every=20"]),
}


def launch(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"launch.{module}", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


class Runs:
    """Lazily trained runs and exports under one directory that the session's test workers share."""

    def __init__(self, tmp_path_factory):
        self._factory = tmp_path_factory
        with shared(tmp_path_factory, "export-runs") as root:
            self.root = root

    def _lock(self):
        return shared(self._factory, "export-runs")

    def workdir(self, name: str) -> pathlib.Path:
        return self.root / "runs" / name

    def workdirs(self, *names: str) -> list[pathlib.Path]:
        """Train the runs of `names` that are not trained yet (two subprocesses at a time)."""
        with self._lock():
            todo = [n for n in names if not (self.workdir(n) / "final.json").exists()]
            for i in range(0, len(todo), 2):
                procs = []
                for name in todo[i:i + 2]:
                    module, flags = RUNS[name]
                    cmd = [sys.executable, "-m", f"launch.{module}", *flags, *COMMON,
                           f"--workdir={self.workdir(name)}"]
                    procs.append((name, subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE,
                                                         stderr=subprocess.PIPE, text=True)))
                for name, proc in procs:
                    _, err = proc.communicate(timeout=900)
                    if proc.returncode:
                        raise AssertionError(f"training {name} exited {proc.returncode}:\n{err[-3000:]}")
        return [self.workdir(n) for n in names]

    def export(self, name: str, *args: str) -> pathlib.Path:
        """An export (`python -m launch.export`) of run `name` with extra `args`, made once per session."""
        (workdir,) = self.workdirs(name)
        out = self.root / "exports" / "_".join([name, *(a.lstrip("-").replace("=", "-").replace(",", "-")
                                                        for a in args)])
        with self._lock():
            if not (out / "manifest.json").exists():
                proc = launch("export", f"--workdir={workdir}", f"--out={out}", *args)
                if proc.returncode:
                    raise AssertionError(f"export of {name} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        return out


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> Runs:
    """The session's runs, shared by every test module that imports this fixture and by every xdist worker."""
    return Runs(tmp_path_factory)
