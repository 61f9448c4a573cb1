"""One registry from dataset name to source.

Every source returns a `Dataset`: named splits of in-memory numpy arrays (`x`, `y`, ...) plus what a model
needs to know about them. Names with a prefix are families: `tfds:NAME` reads a prepared TFDS dataset,
`text:PATH` a local text file (see the sequence family).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from research.data.augment import AugmentConfig
from research.errors import ConfigError

Arrays = dict[str, np.ndarray]


Sampler = Callable[[np.random.Generator, int], Arrays]


def code_values(scale: float) -> np.ndarray:
    """The float32 value of each uint8 code 0..255 of an array stored with `scale`: code / scale, one correctly
    rounded division (for 255 and 16 the same float32 as the float64 division the sources used to do)."""
    return np.arange(256, dtype=np.float32) / np.float32(scale)


def decode(arrays: Mapping[str, Any], scales: Mapping[str, float]) -> dict[str, Any]:
    """`arrays` with each key of `scales` turned from uint8 codes into float32 values (code / scale).

    numpy arrays are divided on the host; jax arrays (inside a jitted step) look their codes up in the 256-entry
    table of `code_values`: XLA turns a division by a constant into a multiplication by its reciprocal, which is
    off by one ulp for 126 of the 256 codes, and a table lookup gives the host's values exactly."""
    if not scales:
        return dict(arrays)
    out = dict(arrays)
    for key, scale in scales.items():
        codes = arrays[key]
        if isinstance(codes, np.ndarray):
            values = np.empty(codes.shape, np.float32)
            np.divide(codes, np.float32(scale), out=values, dtype=np.float32)
            out[key] = values
        else:
            import jax.numpy as jnp

            out[key] = jnp.asarray(code_values(scale))[codes]
    return out


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Named splits of arrays. `x` is float32 (images NHWC in [0, 1]); `y` int32 labels or float32 targets.

    Image datasets may keep an array as uint8 codes with a declared scale (`scales`, e.g. {"x": 255.0}: value =
    code / 255), a quarter of float32's memory: `split(name)` gives the values (float32, decoded afresh at each
    call), `stored(name)` the arrays as kept. Training pipelines take the stored codes to the devices and decode
    each batch inside the jitted step (`research/data/pipeline.py`).

    A generated dataset (Gaussian mixtures, the adding problem, ...) also has `sample(rng, n)`: training
    batches are then drawn fresh from it (see `pipeline.train_pipeline`), and its splits are fixed samples
    for evaluation.
    """

    name: str
    splits: Mapping[str, Arrays]
    num_classes: int | None = None
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    sample: Sampler | None = None
    scales: Mapping[str, float] = dataclasses.field(default_factory=dict)  # uint8-coded arrays: key -> scale

    def __post_init__(self) -> None:
        for name, arrays in self.splits.items():
            for key in self.scales:
                if key in arrays and arrays[key].dtype != np.uint8:
                    raise ValueError(f"dataset {self.name!r}: {name}/{key} has a scale but dtype "
                                     f"{arrays[key].dtype}, not uint8")

    def stored(self, name: str) -> Arrays:
        """Split `name` as kept in memory (arrays in `scales` as uint8 codes)."""
        if name not in self.splits:
            raise ConfigError(f"dataset {self.name!r} has no split {name!r}; it has {sorted(self.splits)}")
        return self.splits[name]

    def split(self, name: str) -> Arrays:
        """Split `name` as values: uint8-coded arrays decoded to float32 (a new array at every call; hold on to
        it rather than calling again in a loop). Without `scales`, the stored arrays themselves."""
        arrays = self.stored(name)
        return decode(arrays, self.scales) if self.scales else arrays

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(next(iter(self.splits.values()))["x"].shape[1:])


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which dataset a run trains on, in batches of how many examples (global, over all devices)."""

    name: str
    batch_size: int
    tfds_data_dir: str | None = None  # where prepared TFDS datasets live (does not change the run)
    data_dir: str | None = None       # where local dataset files live, e.g. IDX files (does not change the run)
    augment: AugmentConfig = AugmentConfig()  # on-device augmentation of training images (research/data/augment.py)

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("--dataset is required")
        if self.batch_size < 1:
            raise ConfigError(f"--batch_size must be positive, got {self.batch_size}")

    def load(self, **options: Any) -> Dataset:
        """The dataset; ConfigError if `augment` asks for augmentation it cannot have (not images, shifts too large)."""
        dataset = load(self.name, tfds_data_dir=self.tfds_data_dir, data_dir=self.data_dir, **options)
        self.augment.check(dataset)
        return dataset


def facts(dataset: Dataset) -> dict[str, Any]:
    """What a run's checkpoints depend on in its data: name, split sizes and shapes, classes, vocabulary."""
    out: dict[str, Any] = {"name": dataset.name, "num_classes": dataset.num_classes,
                           "splits": {name: {k: list(np.shape(v)) for k, v in sorted(arrays.items())}
                                      for name, arrays in sorted(dataset.splits.items())}}
    if "vocab" in dataset.info:
        out["vocab"] = dataset.info["vocab"]
    return out


_SOURCES: dict[str, Callable[..., Dataset]] = {}
_PREFIXES: dict[str, Callable[..., Dataset]] = {}


def register(name: str) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    """Decorator: `@register("digits")` for a name, `@register("tfds:")` for a prefix family."""

    def deco(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        table = _PREFIXES if name.endswith(":") else _SOURCES
        if name in table:
            raise ValueError(f"dataset source {name!r} registered twice")
        table[name] = fn
        return fn

    return deco


def names() -> list[str]:
    """Registered names and prefix families, for error messages and `--help`."""
    return sorted(_SOURCES) + sorted(p + "NAME" for p in _PREFIXES)


def load(name: str, **options: Any) -> Dataset:
    """Load dataset `name`; each of `options` (e.g. `tfds_data_dir`) goes only to sources that take it."""
    prefix, sep, rest = name.partition(":")
    if sep:
        if prefix + ":" not in _PREFIXES:
            raise ConfigError(f"unknown dataset family {prefix + ':'!r} in {name!r}; known: {', '.join(names())}")
        if not rest:
            raise ConfigError(f"dataset {name!r} needs a name after the colon")
        fn, args = _PREFIXES[prefix + ":"], (rest,)
    elif name in _SOURCES:
        fn, args = _SOURCES[name], ()
    else:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(names())}")
    accepted = inspect.signature(fn).parameters
    return fn(*args, **{k: v for k, v in options.items() if k in accepted})


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) holding out `test_fraction` of every class; sorted, a pure function of seed."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
