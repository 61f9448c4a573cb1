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
from research.data.registry import Dataset
from research.errors import ConfigError

Batch = dict[str, Any]


class Pipeline:
    """Iterator of global batches with a saveable position."""

    batch_size: int

    @property
    def position(self) -> dict[str, int]:
        raise NotImplementedError

    def restore(self, position: Mapping[str, int]) -> None:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        raise NotImplementedError

    def _emit(self, global_rows: Callable[[slice], Batch], sharding: NamedSharding | None) -> Batch:
        local = global_rows(parallel.process_rows(self.batch_size))
        return local if sharding is None else parallel.to_global(local, sharding)


class ArrayPipeline(Pipeline):
    """Epochs over in-memory arrays; epoch `e` is ordered by `default_rng([seed, e]).permutation(n)`.

    The incomplete last batch of an epoch is dropped, so every step sees `batch_size` examples.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], batch_size: int, *, seed: int,
                 sharding: NamedSharding | None = None, shuffle: bool = True):
        sizes = {len(v) for v in arrays.values()}
        if len(sizes) != 1:
            raise ValueError(f"arrays disagree in length: { {k: len(v) for k, v in arrays.items()} }")
        self.arrays, self.n = dict(arrays), sizes.pop()
        if not 0 < batch_size <= self.n:
            raise ConfigError(f"--batch_size={batch_size} must be in [1, {self.n}] (the training set size)")
        self.batch_size, self.seed, self.sharding, self.shuffle = batch_size, seed, sharding, shuffle
        self.steps_per_epoch = self.n // batch_size
        self._epoch, self._index, self._order = 0, 0, None

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    @property
    def position(self) -> dict[str, int]:
        return {"epoch": self._epoch, "index": self._index}

    def restore(self, position: Mapping[str, int]) -> None:
        epoch, index = int(position["epoch"]), int(position["index"])
        if not 0 <= index < self.steps_per_epoch:
            raise ConfigError(f"saved data position {dict(position)} does not fit this dataset "
                              f"({self.steps_per_epoch} batches per epoch)")
        self._epoch, self._index, self._order = epoch, index, None

    def __next__(self) -> Batch:
        if self._order is None or self._order[0] != self._epoch:
            self._order = (self._epoch, self.order(self._epoch))
        start = self._index * self.batch_size
        idx = self._order[1][start:start + self.batch_size]
        batch = self._emit(lambda rows: {k: v[idx[rows]] for k, v in self.arrays.items()}, self.sharding)
        self._index += 1
        if self._index == self.steps_per_epoch:
            self._epoch, self._index = self._epoch + 1, 0
        return batch


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

    def __next__(self) -> Batch:
        full = self.sample(np.random.default_rng([self.seed, self._index]), self.batch_size)
        self._index += 1
        return self._emit(lambda rows: {k: np.asarray(v)[rows] for k, v in full.items()}, self.sharding)


def train_pipeline(dataset: Dataset, batch_size: int, *, seed: int, sharding: NamedSharding | None = None,
                   split: str = "train") -> Pipeline:
    """Fresh samples for a generated dataset, epochs over `split` otherwise."""
    if dataset.sample is not None:
        return StreamPipeline(dataset.sample, batch_size, seed=seed, sharding=sharding)
    return ArrayPipeline(dataset.split(split), batch_size, seed=seed, sharding=sharding)


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
