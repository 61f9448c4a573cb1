"""Several replicas of one model in one compiled program: vectorised seeds and red-blue model averaging.

A replicated run's state is the single-run state with a leading replica axis on every leaf.
- `--num_seeds=N`: replica i starts from exactly the state of the run `--seed=seed+i` (`init_each`) and
  reads the data in the order of seed + i: it is that run computed alongside the others by `jax.vmap`, equal
  to it up to float summation order (vmap batches the matmuls, so results may differ in the last bits, which
  adaptive optimizers can amplify over thousands of steps).
- `--red_blue`: two replicas start from the same initialisation, each trains on its own half of the training
  set, and every `fuse_every` steps both are set to the average of their parameters (optimizer states stay
  separate). This is model averaging with two replicas (as in local SGD / federated averaging), nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from research.errors import ConfigError


def stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def take(tree: Any, i: int) -> Any:
    """Replica `i` of a stacked state."""
    return jax.tree.map(lambda x: x[i], tree)


def seed_keys(seed: int, n: int) -> jax.Array:
    """The init keys of replicas seed, seed+1, ..., seed+n-1: each exactly the key of that seed's own run."""
    return jnp.stack([jax.random.PRNGKey(seed + i) for i in range(n)])


def init_each(init: Callable[[jax.Array], Any], seed: int, n: int) -> Any:
    """The stacked initial states of replicas seed..seed+n-1, each computed exactly as its own run computes it.

    A `lax.map` (one replica after the other), not a `jax.vmap`, for two reasons:
    - Under vmap the "rbg" keys the GAN family draws parameters with (`research.tasks.gan.param_key`) give
      different bits than in the single run, so replica i would not start where `--seed=seed+i` starts.
    - vmap turns each orthogonal initialiser's QR into one batched LAPACK call, and jaxlib 0.10.2 splits a
      batched LAPACK call over XLA:CPU's intra-op thread pool from inside a task of that pool and blocks on it:
      with as many such calls running at once as the pool has threads (2 here), every thread waits for the
      others and the first call never returns (gdb: all XLA Eigen threads in `jax::ParallelBatchMap` under
      `QrFactorization`). One replica at a time, each QR is unbatched, as in a single run (no single run hung here).
    """
    return jax.lax.map(init, seed_keys(seed, n))


def fuse(state: Any) -> Any:
    """Every replica's parameters set to the replicas' mean (a state with a `params` field)."""
    if not hasattr(state, "params"):
        raise ConfigError("--red_blue needs a task whose state has one set of `params` (not, e.g., a GAN)")
    mean = jax.tree.map(lambda p: jnp.broadcast_to(jnp.mean(p, axis=0, keepdims=True), p.shape), state.params)
    return state.replace(params=mean)


def mean_std(per_replica: Sequence[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and (population) standard deviation of each metric over replicas."""
    keys = per_replica[0].keys()
    values = {k: np.array([m[k] for m in per_replica], np.float64) for k in keys}
    return ({k: float(v.mean()) for k, v in values.items()}, {k: float(v.std()) for k, v in values.items()})
