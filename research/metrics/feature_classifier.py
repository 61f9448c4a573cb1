"""The feature classifiers that score generated images: a LeNet per dataset, trained once and cached per machine.

Samples are scored in the features of a classifier trained on the data being generated (`classifier_for`):
`mnist_5k` (and `tfds:mnist`) by the LeNet trained on `mnist_5k`, full-size `mnist` by one trained on MNIST's
60,000 digits, `fashion_mnist` by one trained on Fashion-MNIST's 60,000 clothes (`CLASSIFIERS`). The cache key is
a hash of `FeatureClassifierConfig` (architecture, training recipe and the dataset), and the files are named by
dataset and key, `lenet-<dataset>-<key>.{npz,json}`, so each dataset has its own classifier and changing any
setting trains a new one; the parameters are stored as `.npz` and the report (config, test accuracy, train time)
as JSON under `research.paths.cache_dir("evaluators")` -- never pickle. Training is deterministic in the config.

`FeatureClassifier.report(fake, real)` gives the Fréchet distance between evaluator features of generated and real
images, the classifier score and the KL of the predicted-class histogram to uniform. These numbers compare runs
within this codebase only; they are not Inception-based FID / IS and cannot be compared with papers.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from research.errors import ConfigError
from research.metrics.frechet import class_histogram_kl, classifier_score, feature_frechet_distance
from research.models.lenet import LeNet
from research.paths import cache_dir

log = logging.getLogger("research")
INPUT_SIZE = 28


@dataclasses.dataclass(frozen=True)
class FeatureClassifierConfig:
    dataset: str = "mnist_5k"
    widths: tuple[int, ...] = (16, 32)
    feature_dim: int = 128
    dropout: float = 0.3
    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 1e-3
    max_shift: int = 2        # random translations of up to this many pixels (augmentation)
    seed: int = 0
    min_accuracy: float = 0.97  # refuse to use an evaluator below this test accuracy (0: no check)
    version: int = 1          # bump when the training code changes what it computes

    def key(self) -> str:
        """Hash of everything that decides the trained network (not the accuracy check)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "min_accuracy"}
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def model(self) -> LeNet:
        return LeNet(num_classes=10, widths=self.widths, feature_dim=self.feature_dim, dropout=self.dropout)


# The classifier of each dataset. mnist_5k's is the one every earlier run was scored with (same config, same key);
# the full-size datasets have 15x the training images, so fewer epochs give more steps (2 epochs: 1,874 steps).
# Their accuracy floors sit a little below what these recipes reach (docs/gan.md: "The evaluators").
CLASSIFIERS: dict[str, FeatureClassifierConfig] = {
    "mnist_5k": FeatureClassifierConfig(),
    "mnist": FeatureClassifierConfig(dataset="mnist", epochs=2, min_accuracy=0.98),
    "fashion_mnist": FeatureClassifierConfig(dataset="fashion_mnist", epochs=2, min_accuracy=0.87),
}
SCORED_BY = {"tfds:mnist": "mnist_5k"}  # datasets scored by another dataset's classifier


def classifier_for(dataset: str) -> FeatureClassifierConfig | None:
    """The config of the classifier that scores samples of `dataset` (None: no classifier knows it)."""
    return CLASSIFIERS.get(SCORED_BY.get(dataset, dataset))


