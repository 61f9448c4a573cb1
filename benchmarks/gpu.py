"""The GPU suite: one prepared command for a GPU lent for a few minutes, printing ONE markdown table.

    python -m benchmarks.run --suite=gpu            # on the GPU (benchmarks/gpu.sh checks for it first)
    python -m benchmarks.run --suite=gpu --quick    # tiny sizes and repeats: a smoke test anywhere (the test)

Rows (medians over repeats; every ratio is measured in this same run):
- each family's quickstart (`experiments/<family>/quickstart.flags`) trained by the real loop
  (`research.loop.train_and_evaluate`): steps/s at one step per call, with `--steps_per_call=K` and with
  `--num_seeds=N` (seed-steps/s, i.e. N x steps/s), and for the MLP with `--compute_dtype=bfloat16`;
- the MLP step at a compute-bound size (784-1024-1024-10, batch 1024, as `mlp_flops`) in bfloat16 vs float32;
- the DCGAN 64x64 step and the 2-layer LSTM LM vs their PyTorch twins (`dcgan_torch`, `lstm_torch`), the
  twins moved to CUDA when PyTorch has it (rows skipped with a note when it does not).

Each family runs in a child process (`python -m benchmarks.gpu --family=NAME`) because every launch module
defines its own absl flags; the child reads the flagfile with that module's `config_from_flags()`, so the
configs are exactly the quickstarts'. Steps/s is the median over `repeats` logging intervals of one run, the
first interval (compilation) left out.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from unittest import mock

from benchmarks.timing import REPO, median_seconds

FAMILIES = ("mlp", "autoencoder", "gan", "rnn")
FLAGFILES = {f: f"experiments/{f}/quickstart.flags" for f in FAMILIES}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What one mode measures: logging interval and repeats of the loop runs, K, N, the kernel sizes."""

    log_every: int
    steps_per_call: int
    num_seeds: int
    batch_size: int | None  # None: the flagfile's
    gains: tuple[str, ...]  # the families whose --steps_per_call and --num_seeds runs are measured
    mlp: tuple[int, int, int, int, int]  # batch, in, hidden, hidden, out
    dcgan: dict  # benchmarks.dcgan_torch's constants
    lstm: dict   # benchmarks.lstm_torch's constants


FULL = Sizes(log_every=500, steps_per_call=100, num_seeds=8, batch_size=None, gains=FAMILIES,
             mlp=(1024, 784, 1024, 1024, 10), dcgan={}, lstm={})  # {}: dcgan_torch's, lstm_torch's own sizes
QUICK = Sizes(log_every=4, steps_per_call=2, num_seeds=2, batch_size=16, gains=("mlp",), mlp=(64, 64, 64, 64, 10),
              dcgan={"BATCH": 2, "NZ": 8, "WIDTH": 4, "SIZE": 16},
              lstm={"VOCAB": 50, "SMALL_VOCAB": 50, "EMB": 8, "HIDDEN": 8, "BPTT": 5, "BATCH": 2, "SCAN": 2})


# ---- one family's loop runs (in a child process)

