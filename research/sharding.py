"""Model parallelism: the run's 2-D `('data', 'model')` mesh, the rules that lay the train state out over it, and
per-device memory measured from the arrays' shards.

A run's D x M devices form a mesh: `data` splits the batch, `model` splits the large arrays of the state (M
devices of one host). The rules choose one `PartitionSpec` per leaf of the train state from its path and shape
(as big_vision's `big_vision/sharding.py` does):

- `fsdp` (the default; FSDP / ZeRO-3): a leaf's largest dimension divisible by M is split over `model` (ties: the
  later dimension); leaves of fewer than `min_shard_size` elements, and leaves with no dimension divisible by M,
  stay replicated. The batch is split over both axes, so every device computes on its own rows; parameters are
  stored split and used whole (all-gathered where a step or an evaluator uses them, see `whole`), and the
  optimizer update runs split, each device on its part of the optimizer state.
- `tensor` (Megatron-style): in a chain of Dense layers (Flax's `Dense_<i>`), even-numbered kernels are split on
  their output features (column-parallel, with their biases) and odd-numbered ones on their input features
  (row-parallel: XLA all-reduces their outputs); recurrent layers' fused gate kernels and biases are split on the
  gate dimension. Every other leaf (convolutions, embeddings, heads) stays replicated. The batch is split over
  `data` only: the M devices of one data row share its rows and split the layers' work between them.

The optimizer state is laid out like its parameters: Adam's `mu` and `nu` of a parameter have the parameter's
path as their suffix and its shape, and the rules look at nothing else (patterns match the end of a path). With a
replica axis (`--num_seeds`, `--red_blue`) the rules see one replica's shape and the replica axis is never split.

The loop asks `state_shardings` for the state's layout (jit's `out_shardings` keeps the state there; XLA's SPMD
partitioner inserts the collectives; nothing here is a hand-written collective) and restores checkpoints into it:
Orbax reads a checkpoint into whatever shardings the abstract target carries, so a run saved on one mesh resumes
on another. With M = 1 every leaf is replicated and the batch split over `data`: exactly the data-parallel layout
and program of a run without a model axis (bitwise).
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import dataclasses
import math
import re
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from research import parallel
from research.errors import ConfigError

DATA, MODEL = parallel.DATA_AXIS, parallel.MODEL_AXIS
RULES = ("fsdp", "tensor")

# `tensor` rules: (regular expression searched in a leaf's path, the partition of its trailing dimensions).
TENSOR_RULES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    (r"(^|/)Dense_\d*[02468]/kernel$", (None, MODEL)),  # column-parallel: output features split
    (r"(^|/)Dense_\d*[02468]/bias$", (MODEL,)),
    (r"(^|/)Dense_\d*[13579]/kernel$", (MODEL, None)),  # row-parallel: input features split, outputs all-reduced
    (r"(^|/)Dense_\d*[13579]/bias$", ()),               # added after the all-reduce: replicated
    (r"(^|/)layer\d+_(fwd|bwd)/(w_i|w_h)$", (None, MODEL)),  # recurrent gate kernels: the fused gate dim split
    (r"(^|/)layer\d+_(fwd|bwd)/(b|b_hn)$", (MODEL,)),
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """How a run lays itself out on its devices (layout only: every mesh computes the same math)."""

    data: int = 0                 # devices along `data` (0: all devices / model)
    model: int = 1                # devices along `model`; they must belong to one process (host)
    rules: str = "fsdp"           # fsdp | tensor (see the module docstring)
    min_shard_size: int = 4096    # leaves with fewer elements stay replicated

    def __post_init__(self) -> None:
        if self.data < 0:
            raise ConfigError(f"the mesh's data axis must be positive, got data:{self.data}")
        if self.model < 1:
            raise ConfigError(f"the mesh's model axis must be positive, got model:{self.model}")
        if self.rules not in RULES:
            raise ConfigError(f"unknown --sharding_rules {self.rules!r}; choose one of {', '.join(RULES)}")
        if self.min_shard_size < 1:
            raise ConfigError(f"--min_shard_size must be >= 1, got {self.min_shard_size}")


def parse_mesh(text: str | None, model_parallel: int | None = None, *, rules: str = "fsdp",
               min_shard_size: int = 4096) -> MeshConfig:
    """`--mesh=data:D,model:M` (either axis may be left out) or `--model_parallel=M` as a MeshConfig."""
    if text and model_parallel is not None:
        raise ConfigError("give --mesh or --model_parallel, not both")
    sizes: dict[str, int] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, _, value = item.partition(":")
        name = name.strip()
        if name not in (DATA, MODEL):
            raise ConfigError(f"--mesh={text}: unknown axis {name!r}; the axes are {DATA} and {MODEL}")
        if name in sizes:
            raise ConfigError(f"--mesh={text}: axis {name!r} given twice")
        try:
            sizes[name] = int(value)
        except ValueError:
            raise ConfigError(f"--mesh={text}: {name} needs a size, as in {name}:2") from None
        if sizes[name] < 1:
            raise ConfigError(f"--mesh={text}: axis sizes must be positive")
    if text is not None and not sizes:
        raise ConfigError(f"--mesh={text!r} names no axis; use --mesh=data:D,model:M")
    if model_parallel is not None:
        if model_parallel < 1:
            raise ConfigError(f"--model_parallel must be >= 1, got {model_parallel}")
        sizes = {MODEL: model_parallel}
    return MeshConfig(data=sizes.get(DATA, 0), model=sizes.get(MODEL, 1), rules=rules, min_shard_size=min_shard_size)


def make_mesh(cfg: MeshConfig | None = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The mesh `cfg` describes over `devices` (default: all of them); ConfigError if it does not fit."""
    cfg = cfg or MeshConfig()
    return parallel.make_mesh(devices, model=cfg.model, data=cfg.data)


