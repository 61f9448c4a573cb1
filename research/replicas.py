"""Several replicas of one model in one compiled program: vectorised seeds and red-blue model averaging.

A replicated run's state is the single-run state with a leading replica axis on every leaf.
- `--num_seeds=N`: replica i is initialised from `PRNGKey(seed + i)` and reads the data in the order of
  seed + i: it is the run `--seed=seed+i` computed alongside the others by `jax.vmap`, equal to it up to float
  summation order (vmap batches the matmuls, so results may differ in the last bits, which adaptive optimizers
  can amplify over thousands of steps).
- `--red_blue`: two replicas start from the same initialisation, each trains on its own half of the training
  set, and every `fuse_every` steps both are set to the average of their parameters (optimizer states stay
  separate). This is model averaging with two replicas (as in local SGD / federated averaging), nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
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
