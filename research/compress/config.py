"""The frozen settings of compression, validated as they are built (like every config; research/families).

`PruneConfig` is composed into `OptimizerConfig` (pruning is part of the optax chain, so every family has it);
`QuantConfig` and `DistillConfig` into the family configs that support them. Each default is "off", and a run with
every default computes exactly what it computed before compression existed.
"""

from __future__ import annotations

import dataclasses
import math
import re

from research.errors import ConfigError

SCOPES = ("global", "layer")
QAT_METHODS = ("int8",)
PTQ_METHODS = ("int8_weights", "int8_dynamic")
DEFAULT_PRUNE_PARAMS = r"(^|/)kernel$"  # dense and conv kernels: not biases, norm scales or embeddings


@dataclasses.dataclass(frozen=True)
class PruneConfig:
    """Gradual magnitude pruning (research/compress/prune.py). `sparsity` 0: off. `start`/`end` None: a quarter and
    three quarters of the run's steps (resolved by `research.compress.prune.resolve`)."""

    sparsity: float = 0.0          # final fraction of zeros among the pruned arrays
    start: int | None = None       # first pruning step (sparsity 0 there: the schedule starts from it)
    end: int | None = None         # last pruning step; the final sparsity from here on
    every: int = 10                # prune every this many steps between start and end (and at end)
    scope: str = "global"          # global: one magnitude threshold over all pruned arrays; layer: each its own
    params: str = DEFAULT_PRUNE_PARAMS  # regex over a parameter's path ("Dense_0/kernel"): which arrays to prune

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sparsity) and 0 <= self.sparsity < 1):
            raise ConfigError(f"--prune_sparsity must be in [0, 1) (0: off), got {self.sparsity}")
        if self.start is not None and self.start < 0:
            raise ConfigError(f"--prune_start must be >= 0, got {self.start}")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ConfigError(f"--prune_end={self.end} is before --prune_start={self.start}")
        if self.end is not None and self.end < 1:
            raise ConfigError(f"--prune_end must be >= 1, got {self.end}")
        if self.every < 1:
            raise ConfigError(f"--prune_every must be >= 1, got {self.every}")
        if self.scope not in SCOPES:
            raise ConfigError(f"unknown --prune_scope {self.scope!r}; choose one of {', '.join(SCOPES)}")
        try:
            re.compile(self.params)
        except re.error as e:
            raise ConfigError(f"--prune_params={self.params!r} is not a regular expression: {e}") from None

    @property
    def enabled(self) -> bool:
        return self.sparsity > 0


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    """int8 quantisation with qwix (research/compress/quantize.py). `qat`: train with fake-quantised int8 weights
    and activations; `ptq`: the model is post-training quantised (what `launch.quantize` writes; inference only);
    `evaluate`: also score the model post-training quantised with these methods at every evaluation."""

    qat: str = ""                  # "" | int8
    ptq: str = ""                  # "" | int8_weights | int8_dynamic
    evaluate: tuple[str, ...] = ()  # PTQ methods whose metrics every evaluation reports beside the float model's

    def only_qat(self, family: str) -> None:
        """ConfigError unless this is at most --qat: post-training quantisation is implemented for the mlp family."""
        if self.ptq or self.evaluate:
            raise ConfigError(f"post-training quantisation (launch.quantize, --ptq_eval) is implemented for the mlp "
                              f"family, not {family}")

    def __post_init__(self) -> None:
        unknown = [m for m in self.evaluate if m not in PTQ_METHODS]
        if unknown or len(set(self.evaluate)) != len(self.evaluate):
            raise ConfigError(f"--ptq_eval={','.join(self.evaluate)}: name each method once, from "
                              f"{', '.join(PTQ_METHODS)}")
        if self.qat and self.qat not in QAT_METHODS:
            raise ConfigError(f"unknown --qat {self.qat!r}; choose one of {', '.join(QAT_METHODS)}")
        if self.ptq and self.ptq not in PTQ_METHODS:
            raise ConfigError(f"unknown --method {self.ptq!r}; choose one of {', '.join(PTQ_METHODS)}")


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation (Hinton, Vinyals & Dean 2015) from the run in `teacher` (a workdir; "": off):
    loss = (1 - weight) CE(labels) + weight T² KL(teacher_T || student_T) at temperature T."""

    teacher: str = ""
    temperature: float = 4.0
    weight: float = 0.9

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(f"--distill_temperature must be > 0, got {self.temperature}")
        if not (math.isfinite(self.weight) and 0 <= self.weight <= 1):
            raise ConfigError(f"--distill_weight must be in [0, 1], got {self.weight}")

    @property
    def enabled(self) -> bool:
        return bool(self.teacher)