def model_size(mesh: Mesh) -> int:
    return int(dict(mesh.shape).get(MODEL, 1))


def batch_axes(mesh: Mesh, cfg: MeshConfig) -> str | tuple[str, ...]:
    """The mesh axes a batch's leading dimension is split over."""
    if model_size(mesh) == 1:
        return DATA
    return (DATA, MODEL) if cfg.rules == "fsdp" else DATA


def batch_sharding(mesh: Mesh, cfg: MeshConfig, leading: int = 0) -> NamedSharding:
    """Batches of the training loop: `leading` unsplit axes (steps of a scan, replicas), then the batch axis."""
    return NamedSharding(mesh, PartitionSpec(*[None] * leading, batch_axes(mesh, cfg)))


def path_name(path: Sequence[Any]) -> str:
    """'params/Dense_0/kernel' for a `tree_flatten_with_path` key path (the names checkpoints use)."""
    parts = []
    for entry in path:
        for attr in ("key", "idx", "name"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def _fsdp(shape: tuple[int, ...], model: int) -> tuple[str | None, ...]:
    """The largest dimension divisible by `model` split over it (ties: the later dimension); () if none is."""
    for dim in sorted(range(len(shape)), key=lambda d: (shape[d], d), reverse=True):
        if shape[dim] % model == 0:
            return tuple(MODEL if d == dim else None for d in range(len(shape)))
    return ()


def _table_spec(path: str, shape: tuple[int, ...], model: int) -> tuple[str | None, ...] | None:
    """The `tensor` table's partition of a leaf, () when its rule's dimension does not divide by `model`, None
    when no rule matches it."""
    for pattern, trailing in TENSOR_RULES:
        if re.search(pattern, path) and len(trailing) <= len(shape):
            lead = len(shape) - len(trailing)
            if any(a is not None and shape[lead + i] % model for i, a in enumerate(trailing)):
                return ()
            spec = (None,) * lead + trailing
            return spec if MODEL in spec else ()
    return None


def leaf_spec(path: str, shape: tuple[int, ...], model: int, cfg: MeshConfig) -> tuple[str | None, ...]:
    """The partition of one leaf of `shape` (one replica's) at `path`: an axis name or None per dimension, or ()
    for a replicated leaf."""
    if model == 1 or math.prod(shape) < cfg.min_shard_size:
        return ()
    if cfg.rules == "tensor":
        return _table_spec(path, shape, model) or ()
    return _fsdp(shape, model)


def state_shardings(shapes: Any, mesh: Mesh, cfg: MeshConfig, replica_axis: bool = False) -> Any:
    """A NamedSharding per leaf of `shapes` (the train state's shapes) by `cfg.rules`; with `replica_axis`, every
    leaf's leading axis is a replica axis and stays unsplit. ConfigError when M > 1 splits nothing at all."""
    model = model_size(mesh)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    specs = []
    for path, leaf in leaves:
        shape = tuple(leaf.shape)
        if replica_axis:
            spec = leaf_spec(path_name(path), shape[1:], model, cfg)
            spec = (None, *spec) if spec else ()
        else:
            spec = leaf_spec(path_name(path), shape, model, cfg)
        specs.append(spec)
    if model > 1 and not any(MODEL in spec for spec in specs):
        data = int(dict(mesh.shape)[DATA])
        raise ConfigError(f"mesh data:{data},model:{model} splits nothing: no array of the train state with at least "
                          f"{cfg.min_shard_size} elements (--min_shard_size) has a dimension divisible by {model}; "
                          f"use another --model_parallel or a smaller --min_shard_size")
    return treedef.unflatten([NamedSharding(mesh, PartitionSpec(*spec)) for spec in specs])


def use_shardings(abstract: Any, mesh: Mesh, cfg: MeshConfig) -> Any | None:
    """The layout the train step and the evaluators use the state in: with the fsdp rules every leaf but the
    optimizer state all-gathered (replicated); None (as stored) with the tensor rules or M = 1."""
    if model_size(mesh) == 1 or cfg.rules != "fsdp":
        return None
    rep = NamedSharding(mesh, PartitionSpec())
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: leaf.sharding if part(path_name(path)) == "opt_state" else rep, abstract)


