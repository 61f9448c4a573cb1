"""Autoencoders against an exact PCA baseline with the same code size, and their pictures.

Metrics (`research/metrics/reconstruction.py`) of reconstructing the test split from clean inputs, beside PCA
fitted once on the training split; a denoising run adds both models' error on corrupted test inputs (the same
corruption at every evaluation); a VAE adds its one-sample ELBO and KL in nats.

Pictures: `reconstructions` (rows: input, [corrupted input, its reconstruction,] autoencoder, PCA),
`interpolation` (decoded codes on the line between test digits of consecutive classes), `codes` (a scatter of
2-D test codes coloured by label) and, for a VAE, `samples` from the prior and, with a 2-D code, the decoded
`manifold`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from research import parallel
from research.data import Dataset, map_batches
from research.evaluators.base import EvalContext, Evaluation
from research.metrics.reconstruction import fit_pca, pca_report, reconstruction_report
from research.models.autoencoder import corrupt
from research.objectives.reconstruction import bernoulli_cross_entropy, gaussian_kl
from research.parallel import batch_sharding
from research.state import TrainState
from research.tasks.autoencoder import AutoencoderTask
from research.writers import image_grid

# fold_in constants of the run key for evaluation draws: fixed for the whole run, so every evaluation (and a
# resumed run) sees the same corrupted test inputs and the same prior samples.
_EVAL_STREAM, _SAMPLE_STREAM = 0x7FFF0001, 0x7FFF0002


class ReconstructionEvaluator:
    def __init__(self, task: AutoencoderTask, dataset: Dataset, batch_size: int, *, interpolation_steps: int = 8,
                 split: str = "test", every: int = 0):
        self.task, self.batch_size, self.every = task, batch_size, every
        self.interpolation_steps = interpolation_steps
        self.arrays = dataset.split(split)
        self.images = len(dataset.input_shape) == 3
        self.pca = fit_pca(dataset.split("train")["x"], task.model.latent)
        self._outputs = jax.jit(self.outputs)
        self._decode = jax.jit(task.decode)

    def outputs(self, state: TrainState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Test outputs for examples `batch["idx"]`: logits and codes of the clean input; for a denoising
        run the corrupted input and its logits; for a VAE the one-sample ELBO and the KL, per example.
        Random draws depend only on the run key and the example index, not on batching or devices."""
        task, x = self.task, batch["x"]
        keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(state.rng, _EVAL_STREAM), i))(batch["idx"])
        mean, logvar = task.encode(state, x)
        out = {"logits": task.decode_logits(state, mean), "code": mean}
        if task.denoising:
            noisy = jax.vmap(lambda k, xi: corrupt(jax.random.fold_in(k, 0), xi, task.cfg.noise,
                                                   task.cfg.noise_level))(keys, x)
            out.update(noisy=noisy, noisy_logits=task.decode_logits(state, task.encode(state, noisy)[0]))
        if task.model.variational:
            eps = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), mean.shape[1:]))(keys)
            sample_logits = task.decode_logits(state, mean + jnp.exp(0.5 * logvar) * eps)
            kl = gaussian_kl(mean, logvar)
            out.update(elbo=-(bernoulli_cross_entropy(sample_logits, x) + kl), kl=kl)
        return out

    def evaluate(self, state: TrainState, ctx: EvalContext) -> Evaluation:
        x = self.arrays["x"]
        out = map_batches(lambda b: self._outputs(state, b), {"x": x, "idx": np.arange(len(x), dtype=np.int32)},
                          self.batch_size, batch_sharding(ctx.mesh))
        metrics = {**reconstruction_report(out["logits"], x), **pca_report(self.pca, x),
                   "pca_explained_variance": self.pca.explained_variance_ratio}
        if self.task.denoising:
            noisy = reconstruction_report(out["noisy_logits"], x)
            metrics.update(denoise_sq_error=noisy["sq_error"], denoise_bce=noisy["bce"],
                           pca_denoise_sq_error=pca_report(self.pca, out["noisy"], x)["pca_sq_error"])
        if self.task.model.variational:
            metrics.update(elbo=float(np.mean(out["elbo"])), kl=float(np.mean(out["kl"])))
        evaluation = Evaluation(metrics)
        if ctx.pictures and self.images:
            self._pictures(state, evaluation, ctx.step, x, self.arrays.get("y"), out)
        return evaluation

    # ---- pictures
    def _decode_host(self, state: TrainState, z: np.ndarray) -> np.ndarray:
        """Pixels decoded on this process, rows padded to a multiple of 256 so every picture shares one
        compilation."""
        n = len(z)
        padded = np.zeros((-(-n // 256) * 256, z.shape[1]), np.float32)
        padded[:n] = z
        return np.asarray(self._decode(state, padded))[:n]

    def _pictures(self, state: TrainState, out: Evaluation, step: int, x: np.ndarray, y: np.ndarray | None,
                  outputs: dict[str, np.ndarray]) -> None:
        state = parallel.to_host(state)  # decode locally: every process draws the same pictures
        shown = _one_per_class(y, len(x), 10)
        rows = [x[shown]]
        if self.task.denoising:
            rows += [outputs["noisy"][shown], _sigmoid(outputs["noisy_logits"][shown])]
        rows += [_sigmoid(outputs["logits"][shown]), np.clip(self.pca.reconstruct(x[shown]), 0, 1)]
        out.images["reconstructions"] = _grid(np.concatenate(rows), len(shown))

        # Interpolation between digits of consecutive classes; the end columns are the inputs themselves.
        codes, k = outputs["code"], self.interpolation_steps
        a, b = shown, np.roll(shown, -1)
        alphas = np.linspace(0.0, 1.0, k)[None, :, None]
        line = (1 - alphas) * codes[a][:, None] + alphas * codes[b][:, None]  # (pairs, steps, latent)
        decoded = self._decode_host(state, line.reshape(-1, codes.shape[1])).reshape(len(a), k, *x.shape[1:])
        grid = np.concatenate([x[a][:, None], decoded, x[b][:, None]], axis=1)
        out.images["interpolation"] = _grid(grid.reshape(-1, *x.shape[1:]), k + 2)

        if codes.shape[1] == 2:
            out.figures["codes"] = _code_scatter(codes, y, step)
        latent = self.task.model.latent
        if self.task.model.variational:
            # numpy seeded by the run key (host-side, nothing to compile); the same draws at every evaluation
            words = np.asarray(jax.random.key_data(state.rng)).ravel().tolist()
            z = np.random.default_rng([*words, _SAMPLE_STREAM]).standard_normal((64, latent))
            out.images["samples"] = _grid(self._decode_host(state, z), 8)
            if latent == 2:
                from scipy.stats import norm

                q = norm.ppf(np.linspace(0.05, 0.95, 15))
                z = np.stack(np.meshgrid(q, q[::-1]), -1).reshape(-1, 2).astype(np.float32)
                out.images["manifold"] = _grid(self._decode_host(state, z), 15)


def _grid(images: np.ndarray, ncol: int) -> np.ndarray:
    """`image_grid`, enlarged (nearest neighbour) so that small images such as 8x8 digits are legible."""
    grid = image_grid(images, ncol=ncol)
    scale = max(1, math.ceil(28 / images.shape[1]))
    return np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits, np.float64)))


def _one_per_class(y: np.ndarray | None, n: int, k: int) -> np.ndarray:
    """Indices of the first example of each of the first `k` classes (the first `k` examples without labels)."""
    if y is None or y.dtype.kind not in "iu":
        return np.arange(min(k, n))
    classes = np.unique(y)[:k]
    return np.array([np.flatnonzero(y == c)[0] for c in classes])


def _code_scatter(codes: np.ndarray, y: np.ndarray | None, step: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    if y is not None and y.dtype.kind in "iu":
        points = ax.scatter(codes[:, 0], codes[:, 1], c=y, cmap="tab10", s=6, vmin=-0.5, vmax=9.5)
        fig.colorbar(points, ax=ax, ticks=range(10), label="label")
    else:
        ax.scatter(codes[:, 0], codes[:, 1], s=6)
    ax.set(xlabel="code 1", ylabel="code 2", title=f"test codes, step {step}")
    fig.tight_layout()
    return fig
