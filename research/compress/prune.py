"""Gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune") as an optax transformation.

google-research/jaxpruner implements this family of methods, but it cannot be installed with our JAX (it calls
`jax.tree_map`, which JAX removed), so this is written from the algorithm:

- Schedule: no pruning before `start`; at the pruning steps t = start, start + every, ..., and `end`, the target
  sparsity is s(t) = s_f (1 - (1 - (t - start) / (end - start))³) (the paper's cubic with initial sparsity 0);
  from `end` on the masks stay as they are, at s_f.
- Masks: at a pruning step each pruned array keeps its largest-magnitude weights. `scope="layer"`: every array
  loses the fraction s(t) of its own weights; `"global"`: one threshold over all pruned arrays together (layers
  with small weights lose more). Weights pruned earlier are zero, so they stay pruned (no regrowth).
- Exactly zero: the transformation comes last in the optax chain and replaces the update of every pruned weight
  w by -w, so w + update is exactly 0 after every step, whatever the optimizer's moments hold.
- State: the masks and a step counter live in the transformation's state, inside the optimizer state, so they
  are checkpointed with it and a resumed run is bitwise equal to an uninterrupted one. A run without pruning has
  no such state: its optimizer state, checkpoints and bits are what they were.

The k-th smallest magnitude is found by bisection over the float32 bit patterns (31 passes of a count), not by
sorting: on XLA:CPU sorting 266k values takes ~400 ms, the bisection ~6 ms (measured here).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.compress.config import PruneConfig
from research.errors import ConfigError
from research.sharding import path_name

_INF_BITS = 0x7F800000  # the bit pattern of +inf: every finite |w| is below it


def selected(params: Any, pattern: str) -> dict[str, Any]:
    """{path: leaf} of the arrays `pattern` (a regex searched in each leaf's path) selects, of ndim >= 2."""
    regex = re.compile(pattern)
    return {path_name(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
            if regex.search(path_name(p)) and np.ndim(leaf) >= 2}


def resolve(cfg: PruneConfig, total_steps: int) -> tuple[int, int, int]:
    """(start, end, every) in steps: unset start / end are 1/4 and 3/4 of the run; ConfigError if end > steps."""
    start = cfg.start if cfg.start is not None else total_steps // 4
    end = cfg.end if cfg.end is not None else max(3 * total_steps // 4, start)
    if end < start:
        raise ConfigError(f"--prune_end={end} is before --prune_start={start}")
    if end > total_steps:
        raise ConfigError(f"--prune_end={end} is past the run's last step (--steps={total_steps})")
    return start, end, cfg.every


def target_sparsity(step: jax.Array | int, sparsity: float, start: int, end: int) -> jax.Array:
    """Zhu & Gupta's s(step): 0 before `start`, s_f (1 - (1 - (step - start) / (end - start))³) up to `end`,
    s_f after it. Defined at every step; masks change only at the pruning steps (`is_pruning_step`)."""
    step = jnp.asarray(step, jnp.float32)
    if end == start:
        return jnp.where(step >= end, sparsity, 0.0).astype(jnp.float32)
    frac = jnp.clip((step - start) / (end - start), 0.0, 1.0)
    return (sparsity * (1.0 - (1.0 - frac) ** 3)).astype(jnp.float32)


def is_pruning_step(step: jax.Array | int, start: int, end: int, every: int) -> jax.Array:
    """True at start, start + every, ... up to end, and at end."""
    step = jnp.asarray(step)
    return (step >= start) & (step <= end) & (((step - start) % every == 0) | (step == end))


def kth_smallest(magnitudes: jax.Array, k: jax.Array) -> jax.Array:
    """The k-th smallest (1-based) of the non-negative float32 `magnitudes` (any shape), exact: bisection over
    their bit patterns, which order like the values for non-negative floats. k >= 1."""
    bits = jax.lax.bitcast_convert_type(magnitudes.astype(jnp.float32).ravel(), jnp.int32)

    def body(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        enough = jnp.sum(bits <= mid) >= k
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    lo, _ = jax.lax.fori_loop(0, 32, body, (jnp.int32(0), jnp.int32(_INF_BITS)))
    return jax.lax.bitcast_convert_type(lo, jnp.float32)


def magnitude_masks(weights: dict[str, jax.Array], sparsity: jax.Array, scope: str) -> dict[str, jax.Array]:
    """Boolean keep-masks pruning the fraction `sparsity` (floor of it, in weights) of smallest |w|: per array
    (`layer`) or over all arrays at once (`global`). Ties at the threshold are all pruned."""
    def keep(mags: dict[str, jax.Array]) -> dict[str, jax.Array]:
        n = sum(m.size for m in mags.values())
        k = jnp.floor(sparsity * n).astype(jnp.int32)
        flat = jnp.concatenate([m.ravel() for m in mags.values()])
        threshold = kth_smallest(flat, jnp.maximum(k, 1))
        return {name: jnp.where(k > 0, m > threshold, True) for name, m in mags.items()}

    mags = {name: jnp.abs(w).astype(jnp.float32) for name, w in weights.items()}
    if scope == "global":
        return keep(mags)
    return {name: keep({name: m})[name] for name, m in mags.items()}


class PruneState(NamedTuple):
    """Inside the optimizer state: updates applied so far and {parameter path: keep-mask} of the pruned arrays."""

    count: jax.Array
    masks: dict[str, jax.Array]


def magnitude_pruning(cfg: PruneConfig, total_steps: int) -> optax.GradientTransformation:
    """The optax transformation pruning the arrays `cfg.params` selects on Zhu & Gupta's schedule. Put it last in
    the chain (after the learning rate): it rewrites the final updates so that pruned weights end at exactly 0."""
    start, end, every = resolve(cfg, total_steps)

    def init(params):
        chosen = selected(params, cfg.params)
        if not chosen:
            raise ConfigError(f"--prune_params={cfg.params!r} selects no parameter array (of 2 or more dimensions)")
        return PruneState(jnp.zeros((), jnp.int32), {k: jnp.ones(jnp.shape(v), bool) for k, v in chosen.items()})

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("magnitude_pruning needs the parameters")
        step = state.count + 1  # the step these updates take the run to
        names = {}
        flat_p = {path_name(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
        flat_u, treedef = jax.tree_util.tree_flatten_with_path(updates)
        for i, (p, _) in enumerate(flat_u):
            name = path_name(p)
            if name in state.masks:
                names[name] = i
        candidate = {name: jnp.where(state.masks[name], flat_p[name] + flat_u[i][1], 0)
                     for name, i in names.items()}  # what the kept weights become; pruned ones stay 0

        masks = jax.lax.cond(is_pruning_step(step, start, end, every),
                             lambda: magnitude_masks(candidate, target_sparsity(step, cfg.sparsity, start, end),
                                                     cfg.scope),
                             lambda: state.masks)
        leaves = [u for _, u in flat_u]
        for name, i in names.items():
            leaves[i] = jnp.where(masks[name], leaves[i], -flat_p[name]).astype(leaves[i].dtype)
        return jax.tree_util.tree_unflatten(treedef, leaves), PruneState(step, masks)

    return optax.GradientTransformation(init, update)


def sparsity_report(params: Any, pattern: str) -> dict[str, float]:
    """Host-side: the fraction of exact zeros over the arrays `pattern` selects (`sparsity`), per array
    (`sparsity/<path>`), and their counts of nonzero and all weights (`nonzero_weights`, `weights`)."""
    arrays = {k: np.asarray(v) for k, v in selected(jax.device_get(params), pattern).items()}
    if not arrays:
        return {}
    zeros = {k: int(np.sum(a == 0)) for k, a in arrays.items()}
    total = sum(a.size for a in arrays.values())
    out = {"sparsity": sum(zeros.values()) / total, "nonzero_weights": float(total - sum(zeros.values())),
           "weights": float(total)}
    out.update({f"sparsity/{k}": zeros[k] / arrays[k].size for k in arrays})
    return out
