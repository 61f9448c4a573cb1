"""The metrics and pictures of a run's parameter averages (`--ema_decay`), beside the raw parameters' ones.

`EMAEvaluator(inner)` runs `inner` on `research.state.ema_view(state)` (the state with each averaged field replaced
by its moving average) and prefixes every name it returns with `ema_`: `ema_accuracy`, `ema_frechet_lenet`,
`images/ema_samples_<step>.png`. Metrics that do not depend on the parameters (the data's baselines `baseline_*`,
the PCA baseline `pca_*`) are not repeated. `with_ema` is what a family's `build` calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from research.evaluators.base import EvalContext, Evaluation, Evaluator
from research.state import ema_view

PREFIX = "ema_"
PARAMETER_FREE = ("baseline_", "pca_")  # metric names of baselines computed from the data alone


class EMAEvaluator:
    """`inner`'s evaluation of the averaged model, every name prefixed `ema_`; evaluated on `inner`'s period."""

    def __init__(self, inner: Evaluator):
        self.inner = inner
        self.every = getattr(inner, "every", 0)

    def evaluate(self, state: Any, ctx: EvalContext) -> Evaluation:
        out = self.inner.evaluate(ema_view(state), ctx)
        named = lambda d: {PREFIX + k: v for k, v in d.items()}
        metrics = {k: v for k, v in out.metrics.items() if not k.startswith(PARAMETER_FREE)}
        return Evaluation(named(metrics), named(out.images), named(out.figures), named(out.texts))


def with_ema(evaluators: Sequence[Evaluator], decay: float) -> list[Evaluator]:
    """`evaluators`, followed by each one on the parameter averages when `decay` > 0 (the run keeps an EMA)."""
    evaluators = list(evaluators)
    return evaluators + [EMAEvaluator(e) for e in evaluators] if decay else evaluators