def _loop_rate(family: str, config, intervals: int) -> float:
    """Median steps/s over `intervals` logging intervals of one run of `config` (the first, compiling, left out)."""
    from research import families, sharding
    from research.loop import train_and_evaluate
    from research.workdir import Workdir

    loop = config.loop
    config = dataclasses.replace(config, loop=dataclasses.replace(
        loop, steps=loop.log_every * (intervals + 1), eval_every=0, checkpoint_every=0, progress_bar=False))
    mesh = sharding.make_mesh(config.loop.mesh)
    run = families.family(family).build(config, mesh, evaluate=False)
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        train_and_evaluate(run.task, [], config.loop, Workdir(tmp), mesh)
        rows = [json.loads(line) for line in pathlib.Path(tmp, "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    pairs = list(zip(train, train[1:], strict=False))
    rates = [(b["step"] - a["step"]) / (b["elapsed"] - a["elapsed"]) for a, b in pairs if b["elapsed"] > a["elapsed"]]
    if len(rates) < len(pairs):  # an interval shorter than the log's millisecond resolution: the whole span
        span = train[-1]["elapsed"] - train[0]["elapsed"]
        rates = [(train[-1]["step"] - train[0]["step"]) / max(span, 1e-3)]
    return statistics.median(rates) if rates else math.nan


def family_rows(family: str, repeats: int, sizes: Sizes) -> list[list]:
    """[measurement, unit, value, baseline, ratio] rows for one family's quickstart (needs launch.<family>'s
    flags, so it runs alone in its process)."""
    import importlib

    from absl import flags

    from launch import common

    module = importlib.import_module(f"launch.{family}")
    flags.FLAGS([f"benchmarks.gpu:{family}", f"--flagfile={REPO / FLAGFILES[family]}",
                 f"--log_every={sizes.log_every}", *([f"--batch_size={sizes.batch_size}"] if sizes.batch_size else [])])
    common.setup_runtime()  # the persistent compilation cache, as the launch modules have it
    base = module.config_from_flags()
    with_loop = lambda **kw: dataclasses.replace(base, loop=dataclasses.replace(base.loop, **kw))
    one = _loop_rate(family, base, repeats)
    rows = [[f"{family} quickstart", "steps/s", one, "", ""]]
    if family in sizes.gains:
        k, n = sizes.steps_per_call, sizes.num_seeds
        many = _loop_rate(family, with_loop(steps_per_call=k), repeats)
        seeds = n * _loop_rate(family, with_loop(num_seeds=n), repeats)
        rows += [[f"{family} --steps_per_call={k} vs 1", "steps/s", many, one, many / one],
                 [f"{family} --num_seeds={n} vs 1", "seed-steps/s", seeds, one, seeds / one]]
    if family == "mlp":
        bf16 = dataclasses.replace(base, task=dataclasses.replace(base.task, compute_dtype="bfloat16"))
        half = _loop_rate(family, bf16, repeats)
        rows.append([f"{family} quickstart --compute_dtype=bfloat16 vs float32", "steps/s", half, one, half / one])
    return rows


def _start(family: str, repeats: int, quick: bool) -> subprocess.Popen:
    """Start `family_rows` in a fresh process (`_rows` collects its rows)."""
    cmd = [sys.executable, "-m", "benchmarks.gpu", f"--family={family}", f"--repeats={repeats}"]
    return subprocess.Popen([*cmd, *(["--quick"] if quick else [])], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _rows(proc: subprocess.Popen) -> list[list]:
    out, err = proc.communicate()
    lines = [line for line in out.splitlines() if line.startswith("ROWS ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{' '.join(proc.args)} exited {proc.returncode}:\n{err[-2000:]}")
    return json.loads(lines[-1][len("ROWS "):])


# ---- in-process kernels: the bf16 MLP step, DCGAN and LSTM vs PyTorch

def mlp_dtype_rows(repeats: int, sizes: Sizes) -> list[list]:
    """The SupervisedTask step of an MLP at a compute-bound size (`mlp_flops`'s), bfloat16 vs float32."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from research.data.registry import Dataset
    from research.models.mlp import MLP
    from research.optim import OptimizerConfig
    from research.tasks.supervised import SupervisedConfig, SupervisedTask

    batch, d_in, *hidden, out = sizes.mlp
    scan = 20
    rng = np.random.default_rng(0)
    x = rng.random((batch * scan, d_in), np.float32)
    y = rng.integers(0, out, batch * scan).astype(np.int32)
    ds = Dataset("random", {"train": {"x": x, "y": y}, "test": {"x": x[:batch], "y": y[:batch]}}, num_classes=out)
    batches = {"x": jnp.asarray(x.reshape(scan, batch, d_in)), "y": jnp.asarray(y.reshape(scan, batch))}
    rate = {}
    for dtype in ("float32", "bfloat16"):
        task = SupervisedTask(MLP(hidden=tuple(hidden), out_dim=out), ds, OptimizerConfig("adam", 1e-3),
                              SupervisedConfig("classify", compute_dtype=dtype), batch_size=batch, steps=10)
        run = jax.jit(lambda s, b, task=task: jax.lax.scan(task.train_step, s, b), donate_argnums=0)
        holder = [jax.jit(task.init_state)(jax.random.PRNGKey(0))]

        def call(run=run, holder=holder):
            holder[0], m = run(holder[0], batches)
            jax.block_until_ready(m)

        rate[dtype] = scan / median_seconds(call, repeats, warmup=1)
    name = f"mlp {d_in}-{'-'.join(map(str, hidden))}-{out}, batch {batch}: bfloat16 vs float32"
    return [[name, "steps/s", rate["bfloat16"], rate["float32"], rate["bfloat16"] / rate["float32"]]]


def _torch_device(quick: bool) -> tuple[str | None, str]:
    """(device for the PyTorch twins or None, why not): CUDA when PyTorch has it; the CPU only in --quick."""
    try:
        import torch
    except ImportError:
        return None, "PyTorch not installed (the `bench` extra)"
    if torch.cuda.is_available():
        return "cuda", ""
    return ("cpu", "") if quick else (None, f"PyTorch {torch.__version__} has no CUDA device")


def _moved(obj, device: str):
    """The twin with every module and tensor attribute moved to `device` (a module moves in place, so the
    optimizers built on its parameters still hold them)."""
    import torch

    for name, value in vars(obj).items():
        if isinstance(value, torch.nn.Module):
            value.to(device)
        elif isinstance(value, torch.Tensor):
            setattr(obj, name, value.to(device))
        elif isinstance(value, tuple) and value and all(isinstance(v, torch.Tensor) for v in value):
            setattr(obj, name, tuple(v.to(device) for v in value))
    return obj


@contextlib.contextmanager
def _twins_on(device: str):
    """`benchmarks.torch_twins`' TorchDCGAN and TorchLMTrainer built as usual, then moved to `device`, their
    `step` run with `device` as the default device (tensors a step creates, noise and labels, go there too), so
    `dcgan_torch.torch_twin` and `lstm_torch.torch_twin` time them on the GPU unchanged."""
    import torch

    from benchmarks import torch_twins

    def on_device(cls):
        def make(*args, **kwargs):
            twin = _moved(cls(*args, **kwargs), device)
            step = twin.step

            def step_on_device():
                with torch.device(device):
                    return step()  # returns loss.item(): waits for the device

            twin.step = step_on_device
            return twin

        return make

    cudnn = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # as pytorch/examples' DCGAN does
    try:
        with mock.patch.multiple(torch_twins, TorchDCGAN=on_device(torch_twins.TorchDCGAN),
                                 TorchLMTrainer=on_device(torch_twins.TorchLMTrainer)):
            yield
    finally:
        torch.backends.cudnn.benchmark = cudnn


def twin_rows(repeats: int, sizes: Sizes, quick: bool) -> tuple[list[list], str]:
    """DCGAN steps/s and LSTM LM tokens/s, ours vs the PyTorch twins: `dcgan_torch`'s and `lstm_torch`'s own
    `ours` and `torch_twin` at their sizes (in --quick, their size constants patched small)."""
    from benchmarks import dcgan_torch as d
    from benchmarks import lstm_torch as lm

    device, why = _torch_device(quick)
    with contextlib.ExitStack() as stack:
        for mod, patch in ((d, sizes.dcgan), (lm, sizes.lstm)):
            known = {k: v for k, v in patch.items() if hasattr(mod, k)}
            if known:
                stack.enter_context(mock.patch.multiple(mod, **known))
        from research.models.dcgan import DCGANGenerator

        upsample = DCGANGenerator.__dataclass_fields__["upsample"].default  # what launch.gan trains by default
        ours_gan = 1 / d.ours(repeats, upsample)
        single, scanned = lm.ours(repeats)
        theirs_gan = theirs_lm = math.nan
        if device:
            if device == "cpu":  # --quick on a CPU: one thread, so a busy machine does not stall PyTorch's workers
                import torch

                torch.set_num_threads(1)
            stack.enter_context(_twins_on(device))
            theirs_gan = 1 / d.torch_twin(repeats)
            theirs_lm = lm.torch_twin(repeats)
        where = f"PyTorch on {device}" if device else "PyTorch (skipped)"
        base = lambda v: v if device else "skipped"
        ratio = lambda a, b: a / b if device else ""
        gan_name = f"dcgan {d.SIZE}x{d.SIZE} (ngf=ndf={d.WIDTH}, batch {d.BATCH}, --upsample={upsample}) vs {where}"
        lm_name = (f"lstm LM (vocab {lm.VOCAB}, emb {lm.EMB}, hidden {lm.HIDDEN}, bptt {lm.BPTT}, batch "
                   f"{lm.BATCH}), {{}} step(s) per call vs {where}")
        rows = [[gan_name, "steps/s", ours_gan, base(theirs_gan), ratio(ours_gan, theirs_gan)],
                [lm_name.format(1), "tokens/s", single, base(theirs_lm), ratio(single, theirs_lm)],
                [lm_name.format(lm.SCAN), "tokens/s", scanned, base(theirs_lm), ratio(scanned, theirs_lm)]]
    return rows, (f"PyTorch rows skipped: {why}." if not device else "")


# ---- the suite

def main(repeats: int = 5, quick: bool = False) -> str:
    import jax

    sizes = QUICK if quick else FULL
    repeats = 2 if quick else repeats
    t0 = time.perf_counter()
    platform = jax.devices()[0].platform
    notes = []
    if platform != "gpu" and not quick:
        notes.append(f"WARNING: JAX sees no GPU (platform {platform}); these are not GPU numbers.")
    families = [f for f in FAMILIES if (REPO / FLAGFILES[f]).exists()]
    notes += [f"{FLAGFILES[f]} missing: {f} skipped." for f in FAMILIES if f not in families]
    # On the GPU one family at a time (timings); --quick is a smoke test: all at once, beside the kernels below.
    rows, running = [], [_start(f, repeats, quick) for f in families] if quick else []
    for family in [] if quick else families:
        rows += _rows(_start(family, repeats, quick))
        print(f"[{time.perf_counter() - t0:.0f} s] {family} done", file=sys.stderr, flush=True)
    kernels = mlp_dtype_rows(repeats, sizes)
    twins, note = twin_rows(repeats, sizes, quick)
    for proc in running:
        rows += _rows(proc)
    rows += kernels + twins
    if note:
        notes.append(note)
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
    device = jax.devices()[0]
    title = (f"### GPU suite{' (--quick: tiny sizes, not a measurement)' if quick else ''}: "
             f"{getattr(device, 'device_kind', platform)} ({platform}), jax {jax.__version__}, "
             f"medians over {repeats} repeats")
    lines = [title, "", "| measurement | unit | value | baseline | value / baseline |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    notes.append(f"Loop rows: the quickstart flagfiles trained by research.loop, steps/s between log lines every "
                 f"{sizes.log_every} steps (compilation excluded). Suite wall time {time.perf_counter() - t0:.0f} s.")
    text = "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"
    print(text, flush=True)
    return text


class _NoTorch:
    """An import finder refusing `torch` in the family children, which time JAX only: tensorboardX (the loop's
    writer) imports PyTorch whenever it is installed, seconds of CPU per child that nothing there uses. It leaves
    no entry in sys.modules, so libraries that look for a loaded torch (scipy's array API checks) see none."""

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (benchmarks.gpu child)", name=name)
        return None


def _child_main() -> None:
    parser = argparse.ArgumentParser(description="one family's rows of the GPU suite (a child of main())")
    parser.add_argument("--family", choices=FAMILIES, required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    import logging

    logging.getLogger("absl").setLevel(logging.WARNING)
    sys.meta_path.insert(0, _NoTorch())
    rows = family_rows(args.family, args.repeats, QUICK if args.quick else FULL)
    print("ROWS " + json.dumps(rows), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU with PyTorch
    _child_main()
