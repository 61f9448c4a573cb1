"""The GAN family: DCGAN or MLP players; minimax, non-saturating, Wasserstein, hinge and least-squares losses;
gradient penalty or weight clipping; n_critic critic updates per generator update; unrolled critics;
class-conditional DCGANs. Images are scored with the Fréchet distance in the features of a classifier trained on
the run's dataset (research/metrics/feature_classifier.py), 2-D mixtures by mode coverage."""

from __future__ import annotations

import dataclasses

from jax.sharding import Mesh

from research.compress.config import QuantConfig
from research.data import DataConfig
from research.data.transforms import resized
from research.errors import ConfigError
from research.evaluators.ema import with_ema
from research.evaluators.gan import GANEvaluator
from research.evaluators.sparsity import sparsity_evaluators
from research.families import Run
from research.loop import LoopConfig
from research.metrics.feature_classifier import CLASSIFIERS, classifier_for, load_or_train
from research.models.activations import activation
from research.models.dcgan import UPSAMPLERS, DCGANDiscriminator, DCGANGenerator, resolution_plan
from research.models.gan_mlp import MLPDiscriminator, MLPGenerator
from research.optim import OptimizerConfig
from research.parallel import check_divisible
from research.tasks.gan import GANConfig, GANTask

FAMILY = "gan"
ARCHITECTURES = ("dcgan", "mlp")
EVALUATORS = ("auto", "lenet", "none")  # auto: the LeNet of the run's dataset, if it has one (classifier_for)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    architecture: str = "dcgan"            # dcgan (images) | mlp (2-D data, or flattened images)
    embed_dim: int = 16                    # conditional: size of the generator's label embedding
    # DCGAN
    g_width: int = 64
    d_width: int = 64
    g_batch_norm: bool = True
    d_batch_norm: bool = True
    spectral_norm: bool = False
    upsample: str = "phase"                # phase | mixed | phase2x2 | transpose (research/models/dcgan.py)
    # MLP
    g_hidden: tuple[int, ...] = (128, 128)
    d_hidden: tuple[int, ...] = (128, 128)
    mlp_activation: str = "tanh"
    mlp_init: str = "default"              # default | orthogonal
    init_gain: float = 1.0

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"unknown --architecture {self.architecture!r}; choose one of "
                              f"{', '.join(ARCHITECTURES)}")
        if self.g_width < 1 or self.d_width < 1 or self.embed_dim < 1:
            raise ConfigError("--g_width, --d_width and --embed_dim must be positive")
        for name in ("g_hidden", "d_hidden"):
            if any(w <= 0 for w in getattr(self, name)):
                raise ConfigError(f"--{name} widths must be positive, got {list(getattr(self, name))}")
        if self.upsample not in UPSAMPLERS:
            raise ConfigError(f"unknown --upsample {self.upsample!r}; choose one of {', '.join(UPSAMPLERS)}")
        if self.mlp_init not in ("default", "orthogonal"):
            raise ConfigError(f"unknown --mlp_init {self.mlp_init!r}; choose default or orthogonal")
        activation(self.mlp_activation)


@dataclasses.dataclass(frozen=True)
class Config:
    data: DataConfig
    loop: LoopConfig
    g_optimizer: OptimizerConfig
    d_optimizer: OptimizerConfig
    model: ModelConfig = ModelConfig()
    gan: GANConfig = GANConfig()
    image_size: int = 0               # train on images resized to this size (0: the dataset's)
    evaluator: str = "auto"           # image metrics from the run's dataset's LeNet classifier: auto | lenet | none
    num_eval_samples: int = 0         # 0: 2,500 for 2-D data, the test split's size for images
    eval_batch_size: int = 512        # samples generated per batch at evaluation and sampling
    grid_size: int = 64               # images in each evaluation's sample grid
    quant: QuantConfig = QuantConfig()  # --qat=int8: both players fake-quantised (research/compress/quantize.py)

    def __post_init__(self) -> None:
        self.quant.only_qat("gan")
        if self.image_size < 0:
            raise ConfigError(f"--image_size must be >= 0, got {self.image_size}")
        if self.gan.conditional and self.model.architecture != "dcgan":
            raise ConfigError("--conditional is implemented for --architecture=dcgan only")
        if self.evaluator not in EVALUATORS:
            raise ConfigError(f"unknown --evaluator {self.evaluator!r}; choose one of {', '.join(EVALUATORS)}")
        if self.num_eval_samples < 0 or self.grid_size < 1 or self.eval_batch_size < 1:
            raise ConfigError("--num_eval_samples must be >= 0, --grid_size and --eval_batch_size >= 1")


