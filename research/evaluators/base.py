"""The evaluator interface (big_vision's `evaluators/` are the model): state in, metrics and pictures out."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np
from jax.sharding import Mesh


@dataclasses.dataclass(frozen=True)
class EvalContext:
    """Where an evaluation runs: the step, the mesh, and whether to draw (replica 0 of a run draws; the others
    of a `--num_seeds` run only compute metrics). Every process calls the evaluator; only the first one's
    writer writes."""

    step: int
    mesh: Mesh
    pictures: bool = True


@dataclasses.dataclass
class Evaluation:
    """Metrics (floats), pictures (`images`: HWC arrays in [0, 1]; `figures`: matplotlib figures, closed by the
    writer) and texts, each by name; the loop writes them as `images/<name>_<step>.png`,
    `samples/<name>_<step>.txt` and to TensorBoard."""

    metrics: dict[str, float]
    images: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)
    texts: dict[str, str] = dataclasses.field(default_factory=dict)


class Evaluator(Protocol):
    def evaluate(self, state: Any, ctx: EvalContext) -> Evaluation: ...


def merge(evaluations: Iterable[Evaluation]) -> Evaluation:
    """One evaluation holding all of them (names must not repeat)."""
    out = Evaluation({})
    for e in evaluations:
        for mine, theirs in ((out.metrics, e.metrics), (out.images, e.images), (out.figures, e.figures),
                             (out.texts, e.texts)):
            clash = mine.keys() & theirs.keys()
            if clash:
                raise ValueError(f"two evaluators report {sorted(clash)}")
            mine.update(theirs)
    return out
