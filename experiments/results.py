"""Documented numbers from the code that ships: the README's and the docs' result tables, regenerated from runs.

    python -m experiments.results                       # run what is missing (the cheap runs), print the blocks
    python -m experiments.results --write               # ... and rewrite them in the docs
    python -m experiments.results --only=gan_mnist --write     # one block, long runs included
    python -m experiments.results --list                # the blocks, their runs and commands

Every block lives in a doc between `<!-- results:NAME -->` and `<!-- /results:NAME -->` (HTML comments: invisible
when rendered) and is rewritten whole; edit this file, not the block. A block is a table (one row per run), a
sentence, or a command's output. Each run is a launch command with its own workdir under `--runs_dir`; a workdir
whose `final.json` reached the run's `--steps` is read as it is (its `metrics.jsonl`, `dataset.json`), otherwise
the command runs first (resuming what is there). `--rerun` starts every selected run afresh (`--overwrite`).

Which runs run: by default the cheap ones (about `CHEAP_MINUTES` or less here); a long run runs only when its block
is named with `--only` (or with `--all`). A table row whose run neither ran nor has a finished workdir keeps the
row the doc already has, with its own "run at" cell: long reproductions carry the commit they were run at.

What a regenerated row records: the commit the run was made at (`git rev-parse --short HEAD`, `+` when research/,
launch/ or experiments/ had uncommitted changes) and the machine load (1-minute load average, sampled every 2 s
while it ran), kept in `<runs_dir>/results.json`. Runs use one CPU device: `--xla_force_host_platform_device_count`
is removed from XLA_FLAGS, so numbers are those of the commands as the docs print them. `wall` in tables is the
loop's `wall_seconds` from final.json (compilation included; process start-up and imports not).

`CHECKS` are short runs whose numbers appear in the docs too (a quickstart's first evaluation); the slow test
tests/test_results.py runs them and asserts the docs hold exactly what they print.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CHEAP_MINUTES = 5.0
DEVICE_COUNT_FLAG = re.compile(r"--xla_force_host_platform_device_count=\d+")


# ---- runs ------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Run:
    """A launch command and the workdir name it runs in; `minutes`: about how long it takes here."""

    name: str
    module: str
    args: tuple[str, ...]
    minutes: float

    @property
    def cheap(self) -> bool:
        return self.minutes <= CHEAP_MINUTES

    def command(self, workdir: str | os.PathLike) -> list[str]:
        return [sys.executable, "-m", f"launch.{self.module}", *self.args, f"--workdir={workdir}"]

    def shown(self, runs_dir: str = "/tmp/results") -> str:
        """The command as a doc prints it."""
        return " ".join(["python", "-m", f"launch.{self.module}", *self.args, f"--workdir={runs_dir}/{self.name}"])

    @property
    def steps(self) -> int | None:
        for arg in reversed(self.args):  # a later flag overrides a flagfile's
            if arg.startswith("--steps="):
                return int(arg.split("=", 1)[1])
        for arg in self.args:
            if arg.startswith("--flagfile="):
                for line in (REPO / arg.split("=", 1)[1]).read_text().splitlines():
                    if line.startswith("--steps="):
                        return int(line.split("=", 1)[1])
        return None


@dataclasses.dataclass
class Result:
    """A finished run's outputs: final.json, dataset.json, metrics.jsonl and the ledger's entry (may be empty)."""

    run: Run
    final: dict[str, Any]
    facts: dict[str, Any]
    rows: list[dict[str, Any]]
    ledger: dict[str, Any]

    def metric(self, name: str) -> float:
        return float(self.final["metrics"][name])

    def train(self, name: str) -> float:
        return float(self.final["train_metrics"][name])

    def at(self, step: int, name: str, split: str = "test") -> float:
        """A metric of the evaluation (or log line) at `step`."""
        for row in self.rows:
            if row["step"] == step and row["split"] == split and name in row:
                return float(row[name])
        raise KeyError(f"{self.run.name}: no {split} {name} at step {step}")

    def split_sizes(self) -> str:
        splits = self.facts["splits"]
        return f"{splits['train']['x'][0]:,} / {splits['test']['x'][0]:,}"

    @property
    def commit(self) -> str:
        return self.ledger.get("commit", "?")

    @property
    def wall(self) -> str:
        return f"{self.final['wall_seconds']:,.0f} s"


def commit_id() -> str:
    """Short HEAD commit, with `+` when research/, launch/ or experiments/ have uncommitted changes."""
    git = lambda *a: subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "research", "launch", "experiments")
    return head + ("+" if dirty else "")


class Ledger:
    """`<runs_dir>/results.json`: per run, the commit and the load it ran at."""

    def __init__(self, runs_dir: Path):
        self.path = runs_dir / "results.json"
        self.entries: dict[str, dict[str, Any]] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def record(self, name: str, entry: dict[str, Any]) -> None:
        self.entries[name] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.entries, indent=1, sort_keys=True) + "\n")
        tmp.replace(self.path)


def run_env() -> dict[str, str]:
    """The environment of a run: this one, on one CPU device."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    flags = DEVICE_COUNT_FLAG.sub("", env.get("XLA_FLAGS", "")).strip()
    if flags:
        env["XLA_FLAGS"] = flags
    else:
        env.pop("XLA_FLAGS", None)
    return env