def _players(cfg: Config, shape: tuple[int, ...], images: bool, num_classes: int):
    """(generator, discriminator) for data of `shape`."""
    m = cfg.model
    if m.architecture == "mlp":
        common = {"activation": m.mlp_activation, "weight_init": m.mlp_init, "init_gain": m.init_gain}
        return (MLPGenerator(out_shape=tuple(shape), hidden=list(m.g_hidden), output_tanh=images, **common),
                MLPDiscriminator(hidden=list(m.d_hidden), **common))
    if not images:
        raise ConfigError(f"--architecture=dcgan needs image data; use --architecture=mlp for {cfg.data.name}")
    resolution_plan(shape[0])
    g = DCGANGenerator(size=shape[0], channels=shape[2], width=m.g_width, batch_norm=m.g_batch_norm,
                       num_classes=num_classes, embed_dim=m.embed_dim, upsample=m.upsample)
    d = DCGANDiscriminator(size=shape[0], width=m.d_width, batch_norm=m.d_batch_norm, spectral_norm=m.spectral_norm,
                           num_classes=num_classes)
    return g, d


def build(cfg: Config, mesh: Mesh | None = None, *, evaluate: bool = True) -> Run:
    dataset = cfg.data.load()
    images = len(dataset.input_shape) == 3
    if cfg.image_size and not images:
        raise ConfigError(f"--image_size applies to image datasets, not {dataset.name}")
    if cfg.image_size:
        dataset = resized(dataset, cfg.image_size)
    num_classes = dataset.num_classes if cfg.gan.conditional and dataset.num_classes else 0
    g, d = _players(cfg, dataset.input_shape, images, num_classes)
    if cfg.quant.qat:
        from research.compress.quantize import wrap

        g, d = wrap(g, cfg.quant), wrap(d, cfg.quant)
    task = GANTask(g, d, dataset, cfg.g_optimizer, cfg.d_optimizer, cfg.gan, batch_size=cfg.data.batch_size,
                   steps=cfg.loop.steps, augment=cfg.data.augment, ema_decay=cfg.loop.ema_decay)
    if mesh is not None:
        check_divisible(cfg.data.batch_size, mesh)
        check_divisible(cfg.eval_batch_size, mesh, "--eval_batch_size")
    if not evaluate:
        return Run(task, [], dataset)
    classifier = None
    own = classifier_for(dataset.name)  # mnist_5k / tfds:mnist, mnist, fashion_mnist: each its dataset's LeNet
    if cfg.evaluator != "none" and images and (cfg.evaluator == "lenet" or own is not None):
        if dataset.input_shape[-1] != 1:
            raise ConfigError(f"--evaluator=lenet classifies 1-channel digits; {dataset.name} has "
                              f"{dataset.input_shape[-1]} channels")
        classifier = load_or_train(own or CLASSIFIERS["mnist_5k"], cfg.data.data_dir)  # others: the digits' LeNet
    evaluator = GANEvaluator(task, dataset, batch_size=cfg.eval_batch_size, num_samples=cfg.num_eval_samples,
                             grid_size=cfg.grid_size, classifier=classifier)
    pruned = sparsity_evaluators(cfg.g_optimizer, task.params)  # --prune_sparsity: both players' kernels
    return Run(task, with_ema([evaluator], cfg.loop.ema_decay) + pruned, dataset)