def _shift(rng: np.random.Generator, x: np.ndarray, max_shift: int) -> np.ndarray:
    """Translate each image by up to `max_shift` pixels (zero fill)."""
    if not max_shift:
        return x
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    dy, dx = rng.integers(0, 2 * max_shift + 1, (2, n))
    rows = dy[:, None] + np.arange(h)[None]
    cols = dx[:, None] + np.arange(w)[None]
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def train_classifier(cfg: FeatureClassifierConfig, data_dir: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Train the LeNet of `cfg` on its dataset's train split (IDX files looked for in `data_dir` first, see
    research/data/idx.py); (params, report with the test accuracy)."""
    from research import data

    ds = data.load(cfg.dataset, data_dir=data_dir)
    train, test = ds.stored("train"), ds.split("test")  # training batches are decoded one at a time
    if ds.input_shape != (INPUT_SIZE, INPUT_SIZE, 1) or ds.num_classes != 10:
        raise ConfigError(f"the evaluator needs 28x28x1 images of 10 classes; {cfg.dataset} has {ds.input_shape}")
    model, t0 = cfg.model(), time.perf_counter()
    init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(cfg.seed))
    params = model.init(init_rng, jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 1)))["params"]
    tx = optax.adam(cfg.learning_rate)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y, rng):
        def loss_fn(p):
            logits, _ = model.apply({"params": p}, x, train=True, rngs={"dropout": rng})
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    np_rng = np.random.default_rng(cfg.seed)
    n, i = len(train["y"]), 0
    for _ in range(cfg.epochs):
        order = np_rng.permutation(n)
        for start in range(0, n - cfg.batch_size + 1, cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            x = _shift(np_rng, data.decode({"x": train["x"][idx]}, ds.scales)["x"], cfg.max_shift)
            params, opt_state = step(params, opt_state, x, train["y"][idx], jax.random.fold_in(dropout_rng, i))
            i += 1
    evaluator = FeatureClassifier(cfg, params)
    accuracy = float(np.mean(np.argmax(evaluator.predict(test["x"])[1], -1) == test["y"]))
    report = {"config": dataclasses.asdict(cfg), "key": cfg.key(), "test_accuracy": accuracy, "train_steps": i,
              "train_seconds": round(time.perf_counter() - t0, 1)}
    return params, report


@functools.lru_cache(maxsize=8)
def _apply_fn(cfg: FeatureClassifierConfig):
    """One jitted forward pass per evaluator architecture, shared by every `FeatureClassifier` of it."""
    model = cfg.model()

    def apply(params, x):
        if x.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
            x = jax.image.resize(x, (x.shape[0], INPUT_SIZE, INPUT_SIZE, 1), "linear")
        logits, features = model.apply({"params": params}, x)
        return features, jax.nn.softmax(logits)

    return jax.jit(apply)


class FeatureClassifier:
    """A trained LeNet: features and class probabilities of images in [0, 1], and the sample-quality report."""

    def __init__(self, cfg: FeatureClassifierConfig, params: Any, info: dict[str, Any] | None = None):
        self.cfg, self.params, self.info = cfg, params, info or {}
        self._apply = _apply_fn(cfg)

    def predict(self, images: np.ndarray, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
        """(features, probabilities) of NHWC images in [0, 1]; other sizes are resized to 28x28."""
        images = np.asarray(images, np.float32)
        if images.shape[-1] != 1:
            raise ConfigError(f"the evaluator classifies 1-channel images, got shape {images.shape[1:]}")
        feats, probs = [], []
        for start in range(0, len(images), batch_size):
            f, p = self._apply(self.params, images[start:start + batch_size])
            feats.append(np.asarray(f))
            probs.append(np.asarray(p))
        return np.concatenate(feats), np.concatenate(probs)

    def report(self, fake: np.ndarray, real_features: np.ndarray) -> dict[str, float]:
        """Metrics of generated images `fake` (NHWC in [0, 1]) against precomputed real-image features."""
        feats, probs = self.predict(fake)
        return {"frechet_lenet": feature_frechet_distance(feats, real_features),
                "classifier_score": classifier_score(probs), "class_kl": class_histogram_kl(probs)}


def _paths(cfg: FeatureClassifierConfig):
    root = cache_dir("evaluators")
    stem = "lenet-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in cfg.dataset) + f"-{cfg.key()}"
    return root / f"{stem}.npz", root / f"{stem}.json"


def load_or_train(cfg: FeatureClassifierConfig = FeatureClassifierConfig(), data_dir: str | None = None
                  ) -> FeatureClassifier:
    """The cached evaluator of `cfg`, training (and caching) it first if this machine has none (`data_dir`: where
    its dataset's files are, when they are not in the default places; not part of the key)."""
    params_path, report_path = _paths(cfg)
    if params_path.exists() and report_path.exists():
        with np.load(params_path, allow_pickle=False) as f:
            params = traverse_util.unflatten_dict({k: jnp.asarray(f[k]) for k in f.files}, sep="/")
        report = json.loads(report_path.read_text())
    else:
        log.info("training the LeNet evaluator %s once (cached in %s)", cfg.key(), params_path.parent)
        params, report = train_classifier(cfg, data_dir)
        flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}
        tmp = params_path.with_suffix(".tmp.npz")
        np.savez(tmp, **flat)
        tmp.replace(params_path)
        tmp_json = report_path.with_suffix(".tmp")
        tmp_json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        tmp_json.replace(report_path)
        log.info("evaluator test accuracy %.4f (%s s)", report["test_accuracy"], report["train_seconds"])
    if report["test_accuracy"] < cfg.min_accuracy:
        raise ConfigError(f"the evaluator {params_path} reaches only {report['test_accuracy']:.4f} test accuracy "
                          f"on {cfg.dataset} (< {cfg.min_accuracy}); its numbers would mean little")
    return FeatureClassifier(cfg, params, report)
