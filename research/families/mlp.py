"""The MLP family: a multi-layer perceptron classifier (softmax cross-entropy) or regressor (MSE) of any
dataset's `x`, trained by the supervised task and scored by the supervised evaluator."""

from __future__ import annotations

import dataclasses
import math

from jax.sharding import Mesh

from research.data import DataConfig
from research.errors import ConfigError
from research.evaluators.supervised import SupervisedEvaluator
from research.families import Run
from research.loop import LoopConfig
from research.models.activations import activation
from research.models.mlp import MLP
from research.optim import OptimizerConfig
from research.parallel import check_divisible
from research.tasks.supervised import SupervisedConfig, SupervisedTask

FAMILY = "mlp"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = False

    def __post_init__(self) -> None:
        if any(h <= 0 for h in self.hidden):
            raise ConfigError(f"--hidden widths must be positive, got {list(self.hidden)}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        activation(self.activation)


@dataclasses.dataclass(frozen=True)
class Config:
    data: DataConfig
    loop: LoopConfig
    optimizer: OptimizerConfig
    model: ModelConfig = ModelConfig()
    task: SupervisedConfig = SupervisedConfig()
    eval_batch_size: int = 0         # 0: the smallest multiple of the batch size holding >= 512 examples

    def __post_init__(self) -> None:
        if self.eval_batch_size < 0:
            raise ConfigError(f"--eval_batch_size must be >= 0, got {self.eval_batch_size}")


def eval_batch_size(requested: int, batch_size: int) -> int:
    """`requested`, or the smallest multiple of the training batch holding >= 512 examples."""
    return requested or batch_size * math.ceil(512 / batch_size)


def build(cfg: Config, mesh: Mesh | None = None, *, evaluate: bool = True) -> Run:
    dataset = cfg.data.load()
    kind = cfg.task.kind
    out_dim = dataset.num_classes if kind == "classify" and dataset.num_classes else 1
    model = MLP(hidden=cfg.model.hidden, out_dim=out_dim, activation=cfg.model.activation,
                dropout=cfg.model.dropout, batch_norm=cfg.model.batch_norm)
    task = SupervisedTask(model, dataset, cfg.optimizer, cfg.task, batch_size=cfg.data.batch_size,
                          steps=cfg.loop.steps)
    batch = eval_batch_size(cfg.eval_batch_size, cfg.data.batch_size)
    if mesh is not None:
        check_divisible(cfg.data.batch_size, mesh)
        check_divisible(batch, mesh, "--eval_batch_size")
    evaluators = [SupervisedEvaluator(task.predict, dataset, kind, batch)] if evaluate else []
    return Run(task, evaluators, dataset)
