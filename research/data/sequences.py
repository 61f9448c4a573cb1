"""Generated sequence tasks (adding, copy, forecast) and `seq_mnist`, registered by name.

Generated datasets have `sample(rng, n)`: training batches are drawn fresh (batch `i` from
`default_rng([seed, i])`), and their `test` split is a fixed sample from `default_rng(TEST_SEED)`. Lengths
are options of the source (`load("adding", length=100)`); `x` is float32 (B, T, features). Their `train`
split is a small fixed sample of the training distribution (training itself never repeats a batch).

- `adding` (Hochreiter & Schmidhuber 1997; the uRNN paper's form): each step is (value ~ U(0, 1), marker);
  exactly one marker in the first half [0, T/2) and one in the second [T/2, T); `y` = the sum of the two
  marked values. Always predicting 1 scores MSE Var(a + b) = 2/12 = 1/6.
- `copy` with delay T: 10 symbols from {1..8}, T-1 blanks (0), the delimiter (9), then 10 blanks: T + 20
  steps, one-hot over 10 tokens. `y` (per step) is blank except the last 10 steps, which hold the 10 symbols.
  The memoryless strategy (blank until the delimiter, then uniform over the 8 symbols) scores a mean
  cross-entropy of 10 ln 8 / (T + 20).
- `forecast`: a noisy sum of sines per sequence (3 components, random frequency/phase/amplitude, Gaussian
  noise), `x` the series (T, 1) and `y` (T,) the next value at every step; the persistence forecast
  (tomorrow = today) is the baseline.
- `seq_mnist`: the `mnist_5k` digits (same splits) as (28, 28) sequences, read row by row.
"""

from __future__ import annotations

import numpy as np

from research.data.offline import mnist_5k
from research.data.registry import Arrays, Dataset, register
from research.errors import ConfigError

TEST_SEED = 1_000_003  # the fixed evaluation sample of every generated task
TRAIN_SEED, TRAIN_SPLIT_SIZE = 1_000_033, 256  # a small fixed `train` sample (shape checks, train-split evals)
COPY_SYMBOLS, COPY_LENGTH, COPY_BLANK, COPY_DELIMITER = 8, 10, 0, 9
COPY_TOKENS = 10  # blank, 8 symbols, delimiter


def _generated(name: str, sample, test_size: int, num_classes: int | None, info: dict) -> Dataset:
    splits = {"train": sample(np.random.default_rng(TRAIN_SEED), TRAIN_SPLIT_SIZE),
              "test": sample(np.random.default_rng(TEST_SEED), test_size)}
    return Dataset(name, splits, num_classes=num_classes, info=info, sample=sample)


def _check_length(name: str, length: int, minimum: int) -> None:
    if length < minimum:
        raise ConfigError(f"{name}: sequence length must be >= {minimum}, got {length}")


def adding_sample(rng: np.random.Generator, n: int, length: int) -> Arrays:
    """n adding-problem sequences of `length` steps: x (n, T, 2) = (value, marker), y (n,) the marked sum."""
    values = rng.uniform(0.0, 1.0, (n, length))
    half = length // 2
    first = rng.integers(0, half, n)
    second = rng.integers(half, length, n)
    markers = np.zeros((n, length))
    rows = np.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    y = values[rows, first] + values[rows, second]
    return {"x": np.stack([values, markers], -1).astype(np.float32), "y": y.astype(np.float32)}


def copy_sample(rng: np.random.Generator, n: int, delay: int) -> Arrays:
    """n copy-task sequences with delay T: x (n, T+20, 10) one-hot tokens, y (n, T+20) int targets."""
    total = delay + 2 * COPY_LENGTH
    symbols = rng.integers(1, COPY_SYMBOLS + 1, (n, COPY_LENGTH))
    tokens = np.full((n, total), COPY_BLANK, np.int64)
    tokens[:, :COPY_LENGTH] = symbols
    tokens[:, COPY_LENGTH + delay - 1] = COPY_DELIMITER
    y = np.full((n, total), COPY_BLANK, np.int32)
    y[:, -COPY_LENGTH:] = symbols
    return {"x": np.eye(COPY_TOKENS, dtype=np.float32)[tokens], "y": y}


def forecast_sample(rng: np.random.Generator, n: int, length: int, components: int = 3,
                    noise: float = 0.1) -> Arrays:
    """n noisy multi-sine series: x (n, T, 1) the series at steps 0..T-1, y (n, T) the value one step later."""
    t = np.arange(length + 1)[None, None, :]
    freq = rng.uniform(0.02, 0.2, (n, components, 1))  # cycles per step
    phase = rng.uniform(0.0, 2 * np.pi, (n, components, 1))
    amp = rng.uniform(0.5, 1.5, (n, components, 1))
    series = (amp * np.sin(2 * np.pi * freq * t + phase)).sum(1) / np.sqrt(components)
    series = series + noise * rng.standard_normal(series.shape)
    return {"x": series[:, :-1, None].astype(np.float32), "y": series[:, 1:].astype(np.float32)}


@register("adding")
def adding_dataset(length: int = 100, test_size: int = 2000) -> Dataset:
    _check_length("adding", length, 2)
    sample = lambda rng, n: adding_sample(rng, n, length)
    return _generated("adding", sample, test_size, None,
                      {"length": length, "baseline": "predict 1", "baseline_mse": 1 / 6})


@register("copy")
def copy_dataset(length: int = 100, test_size: int = 1000) -> Dataset:
    _check_length("copy", length, 1)
    sample = lambda rng, n: copy_sample(rng, n, length)
    return _generated("copy", sample, test_size, COPY_TOKENS,
                      {"length": length, "steps": length + 2 * COPY_LENGTH, "scored_steps": COPY_LENGTH,
                       "baseline": "memoryless",
                       "baseline_loss": COPY_LENGTH * np.log(COPY_SYMBOLS) / (length + 2 * COPY_LENGTH)})


@register("forecast")
def forecast_dataset(length: int = 100, test_size: int = 1000) -> Dataset:
    _check_length("forecast", length, 2)
    sample = lambda rng, n: forecast_sample(rng, n, length)
    return _generated("forecast", sample, test_size, None, {"length": length, "baseline": "persistence"})


@register("seq_mnist")
def seq_mnist() -> Dataset:
    base = mnist_5k()
    splits = {name: {"x": arrays["x"][..., 0], "y": arrays["y"]} for name, arrays in base.splits.items()}
    return Dataset("seq_mnist", splits, num_classes=base.num_classes, scales=base.scales,
                   info={**base.info, "view_of": "mnist_5k", "read": "row by row (28 steps of 28 pixels)"})
