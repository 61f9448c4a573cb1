"""Supervised learning (classification or regression) of any Flax model `model(x, train=...)`.

The MLP family runs on this; so can any other model mapping an `x` batch to logits or predictions (the
sequence classifiers, for instance). Train-step metrics: loss, accuracy (classification), the learning rate
and the L2 norms of gradients, parameters and updates.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from research import precision
from research.data import Dataset, Pipeline, map_batches, train_pipeline
from research.errors import ConfigError
from research.loop import EvalContext
from research.metrics.classification import classification_report
from research.metrics.regression import regression_report
from research.objectives.classification import softmax_cross_entropy
from research.objectives.regression import mean_squared_error
from research.optim import OptimizerConfig, make_optimizer
from research.parallel import batch_sharding, check_divisible
from research.state import TrainState, global_norm, step_rng

KINDS = ("classify", "regress")


@dataclasses.dataclass(frozen=True)
class SupervisedConfig:
    kind: str
    batch_size: int
    steps: int
    eval_batch_size: int = 0  # 0: the smallest multiple of batch_size holding >= 512 examples
    compute_dtype: str = "float32"  # bfloat16: activations and matmuls; params and optimizer state stay float32


class SupervisedTask:
    def __init__(self, model: nn.Module, dataset: Dataset, optimizer: OptimizerConfig, cfg: SupervisedConfig):
        if cfg.kind not in KINDS:
            raise ConfigError(f"unknown task kind {cfg.kind!r}; choose one of {', '.join(KINDS)}")
        train_y = dataset.split("train")["y"]
        if cfg.kind == "classify" and (dataset.num_classes is None or train_y.dtype.kind not in "iu"):
            raise ConfigError(f"dataset {dataset.name!r} has no class labels; use --task=regress")
        if cfg.kind == "regress" and train_y.dtype.kind != "f":
            raise ConfigError(f"dataset {dataset.name!r} has class labels; use --task=classify")
        self.model, self.dataset, self.cfg = model, dataset, cfg
        self.tx, self.schedule = make_optimizer(optimizer, cfg.steps)
        self.eval_batch_size = cfg.eval_batch_size or cfg.batch_size * math.ceil(512 / cfg.batch_size)
        # Regression targets are standardised; report errors in the dataset's original units.
        self.target_std = float(dataset.info.get("target_std", 1.0))
        self._predict = jax.jit(self.predict)
        self.compute_dtype = precision.compute_dtype(cfg.compute_dtype)

    # ---- pure functions (jitted by the loop)
    def init_state(self, rng: jax.Array) -> TrainState:
        params_rng, dropout_rng, run_rng = jax.random.split(rng, 3)
        x = jnp.zeros((1, *self.dataset.input_shape), jnp.float32)
        variables = self.model.init({"params": params_rng, "dropout": dropout_rng}, x, train=False)
        params = variables.pop("params")
        return TrainState.create(params, self.tx, run_rng, model_state=dict(variables))

    def _loss(self, outputs: jax.Array, y: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        if self.cfg.kind == "classify":
            loss = softmax_cross_entropy(outputs, y)
            return loss, {"accuracy": jnp.mean(jnp.argmax(outputs, -1) == y)}
        return mean_squared_error(outputs[..., 0], y), {}

    def train_step(self, state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict]:
        mutable = list(state.model_state)

        def loss_fn(params):
            outputs, new_model_state = self.model.apply(
                {"params": precision.cast(params, self.compute_dtype), **state.model_state},
                batch["x"].astype(self.compute_dtype), train=True, rngs={"dropout": step_rng(state)},
                mutable=mutable)
            outputs = outputs.astype(jnp.float32)
            loss, extra = self._loss(outputs, batch["y"])
            return loss, (extra, new_model_state)

        (loss, (extra, new_model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, **extra, "learning_rate": self.schedule(state.step),
                   "grad_norm": global_norm(grads), "param_norm": global_norm(params),
                   "update_norm": global_norm(updates)}
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  model_state=dict(new_model_state) if mutable else state.model_state)
        return new_state, metrics

    def predict(self, state: TrainState, x: jax.Array) -> jax.Array:
        params = precision.cast(state.params, self.compute_dtype)
        out = self.model.apply({"params": params, **state.model_state}, x.astype(self.compute_dtype), train=False)
        return out.astype(jnp.float32)

    # ---- host side
    def train_pipeline(self, seed: int, sharding) -> Pipeline:
        check_divisible(self.cfg.batch_size, sharding.mesh)
        return train_pipeline(self.dataset, self.cfg.batch_size, seed=seed, sharding=sharding)

    def evaluate(self, state: TrainState, ctx: EvalContext, split: str = "test") -> dict[str, float]:
        arrays = self.dataset.split(split)
        outputs = map_batches(lambda b: self._predict(state, b["x"]), {"x": arrays["x"]}, self.eval_batch_size,
                              batch_sharding(ctx.mesh))
        if self.cfg.kind == "classify":
            return classification_report(outputs, arrays["y"], self.dataset.num_classes)
        scale = self.target_std
        return regression_report(np.asarray(outputs)[..., 0] * scale, arrays["y"] * scale)

    def params(self, state: TrainState) -> Any:
        return state.params
