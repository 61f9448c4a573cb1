"""The generic training loop every family runs on.

    flags -> config -> task (dataset + model + optimizer) -> train_and_evaluate(task, loop_config, workdir)

Resume order: the workdir's latest checkpoint, else a fresh init from the seed. The loop owns everything
that is not the family's math: the mesh and shardings, restoring and saving checkpoints (with the data
position), periodic logging / evaluation / checkpointing by steps, metrics fetched one step late so the host
never stalls dispatch, the NaN/Inf guard (stops with an error naming the step; the last good checkpoint is
kept), progress, and `final.json`.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import time
from typing import Any, Protocol

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from research import parallel
from research.checkpoint import Checkpointer
from research.data.pipeline import Batch, Pipeline
from research.errors import ConfigError, NonFiniteError
from research.progress import Progress
from research.state import fingerprint
from research.workdir import Workdir
from research.writers import MetricWriter

log = logging.getLogger("research")


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    steps: int
    seed: int = 0
    log_every: int = 100
    eval_every: int = 0          # 0: evaluate only at the end
    checkpoint_every: int = 1000  # 0: only at the end
    keep_checkpoints: int = 3
    async_checkpoints: bool = True
    progress_bar: bool | None = None  # None: a bar when stderr is a terminal

    def validate(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"--steps must be positive, got {self.steps}")
        for name in ("log_every", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if self.log_every == 0:
            raise ConfigError("--log_every must be positive")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"--keep_checkpoints must be >= 1, got {self.keep_checkpoints}")


@dataclasses.dataclass
class EvalContext:
    """What a task's evaluation may use: where it is, and where pictures go."""

    step: int
    mesh: Mesh
    writer: MetricWriter
    workdir: pathlib.Path


class Task(Protocol):
    """A family's math, as the loop sees it. Both `init_state` and `train_step` are pure and get jitted."""

    def init_state(self, rng: jax.Array) -> Any: ...

    def train_step(self, state: Any, batch: Batch) -> tuple[Any, dict[str, jax.Array]]: ...

    def train_pipeline(self, seed: int, sharding: NamedSharding) -> Pipeline: ...

    def evaluate(self, state: Any, ctx: EvalContext) -> dict[str, float]: ...

    def params(self, state: Any) -> Any: ...


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def abstract_state(task: Task, rng: jax.Array, mesh: Mesh) -> tuple[Any, Any]:
    """(shapes/dtypes/shardings of the task's state, the shardings alone): replicated over `mesh`."""
    rep = parallel.replicated(mesh)
    shapes = jax.eval_shape(task.init_state, rng)
    shardings = jax.tree.map(lambda _: rep, shapes)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, shardings)
    return abstract, shardings


def restore_latest(task: Task, workdir: Workdir, seed: int = 0, mesh: Mesh | None = None) -> tuple[Any, int]:
    """(state, step) of the workdir's latest checkpoint, for entries that sample or evaluate without training."""
    mesh = mesh or parallel.make_mesh()
    ckpt = Checkpointer(workdir.checkpoints, async_save=False)
    try:
        step = ckpt.latest_step()
        if step is None:
            raise ConfigError(f"no checkpoint in {workdir.checkpoints}; train first")
        state, _ = ckpt.restore(step, abstract_state(task, jax.random.PRNGKey(seed), mesh)[0])
    finally:
        ckpt.close()
    return state, step


