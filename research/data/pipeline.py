"""The one batching pipeline: global batches whose order is a pure function of (seed, position).

A pipeline's `position` is a small dict saved in every checkpoint and handed back to `restore`, so a resumed
run sees exactly the batches an uninterrupted one would. Each process materialises only its own rows of the
global batch and the pieces are assembled into one array sharded over the mesh.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding

from research import parallel
from research.data.registry import Dataset, decode
from research.errors import ConfigError

Batch = dict[str, Any]


class Pipeline:
    """Iterator of global batches with a saveable position.

    `next_local()` returns this process's rows of the next global batch as numpy arrays, as stored (arrays in
    `scales` as uint8 codes); iterating yields the global batch decoded (float32 values) and assembled over the
    mesh (`sharding`), or the local rows when there is no sharding. The training loop fetches stored rows and
    calls `decode` inside its jitted step, so only codes travel to (and stay on) the devices.
    """

    batch_size: int
    sharding: NamedSharding | None = None
    scales: Mapping[str, float] = {}  # arrays delivered as uint8 codes: key -> scale (value = code / scale)

    def decode(self, batch: Batch) -> Batch:
        """`batch` (numpy or jax arrays, also inside jit) with its uint8-coded arrays as float32 values; the
        batch itself when nothing is coded."""
        return decode(batch, self.scales) if self.scales else batch

    @property
    def position(self) -> dict[str, int]:
        raise NotImplementedError

    def restore(self, position: Mapping[str, int]) -> None:
        raise NotImplementedError

    def next_local(self) -> Batch:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        local = self.decode(self.next_local())
        return local if self.sharding is None else parallel.to_global(local, self.sharding)


class EpochPipeline(Pipeline):
    """A pipeline whose position is (epoch, batch index within the epoch); per-epoch state it caches is keyed
    by the epoch, so restoring a position needs no more than setting these two numbers."""

    steps_per_epoch: int
    source = "dataset"  # what the error calls the data when a saved position does not fit
    _epoch: int = 0
    _index: int = 0

    @property
    def position(self) -> dict[str, int]:
        return {"epoch": self._epoch, "index": self._index}

    def restore(self, position: Mapping[str, int]) -> None:
        epoch, index = int(position["epoch"]), int(position["index"])
        if not 0 <= index < self.steps_per_epoch:
            raise ConfigError(f"saved data position {dict(position)} does not fit this {self.source} "
                              f"({self.steps_per_epoch} batches per epoch)")
        self._epoch, self._index = epoch, index


class ArrayPipeline(EpochPipeline):
    """Epochs over in-memory arrays (or the subset `rows` of them); epoch `e` visits the rows in the order
    `default_rng([seed, e]).permutation(len(rows))`.

    The incomplete last batch of an epoch is dropped, so every step sees `batch_size` examples. `next_rows()`
    gives the indices of the next global batch instead of its data, so the loop can gather batches on device
    from arrays that were copied there once.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], batch_size: int, *, seed: int,
                 sharding: NamedSharding | None = None, shuffle: bool = True, rows: np.ndarray | None = None,
                 scales: Mapping[str, float] | None = None):
        sizes = {len(v) for v in arrays.values()}
        if len(sizes) != 1:
            raise ValueError(f"arrays disagree in length: { {k: len(v) for k, v in arrays.items()} }")
        self.arrays = dict(arrays)
        self.scales = {k: v for k, v in (scales or {}).items() if k in self.arrays}
        self.rows = np.arange(sizes.pop()) if rows is None else np.asarray(rows)
        self.n = len(self.rows)
        if not 0 < batch_size <= self.n:
            raise ConfigError(f"--batch_size={batch_size} must be in [1, {self.n}] (the training set size)")
        self.batch_size, self.seed, self.sharding, self.shuffle = batch_size, seed, sharding, shuffle
        self.steps_per_epoch = self.n // batch_size
        self._epoch, self._index, self._order = 0, 0, None

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return self.rows
        return self.rows[np.random.default_rng([self.seed, epoch]).permutation(self.n)]

    def halves(self, split_seed: int) -> tuple[ArrayPipeline, ArrayPipeline]:
        """Two pipelines over disjoint halves of these rows (a seeded random split), same batch size."""
        perm = self.rows[np.random.default_rng([split_seed, 0x5EED]).permutation(self.n)]
        cut = self.n // 2
        return tuple(ArrayPipeline(self.arrays, self.batch_size, seed=self.seed, sharding=self.sharding,
                                   shuffle=self.shuffle, rows=np.sort(part), scales=self.scales)
                     for part in (perm[:cut], perm[cut:]))

    def next_rows(self) -> np.ndarray:
        """Indices into `arrays` of the next global batch; advances the position."""
        if self._order is None or self._order[0] != self._epoch:
            self._order = (self._epoch, self.order(self._epoch))
        start = self._index * self.batch_size
        idx = self._order[1][start:start + self.batch_size]
        self._index += 1
        if self._index == self.steps_per_epoch:
            self._epoch, self._index = self._epoch + 1, 0
        return idx

    def next_local(self) -> Batch:
        idx = self.next_rows()[parallel.process_rows(self.batch_size)]
        return {k: v[idx] for k, v in self.arrays.items()}