# ---- parameters used whole (fsdp)
#
# Why the fsdp rules pin parameters whole where they are used instead of leaving XLA's sharding propagation free to
# split the computation around split parameters: on XLA:CPU (jaxlib 0.10.2) a convolution whose input is split
# spatially over `model` while its kernel is split over `model` too computes wrong values on a 4 x 2 mesh. The
# DCGAN generator hit it twice before this: its first upsampling after a Dense whose kernel was split on its outputs
# (wrong samples), and, with the parameters gathered but the gradients left to propagation, its kernel gradients
# (wrong updates; the critic's were right). docs/parallel.md has a reproducer without this codebase. So inside a
# step the parameters, their gradients and the updated parameters are whole and only the batch and the optimizer
# state are split: FSDP's memory at rest, data parallelism's computation. The loop constrains the state it hands a
# step (`use_shardings`); `whole` pins what a step computes itself, and `research.optim.gradient_step` calls it on
# the parameters it differentiates, their gradients and the parameters it returns (so a GAN's critic, updated
# inside the step and then used by the generator's loss, is whole too).

_WHOLE: contextvars.ContextVar[NamedSharding | None] = contextvars.ContextVar("whole", default=None)


@contextlib.contextmanager
def parameters_whole(mesh: Mesh, cfg: MeshConfig) -> Iterator[None]:
    """While a step is traced (the loop calls its compiled step inside this): `whole` replicates over `mesh` when
    the fsdp rules split something over it, and does nothing otherwise."""
    token = _WHOLE.set(NamedSharding(mesh, PartitionSpec())
                       if model_size(mesh) > 1 and cfg.rules == "fsdp" else None)
    try:
        yield
    finally:
        _WHOLE.reset(token)


def whole(tree: Any) -> Any:
    """`tree` (parameters, inside a traced step) constrained to be replicated under `parameters_whole` with the
    fsdp rules; `tree` itself otherwise (pure data parallelism, the tensor rules, outside the loop)."""
    rep = _WHOLE.get()
    return tree if rep is None else jax.lax.with_sharding_constraint(tree, jax.tree.map(lambda _: rep, tree))


# ---- memory

PARTS = ("params", "opt_state", "other")


