"""GANs: one train step = `n_critic` critic updates, then one generator update (optionally against an unrolled
critic). Images are scaled from [0, 1] to [-1, 1] for training; samples go back to [0, 1] for pictures.

Each train step consumes one pipeline batch of `n_critic * batch_size` examples; row r of the critic batch
for update i is row `r * n_critic + i` of the pipeline batch, so every critic update sees its own fresh
examples and each device keeps its own rows. The generator update reuses the last critic batch's real
examples (for losses that look at D(x)) and draws fresh z. Everything random comes from `step_rng(state)`.
A conditional model's fakes take the labels of the real batch they are paired with, so the gradient
penalty's interpolates have one well-defined label.

Unrolled GAN (Metz et al. 2017, `unroll_steps=K`): the generator's loss is evaluated with the critic's
parameters after K further critic updates made with the critic's own optimizer on the same real batch and the
generator's current fakes. Gradients flow through those K updates (second-order terms included); the unrolled
critic is then discarded, the real critic keeps the parameters from its `n_critic` updates.

`--augment` augments the real images of every pipeline batch (before the [-1, 1] scaling), never the fakes: the
generator then learns the augmented distribution (noisy, rotated or shifted images alike; what Karras et al.
2020 call leaking), so use only augmentations whose outputs are themselves plausible data, e.g. flips of clothes.
`--ema_decay` keeps a moving average of the generator's parameters and batch statistics (`ema`), updated after
every generator update; the evaluator samples from it too (`ema_*` metrics, `ema_samples` pictures).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from research.data import ArrayPipeline, Dataset, Pipeline, StreamPipeline
from research.data.augment import NO_AUGMENT, AugmentConfig, augment_batch
from research.errors import ConfigError
from research.objectives.gan import gan_loss, gan_penalty
from research.optim import OptimizerConfig, gradient_step, make_optimizer
from research.state import init_ema, step_rng, update_ema


@struct.dataclass
class GANState:
    """Both players' parameters, optimizer states and non-trained collections (batch norm statistics, spectral
    norm vectors), the generator step and the run's key."""

    step: jax.Array
    g_params: Any
    d_params: Any
    g_opt_state: Any
    d_opt_state: Any
    g_state: Any
    d_state: Any
    rng: jax.Array


@dataclasses.dataclass(frozen=True)
class GANConfig:
    z_dim: int = 100
    loss: str = "nonsaturating"
    penalty: str = "none"
    gp_weight: float = 10.0
    weight_clip: float = 0.01
    n_critic: int = 1
    unroll_steps: int = 0
    conditional: bool = False

    def __post_init__(self) -> None:
        gan_loss(self.loss)
        gan_penalty(self.penalty, self.penalty_strength)
        if self.z_dim < 1:
            raise ConfigError(f"--z_dim must be positive, got {self.z_dim}")
        if self.n_critic < 1:
            raise ConfigError(f"--n_critic must be >= 1, got {self.n_critic}")
        if self.unroll_steps < 0:
            raise ConfigError(f"--unroll_steps must be >= 0, got {self.unroll_steps}")
        if self.penalty == "gradient_penalty" and not self.gp_weight > 0:
            raise ConfigError(f"--gp_weight must be positive with the gradient penalty, got {self.gp_weight}")
        if self.penalty == "weight_clip" and not self.weight_clip > 0:
            raise ConfigError(f"--weight_clip must be positive with weight clipping, got {self.weight_clip}")

    @property
    def penalty_strength(self) -> float:
        return {"gradient_penalty": self.gp_weight, "weight_clip": self.weight_clip}.get(self.penalty, 0.0)


def param_key(rng: jax.Array) -> jax.Array:
    """An "rbg" PRNG key derived from `rng`, for drawing initial parameters.

    XLA:CPU compiles threefry-based initialisers slowly: jitting the quickstart DCGAN's G and D init took 22 s
    with threefry keys and 6 s with rbg keys (RngBitGenerator) here. Deterministic for a given seed and backend.
    """
    data = jax.random.key_data(rng) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng
    return jax.random.wrap_key_data(jnp.tile(data.astype(jnp.uint32).reshape(-1), 2), impl="rbg")


def unrolled_scan(body, carry, xs):
    """`jax.lax.scan(body, carry, xs)` written out as a Python loop (the loops here are short: n_critic, K).

    Measured on XLA:CPU: a DCGAN train step with its one critic update inside `lax.scan` took 0.98 s, written out
    0.20 s; convolutions inside a while loop run much more slowly."""
    n = jax.tree.leaves(xs)[0].shape[0]
    outputs = []
    for i in range(n):
        carry, out = body(carry, jax.tree.map(lambda a, i=i: a[i], xs))
        outputs.append(out)
    return carry, jax.tree.map(lambda *o: jnp.stack(o), *outputs)


