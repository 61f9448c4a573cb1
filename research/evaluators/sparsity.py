"""How sparse a pruned run's weights are (`--prune_sparsity`; research/compress/prune.py): the fraction of exact zeros
over the pruned arrays (`sparsity`), per array (`sparsity/<path>`, e.g. `sparsity/Dense_0/kernel`), and the
counts `nonzero_weights` / `weights`. The loop puts the last evaluation in final.json."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from research.compress.prune import sparsity_report
from research.evaluators.base import EvalContext, Evaluation


def sparsity_evaluators(optimizer: Any, params: Callable[[Any], Any]) -> list[SparsityEvaluator]:
    """[a SparsityEvaluator of `params(state)`] when `optimizer` (an OptimizerConfig) prunes, else []."""
    prune = optimizer.prune
    return [SparsityEvaluator(params, prune.params)] if prune.enabled else []


class SparsityEvaluator:
    """`sparsity_report` of `params(state)` over the arrays the regex `pattern` selects."""

    def __init__(self, params: Callable[[Any], Any], pattern: str):
        self.params, self.pattern = params, pattern

    def evaluate(self, state: Any, ctx: EvalContext) -> Evaluation:
        return Evaluation(sparsity_report(self.params(state), self.pattern))
