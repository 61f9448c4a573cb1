"""Mode coverage of 2-D samples against a known Gaussian mixture (the protocol of VEEGAN and GDPP).

A sample is high quality if it lies within `threshold` (3) standard deviations of its nearest mode. Reported:
- `modes`: how many modes are the nearest mode of at least one high-quality sample;
- `high_quality`: the percentage of samples that are high quality;
- `mode_kl`: KL(p || uniform) of the histogram p of every sample's nearest mode (0 when the samples are spread
  evenly over the modes, log(#modes) when all sit nearest one mode). It uses all samples, so it is defined
  even when none is high quality; `high_quality` says how close they are.
"""

from __future__ import annotations

import numpy as np


def kl_to_uniform(counts: np.ndarray) -> float:
    """KL(p || uniform) in nats of the histogram `counts` (0 log 0 = 0)."""
    counts = np.asarray(counts, np.float64)
    p = counts / counts.sum()
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] * len(p))))


def mode_report(samples: np.ndarray, modes: np.ndarray, std: float, threshold: float = 3.0) -> dict[str, float]:
    samples, modes = np.asarray(samples, np.float64), np.asarray(modes, np.float64)
    dist = np.linalg.norm(samples[:, None, :] - modes[None, :, :], axis=-1)  # (n, modes)
    nearest = np.argmin(dist, axis=1)
    good = dist[np.arange(len(samples)), nearest] <= threshold * std
    covered = np.unique(nearest[good])
    counts = np.bincount(nearest, minlength=len(modes))
    return {"modes": float(len(covered)), "high_quality": 100.0 * float(np.mean(good)),
            "mode_kl": kl_to_uniform(counts)}
