"""The generic training loop every family runs on.

    flags -> config -> task + evaluators (research/families) -> train_and_evaluate(task, evaluators, cfg, workdir)

Resume order: the workdir's newest readable checkpoint (unreadable ones are moved aside), else a fresh init from
the seed. The loop owns everything that is not the family's math: the mesh and shardings, restoring and saving
checkpoints (with the data position), periodic logging / evaluation / checkpointing by steps, metrics fetched
one call late so the host never stalls dispatch, the NaN/Inf guard (stops with an error naming the step; the
last good checkpoint is kept), stopping on SIGTERM/SIGINT with a checkpoint at the step reached
(research/preemption.py), progress, and handing metrics, pictures and `final.json` to the workdir's writer.

Speed (small models are dispatch-bound, so these matter more than FLOPs):
- `steps_per_call=K` runs K train steps in one compiled call (`lax.scan`); calls never cross a log, eval,
  checkpoint or fuse boundary, so those stay exact.
- `num_seeds=N` trains N replicas (seed, seed+1, ...) in one program (`jax.vmap` over the state); replica i
  has exactly the init and the data order of the run `--seed=seed+i` and equals it up to float summation
  order (vmap batches the matmuls: bitwise for some runs, last-bit drift amplified by Adam in others). `red_blue`
  trains two replicas from one init on the two halves of the training set and averages their parameters
  every `fuse_every` steps (model averaging; see research/replicas.py).
- In-memory datasets are copied to the devices once and batches are gathered there from indices. Arrays a
  dataset stores as uint8 codes (`Dataset.scales`: full-size images) stay codes on the devices, a quarter of
  float32's bytes; the compiled step decodes the gathered batch (`Pipeline.decode`) to exactly the float32
  values the host would compute.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from research import parallel, replicas, sharding
from research.checkpoint import Checkpointer
from research.data.pipeline import ArrayPipeline, Batch, Pipeline
from research.errors import ConfigError, Interrupted, NonFiniteError
from research.evaluators.base import EvalContext, Evaluator, merge
from research.preemption import StopSignal
from research.progress import Progress
from research.sharding import MeshConfig
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
    steps_per_call: int = 1
    num_seeds: int = 1
    red_blue: bool = False
    fuse_every: int = 0
    data_on_device: bool = True
    mesh: MeshConfig = MeshConfig()  # the device mesh and the rules laying the state out over it (layout only)
    ema_decay: float = 0.0       # > 0: tasks keep an EMA of the parameters (research/state.py); 0: off

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"--steps must be positive, got {self.steps}")
        if self.seed < 0:
            raise ConfigError(f"--seed must be >= 0, got {self.seed}")
        for name in ("eval_every", "checkpoint_every", "fuse_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name} must be >= 0, got {getattr(self, name)}")
        for name in ("log_every", "keep_checkpoints", "steps_per_call", "num_seeds"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.red_blue and self.num_seeds > 1:
            raise ConfigError("--red_blue trains its own two replicas; it cannot be combined with --num_seeds")
        if self.red_blue != (self.fuse_every > 0):
            raise ConfigError("--red_blue needs --fuse_every > 0, and --fuse_every applies only to --red_blue")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"--ema_decay must be in [0, 1) (0: off), got {self.ema_decay}")

    @property
    def replicas(self) -> int:
        return 2 if self.red_blue else self.num_seeds

    @property
    def vmapped(self) -> bool:
        return self.replicas > 1


class Task(Protocol):
    """A family's math, as the loop sees it. Both `init_state` and `train_step` are pure and get jitted; nothing
    here evaluates, draws or writes (that is `research/evaluators`)."""

    def init_state(self, rng: jax.Array) -> Any: ...

    def train_step(self, state: Any, batch: Batch) -> tuple[Any, dict[str, jax.Array]]: ...

    def train_pipeline(self, seed: int, sharding: NamedSharding) -> Pipeline: ...

    def params(self, state: Any) -> Any: ...


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def _eval_periods(evaluators: Sequence[Evaluator], cfg: LoopConfig) -> list[int]:
    """Each evaluator's period: its own `every`, or the loop's `eval_every`."""
    return [getattr(e, "every", 0) or cfg.eval_every for e in evaluators]


def _next_boundary(step: int, cfg: LoopConfig, eval_periods: Sequence[int]) -> int:
    """The first step after `step` at which the loop must stop a compiled call (log/eval/save/fuse/end)."""
    ends = [cfg.steps]
    for every in (cfg.log_every, cfg.checkpoint_every, cfg.fuse_every, *eval_periods):
        if every > 0:
            ends.append((step // every + 1) * every)
    return min(ends)


def _init_fn(task: Task, cfg: LoopConfig):
    """rng -> state, stacked over replicas when the run has several."""
    if not cfg.vmapped:
        return task.init_state
    if cfg.red_blue:
        return lambda rng: replicas.stack([task.init_state(rng)] * 2)  # one init, two copies
    return lambda rng: replicas.init_each(task.init_state, cfg.seed, cfg.num_seeds)  # rng: unused


def abstract_state(task: Task, rng: jax.Array, mesh: Mesh, cfg: LoopConfig | None = None) -> tuple[Any, Any]:
    """(shapes/dtypes/shardings of the run's state, the shardings alone): laid out over `mesh` by the rules of
    `cfg.mesh` (research/sharding.py; everything replicated when the mesh's model axis is 1). ConfigError when a
    model axis splits nothing."""
    cfg = cfg or LoopConfig(steps=1)
    shapes = jax.eval_shape(_init_fn(task, cfg), rng)
    shardings = sharding.state_shardings(shapes, mesh, cfg.mesh, replica_axis=cfg.vmapped)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, shardings)
    return abstract, shardings


def restore_latest(task: Task, workdir: Workdir, seed: int = 0, mesh: Mesh | None = None,
                   cfg: LoopConfig | None = None, replica: int = 0, step: int | None = None) -> tuple[Any, int]:
    """(state, step) of the workdir's latest checkpoint, for entries that sample or evaluate without training;
    `step`: the checkpoint at that step instead (ConfigError naming the saved steps if there is none).

    For a `--num_seeds` run (`cfg`) this is replica `replica`, the run of seed + replica; for a red-blue run, the
    fused model.
    """
    mesh = mesh or parallel.make_mesh()
    cfg = cfg or LoopConfig(steps=1)
    if replica and cfg.red_blue:
        raise ConfigError(f"the red-blue run in {workdir.path} is read as its fused model; --replica does not apply")
    if not 0 <= replica < cfg.num_seeds:
        raise ConfigError(f"--replica={replica}: the run in {workdir.path} trained replicas 0..{cfg.num_seeds - 1} "
                          f"(--num_seeds={cfg.num_seeds})")
    ckpt = Checkpointer(workdir.checkpoints, async_save=False)
    try:
        abstract = abstract_state(task, jax.random.PRNGKey(seed), mesh, cfg)[0]
        found = ckpt.restore_latest(abstract) if step is None else (step, *ckpt.restore_step(step, abstract))
    finally:
        ckpt.close()
    if found is None:
        raise ConfigError(f"no readable checkpoint in {workdir.checkpoints}; train first")
    step, state, _ = found
    if cfg.red_blue:
        state = replicas.fuse(state)
    return (replicas.take(state, replica) if cfg.vmapped else state), step


def _pipelines(task: Task, cfg: LoopConfig, sharding: NamedSharding) -> list[Pipeline]:
    if cfg.red_blue:
        base = task.train_pipeline(cfg.seed, sharding)
        if not isinstance(base, ArrayPipeline):
            raise ConfigError("--red_blue needs a training set in memory to split in halves")
        return list(base.halves(cfg.seed))
    return [task.train_pipeline(cfg.seed + i, sharding) for i in range(cfg.replicas)]


class _Batches:
    """Fetches the inputs of one compiled call: k steps x replicas, as indices (data on device) or data."""

    def __init__(self, pipelines: list[Pipeline], cfg: LoopConfig, mesh: Mesh):
        self.pipelines, self.cfg, self.mesh = pipelines, cfg, mesh
        first = pipelines[0]
        self.on_device = cfg.data_on_device and all(  # every replica reads the same arrays (not only one dict)
            isinstance(p, ArrayPipeline) and p.arrays.keys() == first.arrays.keys()
            and all(p.arrays[k] is first.arrays[k] for k in first.arrays) for p in pipelines)
        self.data = parallel.to_replicated(first.arrays, mesh) if self.on_device else None
        self.decode = first.decode  # uint8 codes -> float32 values, inside the compiled step

    def _stack(self, items: list, k: int | None) -> Any:
        """items[step][replica] -> arrays with leading [k] (if k) and [replicas] (if vmapped) axes."""
        rows = [jax.tree.map(lambda *r: np.stack(r), *per_step) if self.cfg.vmapped else per_step[0]
                for per_step in items]
        return jax.tree.map(lambda *s: np.stack(s), *rows) if k else rows[0]

    def fetch(self, k: int, scanned: bool) -> Any:
        n_lead = int(scanned) + int(self.cfg.vmapped)
        if self.on_device:
            idx = self._stack([[p.next_rows() for p in self.pipelines] for _ in range(k)], k if scanned else None)
            return parallel.to_replicated(idx, self.mesh)
        local = self._stack([[p.next_local() for p in self.pipelines] for _ in range(k)], k if scanned else None)
        return parallel.to_global(local, sharding.batch_sharding(self.mesh, self.cfg.mesh, n_lead))


def _compiled_call(task: Task, cfg: LoopConfig, mesh: Mesh, on_device: bool, state_sharding: Any, scanned: bool,
                   use_sharding: Any = None, decode: Callable[[Batch], Batch] | None = None):
    """jit of (state, data, xs) -> (state, metrics): one step, or a `lax.scan` over the leading axis of xs.
    `use_sharding`: the layout each step uses the state in (`sharding.use_shardings`; None: as it is stored).
    `decode`: turns the batch as fetched (uint8 codes) into the values the task trains on (None: as fetched)."""
    step = jax.vmap(task.train_step) if cfg.vmapped else task.train_step
    gathered = sharding.batch_sharding(mesh, cfg.mesh, int(cfg.vmapped))

    def one(state, data, x):
        if on_device:  # x holds row indices: gather the batch where the data already is
            x = jax.lax.with_sharding_constraint(jax.tree.map(lambda a: a[x], data), gathered)
        if decode is not None:
            x = decode(x)
        if use_sharding is not None:  # model parallelism: all-gather what the step uses whole
            state = jax.lax.with_sharding_constraint(state, use_sharding)
        return step(state, x)

    def call(state, data, xs):
        if scanned:
            return jax.lax.scan(lambda s, x: one(s, data, x), state, xs)
        return one(state, data, xs)

    jitted = jax.jit(call, donate_argnums=0, out_shardings=(state_sharding, parallel.replicated(mesh)))
    if sharding.model_size(mesh) == 1:
        return jitted

    def traced_with_whole_parameters(state, data, xs):  # research/sharding.py: `whole`
        with sharding.parameters_whole(mesh, cfg.mesh):
            return jitted(state, data, xs)

    return traced_with_whole_parameters


def train_and_evaluate(task: Task, evaluators: Sequence[Evaluator], cfg: LoopConfig, workdir: Workdir,
                       mesh: Mesh | None = None, on_start: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train `task` to `cfg.steps` in `workdir` (resuming from its newest readable checkpoint), evaluating with
    `evaluators`; returns final.json's dict. `on_start()` runs once the state is restored or initialised, before
    the loop writes anything (the launch modules record flags.txt, dataset.json and config.json there, so a
    checkpoint of another architecture is refused before any file changes). `mesh` defaults to `cfg.mesh`'s."""
    mesh = mesh or sharding.make_mesh(cfg.mesh)
    chief = jax.process_index() == 0
    t_start = time.perf_counter()
    eval_periods = _eval_periods(evaluators, cfg)

    # ---- State: abstract shapes first, then restore or init, laid out over the mesh (research/sharding.py).
    init_rng = jax.random.PRNGKey(cfg.seed)
    abstract, state_sharding = abstract_state(task, init_rng, mesh, cfg)
    use_sharding = sharding.use_shardings(abstract, mesh, cfg.mesh)
    pipelines = _pipelines(task, cfg, parallel.batch_sharding(mesh))
    ckpt = Checkpointer(workdir.checkpoints, keep=cfg.keep_checkpoints, async_save=cfg.async_checkpoints)
    latest = ckpt.latest_step() or 0
    if latest > cfg.steps:
        ckpt.close()
        raise ConfigError(f"workdir {workdir.path} already holds a checkpoint at step {latest} > --steps={cfg.steps}")
    found = ckpt.restore_latest(abstract, workdir.move_aside if chief else None)
    start, elapsed0, window0 = 0, 0.0, []
    if found:
        start, state, meta = found
        for pipeline, position in zip(pipelines, meta["data"], strict=True):
            pipeline.restore(position)
        elapsed0 = float(meta.get("elapsed", 0.0))
        window0 = list(meta.get("log_window", []))
        log.info("resumed from %s at step %d", workdir.checkpoints / str(start), start)
    else:
        state = jax.jit(_init_fn(task, cfg), out_shardings=state_sharding)(init_rng)
    memory = sharding.memory_report(state)
    log.info("mesh %s (%s rules): parameters + optimizer state %s on the largest device, %s unsplit",
             ",".join(f"{k}:{v}" for k, v in mesh.shape.items()), cfg.mesh.rules,
             sharding.mib(memory["params_and_opt_state"]), sharding.mib(memory["unsplit_params_and_opt_state"]))
    if on_start is not None:
        on_start()

    previous = workdir.read_final(move_unreadable=True) if chief else None
    if previous and previous.get("step") == cfg.steps and start == cfg.steps:
        log.info("run already complete at step %d: %s", cfg.steps, previous.get("metrics"))
        ckpt.close()
        return previous

    # ---- Compiled update and input.
    batches = _Batches(pipelines, cfg, mesh)
    scanned = cfg.steps_per_call > 1
    call = _compiled_call(task, cfg, mesh, batches.on_device, state_sharding, scanned, use_sharding, batches.decode)
    fuse = jax.jit(replicas.fuse, donate_argnums=0, out_shardings=state_sharding) if cfg.red_blue else None

    # ---- Writers and logging. The writer (TensorBoard's, whose import is seconds: tensorboardX imports PyTorch when
    # it is installed) is opened once the first call is done: nothing is written before, and the first step need
    # not wait for it. Opening it truncates metrics.jsonl to the restored step, before any line is written.
    writer: MetricWriter | None = None

    def open_writer() -> MetricWriter:
        nonlocal writer
        if writer is None:
            writer = MetricWriter(workdir, resume_step=start, reevaluate=start == cfg.steps, enabled=chief)
        return writer

    progress = Progress(cfg.steps, start, bar=cfg.progress_bar)
    elapsed = lambda: elapsed0 + time.perf_counter() - t_start
    window: list[dict[str, float]] = window0  # train metrics since the last log line
    pending: tuple[int, int, Any] | None = None
    last_train: dict[str, float] = {}

    def drain() -> None:
        """Fetch the metrics of the last dispatched call, check them, and log at boundaries."""
        nonlocal pending, last_train
        if pending is None:
            return
        first, k, device_metrics = pending
        pending = None
        host = {name: np.asarray(v, np.float64).reshape(k, -1) for name, v in jax.device_get(device_metrics).items()}
        for i in range(k):
            done = first + i
            bad = {name: float(v[i][~np.isfinite(v[i])][0]) for name, v in host.items()
                   if not np.all(np.isfinite(v[i]))}
            if bad:
                raise NonFiniteError(f"training stopped at step {done}: non-finite {bad}; the last good "
                                     f"checkpoint is step {ckpt.latest_step() or 'none'} in {workdir.checkpoints}")
            window.append({name: float(v[i].mean()) for name, v in host.items()})  # mean over replicas
            if _due(done, cfg.log_every) or done == cfg.steps:
                last_train = {name: float(np.mean([m[name] for m in window])) for name in window[0]}
                window.clear()
                open_writer().elapsed = elapsed()
                writer.scalars(done, "train", last_train)
                progress.report(done, last_train)

    # ---- Evaluation: every replica's metrics; replica 0's pictures and texts.
    def evaluate(step: int, due: Sequence[Evaluator]) -> tuple[dict[str, float], list[dict[str, float]]]:
        open_writer().elapsed = elapsed()
        full = sharding.to_use(state, use_sharding)  # model parallelism: the leaves evaluators use whole, gathered
        if cfg.red_blue:
            views = [replicas.take(replicas.fuse(full), 0)]
        elif cfg.vmapped:
            views = [replicas.take(full, i) for i in range(cfg.replicas)]
        else:
            views = [full]
        results = [merge(e.evaluate(v, EvalContext(step, mesh, pictures=i == 0)) for e in due)
                   for i, v in enumerate(views)]
        per = [r.metrics for r in results]
        metrics = per[0] if len(per) == 1 else replicas.mean_std(per)[0]
        writer.scalars(step, "test", metrics)
        if len(per) > 1:
            for i, m in enumerate(per):
                writer.scalars(step, f"test_seed{cfg.seed + i}", m)
        for name, image in results[0].images.items():
            writer.image(step, name, image)
        for name, fig in results[0].figures.items():
            writer.figure(step, name, fig)
        for name, text in results[0].texts.items():
            writer.text(step, name, text)
        progress.write(f"eval step {step}: " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        return metrics, per

    def save(step: int) -> None:
        ckpt.save(step, state, {"data": [p.position for p in pipelines], "elapsed": elapsed(),
                                "log_window": window})

    # ---- Loop: one compiled call per chunk of at most steps_per_call steps, never across a boundary.
    evaluated: tuple[dict[str, float], list[dict[str, float]]] | None = None
    with StopSignal() as stop:
        try:
            step = start
            while step < cfg.steps:
                k = min(cfg.steps_per_call, _next_boundary(step, cfg, eval_periods) - step)
                state, device_metrics = call(state, batches.data, batches.fetch(k, scanned))
                first_call = step == start
                if first_call:  # once: how long compilation and the first call took (benchmarks read this line)
                    jax.block_until_ready(device_metrics)
                    log.info("first call done: %.3f s after the loop started (unix time %.3f)",
                             time.perf_counter() - t_start, time.time())
                    open_writer()
                drain()  # the previous call's metrics: by now its computation has finished
                pending = (step + 1, k, device_metrics)
                step += k
                if first_call:
                    progress.start(step)
                due = [e for e, every in zip(evaluators, eval_periods, strict=True)
                       if _due(step, every) or step == cfg.steps]
                if due or step == cfg.steps or any(_due(step, e) for e in (cfg.checkpoint_every, cfg.fuse_every)):
                    drain()
                progress.update(step)
                if fuse is not None and _due(step, cfg.fuse_every):
                    state = fuse(state)
                if due:
                    result = evaluate(step, due)
                    if step == cfg.steps:
                        evaluated = result
                saved = _due(step, cfg.checkpoint_every) or step == cfg.steps
                if saved:
                    save(step)
                if stop.requested() and step < cfg.steps:
                    drain()  # the window saved with the checkpoint must include the last call's metrics
                    if not saved:
                        save(step)
                    raise Interrupted(f"stopped by {stop.name} at step {step}/{cfg.steps}; checkpoint saved in "
                                      f"{workdir.checkpoints}; run the same command to resume", stop.signum)
            drain()
            if evaluated is None:  # resumed exactly at the end: evaluate the restored state
                evaluated = evaluate(cfg.steps, evaluators)
        finally:
            progress.close()
            ckpt.close()
            if writer is not None:
                writer.close()

    # ---- final.json
    metrics, per = evaluated
    final = {"step": cfg.steps, "metrics": metrics, "train_metrics": last_train,
             "wall_seconds": round(elapsed(), 3), "num_devices": int(mesh.devices.size),
             "num_processes": jax.process_count(), "mesh": {**{k: int(v) for k, v in mesh.shape.items()},
                                                            "rules": cfg.mesh.rules},
             "bytes_per_device": sharding.memory_report(state)}
    host = lambda s: parallel.to_host(task.params(s))  # sharded over several processes: gathered first
    if cfg.red_blue:
        final["params_sha256"] = fingerprint(host(replicas.take(replicas.fuse(state), 0)))
        final["red_blue"] = {"fuse_every": cfg.fuse_every}
    else:
        final["params_sha256"] = fingerprint(host(state))
    if cfg.num_seeds > 1:
        final["metrics_std"] = replicas.mean_std(per)[1]
        final["seeds"] = [{"seed": cfg.seed + i, "metrics": m,
                           "params_sha256": fingerprint(host(replicas.take(state, i)))}
                          for i, m in enumerate(per)]
    log.info("final step %d params_sha256=%s metrics=%s", cfg.steps, final["params_sha256"], metrics)
    if chief:
        workdir.write_final(final)
    return final
