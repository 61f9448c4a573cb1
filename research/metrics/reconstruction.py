"""Reconstruction metrics on host arrays, and the exact PCA baseline an autoencoder is compared with.

- `sq_error`: squared error summed over the pixels of an image, averaged over images: the number Hinton &
  Salakhutdinov (2006) report (MNIST test: PCA with 30 components 13.87, their deep autoencoder 3.00).
- `mse`: the same per pixel; `bce`: Bernoulli cross-entropy per pixel (nats), from the logits.
- PCA: the top-k right singular vectors of the centred training matrix (`numpy.linalg.svd`, exact, no
  iterative solver); by Eckart-Young it is the best rank-k affine reconstruction of the training set in
  squared error, i.e. what a linear autoencoder with a k-unit code can at best achieve there.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from research.errors import ConfigError


def _flat(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x.reshape((x.shape[0], -1))


def reconstruction_report(logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """sq_error (per image), mse and bce (per pixel) of the reconstruction `sigmoid(logits)` of `targets`."""
    logits, targets = _flat(logits), _flat(targets)
    recon = 0.5 * (1.0 + np.tanh(0.5 * logits))  # sigmoid without overflow
    sq = np.square(recon - targets)
    bce = np.logaddexp(0.0, logits) - targets * logits
    return {"sq_error": float(sq.sum(1).mean()), "mse": float(sq.mean()), "bce": float(bce.mean())}


@dataclasses.dataclass(frozen=True)
class PCA:
    """A rank-k affine map: code = (x - mean) @ components.T, reconstruction = code @ components + mean."""

    mean: np.ndarray             # (D,)
    components: np.ndarray       # (k, D), orthonormal rows
    singular_values: np.ndarray  # the centred training matrix's full spectrum, descending

    def encode(self, x: np.ndarray) -> np.ndarray:
        return (_flat(x) - self.mean) @ self.components.T

    def decode(self, codes: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
        out = np.asarray(codes, np.float64) @ self.components + self.mean
        return out if shape is None else out.reshape((len(out), *shape))

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        return self.decode(self.encode(x), x.shape[1:])

    @property
    def explained_variance_ratio(self) -> float:
        s2 = np.square(self.singular_values)
        return float(s2[:len(self.components)].sum() / s2.sum()) if s2.sum() > 0 else 1.0


def fit_pca(x: np.ndarray, k: int) -> PCA:
    """Exact PCA of the rows of `x` (flattened) with `k` components."""
    x = _flat(x)
    if not 1 <= k <= min(x.shape):
        raise ConfigError(f"a PCA baseline with {k} components needs 1 <= k <= min(examples, dimensions) = "
                          f"{min(x.shape)}")
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    return PCA(mean=mean, components=vt[:k], singular_values=s)


def pca_report(pca: PCA, x: np.ndarray, targets: np.ndarray | None = None) -> dict[str, float]:
    """pca_sq_error (per image) and pca_mse (per pixel) of PCA's reconstruction of `x` compared with `targets`
    (default: `x` itself; a denoising comparison passes the corrupted input as `x` and the clean one here)."""
    targets = _flat(x if targets is None else targets)
    sq = np.square(_flat(pca.reconstruct(x)) - targets)
    return {"pca_sq_error": float(sq.sum(1).mean()), "pca_mse": float(sq.mean())}
