"""The MLP family: a multi-layer perceptron classifier (softmax cross-entropy) or regressor (MSE) of any
dataset's `x`, or a convolutional one of images (`architecture`: `cnn`, `lenet`; research/models/lenet.py), trained
by the supervised task and scored by the supervised evaluator (and on the parameters' EMA with --ema_decay)."""

from __future__ import annotations

import dataclasses
import math

from jax.sharding import Mesh

from research.compress.config import DistillConfig, QuantConfig
from research.data import DataConfig
from research.errors import ConfigError
from research.evaluators.ema import with_ema
from research.evaluators.sparsity import SparsityEvaluator
from research.evaluators.supervised import SupervisedEvaluator
from research.families import Run
from research.loop import LoopConfig
from research.models.activations import activation
from research.models.lenet import conv_classifier, minimum_size
from research.models.mlp import MLP
from research.optim import OptimizerConfig
from research.parallel import check_divisible
from research.tasks.supervised import SupervisedConfig, SupervisedTask

FAMILY = "mlp"
ARCHITECTURES = ("mlp", "cnn", "lenet")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """mlp: `hidden` layers of `activation`, `dropout` after each, optional `batch_norm`. cnn and lenet
    (research/models/lenet.py): `dropout` before the output layer; cnn puts `hidden` dense layers of `activation`
    before it (launch.mlp passes none unless --hidden is given), lenet has its own (and tanh)."""

    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = False
    architecture: str = "mlp"             # mlp | cnn | lenet

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"unknown --architecture {self.architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
        if self.architecture != "mlp" and self.batch_norm:
            raise ConfigError(f"--batch_norm applies to --architecture=mlp, not {self.architecture}")
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
    quant: QuantConfig = QuantConfig()        # --qat=int8, or a launch.quantize output (inference only)
    distill: DistillConfig = DistillConfig()  # --distill_from=TEACHER_WORKDIR (off: "")

    def __post_init__(self) -> None:
        if self.eval_batch_size < 0:
            raise ConfigError(f"--eval_batch_size must be >= 0, got {self.eval_batch_size}")
        if self.distill.enabled and self.task.kind != "classify":
            raise ConfigError("--distill_from trains classifiers; it does not apply to --task=regress")


def eval_batch_size(requested: int, batch_size: int) -> int:
    """`requested`, or the smallest multiple of the training batch holding >= 512 examples."""
    return requested or batch_size * math.ceil(512 / batch_size)


def make_model(m: ModelConfig, input_shape: tuple[int, ...], out_dim: int, dataset_name: str):
    """The flax module of `m` for inputs of `input_shape`; ConfigError (one line) if a convolutional architecture
    is asked for on data that are not images large enough for it."""
    if m.architecture == "mlp":
        return MLP(hidden=m.hidden, out_dim=out_dim, activation=m.activation, dropout=m.dropout,
                   batch_norm=m.batch_norm)
    if len(input_shape) != 3:
        raise ConfigError(f"--architecture={m.architecture} needs image data (examples of shape H x W x C); "
                          f"{dataset_name} has examples of shape {tuple(input_shape)}")
    cnn = m.architecture == "cnn"
    model = conv_classifier(m.architecture, out_dim, dropout=m.dropout, hidden=m.hidden if cnn else (),
                            activation_name=m.activation if cnn else None)
    if model.output_size(min(input_shape[:2])) < 1:
        side = minimum_size(model)
        raise ConfigError(f"--architecture={m.architecture} needs images of at least {side}x{side}; {dataset_name} "
                          f"has {input_shape[0]}x{input_shape[1]}")
    return model


def build(cfg: Config, mesh: Mesh | None = None, *, evaluate: bool = True) -> Run:
    dataset = cfg.data.load()
    kind = cfg.task.kind
    out_dim = dataset.num_classes if kind == "classify" and dataset.num_classes else 1
    model = make_model(cfg.model, dataset.input_shape, out_dim, dataset.name)
    task_class, float_model = SupervisedTask, model
    if cfg.quant.qat or cfg.quant.ptq:  # qwix is imported only by runs that quantise
        from research.compress import quantize

        model = quantize.wrap(model, cfg.quant)
        task_class = quantize.PostTrainingQuantizedTask if cfg.quant.ptq else SupervisedTask
    teacher = None
    if cfg.distill.enabled and evaluate:  # evaluate=False: the run is read for inference (export), no teacher
        from research.compress.distill import load_teacher

        teacher = load_teacher(cfg.distill, dataset, mesh)
    task = task_class(model, dataset, cfg.optimizer, cfg.task, batch_size=cfg.data.batch_size,
                      steps=cfg.loop.steps, augment=cfg.data.augment, ema_decay=cfg.loop.ema_decay,
                      teacher=teacher, distill_temperature=cfg.distill.temperature,
                      distill_weight=cfg.distill.weight)
    batch = eval_batch_size(cfg.eval_batch_size, cfg.data.batch_size)
    if mesh is not None:
        check_divisible(cfg.data.batch_size, mesh)
        check_divisible(batch, mesh, "--eval_batch_size")
    evaluators = with_ema([SupervisedEvaluator(task.predict, dataset, kind, batch)],
                          cfg.loop.ema_decay) if evaluate else []
    if evaluate and cfg.optimizer.prune.enabled:  # final.json: the sparsity reached, overall and per layer
        evaluators.append(SparsityEvaluator(task.params, cfg.optimizer.prune.params))
    if evaluate and cfg.quant.evaluate:  # the PTQ twins' metrics and bytes beside the float model's
        from research.evaluators.quantized import QuantizedEvaluator

        evaluators.append(QuantizedEvaluator(float_model, cfg.quant.evaluate, dataset, kind, batch))
    return Run(task, evaluators, dataset)