class StreamPipeline(Pipeline):
    """Freshly generated batches: batch `i` is `sample(default_rng([seed, i]), batch_size)`."""

    def __init__(self, sample: Callable[[np.random.Generator, int], Batch], batch_size: int, *, seed: int,
                 sharding: NamedSharding | None = None):
        if batch_size < 1:
            raise ConfigError(f"--batch_size={batch_size} must be positive")
        self.sample, self.batch_size, self.seed, self.sharding = sample, batch_size, seed, sharding
        self._index = 0

    @property
    def position(self) -> dict[str, int]:
        return {"index": self._index}

    def restore(self, position: Mapping[str, int]) -> None:
        self._index = int(position["index"])

    def next_local(self) -> Batch:
        full = self.sample(np.random.default_rng([self.seed, self._index]), self.batch_size)
        self._index += 1
        rows = parallel.process_rows(self.batch_size)
        return {k: np.asarray(v)[rows] for k, v in full.items()}


def train_pipeline(dataset: Dataset, batch_size: int, *, seed: int, sharding: NamedSharding | None = None,
                   split: str = "train") -> Pipeline:
    """Fresh samples for a generated dataset, epochs over `split` otherwise (its stored arrays: uint8-coded
    ones stay codes until the train step decodes them)."""
    if dataset.sample is not None:
        return StreamPipeline(dataset.sample, batch_size, seed=seed, sharding=sharding)
    return ArrayPipeline(dataset.stored(split), batch_size, seed=seed, sharding=sharding, scales=dataset.scales)


def map_batches(fn: Callable[[Batch], Any], arrays: Mapping[str, np.ndarray], batch_size: int,
                sharding: NamedSharding | None = None) -> Any:
    """Apply `fn` to all of `arrays` in global batches of `batch_size` (the last padded) and return its
    outputs on the host, concatenated along axis 0 with the padding removed."""
    n = len(next(iter(arrays.values())))
    outputs = []
    for start in range(0, n, batch_size):
        chunk = {k: v[start:start + batch_size] for k, v in arrays.items()}
        valid = len(next(iter(chunk.values())))
        if valid < batch_size:
            chunk = {k: np.concatenate([v, np.zeros((batch_size - valid, *v.shape[1:]), v.dtype)])
                     for k, v in chunk.items()}
        rows = parallel.process_rows(batch_size)
        local = {k: v[rows] for k, v in chunk.items()}
        batch = local if sharding is None else parallel.to_global(local, sharding)
        out = parallel.to_host(fn(batch))
        outputs.append(jax.tree.map(lambda o, valid=valid: np.asarray(o)[:valid], out))
    return jax.tree.map(lambda *xs: np.concatenate(xs), *outputs)
