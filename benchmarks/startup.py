"""Time from the command to the first completed training step, for each quickstart flagfile: cold (empty
compilation cache) and warm (the same cache again). Whole-process wall time, imports and data loading included.

`python -m benchmarks.startup --breakdown [--family mlp] [--cache DIR]` says where that time goes instead: the
quickstart runs in a child process whose launch module, library functions and JAX's compile events are timed
(function entry and exit, no profiler), printed as a timeline from the command to the first completed step.
Run it twice with the same `--cache` for the warm picture.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import pathlib
import subprocess
import sys
import tempfile
import time

from benchmarks.timing import REPO, launch, table

QUICKSTARTS = {"mlp": "experiments/mlp/quickstart.flags", "gan": "experiments/gan/quickstart.flags",
               "autoencoder": "experiments/autoencoder/quickstart.flags", "rnn": "experiments/rnn/quickstart.flags"}


def main(repeats: int = 1, steps: int = 20) -> str:
    rows = []
    for module, flagfile in QUICKSTARTS.items():
        if not (REPO / flagfile).exists():
            rows.append([module, "missing", "", ""])
            continue
        with tempfile.TemporaryDirectory(prefix="xla-cache-") as cache:
            args = [f"--flagfile={flagfile}", f"--steps={steps}", f"--compilation_cache_dir={cache}",
                    "--eval_every=0", f"--checkpoint_every={steps}", f"--log_every={steps}"]
            cold = launch(module, args)["to_first_step"]
            warm = min(launch(module, args)["to_first_step"] for _ in range(max(repeats, 1)))
            rows.append([module, cold, warm, cold / warm])
            assert pathlib.Path(cache).exists()
    return table("Command to first training step (s): cold vs warm compilation cache",
                 ["quickstart", "cold s", "warm s", "cold / warm"], rows)


# ---- where the time to the first step goes

# (module, object, attribute, label): timed from entry to exit. Class attributes wrap every instance's method.
SPANS = [
    ("research.sharding", None, "make_mesh", "mesh"),
    ("research.data.registry", "DataConfig", "load", "dataset (load / build, its imports)"),
    ("research.loop", None, "abstract_state", "abstract state (eval_shape of init)"),
    ("research.workdir", "Workdir", "create", "workdir"),
    ("research.workdir", "Workdir", "lock", "workdir"),
    ("research.workdir", "Workdir", "check_dataset", "workdir"),
    ("research.workdir", "Workdir", "check_flags", "workdir"),
    ("research.workdir", "Workdir", "write_flags", "workdir"),
    ("research.workdir", "Workdir", "write_dataset", "workdir"),
    ("research.workdir", "Workdir", "write_config", "workdir"),
    ("research.workdir", "Workdir", "read_final", "workdir"),
    ("research.checkpoint", "Checkpointer", "__init__", "checkpoints (manager, restore check)"),
    ("research.checkpoint", "Checkpointer", "latest_step", "checkpoints (manager, restore check)"),
    ("research.checkpoint", "Checkpointer", "restore_latest", "checkpoints (manager, restore check)"),
    ("research.sharding", None, "memory_report", "memory report"),
    ("research.loop", "_Batches", "__init__", "batches (dataset to device)"),
    ("research.writers", "MetricWriter", "__init__", "metric writer (tensorboardX)"),
    ("research.progress", "Progress", "__init__", "progress"),
]
JAX_EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "jax: tracing",
              "/jax/core/compile/jaxpr_to_mlir_module_duration": "jax: lowering to MLIR",
              "/jax/core/compile/backend_compile_duration": "jax: XLA compile or compilation-cache load"}


def _breakdown_child(family: str, argv: list[str]) -> None:
    """Run launch.<family>'s main() with argv, print `SPANS <json>`: [label, start, end] in unix seconds."""
    spans: list[list] = [["python up (interpreter, site)", None, time.time()]]

    def timed(owner, name: str, label: str) -> None:
        inner = getattr(owner, name)

        def wrapper(*args, **kwargs):
            t = time.time()
            try:
                return inner(*args, **kwargs)
            finally:
                spans.append([label, t, time.time()])

        setattr(owner, name, wrapper)

    t = time.time()
    mod = importlib.import_module(f"launch.{family}")
    common = importlib.import_module("launch.common")
    spans.append(["import launch module (absl, flags)", t, time.time()])
    t = time.time()
    from launch.cli import parse_flags

    parse_flags([f"launch.{family}", *argv])
    spans.append(["parse flags", t, time.time()])

    setup = common.setup_runtime

    def setup_runtime():
        t = time.time()
        setup()  # imports JAX
        spans.append(["setup_runtime (imports jax; compilation cache)", t, time.time()])
        from jax import monitoring

        monitoring.register_event_duration_secs_listener(
            lambda event, duration, **_: spans.append([JAX_EVENTS[event], time.time() - duration, time.time()])
            if event in JAX_EVENTS else None)

    common.setup_runtime = setup_runtime
    config_from_flags = mod.config_from_flags

    def config():
        t = time.time()
        out = config_from_flags()  # imports the family, the loop, the data registry (flax, optax, ...)
        spans.append(["config_from_flags (imports the library)", t, time.time()])
        for module, owner, name, label in SPANS:
            m = importlib.import_module(module)
            timed(getattr(m, owner) if owner else m, name, label)
        fam = importlib.import_module(f"research.families.{family}")
        timed(fam, "build", "family build (dataset, model, evaluators)")
        return out

    mod.config_from_flags = config

    class FirstCall(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("first call done"):
                spans.append(["FIRST STEP DONE", None, record.created])

    logging.getLogger("research").setLevel(logging.INFO)
    logging.getLogger("research").addHandler(FirstCall())
    logging.getLogger("absl").setLevel(logging.WARNING)
    mod.main()
    print("SPANS " + json.dumps(spans), flush=True)


def breakdown(family: str = "mlp", cache: str | None = None, steps: int = 20) -> str:
    """Where the time from the command to the first completed step goes, for one quickstart (one run)."""
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        args = [f"--flagfile={QUICKSTARTS[family]}", f"--steps={steps}", "--eval_every=0",
                f"--checkpoint_every={steps}", f"--log_every={steps}", f"--workdir={tmp}/run", "--progress=log",
                f"--compilation_cache_dir={cache if cache is not None else tmp + '/xla'}"]
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "benchmarks.startup", f"--breakdown_child={family}", "--", *args],
                              cwd=REPO, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("SPANS ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"breakdown of {family} failed:\n{proc.stderr[-2000:]}")
    spans = json.loads(lines[-1][len("SPANS "):])
    first = next(end for label, _, end in spans if label == "FIRST STEP DONE") - t0
    spans[0][1] = t0
    rows, totals = [], {}
    for label, start, end in sorted((s for s in spans if s[1] is not None), key=lambda s: s[1]):
        if start - t0 > first:
            continue
        d = end - start
        totals[label] = totals.get(label, 0.0) + d
    for label, d in sorted(totals.items(), key=lambda kv: -kv[1]):
        rows.append([label, d, d / first])
    warm = "given cache" if cache else "empty cache (cold)"
    return table(f"{family} quickstart: command -> first completed step {first:.2f} s ({warm}); spans may nest "
                 f"(jax events happen inside the library's phases), so shares do not add up to 1",
                 ["phase (summed over calls before the first step)", "s", "share of command -> first step"], rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--breakdown", action="store_true", help="where the time to the first step goes")
    parser.add_argument("--family", action="append", choices=list(QUICKSTARTS), help="--breakdown: these")
    parser.add_argument("--cache", help="--breakdown: compilation cache dir (default: a fresh, empty one)")
    parser.add_argument("--breakdown_child", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.breakdown_child:
        _breakdown_child(args.breakdown_child, [a for a in rest if a != "--"])
    elif args.breakdown:
        for family in args.family or ["mlp", "rnn"]:
            breakdown(family, args.cache)
    else:
        main()
