"""The autoencoder family's math: plain, denoising or variational autoencoders of pixels in [0, 1].

Training minimises a per-image reconstruction loss (`bce` or `mse`, see `research.objectives.reconstruction`)
of the clean input from the (optionally corrupted) input, plus `kl_weight` times the KL term for a VAE. With
`--augment`, each training image is augmented first and that augmented image is both the (corrupted) input and the
target. With `--ema_decay`, the state keeps a moving average of the parameters (`research/state.py`).
Evaluation (against PCA, and the pictures) is `research/evaluators/reconstruction.py`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from research.data import Dataset, Pipeline, train_pipeline
from research.data.augment import NO_AUGMENT, AugmentConfig, augment_batch
from research.errors import ConfigError
from research.models.autoencoder import NOISES, Autoencoder, corrupt
from research.objectives.reconstruction import gaussian_kl, reconstruction_loss, squared_error
from research.optim import OptimizerConfig, gradient_step, make_optimizer
from research.state import TrainState, init_ema, step_rng, update_ema


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
    loss: str = "bce"              # bce | mse
    noise: str = "none"            # none | gaussian | mask: corruption of training inputs (denoising)
    noise_level: float = 0.0       # gaussian: std; mask: probability a pixel is zeroed
    variational: bool = False      # Gaussian encoder, reparameterisation, ELBO
    kl_weight: float = 1.0         # VAE only: weight of the KL term in the training loss (1: the ELBO)

    def __post_init__(self) -> None:
        reconstruction_loss(self.loss)
        if self.noise not in NOISES:
            raise ConfigError(f"unknown --noise {self.noise!r}; choose one of {', '.join(NOISES)}")
        if self.noise == "none" and self.noise_level:
            raise ConfigError(f"--noise_level={self.noise_level} needs --noise=gaussian or --noise=mask")
        if self.noise != "none" and not self.noise_level > 0:
            raise ConfigError(f"--noise={self.noise} needs --noise_level > 0")
        if self.noise == "mask" and not self.noise_level < 1:
            raise ConfigError(f"--noise=mask needs --noise_level in (0, 1), got {self.noise_level}")
        if self.variational and self.loss != "bce":
            raise ConfigError("the variational autoencoder's ELBO uses a Bernoulli decoder: use --loss=bce")
        if not self.variational and self.kl_weight != 1.0:
            raise ConfigError("--kl_weight applies only to --variational")
        if not self.kl_weight >= 0:
            raise ConfigError(f"--kl_weight must be >= 0, got {self.kl_weight}")


class AutoencoderTask:
    def __init__(self, model: Autoencoder, dataset: Dataset, optimizer: OptimizerConfig, cfg: AutoencoderConfig, *,
                 batch_size: int, steps: int, augment: AugmentConfig = NO_AUGMENT, ema_decay: float = 0.0):
        if model.variational != cfg.variational:
            raise ValueError("the model and the config disagree on --variational")
        train_x, scale = dataset.stored("train")["x"], dataset.scales.get("x", 1.0)  # uint8 codes: value = code / scale
        lo, hi = float(train_x.min()) / scale, float(train_x.max()) / scale
        if lo < 0 or hi > 1:
            raise ConfigError(f"autoencoders here reconstruct pixels in [0, 1]; dataset {dataset.name!r} has "
                              f"values in [{lo:.3g}, {hi:.3g}]")
        self.model, self.dataset, self.cfg, self.batch_size = model, dataset, cfg, batch_size
        self.loss_fn = reconstruction_loss(cfg.loss)
        self.tx, self.schedule = make_optimizer(optimizer, steps)
        self.denoising = cfg.noise != "none"
        self.augment, self.ema_decay = augment, ema_decay

    # ---- pure functions (jitted by the loop)
    def init_state(self, rng: jax.Array) -> TrainState:
        params_rng, run_rng = jax.random.split(rng)
        x = jnp.zeros((1, *self.dataset.input_shape), jnp.float32)
        params = self.model.init({"params": params_rng}, x)["params"]
        return init_ema(TrainState.create(params, self.tx, run_rng), self.ema_decay)

    def train_step(self, state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict]:
        rng = step_rng(state)
        x = augment_batch(self.augment, state, batch)["x"]  # the input and the target alike
        seen = corrupt(jax.random.fold_in(rng, 0), x, self.cfg.noise, self.cfg.noise_level)

        def loss_fn(params):
            logits, mean, logvar = self.model.apply({"params": params}, seen, sample=self.model.variational,
                                                    rngs={"latent": jax.random.fold_in(rng, 1)})
            recon = self.loss_fn(logits, x)
            extra = {"sq_error": jnp.mean(squared_error(logits, x))}
            if not self.model.variational:
                return jnp.mean(recon), extra
            kl = gaussian_kl(mean, logvar)
            extra.update(kl=jnp.mean(kl), elbo=-jnp.mean(recon + kl))
            return jnp.mean(recon + self.cfg.kl_weight * kl), extra

        params, opt_state, loss, extra, norms = gradient_step(loss_fn, state.params, state.opt_state, self.tx)
        metrics = {"loss": loss, **extra, "learning_rate": self.schedule(state.step), **norms}
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return update_ema(new_state, self.ema_decay), metrics

    def encode(self, state: TrainState, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """The code's mean (and log-variance for a VAE) of inputs `x`."""
        return self.model.apply({"params": state.params}, x, method=Autoencoder.encode)

    def decode_logits(self, state: TrainState, z: jax.Array) -> jax.Array:
        return self.model.apply({"params": state.params}, z, method=Autoencoder.decode)

    def decode(self, state: TrainState, z: jax.Array) -> jax.Array:
        """Pixels in [0, 1] decoded from codes `z`."""
        return jax.nn.sigmoid(self.decode_logits(state, z))

    # ---- host side
    def train_pipeline(self, seed: int, sharding) -> Pipeline:
        return train_pipeline(self.dataset, self.batch_size, seed=seed, sharding=sharding)

    def params(self, state: TrainState) -> Any:
        return state.params