class LoadSampler:
    """The 1-minute load average, sampled every `every` seconds while in the block: (min, max)."""

    def __init__(self, every: float = 2.0):
        self.every, self.samples, self._stop = every, [os.getloadavg()[0]], threading.Event()

    def __enter__(self) -> LoadSampler:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    @property
    def range(self) -> tuple[float, float]:
        return round(min(self.samples), 1), round(max(self.samples), 1)


def read_result(run: Run, workdir: Path, ledger: Mapping[str, Any]) -> Result | None:
    """The run's outputs if its workdir holds a finished run (final.json at the run's steps), else None."""
    final_path = workdir / "final.json"
    if not final_path.exists():
        return None
    final = json.loads(final_path.read_text())
    if run.steps is not None and final.get("step") != run.steps:
        return None
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    facts = json.loads((workdir / "dataset.json").read_text())
    return Result(run, final, facts, rows, dict(ledger.get(run.name, {})))


def execute(run: Run, runs_dir: Path, ledger: Ledger, *, rerun: bool = False, log=print) -> Result:
    """Run `run` in `<runs_dir>/<name>` (resuming what is there; afresh with `rerun`) and read its outputs."""
    workdir = runs_dir / run.name
    command = run.command(workdir) + ["--progress=log"] + (["--overwrite"] if rerun else [])
    log(f"running {run.name}: {' '.join(command[1:])}")
    start = time.time()
    with LoadSampler() as load:
        proc = subprocess.run(command, cwd=REPO, env=run_env(), capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{run.name} exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
    ledger.record(run.name, {"command": run.shown(), "commit": commit_id(), "load": list(load.range),
                             "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(start)),
                             "process_seconds": round(time.time() - start, 1)})
    result = read_result(run, workdir, ledger.entries)
    if result is None:
        raise RuntimeError(f"{run.name} finished without a final.json at step {run.steps} in {workdir}")
    return result


# ---- blocks ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Row:
    key: str                                  # the first cell, which identifies the row
    run: Run
    cells: Callable[[Result], Sequence[str]]  # the other cells (before "run at")


@dataclasses.dataclass(frozen=True)
class Table:
    """A markdown table, one row per run, and a line under it saying how it was made."""

    name: str
    doc: str
    header: tuple[str, ...]
    rows: tuple[Row, ...]
    run_at: bool = True  # a "run at" column (the commit): rows may come from different commits

    @property
    def runs(self) -> tuple[Run, ...]:
        return tuple(r.run for r in self.rows)

    def render(self, results: Mapping[str, Result], old: str) -> str:
        header = [*self.header, *(["run at"] if self.run_at else [])]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        kept = {}
        for line in old.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("|") and cells:
                kept[cells[0]] = line
        fresh = []
        for row in self.rows:
            result = results.get(row.run.name)
            if result is not None:
                cells = [row.key, *row.cells(result), *([result.commit] if self.run_at else [])]
                lines.append("| " + " | ".join(cells) + " |")
                fresh.append(result)
            elif row.key in kept:
                lines.append(kept[row.key])
            else:
                lines.append("| " + " | ".join([row.key, *["not run yet"] * (len(header) - 1)]) + " |")
        lines += ["", stamp(self.name, fresh, old_rows=len(fresh) < len(self.rows))]
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Text:
    """A sentence or paragraph made of runs' numbers; kept as it is unless all its runs have results."""

    name: str
    doc: str
    runs: tuple[Run, ...]
    text: Callable[[Mapping[str, Result]], str]

    def render(self, results: Mapping[str, Result], old: str) -> str:
        if not all(r.name in results for r in self.runs):
            return old
        return self.text(results)


@dataclasses.dataclass(frozen=True)
class Output:
    """Commands whose output the doc shows verbatim (`$ command` then its stdout), e.g. the GAN evaluator's."""

    name: str
    doc: str
    commands: tuple[tuple[str, ...], ...]  # launch module and its flags
    minutes: float = 3.0
    runs: tuple[Run, ...] = ()

    def render(self, outputs: Sequence[str], load: tuple[float, float]) -> str:
        lines = ["```"]
        for args, out in zip(self.commands, outputs, strict=True):
            lines += [f"$ python -m launch.{' '.join(args)}", out.rstrip()]
        lines += ["```", "", f"(Printed by the commands above at commit {commit_id()}, load average {load[0]}–"
                             f"{load[1]}; regenerate: `python -m experiments.results --only={self.name} --write`.)"]
        return "\n".join(lines)


def stamp(name: str, fresh: Sequence[Result], old_rows: bool) -> str:
    """The line under a table: how it was made, the load during the fresh rows."""
    loads = [v for r in fresh for v in r.ledger.get("load", [])]
    load = f"load average {min(loads)}–{max(loads)} while they ran" if loads else "load not recorded"
    kept = " Rows whose \"run at\" is older were kept from an earlier run of their command." if old_rows else ""
    return (f"Regenerated by `python -m experiments.results --only={name} --write` (each row: its command with "
            f"`--workdir=/tmp/results/<row>`, 1 CPU device; wall: the loop's `wall_seconds`; {load}).{kept}")


# ---- formatting helpers ----------------------------------------------------------------------------------------

def pct(v: float, digits: int = 1) -> str:
    return f"{100 * v:.{digits}f}%"


def sig(v: float, n: int = 3) -> str:
    """`n` significant digits, fixed notation (0.00050, 0.0565, 2.33)."""
    if v == 0:
        return "0"
    from math import floor, log10

    decimals = max(0, n - 1 - floor(log10(abs(v))))
    return f"{v:.{decimals}f}"


# ---- what the docs show ----------------------------------------------------------------------------------------

def _r(name: str, module: str, flagfile: str, minutes: float, *extra: str) -> Run:
    return Run(name, module, (f"--flagfile=experiments/{flagfile}", *extra), minutes)


MLP_QUICK = _r("mlp_quickstart", "mlp", "mlp/quickstart.flags", 0.5)
MLP_RUNS = {
    "quickstart": (MLP_QUICK, "64-256-256-10, Adam", "—"),
    "mnist5k_800": (_r("mlp_mnist5k_800", "mlp", "mlp/mnist5k_800.flags", 2.0), "784-800-10, SGD+momentum, cosine",
                    "0.984 on full MNIST (Simard et al. 2003)"),
    "mnist1d": (_r("mlp_mnist1d", "mlp", "mlp/mnist1d.flags", 1.5), "40-100-100-10, Adam 1e-2, batch 100",
                "0.68 (Greydanus 2020)"),
    "diabetes_sgd": (_r("mlp_diabetes_sgd", "mlp", "mlp/diabetes_sgd.flags", 0.5), "10-100-1, SGD 0.01, MSE", "—"),
}


def _mlp_metric(r: Result) -> str:
    m = r.final["metrics"]
    return f"RMSE {m['rmse']:.1f}, R² {m['r2']:.3f}" if "rmse" in m else f"accuracy {m['accuracy']:.3f}"


README_MLP = Table(
    "readme_mlp", "README.md", ("flagfile", "dataset (train / test)", "model", "test metric", "paper", "steps", "wall"),
    tuple(Row(f"`experiments/mlp/{key}.flags`", run,
              lambda r, model=model, paper=paper: [f"{r.facts['name']} ({r.split_sizes()})", model, _mlp_metric(r),
                                                   paper, f"{r.final['step']:,}", r.wall])
          for key, (run, model, paper) in MLP_RUNS.items()),
    run_at=False)
README_QUICK = Text("readme_quickstart", "README.md", (MLP_QUICK,),
                    lambda rs: f"{rs['mlp_quickstart'].metric('accuracy'):.3f}")

GAN_QUICK = _r("gan_quickstart", "gan", "gan/quickstart.flags", 4.0)
GAN_ROWS = (
    ("quickstart.flags", GAN_QUICK, "DCGAN G/D width 16, z 64, Adam 5e-4"),
    ("dcgan_mnist.flags", _r("gan_dcgan_mnist", "gan", "gan/dcgan_mnist.flags", 20.0),
     "DCGAN width 64, Adam 2e-4 β1 0.5"),
    ("cgan_mnist.flags", _r("gan_cgan_mnist", "gan", "gan/cgan_mnist.flags", 7.0),
     "class-conditional DCGAN width 32"),
    ("wgan_mnist.flags", _r("gan_wgan_mnist", "gan", "gan/wgan_mnist.flags", 10.0),
     "WGAN, clip 0.01, n_critic 5, RMSProp 5e-5"),
    ("wgan_gp_mnist.flags", _r("gan_wgan_gp_mnist", "gan", "gan/wgan_gp_mnist.flags", 20.0),
     "WGAN-GP λ 10, n_critic 5, Adam 1e-4 (0.5, 0.9), no BN in D"),
)
GAN_MNIST = Table(
    "gan_mnist", "docs/gan.md",
    ("flagfile", "what", "steps", "frechet_lenet ↓", "classifier_score ↑", "class_kl ↓", "wall"),
    tuple(Row(f"`{key}`", run, lambda r, what=what: [
        what, f"{r.final['step']:,}", f"{r.metric('frechet_lenet'):.1f}", f"{r.metric('classifier_score'):.2f}",
        f"{r.metric('class_kl'):.3f}", r.wall]) for key, run, what in GAN_ROWS))
GAN_EVALUATOR = Output("gan_evaluator", "docs/gan.md", (("gan", "--mode=evaluator"),
                                                         ("gan", "--mode=evaluator", "--dataset=fashion_mnist")),
                       minutes=6.0)

RNN_QUICK = _r("rnn_quickstart", "rnn", "rnn/quickstart.flags", 1.5)
MNIST1D_GRU = _r("rnn_mnist1d_gru", "rnn", "rnn/mnist1d_gru.flags", 1.5)


def _rnn_quick_text(rs: Mapping[str, Result]) -> str:
    r = rs["rnn_quickstart"]
    return (f"at its first evaluation (step 250) the test MSE is already {sig(r.at(250, 'mse'))} against the "
            f"always-predict-1 baseline's {r.metric('baseline_mse'):.3f}, and {sig(r.metric('mse'))} after "
            f"{r.final['step']:,} steps ({r.wall} of training at load average {_load(r)}, commit {r.commit})")


def _load(r: Result) -> str:
    load = r.ledger.get("load")
    return f"{load[0]}–{load[1]}" if load else "not recorded"


RNN_ROWS = (
    ("`quickstart`", RNN_QUICK, "adding, T=50", "LSTM 64", lambda r: f"MSE **{sig(r.metric('mse'), 2)}**",
     lambda r: f"predict 1: {r.metric('baseline_mse'):.3f}"),
    ("`adding_T100_lstm`", _r("rnn_adding_T100_lstm", "rnn", "rnn/adding_T100_lstm.flags", 8.0), "adding, T=100",
     "LSTM 128", lambda r: f"MSE **{sig(r.metric('mse'))}**", lambda r: f"predict 1: {r.metric('baseline_mse'):.3f}"),
    ("`adding_T100_gru`", _r("rnn_adding_T100_gru", "rnn", "rnn/adding_T100_gru.flags", 5.0), "adding, T=100",
     "GRU 128", lambda r: f"MSE **{sig(r.metric('mse'))}**", lambda r: f"predict 1: {r.metric('baseline_mse'):.3f}"),
    ("`copy_T100_lstm`", _r("rnn_copy_T100_lstm", "rnn", "rnn/copy_T100_lstm.flags", 16.0), "copy, T=100",
     "LSTM 128", lambda r: f"CE **{r.metric('loss'):.3f}** nats/step, symbols {pct(r.metric('output_accuracy'))} "
     f"right", lambda r: f"memoryless: {r.metric('baseline_loss'):.3f}"),
    ("`copy_T100_gru`", _r("rnn_copy_T100_gru", "rnn", "rnn/copy_T100_gru.flags", 21.0), "copy, T=100",
     "GRU 128", lambda r: f"CE **{r.metric('loss'):.3f}** nats/step, symbols {pct(r.metric('output_accuracy'))} "
     f"right", lambda r: f"memoryless: {r.metric('baseline_loss'):.3f}"),
    ("`mnist1d_gru`", MNIST1D_GRU, "MNIST-1D", "bi-GRU 6, flatten head",
     lambda r: f"accuracy **{pct(r.metric('accuracy'))}** ({pct(r.at(5000, 'accuracy'))} at step 5,000)",
     lambda r: "paper: 91%"),
    ("`mnist1d_gru --num_seeds=5`", _r("rnn_mnist1d_gru_5seeds", "rnn", "rnn/mnist1d_gru.flags", 5.0,
                                        "--num_seeds=5"), "MNIST-1D", "same, seeds 0–4",
     lambda r: f"accuracy **{pct(r.metric('accuracy'))} ± {pct(r.final['metrics_std']['accuracy'])}** ("
     + ", ".join(f"{s['metrics']['accuracy']:.3f}" for s in r.final["seeds"]) + ")", lambda r: "paper: 91%"),
    ("`mnist1d_gru --head=last`", _r("rnn_mnist1d_gru_last", "rnn", "rnn/mnist1d_gru.flags", 2.0, "--head=last"),
     "MNIST-1D", "bi-GRU 6, last state", lambda r: f"accuracy **{pct(r.metric('accuracy'))}**", lambda r: "—"),
    ("`seq_mnist_lstm`", _r("rnn_seq_mnist_lstm", "rnn", "rnn/seq_mnist_lstm.flags", 4.0), "seq. MNIST (mnist_5k)",
     "LSTM 128", lambda r: f"accuracy **{pct(r.metric('accuracy'))}**", lambda r: "—"),
    ("`forecast_lstm`", _r("rnn_forecast_lstm", "rnn", "rnn/forecast_lstm.flags", 1.5), "forecast, T=100", "LSTM 64",
     lambda r: f"MSE **{r.metric('mse'):.3f}**", lambda r: f"persistence: {r.metric('baseline_mse'):.3f}"),
    ("`char_lm_lstm`", _r("rnn_char_lm_lstm", "rnn", "rnn/char_lm_lstm.flags", 10.0), "Tiny Shakespeare",
     "2 × LSTM 128", lambda r: f"validation **{r.metric('bits_per_char'):.2f} bits/char** (perplexity "
     f"{r.metric('perplexity'):.2f})", lambda r: "—"),
)
RNN_RESULTS = Table(
    "rnn_results", "docs/rnn.md",
    ("flagfile", "task", "model", "our test metric", "baseline / paper", "steps", "wall"),
    tuple(Row(key, run, lambda r, task=task, model=model, metric=metric, base=base: [
        task, model, metric(r), base(r), f"{r.final['step']:,}", r.wall])
          for key, run, task, model, metric, base in RNN_ROWS))
RNN_QUICKSTART = Text("rnn_quickstart", "docs/rnn.md", (RNN_QUICK,), _rnn_quick_text)

AE_QUICK = _r("ae_quickstart", "autoencoder", "autoencoder/quickstart.flags", 1.5)
AE_ROWS = (
    ("quickstart", AE_QUICK, "`--flagfile=experiments/autoencoder/quickstart.flags`", "16 (ReLU)"),
    ("quickstart, linear code", _r("ae_quickstart_linear", "autoencoder", "autoencoder/quickstart.flags", 1.5,
                                   "--code_activation=identity"),
     "`--flagfile=experiments/autoencoder/quickstart.flags --code_activation=identity`", "16"),
    ("deep_hinton", _r("ae_deep_hinton", "autoencoder", "autoencoder/deep_hinton.flags", 8.0),
     "`--flagfile=experiments/autoencoder/deep_hinton.flags`", "30"),
    ("conv", _r("ae_conv", "autoencoder", "autoencoder/conv.flags", 5.0),
     "`--flagfile=experiments/autoencoder/conv.flags`", "30"),
    ("denoising", _r("ae_denoising", "autoencoder", "autoencoder/denoising.flags", 4.0),
     "`--flagfile=experiments/autoencoder/denoising.flags`", "30"),
    ("vae", _r("ae_vae", "autoencoder", "autoencoder/vae.flags", 4.0), "`--flagfile=experiments/autoencoder/vae.flags`",
     "2"),
)


def _ae_cells(r: Result, flags: str, code: str) -> list[str]:
    m = r.final["metrics"]
    if "denoise_sq_error" in m:
        ours = f"{m['sq_error']:.2f} (clean input), **{m['denoise_sq_error']:.2f}** (corrupted input)"
        pca = f"{m['pca_sq_error']:.2f} (clean), {m['pca_denoise_sq_error']:.2f} (corrupted)"
        train = f"{r.train('sq_error'):.2f} (corrupted input)"
    else:
        digits = 3 if m["sq_error"] < 1 else 2
        ours = f"**{m['sq_error']:.{digits}f}**" + (" (posterior mean)" if "elbo" in m else "")
        pca = f"{m['pca_sq_error']:.{digits}f}"
        train = f"{r.train('sq_error'):.{digits}f}" + (" (sampled code)" if "elbo" in m else "")
    return [flags, r.facts["name"], code, ours, pca, train, r.wall]


AE_RESULTS = Table(
    "ae_results", "docs/autoencoder.md",
    ("run", "flags", "data", "code", "test sq_error AE", "PCA same code", "train sq_error AE", "wall"),
    tuple(Row(key, run, lambda r, flags=flags, code=code: _ae_cells(r, flags, code))
          for key, run, flags, code in AE_ROWS))
AE_QUICKSTART = Text(
    "ae_quickstart", "docs/autoencoder.md", (AE_QUICK,),
    lambda rs: (f"At its first evaluation (step 1,000) the test sq_error is "
                f"{rs['ae_quickstart'].at(1000, 'sq_error'):.3f} (PCA with the same 16-dimensional code: "
                f"{rs['ae_quickstart'].metric('pca_sq_error'):.3f}); after {rs['ae_quickstart'].final['step']:,} "
                f"steps {rs['ae_quickstart'].metric('sq_error'):.3f} (commit {rs['ae_quickstart'].commit})."))
AE_VAE = Text("ae_vae", "docs/autoencoder.md", (AE_ROWS[-1][1],),
              lambda rs: (f"The VAE's test ELBO is {rs['ae_vae'].metric('elbo'):.1f} nats per image (KL "
                          f"{rs['ae_vae'].metric('kl'):.2f} nats)").replace("-", "−"))

BLOCKS: dict[str, Table | Text | Output] = {b.name: b for b in (
    README_QUICK, README_MLP, GAN_MNIST, GAN_EVALUATOR, RNN_QUICKSTART, RNN_RESULTS, AE_QUICKSTART, AE_RESULTS,
    AE_VAE)}


@dataclasses.dataclass(frozen=True)
class Check:
    """A short run whose number the doc block `block` shows: `value(result)` must appear in it verbatim."""

    block: str
    run: Run
    value: Callable[[Result], str]


CHECKS = (
    Check("readme_mlp", MLP_QUICK, lambda r: f"accuracy {r.metric('accuracy'):.3f}"),
    Check("rnn_quickstart", dataclasses.replace(RNN_QUICK, name="rnn_quickstart_250", args=(*RNN_QUICK.args,
                                                                                            "--steps=250")),
          lambda r: f"the test MSE is already {sig(r.at(250, 'mse'))} "),
    Check("ae_quickstart", dataclasses.replace(AE_QUICK, name="ae_quickstart_1000", args=(*AE_QUICK.args,
                                                                                        "--steps=1000")),
          lambda r: f"the test sq_error is {r.at(1000, 'sq_error'):.3f} "),
)


# ---- docs ------------------------------------------------------------------------------------------------------

def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- results:{re.escape(name)} -->)(.*?)(<!-- /results:{re.escape(name)} -->)", re.S)


