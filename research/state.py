"""The train state every single-network family uses, and pytree helpers for it.

Exponential moving averages of parameters (`--ema_decay`): `init_ema` turns a task's state (a `TrainState`, a
`GANState`, ...) into the same state with one more field, `ema`, holding {field name: moving average of that field},
e.g. {"params": ..., "model_state": ...}; `update_ema` advances it after every optimizer step, and evaluators read
the averaged model as `ema_view(state)`. The extra field lives in a subclass made once per state class
(`with_ema_field`) rather than in the classes themselves: with EMA off a state has exactly the fields, leaves and
checkpoint layout it had before EMA existed (Orbax refuses to restore a checkpoint into a state with a field the
checkpoint lacks, even a None one), and its bits do not change.
"""

from __future__ import annotations

import dataclasses
import functools
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


@functools.cache
def with_ema_field(cls: type) -> type:
    """The struct dataclass `cls` plus a last field `ema` ({field: moving average}); one class per `cls`, so that
    every state of a run has the same pytree structure."""
    namespace = {"__annotations__": {"ema": Any}, "ema": struct.field(default=None),
                 "__module__": cls.__module__, "__qualname__": f"{cls.__qualname__}WithEMA"}
    return struct.dataclass(type(f"{cls.__name__}WithEMA", (cls,), namespace))


def init_ema(state: Any, decay: float, fields: tuple[str, ...] = ("params", "model_state")) -> Any:
    """`state` with a field `ema` starting at the current value of each of `fields` when `decay` > 0; `state`
    itself (no new field, no new leaves) when `decay` is 0."""
    if not decay:
        return state
    values = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    return with_ema_field(type(state))(**values, ema={name: getattr(state, name) for name in fields})


def ema_average(average: Any, new: Any, decay: float) -> Any:
    """decay * average + (1 - decay) * new for every floating leaf (`optax.incremental_update`); other leaves
    (counters) take `new`."""
    def leaf(avg, value):
        if jnp.issubdtype(jnp.result_type(value), jnp.floating):
            return optax.incremental_update(value, avg, 1.0 - decay)
        return value

    return jax.tree.map(leaf, average, new)


def update_ema(state: Any, decay: float) -> Any:
    """`state` with each moving average in `ema` advanced towards its field's current value: call it after the
    optimizer step. `state` itself when it keeps no EMA."""
    if getattr(state, "ema", None) is None:
        return state
    return state.replace(ema={name: ema_average(avg, getattr(state, name), decay) for name, avg in state.ema.items()})


def ema_view(state: Any) -> Any:
    """`state` with every averaged field replaced by its moving average: the model the `ema_` metrics evaluate."""
    return state.replace(**state.ema)


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
