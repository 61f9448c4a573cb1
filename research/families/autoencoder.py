"""The autoencoder family: dense / convolutional, denoising and variational autoencoders of pixels in [0, 1],
scored against an exact PCA baseline with the same code size."""

from __future__ import annotations

import dataclasses

from jax.sharding import Mesh

from research.compress.config import QuantConfig
from research.data import DataConfig
from research.errors import ConfigError
from research.evaluators.ema import with_ema
from research.evaluators.reconstruction import ReconstructionEvaluator
from research.evaluators.sparsity import sparsity_evaluators
from research.families import Run
from research.families.mlp import eval_batch_size
from research.loop import LoopConfig
from research.models.activations import activation
from research.models.autoencoder import ARCHS, make_autoencoder
from research.optim import OptimizerConfig
from research.parallel import check_divisible
from research.tasks.autoencoder import AutoencoderConfig, AutoencoderTask

FAMILY = "autoencoder"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    arch: str = "dense"                          # dense | conv
    encoder: tuple[int, ...] = (1000, 500, 250)  # dense encoder widths before the code layer
    decoder: tuple[int, ...] | None = None       # dense decoder widths (None: the encoder's, reversed)
    conv_channels: tuple[int, ...] = (32, 64)    # channels of the stride-2 3x3 convolutions (conv)
    latent: int = 30
    activation: str = "relu"
    code_activation: str = "identity"

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown autoencoder architecture {self.arch!r}; choose one of {', '.join(ARCHS)}")
        for name in ("encoder", "decoder", "conv_channels"):
            widths = getattr(self, name) or ()
            if any(w <= 0 for w in widths):
                raise ConfigError(f"--{name} needs positive widths, got {list(widths)}")
        if self.arch == "conv" and not self.conv_channels:
            raise ConfigError("--conv_channels needs at least one level")
        if self.latent < 1:
            raise ConfigError(f"--latent must be positive, got {self.latent}")
        activation(self.activation)
        activation(self.code_activation)


@dataclasses.dataclass(frozen=True)
class Config:
    data: DataConfig
    loop: LoopConfig
    optimizer: OptimizerConfig
    model: ModelConfig = ModelConfig()
    objective: AutoencoderConfig = AutoencoderConfig()
    eval_batch_size: int = 0          # 0: the smallest multiple of the batch size holding >= 512 examples
    interpolation_steps: int = 8      # decoded points on each latent interpolation line
    quant: QuantConfig = QuantConfig()  # --qat=int8 (research/compress/quantize.py)

    def __post_init__(self) -> None:
        self.quant.only_qat("autoencoder")
        if self.objective.variational and self.model.code_activation != "identity":
            raise ConfigError("a variational encoder emits a Gaussian's mean and log-variance: its code layer is "
                              "linear (leave --code_activation unset)")
        if self.eval_batch_size < 0:
            raise ConfigError(f"--eval_batch_size must be >= 0, got {self.eval_batch_size}")
        if self.interpolation_steps < 2:
            raise ConfigError(f"--interpolation_steps must be >= 2, got {self.interpolation_steps}")


def build(cfg: Config, mesh: Mesh | None = None, *, evaluate: bool = True) -> Run:
    dataset = cfg.data.load()
    m = cfg.model
    model = make_autoencoder(m.arch, dataset.input_shape, m.latent, hidden=m.encoder, decoder_hidden=m.decoder,
                             channels=m.conv_channels, activation_name=m.activation,
                             code_activation=m.code_activation, variational=cfg.objective.variational)
    if cfg.quant.qat:  # the training forward pass (__call__) fake-quantised; encode / decode stay float
        from research.compress.quantize import wrap

        model = wrap(model, cfg.quant)
    task = AutoencoderTask(model, dataset, cfg.optimizer, cfg.objective, batch_size=cfg.data.batch_size,
                           steps=cfg.loop.steps, augment=cfg.data.augment, ema_decay=cfg.loop.ema_decay)
    batch = eval_batch_size(cfg.eval_batch_size, cfg.data.batch_size)
    if mesh is not None:
        check_divisible(cfg.data.batch_size, mesh)
        check_divisible(batch, mesh, "--eval_batch_size")
    evaluators = with_ema([ReconstructionEvaluator(task, dataset, batch, interpolation_steps=cfg.interpolation_steps)
                           ], cfg.loop.ema_decay) if evaluate else []
    if evaluate:
        evaluators += sparsity_evaluators(cfg.optimizer, task.params)  # with --prune_sparsity
    return Run(task, evaluators, dataset)