def part(path: str) -> str:
    """Which part of a train state a leaf belongs to, by its top-level field: `params` (TrainState.params, the GAN's
    g_params / d_params), `opt_state` (opt_state, g_opt_state, d_opt_state), or `other` (step, RNG, batch norm
    statistics, recurrent carries)."""
    top = path.split("/", 1)[0]
    return "params" if top.endswith("params") else "opt_state" if top.endswith("opt_state") else "other"


def bytes_per_device(state: Any) -> dict[jax.Device, dict[str, int]]:
    """Bytes each addressable device holds of each part of `state`, summed over the arrays' addressable shards
    (this process's devices; on several processes every process sees its own, and the layouts are the same)."""
    out: dict[jax.Device, dict[str, int]] = collections.defaultdict(lambda: dict.fromkeys(PARTS, 0))
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        if not isinstance(leaf, jax.Array):
            continue
        which = part(path_name(path))
        for shard in leaf.addressable_shards:
            out[shard.device][which] += int(shard.data.nbytes)
    return dict(out)


def memory_report(state: Any) -> dict[str, int]:
    """Parameter and optimizer-state bytes on the device that holds the most of them (measured from the shards),
    beside `unsplit`: their total size, what every device holds without model parallelism."""
    per = bytes_per_device(state)
    device = max(per, key=lambda d: (per[d]["params"] + per[d]["opt_state"], -d.id))
    unsplit = sum(int(leaf.nbytes) for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]
                  if isinstance(leaf, jax.Array) and part(path_name(path)) != "other")
    return {"params": per[device]["params"], "opt_state": per[device]["opt_state"],
            "params_and_opt_state": per[device]["params"] + per[device]["opt_state"],
            "other": per[device]["other"], "unsplit_params_and_opt_state": unsplit}


def mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB"


def describe(abstract: Any, mesh: Mesh, cfg: MeshConfig) -> str:
    """Every leaf of an abstract state (shapes with shardings): path, dtype and shape, partition spec and the
    shape each device holds; then the bytes per device by part (what `--print_sharding` prints)."""
    data, model = int(dict(mesh.shape)[DATA]), model_size(mesh)
    lines = [f"mesh data:{data},model:{model} ({mesh.devices.size} devices), rules {cfg.rules}, leaves under "
             f"{cfg.min_shard_size} elements replicated; batch split over {batch_axes(mesh, cfg)}"]
    rows, total, per_device = [], collections.Counter(), collections.Counter()
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]:
        name, shape = path_name(path), tuple(leaf.shape)
        local = leaf.sharding.shard_shape(shape)
        itemsize = np.dtype(leaf.dtype).itemsize
        total[part(name)] += math.prod(shape) * itemsize
        per_device[part(name)] += math.prod(local) * itemsize
        spec = leaf.sharding.spec
        rows.append((name, f"{leaf.dtype}{list(shape)}", f"P{tuple(spec)}" if len(spec) else "P()", str(list(local))))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines.append(f"{'path':<{widths[0]}}  {'dtype[shape]':<{widths[1]}}  {'spec':<{widths[2]}}  per device")
    lines += [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows]
    for which in PARTS:
        lines.append(f"{which}: {mib(per_device[which])} per device of {mib(total[which])}")
    return "\n".join(lines)


def to_use(state: Any, use: Any | None) -> Any:
    """`state` with each leaf whose layout in use (`use_shardings`) differs from its layout at rest moved there:
    what the evaluators get. One jitted copy of those leaves (all-gathers); the other leaves are the same arrays."""
    if use is None:
        return state
    leaves, treedef = jax.tree.flatten(state)
    targets = jax.tree.leaves(use)
    moving = [i for i, (leaf, target) in enumerate(zip(leaves, targets, strict=True)) if leaf.sharding != target]
    if moving:
        moved = jax.jit(_identity, out_shardings=[targets[i] for i in moving])([leaves[i] for i in moving])
        for i, leaf in zip(moving, moved, strict=True):
            leaves[i] = leaf
    return treedef.unflatten(leaves)


def _identity(tree: Any) -> Any:
    return tree
