"""Data parallelism with `jax.jit` over a `('data', 'model')` mesh: batches sharded over `data`.

Why not `jax.pmap`: since JAX 0.8 it is in maintenance mode (a wrapper over jit + shard_map). With jit over
a mesh the same program runs on 1 device, 8 fake CPU devices or many hosts; XLA inserts the gradient
all-reduce because the batch is sharded and the params are not. The `model` axis (size 1 unless a run asks
for model parallelism) and the rules that split the state over it are in research/sharding.py.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from research.errors import ConfigError

DATA_AXIS = "data"
MODEL_AXIS = "model"


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
    """Join a multi-process run when configured by arguments or by `JAX_COORDINATOR_ADDRESS`,
    `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`. Returns whether this is a multi-process run."""
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("JAX_PROCESS_ID"):
        process_id = int(os.environ["JAX_PROCESS_ID"])
    given = [coordinator_address is not None, num_processes is not None, process_id is not None]
    if not any(given):
        return False
    if not all(given):
        raise ConfigError("multi-process runs need all of --coordinator_address, --num_processes and --process_id "
                          "(or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)")
    if not 0 <= process_id < num_processes:
        raise ConfigError(f"--process_id={process_id} is outside [0, --num_processes={num_processes})")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
    return True


def enable_compilation_cache(path: str, min_compile_seconds: float = 0.3) -> None:
    """Keep compiled XLA programs in `path` so a restart, a second run or a sweep trial skips compilation."""
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def make_mesh(devices: Sequence[jax.Device] | None = None, *, model: int = 1, data: int = 0) -> Mesh:
    """A `(data, model)` mesh over `devices` (default: every device of every process, in process order); `data`
    0 means all devices / `model`. Each row of `model` devices belongs to one process, so the model axis's
    collectives never leave a host. ConfigError when the shape does not fit the devices."""
    devices = sorted(jax.devices() if devices is None else devices, key=lambda d: d.process_index)  # stable
    n = len(devices)
    asked = f"mesh data:{data or 'auto'},model:{model}"
    if data and data * model != n:
        raise ConfigError(f"{asked} asks for {data * model} devices, but this run has {n}; data x model must equal "
                          f"the device count")
    if n % model:
        raise ConfigError(f"{asked}: a model axis of {model} does not divide this run's {n} devices")
    grid = np.array(devices).reshape(n // model, model)
    if any(len({d.process_index for d in row}) > 1 for row in grid):
        raise ConfigError(f"{asked}: the model axis would span hosts ({jax.process_count()} processes with "
                          f"{jax.local_device_count()} devices each); use a model axis that divides "
                          f"{jax.local_device_count()}")
    return Mesh(grid, (DATA_AXIS, MODEL_AXIS), axis_types=(AxisType.Auto, AxisType.Auto))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the mesh."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_divisible(global_batch: int, mesh: Mesh, what: str = "--batch_size") -> None:
    n = mesh.devices.size
    if global_batch % n:
        raise ConfigError(f"{what}={global_batch} does not divide by the {n} devices of the mesh; "
                          f"use a multiple of {n}")
    if global_batch % jax.process_count():
        raise ConfigError(f"{what}={global_batch} does not divide by the {jax.process_count()} processes")


def process_rows(global_batch: int) -> slice:
    """The rows of a global batch that this process feeds (processes own contiguous blocks)."""
    per = global_batch // jax.process_count()
    return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def to_global(local: Any, sharding: NamedSharding) -> Any:
    """Assemble global arrays from this process's rows (every leaf batch-major)."""
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local)


def to_replicated(tree: Any, mesh: Mesh) -> Any:
    """Copy host arrays (identical on every process) to every device of the mesh."""
    rep = replicated(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(rep, np.asarray(x), np.shape(x)), tree)


def to_host(tree: Any) -> Any:
    """Fetch (possibly multi-process) global arrays to numpy on every process."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)
