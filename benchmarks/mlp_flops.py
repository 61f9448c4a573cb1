"""MLP 784-1024-1024-10 training step at batch 1024: achieved FLOP/s as a fraction of a measured matmul peak.

Peak: the best FLOP/s of a jitted float32 square matmul over a few sizes on this machine. The MLP step
(forward + backward + Adam) counts 3x the forward matmul FLOPs (forward, grad wrt inputs, grad wrt
weights); element-wise work is not counted. Steps run 20 per compiled call so dispatch is amortised.
Target: >= 50% of the matmul peak.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import median_seconds, table
from research.data.registry import Dataset
from research.models.mlp import MLP
from research.optim import OptimizerConfig
from research.tasks.supervised import SupervisedConfig, SupervisedTask

BATCH, SIZES, SCAN = 1024, (784, 1024, 1024, 10), 20


def matmul_peak(repeats: int) -> tuple[float, int]:
    best = (0.0, 0)
    for n in (512, 1024, 2048):
        a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
        f = jax.jit(lambda x: x @ x)
        t = median_seconds(lambda f=f, a=a: f(a).block_until_ready(), repeats, warmup=2)
        best = max(best, (2 * n**3 / t, n))
    return best


def main(repeats: int = 5) -> str:
    peak, n = matmul_peak(repeats)
    rng = np.random.default_rng(0)
    x = rng.random((BATCH * SCAN, 28, 28, 1), np.float32)
    y = rng.integers(0, 10, BATCH * SCAN).astype(np.int32)
    ds = Dataset("random", {"train": {"x": x, "y": y}, "test": {"x": x[:BATCH], "y": y[:BATCH]}}, num_classes=10)
    task = SupervisedTask(MLP(hidden=SIZES[1:-1], out_dim=10), ds, OptimizerConfig("adam", 1e-3),
                          SupervisedConfig("classify"), batch_size=BATCH, steps=10)
    state = jax.jit(task.init_state)(jax.random.PRNGKey(0))
    batches = {"x": jnp.asarray(x.reshape(SCAN, BATCH, 28, 28, 1)), "y": jnp.asarray(y.reshape(SCAN, BATCH))}
    run = jax.jit(lambda s, b: jax.lax.scan(task.train_step, s, b))
    holder = [state]

    def call():
        holder[0], m = run(holder[0], batches)
        jax.block_until_ready(m)

    t = median_seconds(call, repeats, warmup=1) / SCAN
    flops = 3 * 2 * BATCH * sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:], strict=True))
    achieved = flops / t
    return table("MLP 784-1024-1024-10, batch 1024, Adam: FLOP/s vs matmul peak (target >= 0.5)",
                 ["matmul peak GFLOP/s (n)", "MLP step ms", "MLP GFLOP/s", "fraction of peak"],
                 [[f"{peak / 1e9:.1f} ({n})", t * 1e3, achieved / 1e9, achieved / peak]])


if __name__ == "__main__":
    main()