def train_and_evaluate(task: Task, cfg: LoopConfig, workdir: Workdir, mesh: Mesh | None = None) -> dict[str, Any]:
    """Train `task` to `cfg.steps` in `workdir` (resuming if it holds a checkpoint); returns final.json's dict."""
    cfg.validate()
    mesh = mesh or parallel.make_mesh()
    chief = jax.process_index() == 0
    t_start = time.perf_counter()

    # ---- State: abstract shapes first, then restore or init, everything replicated over the mesh.
    init_rng, data_seed = jax.random.PRNGKey(cfg.seed), cfg.seed
    rep = parallel.replicated(mesh)
    abstract, state_sharding = abstract_state(task, init_rng, mesh)
    pipeline = task.train_pipeline(data_seed, parallel.batch_sharding(mesh))
    ckpt = Checkpointer(workdir.checkpoints, keep=cfg.keep_checkpoints, async_save=cfg.async_checkpoints)
    start = ckpt.latest_step() or 0
    if start > cfg.steps:
        raise ConfigError(f"workdir {workdir.path} already holds a checkpoint at step {start} > --steps={cfg.steps}")
    elapsed0, window0 = 0.0, []
    if start:
        state, meta = ckpt.restore(start, abstract)
        pipeline.restore(meta["data"])
        elapsed0 = float(meta.get("elapsed", 0.0))
        window0 = list(meta.get("log_window", []))
        log.info("resumed from %s at step %d", workdir.checkpoints / str(start), start)
    else:
        state = jax.jit(task.init_state, out_shardings=state_sharding)(init_rng)

    previous = workdir.read_final() if chief else None
    if previous and previous.get("step") == cfg.steps and start == cfg.steps:
        log.info("run already complete at step %d: %s", cfg.steps, previous.get("metrics"))
        ckpt.close()
        return previous

    writer = MetricWriter(workdir.path, resume_step=start, enabled=chief)
    step_fn = jax.jit(task.train_step, out_shardings=(state_sharding, rep), donate_argnums=0)
    progress = Progress(cfg.steps, start, bar=cfg.progress_bar)
    elapsed = lambda: elapsed0 + time.perf_counter() - t_start
    window: list[dict[str, float]] = window0  # train metrics since the last log line
    pending: tuple[int, Any] | None = None
    last_train: dict[str, float] = {}

    def drain() -> None:
        """Fetch the metrics of the last dispatched step, check them, and log at boundaries."""
        nonlocal pending, last_train
        if pending is None:
            return
        done, device_metrics = pending
        pending = None
        metrics = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
        bad = {k: v for k, v in metrics.items() if not np.isfinite(v)}
        if bad:
            raise NonFiniteError(f"training stopped at step {done}: non-finite {bad}; the last good checkpoint "
                                 f"is step {ckpt.latest_step() or 'none'} in {workdir.checkpoints}")
        window.append(metrics)
        if _due(done, cfg.log_every) or done == cfg.steps:
            last_train = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
            window.clear()
            writer.elapsed = elapsed()
            writer.scalars(done, "train", last_train)
            progress.report(done, last_train)

    def evaluate(step: int) -> dict[str, float]:
        writer.elapsed = elapsed()
        metrics = task.evaluate(state, EvalContext(step, mesh, writer, workdir.path))
        writer.scalars(step, "test", metrics)
        progress.write(f"eval step {step}: " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        return metrics

    def save(step: int) -> None:
        ckpt.save(step, state, {"data": pipeline.position, "elapsed": elapsed(), "log_window": window})

    # ---- Loop.
    test_metrics: dict[str, float] | None = None
    try:
        for step in range(start, cfg.steps):
            batch = next(pipeline)
            state, device_metrics = step_fn(state, batch)
            drain()  # the previous step's metrics: by now its computation has finished
            pending = (step + 1, device_metrics)
            done = step + 1
            boundary = _due(done, cfg.checkpoint_every) or _due(done, cfg.eval_every) or done == cfg.steps
            if boundary:
                drain()
            progress.update(done)
            if _due(done, cfg.eval_every) or done == cfg.steps:
                test_metrics = evaluate(done)
            if (_due(done, cfg.checkpoint_every) or done == cfg.steps) and done != start:
                save(done)
        drain()
        if test_metrics is None:  # resumed exactly at the end: evaluate the restored state
            test_metrics = evaluate(cfg.steps)
    finally:
        progress.close()
        ckpt.close()
        writer.close()

    final = {"step": cfg.steps, "metrics": test_metrics, "train_metrics": last_train,
             "params_sha256": fingerprint(task.params(state)), "wall_seconds": round(elapsed(), 3),
             "num_devices": int(mesh.devices.size), "num_processes": jax.process_count()}
    log.info("final step %d params_sha256=%s metrics=%s", cfg.steps, final["params_sha256"], test_metrics)
    if chief:
        workdir.write_final(final)
    return final
