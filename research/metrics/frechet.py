"""Fréchet distance between Gaussians fitted to two feature sets, and classifier-based sample scores.

Fréchet distance: ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)). tr((S1 S2)^(1/2)) is computed as the sum of
square roots of the eigenvalues of S1^(1/2) S2 S1^(1/2) (symmetric, so `eigh` applies: no complex parts from
`sqrtm` to discard). With our LeNet evaluator's features these numbers compare runs within this codebase only,
never with Inception-based FID from papers.
"""

from __future__ import annotations

import numpy as np

from research.metrics.modes import kl_to_uniform


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance with ddof=1) of `features` (n, d), in float64."""
    f = np.asarray(features, np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(np.asarray(s1, np.float64)), np.atleast_2d(np.asarray(s2, np.float64))
    root1 = _sqrt_psd(s1)
    cross = np.linalg.eigvalsh(root1 @ s2 @ root1)
    tr_sqrt = float(np.sum(np.sqrt(np.clip(cross, 0.0, None))))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def feature_frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets `a` (n, d) and `b` (m, d)."""
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


def classifier_score(probs: np.ndarray) -> float:
    """exp(E_x[KL(p(y|x) || p(y))]) with p(y) the mean prediction: the Inception Score's formula with our
    classifier. 1 (every sample alike or every prediction uncertain) .. #classes (confident and balanced)."""
    p = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)
    p = p / p.sum(-1, keepdims=True)
    marginal = p.mean(0, keepdims=True)
    return float(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(marginal)), -1))))


def class_histogram_kl(probs: np.ndarray) -> float:
    """KL(h || uniform) in nats of the histogram h of predicted classes (argmax): 0 when balanced."""
    probs = np.asarray(probs)
    return kl_to_uniform(np.bincount(np.argmax(probs, -1), minlength=probs.shape[-1]))