def block_text(doc: str | Path, name: str) -> str:
    """The current content of block `name` in `doc` (a path relative to the repository)."""
    text = (REPO / doc).read_text()
    match = _pattern(name).search(text)
    if match is None:
        raise KeyError(f"{doc} has no block {name!r} (<!-- results:{name} --> ... <!-- /results:{name} -->)")
    return match.group(2).strip("\n")


def write_block(doc: str, name: str, content: str) -> bool:
    """Replace block `name` in `doc` with `content`; whether the file changed."""
    path = REPO / doc
    text = path.read_text()
    old = _pattern(name).search(text)
    if old is None:
        raise KeyError(f"{doc} has no block {name!r}")
    inline = "\n" not in old.group(2)
    body = content if inline else f"\n{content}\n"
    new = text[:old.start(2)] + body + text[old.end(2):]
    if new != text:
        path.write_text(new)
    return new != text


# ---- main ------------------------------------------------------------------------------------------------------

def generate(names: Sequence[str], runs_dir: Path, *, long_runs: bool, rerun: bool, write: bool,
             log=print) -> dict[str, str]:
    """Render (and with `write` rewrite) the blocks `names`; returns {name: content}."""
    ledger = Ledger(runs_dir)
    results: dict[str, Result] = {}
    contents: dict[str, str] = {}
    for name in names:
        block = BLOCKS[name]
        if isinstance(block, Output):
            outputs = []
            with LoadSampler() as load:
                for args in block.commands:
                    log(f"running python -m launch.{' '.join(args)}")
                    proc = subprocess.run([sys.executable, "-m", f"launch.{args[0]}", *args[1:]], cwd=REPO,
                                          env=run_env(), capture_output=True, text=True)
                    if proc.returncode:
                        raise RuntimeError(f"{args} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
                    outputs.append(proc.stdout)
            contents[name] = block.render(outputs, load.range)
        else:
            for run in block.runs:
                if run.name in results:
                    continue
                done = None if rerun else read_result(run, runs_dir / run.name, ledger.entries)
                if done is None and (run.cheap or long_runs):
                    done = execute(run, runs_dir, ledger, rerun=rerun, log=log)
                if done is not None:
                    results[run.name] = done
            contents[name] = block.render(results, block_text(block.doc, name))
        if write and write_block(block.doc, name, contents[name]):
            log(f"rewrote {name} in {block.doc}")
    return contents


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=sorted(BLOCKS), help="these blocks (repeatable), long "
                        "runs included")
    parser.add_argument("--all", action="store_true", help="every block with every run, long ones included")
    parser.add_argument("--write", action="store_true", help="rewrite the blocks in the docs")
    parser.add_argument("--rerun", action="store_true", help="run every selected run afresh (--overwrite)")
    parser.add_argument("--runs_dir", default=str(Path(tempfile.gettempdir()) / "results"),
                        help="where the runs' workdirs and results.json are")
    parser.add_argument("--list", action="store_true", help="print the blocks and their commands, run nothing")
    args = parser.parse_args(argv)
    names = args.only or list(BLOCKS)
    if args.list:
        for name in names:
            block = BLOCKS[name]
            print(f"{name} ({block.doc}):")
            runs = block.runs if not isinstance(block, Output) else ()
            for run in runs:
                print(f"  {'' if run.cheap else '[long] '}{run.shown()}")
            for cmd in getattr(block, "commands", ()):
                print(f"  python -m launch.{' '.join(cmd)}")
        return
    contents = generate(names, Path(args.runs_dir), long_runs=bool(args.only) or args.all, rerun=args.rerun,
                        write=args.write, log=lambda m: print(m, file=sys.stderr, flush=True))
    for name, content in contents.items():
        print(f"<!-- {name} ({BLOCKS[name].doc}) -->\n{content}\n")


if __name__ == "__main__":
    main()
