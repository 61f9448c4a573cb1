"""Generated 2-D Gaussian mixtures with equal weights, the mode-collapse benchmarks of the GAN literature.

- `gaussians_ring8`: 8 modes on the unit circle at angles 2*pi*k/8, sigma = 0.01 (the VEEGAN / GDPP protocol).
- `gaussians_grid25`: 25 modes at {-4, -2, 0, 2, 4}^2, sigma = 0.05.

Training batches are drawn fresh from `sample` (batch i from `default_rng([seed, i])`, see `StreamPipeline`);
the `test` split is a fixed draw of 2,500 points (seed 0) for plots. `info` carries `modes` and `std`, which the
mode-coverage metrics (`research.metrics.modes`) need. `y` is the index of the mode a point was drawn from.
"""

from __future__ import annotations

import numpy as np

from research.data.registry import Arrays, Dataset, register

TEST_SIZE = 2500


def mixture(name: str, modes: np.ndarray, std: float) -> Dataset:
    """A dataset of the equal-weight mixture of N(mode, std^2 I) over the rows of `modes`."""
    modes = np.asarray(modes, np.float64)

    def sample(rng: np.random.Generator, n: int) -> Arrays:
        k = rng.integers(0, len(modes), n)
        x = modes[k] + std * rng.standard_normal((n, modes.shape[1]))
        return {"x": x.astype(np.float32), "y": k.astype(np.int32)}

    info = {"modes": modes.tolist(), "std": std, "generated": True}
    return Dataset(name, {"test": sample(np.random.default_rng(0), TEST_SIZE)}, info=info, sample=sample)


def ring_modes(n: int = 8, radius: float = 1.0) -> np.ndarray:
    angles = 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(angles), np.sin(angles)], -1)


def grid_modes(values: tuple[float, ...] = (-4, -2, 0, 2, 4)) -> np.ndarray:
    return np.array([(a, b) for a in values for b in values], np.float64)


@register("gaussians_ring8")
def gaussians_ring8() -> Dataset:
    return mixture("gaussians_ring8", ring_modes(8, 1.0), 0.01)


@register("gaussians_grid25")
def gaussians_grid25() -> Dataset:
    return mixture("gaussians_grid25", grid_modes(), 0.05)
