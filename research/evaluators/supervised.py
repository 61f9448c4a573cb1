"""Test metrics of a model that maps `x` to logits or predictions (the MLP family and the sequence tasks).

Classification: accuracy, macro precision/recall/F1, ROC-AUC (`research/metrics/classification.py`); per-step
classification (the copy task): cross-entropy and accuracy over every step, plus the accuracy of the scored
steps. Regression: MSE, RMSE and R² in the targets' original units (standardised targets are scaled back by
`dataset.info["target_std"]`). Datasets that name a baseline in `info["baseline"]` also report it, computed on
the same test data (`baseline_<metric>`), so TensorBoard and `final.json` show the model beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from research.data import Dataset, map_batches
from research.data.registry import Arrays
from research.evaluators.base import EvalContext, Evaluation
from research.metrics import sequence as seqm
from research.metrics.classification import classification_report
from research.metrics.regression import regression_report
from research.parallel import batch_sharding

KINDS = ("classify", "regress")


def data_baseline(dataset: Dataset) -> Callable[[Arrays], dict[str, float]] | None:
    """The baseline named in `dataset.info["baseline"]`, as a function of the evaluation arrays."""
    kind = dataset.info.get("baseline")
    if kind is None:
        return None
    if kind == "predict 1":
        return lambda a: {"baseline_mse": seqm.constant_prediction_mse(a["y"], 1.0)}
    if kind == "memoryless":
        return lambda a: {"baseline_loss": seqm.per_step_marginal_xent(a["y"], dataset.num_classes)}
    if kind == "persistence":
        return lambda a: {"baseline_mse": seqm.persistence_mse(a["x"], a["y"])}
    raise ValueError(f"unknown baseline {kind!r} in dataset {dataset.name!r}")


class SupervisedEvaluator:
    """Metrics of `predict(state, x) -> outputs` on a split, in global batches of `batch_size` over the mesh."""

    def __init__(self, predict: Callable[[Any, jax.Array], jax.Array], dataset: Dataset, kind: str, batch_size: int,
                 *, per_step: bool = False, split: str = "test", every: int = 0):
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        self.dataset, self.kind, self.batch_size, self.per_step, self.every = dataset, kind, batch_size, per_step, every
        self.arrays = dataset.split(split)
        self.target_std = float(dataset.info.get("target_std", 1.0))
        self.scored_steps = int(dataset.info.get("scored_steps", 0))
        baseline = data_baseline(dataset)
        self.baseline = baseline(self.arrays) if baseline else {}
        self._predict = jax.jit(predict)

    def outputs(self, state: Any, ctx: EvalContext) -> np.ndarray:
        return map_batches(lambda b: self._predict(state, b["x"]), {"x": self.arrays["x"]}, self.batch_size,
                           batch_sharding(ctx.mesh))

    def evaluate(self, state: Any, ctx: EvalContext) -> Evaluation:
        outputs, y = self.outputs(state, ctx), self.arrays["y"]
        if self.kind == "classify" and self.per_step:
            metrics = seqm.per_step_classification_report(outputs, y, self.scored_steps)
        elif self.kind == "classify":
            metrics = classification_report(outputs, y, self.dataset.num_classes)
        else:
            metrics = regression_report(np.asarray(outputs)[..., 0] * self.target_std, y * self.target_std)
        return Evaluation({**metrics, **self.baseline})