def critic_batches(x: jax.Array, n_critic: int) -> jax.Array:
    """(n_critic * B, ...) -> (n_critic, B, ...): row r of critic batch i is row r * n_critic + i, so a device
    holding a contiguous block of the pipeline batch holds the same block of every critic batch."""
    return jnp.swapaxes(x.reshape(x.shape[0] // n_critic, n_critic, *x.shape[1:]), 0, 1)


class GANTask:
    """The GAN family's math for the generic loop (see `research.loop.Task`). `batch_size` examples per critic
    update and per generator update; `steps` generator updates (the loop's steps)."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, dataset: Dataset, g_optimizer: OptimizerConfig,
                 d_optimizer: OptimizerConfig, cfg: GANConfig, *, batch_size: int, steps: int,
                 augment: AugmentConfig = NO_AUGMENT, ema_decay: float = 0.0):
        self.g, self.d, self.dataset, self.cfg, self.batch_size = generator, discriminator, dataset, cfg, batch_size
        self.loss_fn = gan_loss(cfg.loss)
        self.penalty = gan_penalty(cfg.penalty, cfg.penalty_strength)
        if cfg.penalty == "gradient_penalty" and getattr(discriminator, "batch_norm", False):
            raise ConfigError("the gradient penalty is per example: turn off the critic's batch norm "
                              "(--d_batch_norm=false)")
        self.is_2d = dataset.sample is not None and len(dataset.input_shape) == 1
        self.images = len(dataset.input_shape) == 3
        if not (self.is_2d or self.images):
            raise ConfigError(f"the GAN family trains on images or generated 2-D mixtures; {dataset.name} has "
                              f"inputs of shape {dataset.input_shape}")
        if self.images and dataset.input_shape[0] != dataset.input_shape[1]:
            raise ConfigError(f"{dataset.name} images are {dataset.input_shape[:2]}, not square; set --image_size")
        if cfg.conditional and (dataset.num_classes is None or not self.images):
            raise ConfigError(f"--conditional needs an image dataset with class labels; {dataset.name} has none")
        self.num_classes = dataset.num_classes if cfg.conditional else 0
        self.data_shape = dataset.input_shape
        if self.images:  # one dict for every replica's pipeline, so the loop copies it to the devices once
            train = dataset.stored("train")  # uint8-coded images stay codes until the train step (Dataset.scales)
            self.train_arrays = {"x": train["x"], **({"y": train["y"]} if cfg.conditional else {})}
        self.g_tx, self.g_schedule = make_optimizer(g_optimizer, steps)
        self.d_tx, self.d_schedule = make_optimizer(d_optimizer, steps * cfg.n_critic)
        self.augment, self.ema_decay = augment, ema_decay

    # ---- model application
    def _d_apply(self, params, model_state, x, labels):
        """Critic outputs in training mode and its updated collections."""
        return self.d.apply({"params": params, **model_state}, x, labels, train=True, mutable=list(model_state))

    def _g_apply(self, params, model_state, z, labels):
        return self.g.apply({"params": params, **model_state}, z, labels, train=True, mutable=list(model_state))

    def _noise(self, rng: jax.Array) -> jax.Array:
        return jax.random.normal(rng, (self.batch_size, self.cfg.z_dim))

    # ---- pure functions (jitted by the loop)
    def init_state(self, rng: jax.Array) -> GANState:
        g_rng, d_rng, run_rng = jax.random.split(rng, 3)
        labels = jnp.zeros((1,), jnp.int32) if self.num_classes else None
        g_vars = dict(self.g.init(param_key(g_rng), jnp.zeros((1, self.cfg.z_dim)), labels, train=False))
        d_vars = dict(self.d.init(param_key(d_rng), jnp.zeros((1, *self.data_shape)), labels, train=False))
        g_params, d_params = g_vars.pop("params"), d_vars.pop("params")
        state = GANState(step=jnp.zeros((), jnp.int32), g_params=g_params, d_params=d_params,
                         g_opt_state=self.g_tx.init(g_params), d_opt_state=self.d_tx.init(d_params),
                         g_state=g_vars, d_state=d_vars, rng=run_rng)
        return init_ema(state, self.ema_decay, ("g_params", "g_state"))

    def critic_update(self, d_params, d_opt_state, d_state, real, real_labels, fake, fake_labels, rng):
        """One critic update (loss + penalty, optimizer, then the penalty's projection); differentiable in `fake`,
        which is what the unrolled generator loss needs. Returns (params, opt_state, model_state, metrics)."""

        def loss_fn(params):
            d_real, s = self._d_apply(params, d_state, real, real_labels)
            d_fake, s = self._d_apply(params, dict(s), fake, fake_labels)
            d_loss, _, parts = self.loss_fn(d_real, d_fake)
            critic = lambda x: self._d_apply(params, dict(s), x, fake_labels)[0]
            penalty, penalty_parts = self.penalty.loss(critic, real, fake, rng)
            extra = {"d_real": jnp.mean(d_real), "d_fake": jnp.mean(d_fake), **parts, **penalty_parts}
            return d_loss + penalty, (dict(s), extra)

        d_params, d_opt_state, d_loss, (new_state, extra), norms = gradient_step(loss_fn, d_params, d_opt_state,
                                                                                 self.d_tx)
        d_params = self.penalty.project(d_params)
        return d_params, d_opt_state, new_state, {"d_loss": d_loss, "d_grad_norm": norms["grad_norm"], **extra}

    def unrolled_critic(self, d_params, d_opt_state, d_state, real, real_labels, fake, fake_labels, rng):
        """The critic's parameters and collections after `unroll_steps` updates on one batch (differentiable)."""
        keys = jax.random.split(rng, self.cfg.unroll_steps)

        def body(carry, key):
            p, o, s = carry
            p, o, s, _ = self.critic_update(p, o, s, real, real_labels, fake, fake_labels, key)
            return (p, o, s), None

        (d_params, _, d_state), _ = unrolled_scan(body, (d_params, d_opt_state, d_state), keys)
        return d_params, d_state

    def generator_loss(self, g_params, g_state, d_params, d_opt_state, d_state, real, real_labels, z, fake_labels,
                       rng):
        """(the generator's loss against the critic, unrolled if configured; (new g_state, metrics))."""
        fake, new_g_state = self._g_apply(g_params, g_state, z, fake_labels)
        if self.cfg.unroll_steps:
            d_params, d_state = self.unrolled_critic(d_params, d_opt_state, d_state, real, real_labels, fake,
                                                     fake_labels, rng)
        d_fake, s = self._d_apply(d_params, d_state, fake, fake_labels)
        d_real, _ = self._d_apply(d_params, dict(s), real, real_labels)
        _, g_loss, _ = self.loss_fn(d_real, d_fake)
        return g_loss, (dict(new_g_state), {"g_loss": g_loss})

    def _real(self, batch: dict[str, jax.Array]) -> jax.Array:
        return batch["x"] * 2.0 - 1.0 if self.images else batch["x"]

    def train_step(self, state: GANState, batch: dict[str, jax.Array]) -> tuple[GANState, dict[str, jax.Array]]:
        n = self.cfg.n_critic
        batch = augment_batch(self.augment, state, batch)
        reals = critic_batches(self._real(batch), n)
        real_labels = critic_batches(batch["y"], n) if self.num_classes else None
        rng = step_rng(state)
        critic_keys = jax.random.split(jax.random.fold_in(rng, 0), n)

        def critic_body(carry, inputs):
            d_params, d_opt_state, d_state = carry
            real, labels, key = inputs
            noise_key, gp_key = jax.random.split(key)
            fake, _ = self._g_apply(state.g_params, state.g_state, self._noise(noise_key), labels)  # stats not kept
            d_params, d_opt_state, d_state, metrics = self.critic_update(
                d_params, d_opt_state, d_state, real, labels, jax.lax.stop_gradient(fake), labels, gp_key)
            return (d_params, d_opt_state, d_state), metrics

        (d_params, d_opt_state, d_state), critic_metrics = unrolled_scan(
            critic_body, (state.d_params, state.d_opt_state, state.d_state), (reals, real_labels, critic_keys))

        labels = None if real_labels is None else real_labels[-1]
        g_loss = lambda p: self.generator_loss(p, state.g_state, d_params, d_opt_state, d_state, reals[-1], labels,
                                               self._noise(jax.random.fold_in(rng, 1)), labels,
                                               jax.random.fold_in(rng, 2))
        g_params, g_opt_state, _, (g_state, g_metrics), g_norms = gradient_step(g_loss, state.g_params,
                                                                                 state.g_opt_state, self.g_tx)

        metrics = {k: jnp.mean(v) for k, v in critic_metrics.items()}
        metrics.update(g_metrics)
        metrics.update({"g_grad_norm": g_norms["grad_norm"], "g_param_norm": g_norms["param_norm"],
                        "d_param_norm": optax.global_norm(d_params), "g_learning_rate": self.g_schedule(state.step),
                        "d_learning_rate": self.d_schedule(state.step * n)})
        new_state = state.replace(step=state.step + 1, g_params=g_params, d_params=d_params, g_opt_state=g_opt_state,
                                  d_opt_state=d_opt_state, g_state=g_state, d_state=d_state)
        return update_ema(new_state, self.ema_decay), metrics

    def generate(self, state: GANState, z: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """Samples in the data's range: [0, 1] for images, raw coordinates for 2-D data (inference mode)."""
        x = self.g.apply({"params": state.g_params, **state.g_state}, z, labels, train=False)
        return (x + 1.0) / 2.0 if self.images else x

    # ---- host side
    def train_pipeline(self, seed: int, sharding) -> Pipeline:
        total = self.batch_size * self.cfg.n_critic
        if self.images:
            return ArrayPipeline(self.train_arrays, total, seed=seed, sharding=sharding, scales=self.dataset.scales)
        sample = self.dataset.sample
        return StreamPipeline(lambda rng, n: {"x": sample(rng, n)["x"]}, total, seed=seed, sharding=sharding)

    def params(self, state: GANState) -> Any:
        return {"generator": state.g_params, "discriminator": state.d_params}
