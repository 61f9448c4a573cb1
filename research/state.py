"""The train state every single-network family uses, and pytree helpers for it."""

from __future__ import annotations

import hashlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct


@struct.dataclass
class TrainState:
    """Everything a resumed run needs besides the data position: the step also seeds the per-step RNG."""

    step: jax.Array
    params: Any
    opt_state: Any
    model_state: Any  # non-trained collections, e.g. {"batch_stats": ...}; {} when none
    rng: jax.Array

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation, rng: jax.Array,
               model_state: Any = None) -> TrainState:
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                   model_state=model_state or {}, rng=rng)


def step_rng(state: Any, name: int = 0) -> jax.Array:
    """A fresh key for this step: the run's key folded with the step (and `name` for separate streams)."""
    return jax.random.fold_in(jax.random.fold_in(state.rng, state.step), name)


def fingerprint(tree: Any) -> str:
    """sha256 over every leaf's path, dtype, shape and bytes: equal iff the trees are bitwise equal."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]:
        arr = np.ascontiguousarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}|{arr.dtype}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def global_norm(tree: Any) -> jax.Array:
    return optax.global_norm(tree)
