"""Supervised learning (classification or regression) of any Flax model `model(x, train=...)`.

The MLP family runs on this, and so do the sequence models (last-state or per-step heads). Train-step metrics:
loss, accuracy (classification), the learning rate and the L2 norms of gradients, parameters and updates. With
`--augment`, training images are augmented on device first (`research/data/augment.py`); with `--ema_decay`, the
state keeps a moving average of the parameters and the model state (`research/state.py`).
With a teacher (`--distill_from`), the loss is knowledge distillation's (`research/objectives/distillation.py`).
Evaluation is `research/evaluators/supervised.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from research import precision
from research.data import Dataset, Pipeline, train_pipeline
from research.data.augment import NO_AUGMENT, AugmentConfig, augment_batch
from research.errors import ConfigError
from research.objectives.classification import softmax_cross_entropy
from research.objectives.distillation import distillation_loss
from research.objectives.regression import mean_squared_error
from research.optim import OptimizerConfig, gradient_step, make_optimizer
from research.state import TrainState, init_ema, step_rng, update_ema

KINDS = ("classify", "regress")


@dataclasses.dataclass(frozen=True)
class SupervisedConfig:
    kind: str = "classify"          # classify (softmax cross-entropy) | regress (MSE)
    compute_dtype: str = "float32"  # bfloat16: activations and matmuls; params and optimizer state stay float32

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown task kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        precision.compute_dtype(self.compute_dtype)


class SupervisedTask:
    def __init__(self, model: nn.Module, dataset: Dataset, optimizer: OptimizerConfig, cfg: SupervisedConfig, *,
                 batch_size: int, steps: int, augment: AugmentConfig = NO_AUGMENT, ema_decay: float = 0.0,
                 teacher: Callable[[jax.Array], jax.Array] | None = None, distill_temperature: float = 1.0,
                 distill_weight: float = 0.0):
        train_y = dataset.split("train")["y"]
        if cfg.kind == "classify" and (dataset.num_classes is None or train_y.dtype.kind not in "iu"):
            raise ConfigError(f"dataset {dataset.name!r} has no class labels; use --task=regress")
        if cfg.kind == "regress" and train_y.dtype.kind != "f":
            raise ConfigError(f"dataset {dataset.name!r} has class labels; use --task=classify")
        self.model, self.dataset, self.cfg, self.batch_size = model, dataset, cfg, batch_size
        self.tx, self.schedule = make_optimizer(optimizer, steps)
        self.compute_dtype = precision.compute_dtype(cfg.compute_dtype)
        self.augment, self.ema_decay = augment, ema_decay  # training images' augmentation; parameter EMA (0: off)
        if teacher is not None and cfg.kind != "classify":
            raise ConfigError("distillation (--distill_from) trains classifiers; this task is a regression")
        # distillation: x -> a frozen teacher's logits, its temperature and the soft term's weight (None: off)
        self.teacher, self.distill_temperature, self.distill_weight = teacher, distill_temperature, distill_weight

    # ---- pure functions (jitted by the loop)
    def init_state(self, rng: jax.Array) -> TrainState:
        params_rng, dropout_rng, run_rng = jax.random.split(rng, 3)
        x = jnp.zeros((1, *self.dataset.input_shape), jnp.float32)
        variables = self.model.init({"params": params_rng, "dropout": dropout_rng}, x, train=False)
        params = variables.pop("params")
        return init_ema(TrainState.create(params, self.tx, run_rng, model_state=dict(variables)), self.ema_decay)

    def _loss(self, outputs: jax.Array, y: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        if self.cfg.kind == "classify":
            loss = softmax_cross_entropy(outputs, y)
            return loss, {"accuracy": jnp.mean(jnp.argmax(outputs, -1) == y)}
        return mean_squared_error(outputs[..., 0], y), {}

    def train_step(self, state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict]:
        batch = augment_batch(self.augment, state, batch)
        mutable = list(state.model_state)
        teacher_logits = None if self.teacher is None else self.teacher(batch["x"])

        def loss_fn(params):
            outputs, new_model_state = self.model.apply(
                {"params": precision.cast(params, self.compute_dtype), **state.model_state},
                batch["x"].astype(self.compute_dtype), train=True, rngs={"dropout": step_rng(state)},
                mutable=mutable)
            outputs = outputs.astype(jnp.float32)
            loss, extra = self._loss(outputs, batch["y"])
            if teacher_logits is not None:
                loss, parts = distillation_loss(outputs, teacher_logits, batch["y"], self.distill_temperature,
                                                self.distill_weight)
                extra = {**extra, **parts}
            return loss, (extra, new_model_state)

        params, opt_state, loss, (extra, new_model_state), norms = gradient_step(loss_fn, state.params,
                                                                                  state.opt_state, self.tx)
        metrics = {"loss": loss, **extra, "learning_rate": self.schedule(state.step), **norms}
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  model_state=dict(new_model_state) if mutable else state.model_state)
        return update_ema(new_state, self.ema_decay), metrics

    def predict(self, state: TrainState, x: jax.Array) -> jax.Array:
        """The model's outputs (logits, or predictions of standardised targets) in inference mode, float32."""
        params = precision.cast(state.params, self.compute_dtype)
        out = self.model.apply({"params": params, **state.model_state}, x.astype(self.compute_dtype), train=False)
        return out.astype(jnp.float32)

    # ---- host side
    def train_pipeline(self, seed: int, sharding) -> Pipeline:
        return train_pipeline(self.dataset, self.batch_size, seed=seed, sharding=sharding)

    def params(self, state: TrainState) -> Any:
        return state.params
