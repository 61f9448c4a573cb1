"""Model parallelism's price in step time and what it saves in memory: the MLP 784-1024-1024-10 train step (Adam,
batch 1024, 10 steps per compiled call, the loop's own compiled call) on 8 fake CPU devices, data:8 against
data:4,model:2 (fsdp rules, and the tensor rules), with the parameter + optimizer-state bytes each device holds
(measured from the arrays' shards).

The 8 devices are fake: they share this machine's cores, so the collectives model parallelism adds (all-gathers
of the parameters, gradient all-reduces) cost time and buy no extra compute; on CPU the point is the memory
column. Runs itself in a child process, because the device count is fixed when JAX starts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

BATCH, SIZES, SCAN = 1024, (784, 1024, 1024, 10), 10
MESHES = (("data:8", {}), ("data:4,model:2", {"data": 4, "model": 2}),
          ("data:4,model:2", {"data": 4, "model": 2, "rules": "tensor"}))


def main(repeats: int = 5) -> str:
    """Time the meshes in a child process with 8 fake CPU devices; returns (and prints) its table."""
    from benchmarks.timing import REPO

    env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") +
                                       " --xla_force_host_platform_device_count=8").strip()}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.model_parallel", "--child", f"--repeats={repeats}"],
                          cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"benchmarks.model_parallel child failed:\n{proc.stderr[-2000:]}")
    print(proc.stdout, flush=True)
    return proc.stdout


def _child(repeats: int) -> str:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.timing import median_seconds, table
    from research import sharding
    from research.data.registry import Dataset
    from research.loop import LoopConfig, _compiled_call, abstract_state
    from research.models.mlp import MLP
    from research.optim import OptimizerConfig
    from research.sharding import MeshConfig
    from research.tasks.supervised import SupervisedConfig, SupervisedTask

    if jax.device_count() != 8:
        raise RuntimeError(f"needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8), has "
                           f"{jax.device_count()}")
    rng = np.random.default_rng(0)
    x = rng.random((BATCH * SCAN, SIZES[0]), np.float32)
    y = rng.integers(0, SIZES[-1], BATCH * SCAN).astype(np.int32)
    ds = Dataset("random", {"train": {"x": x, "y": y}, "test": {"x": x[:BATCH], "y": y[:BATCH]}}, num_classes=10)
    task = SupervisedTask(MLP(hidden=SIZES[1:-1], out_dim=SIZES[-1]), ds, OptimizerConfig("adam", 1e-3),
                          SupervisedConfig("classify"), batch_size=BATCH, steps=10)
    rows, base = [], None
    for name, spec in MESHES:
        cfg = LoopConfig(steps=SCAN, steps_per_call=SCAN, mesh=MeshConfig(**spec))
        mesh = sharding.make_mesh(cfg.mesh)
        abstract, shardings = abstract_state(task, jax.random.PRNGKey(0), mesh, cfg)
        use = sharding.use_shardings(abstract, mesh, cfg.mesh)
        call = _compiled_call(task, cfg, mesh, False, shardings, True, use)
        batches = jax.device_put({"x": jnp.asarray(x.reshape(SCAN, BATCH, -1)), "y": jnp.asarray(y.reshape(SCAN, -1))},
                                 sharding.batch_sharding(mesh, cfg.mesh, leading=1))
        holder = [jax.jit(task.init_state, out_shardings=shardings)(jax.random.PRNGKey(0))]
        memory = sharding.memory_report(holder[0])["params_and_opt_state"]

        def step(call=call, batches=batches, holder=holder):
            holder[0], metrics = call(holder[0], None, batches)
            jax.block_until_ready(metrics)

        seconds = median_seconds(step, repeats, warmup=1) / SCAN
        base = base or (seconds, memory)
        rows.append([name, cfg.mesh.rules, seconds * 1e3, seconds / base[0], f"{memory / 2**20:.2f}",
                     memory / base[1]])
    return table(f"MLP 784-1024-1024-10, Adam, batch {BATCH}, {SCAN} steps per call, 8 fake CPU devices: step time "
                 f"and parameter + optimizer bytes per device", ["mesh", "rules", "ms / step", "time vs data:8",
                                                                 "MiB per device", "memory vs data:8"], rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", action="store_true", help="(internal) time in this process")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    _child(args.repeats) if args.child else main(args.repeats)
