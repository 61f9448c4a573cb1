"""GAN samples, their metrics and pictures.

Every evaluation draws `num_samples` samples from the same z (`seed`), so pictures are comparable across steps.
- Images: the Fréchet distance between features of generated and real test images in a trained classifier
  (`research/metrics/feature_classifier.py`), its classifier score and class-histogram KL, when a classifier is
  given and every sample is finite; a grid of the first `grid_size` samples (conditional: one column per class).
- 2-D mixtures: mode coverage (`research/metrics/modes.py`) of the finite samples, and a scatter against the modes.
Always: `finite_samples`, the fraction of samples with no NaN/Inf.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from research.data import Dataset, map_batches
from research.evaluators.base import EvalContext, Evaluation
from research.metrics.feature_classifier import FeatureClassifier
from research.metrics.modes import mode_report
from research.parallel import batch_sharding, check_divisible
from research.tasks.gan import GANState, GANTask
from research.writers import image_grid


class GANSampler:
    """Samples of a GAN task's generator from numpy-seeded z, in global batches over the mesh."""

    def __init__(self, task: GANTask, batch_size: int):
        self.task, self.batch_size = task, batch_size
        self._generate = jax.jit(task.generate)

    def sample(self, state: GANState, n: int, seed: int, mesh: Mesh) -> dict[str, np.ndarray]:
        """`n` samples from z ~ default_rng(seed) ({"x", and "y" for a conditional model: labels 0, 1, ...})."""
        check_divisible(self.batch_size, mesh, "--eval_batch_size")
        classes = self.task.num_classes
        arrays = {"z": np.random.default_rng(seed).standard_normal((n, self.task.cfg.z_dim)).astype(np.float32)}
        if classes:
            arrays["y"] = (np.arange(n) % classes).astype(np.int32)
        out = map_batches(lambda b: self._generate(state, b["z"], b.get("y")), arrays, self.batch_size,
                          batch_sharding(mesh))
        return {"x": np.asarray(out), **({"y": arrays["y"]} if classes else {})}

    def picture(self, samples: dict[str, np.ndarray], limit: int, title: str = "") -> np.ndarray | Any:
        """An HWC grid in [0, 1] of the first `limit` images (conditional: one column per class), or a scatter
        figure of 2-D samples against the modes."""
        x, task = samples["x"], self.task
        if task.images:
            n = min(len(x), limit)
            if task.num_classes:
                n = max(task.num_classes, n - n % task.num_classes)
            return image_grid(x[:n], ncol=task.num_classes or None)
        return scatter_figure(x, np.asarray(task.dataset.info["modes"]), task.dataset.split("test")["x"], title)


class GANEvaluator:
    def __init__(self, task: GANTask, dataset: Dataset, *, batch_size: int, num_samples: int = 0,
                 grid_size: int = 64, seed: int = 0, classifier: FeatureClassifier | None = None, every: int = 0):
        self.task, self.sampler, self.grid_size, self.seed, self.every = task, GANSampler(task, batch_size), \
            grid_size, seed, every
        self.classifier = classifier
        if task.images:
            self.real = dataset.split("test")["x"]  # through the same resize as the training images
            self.num_samples = num_samples or len(self.real)
        else:
            self.modes, self.std = np.asarray(dataset.info["modes"], np.float64), float(dataset.info["std"])
            self.num_samples = num_samples or 2500
        self._real_features: np.ndarray | None = None

    def real_features(self) -> np.ndarray:
        if self._real_features is None:
            self._real_features = self.classifier.predict(self.real)[0]
        return self._real_features

    def evaluate(self, state: GANState, ctx: EvalContext) -> Evaluation:
        n = self.num_samples
        samples = self.sampler.sample(state, n, self.seed, ctx.mesh)
        ok = np.all(np.isfinite(samples["x"].reshape(n, -1)), axis=1)
        out = Evaluation({})
        if self.task.images:
            if self.classifier is not None and ok.all():
                out.metrics.update(self.classifier.report(samples["x"], self.real_features()))
            if ctx.pictures:
                out.images["samples"] = self.sampler.picture(samples, self.grid_size)
        else:
            out.metrics.update(mode_report(samples["x"][ok], self.modes, self.std) if ok.any() else
                               {"modes": 0.0, "high_quality": 0.0, "mode_kl": float("nan")})
            if ctx.pictures:
                m = out.metrics
                out.figures["samples"] = self.sampler.picture(samples, n, title=(
                    f"step {ctx.step}: {m['modes']:.0f} modes, {m['high_quality']:.1f}% high quality"))
        out.metrics["finite_samples"] = float(np.mean(ok))
        return out


def scatter_figure(samples: np.ndarray, modes: np.ndarray, real: np.ndarray | None = None, title: str = ""):
    """Generated 2-D points against the true modes (and real samples, if given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    if real is not None:
        ax.scatter(real[:, 0], real[:, 1], s=2, c="0.7", label="data")
    ax.scatter(samples[:, 0], samples[:, 1], s=2, c="tab:blue", alpha=0.5, label="samples")
    ax.scatter(modes[:, 0], modes[:, 1], marker="x", c="tab:red", s=40, label="modes")
    lim = 1.5 * float(np.abs(modes).max())
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
