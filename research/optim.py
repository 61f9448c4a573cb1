"""An optax chain built from plain arguments: optimizer, schedule, clipping, weight decay, L1/L2 penalties.

Chain order (gradients flow top to bottom):
  L1/L2 penalty gradients (coupled, as if added to the loss)
  -> per-element clipping (`clip_value`) -> global-norm clipping (`clip_global_norm`)
  -> the optimizer's preconditioning (momentum / Adam moments / RMS)
  -> decoupled weight decay (`weight_decay`, Loshchilov & Hutter) -> scale by -learning_rate(step)
  -> magnitude pruning (`prune`, research/compress/prune.py; only when on: it keeps pruned weights at exactly 0).
Penalties and weight decay touch only parameters with ndim >= 2 (kernels, embeddings), not biases or
normalisation scales.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from research.compress.config import PruneConfig
from research.compress.prune import magnitude_pruning
from research.errors import ConfigError
from research.sharding import whole

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "cosine", "step")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.0          # sgd and rmsprop; 0 = none
    nesterov: bool = False         # sgd and rmsprop with momentum
    beta1: float = 0.9             # adam, adamw
    beta2: float = 0.999
    eps: float = 1e-8
    rms_decay: float = 0.9         # rmsprop's moving-average decay
    schedule: str = "constant"
    warmup_steps: int = 0          # linear warmup from 0, before any schedule
    decay_steps: int = 0           # cosine: length of the decay (0 = the rest of training)
    final_lr_factor: float = 0.0   # cosine: final lr as a fraction of the peak
    step_every: int = 0            # step: multiply the lr by step_factor every step_every steps
    step_factor: float = 0.1
    clip_global_norm: float = 0.0  # 0 = off
    clip_value: float = 0.0        # per element; 0 = off
    weight_decay: float = 0.0      # decoupled; required by adamw
    l1: float = 0.0
    l2: float = 0.0
    prune: PruneConfig = PruneConfig()  # gradual magnitude pruning (off unless prune.sparsity > 0)

    def __post_init__(self) -> None:
        _validate(self)


def _validate(cfg: OptimizerConfig) -> None:
    """Raise ConfigError for unknown names and out-of-range, non-finite or contradictory values."""
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{field.name} must be finite, got {value}")
    if cfg.name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {cfg.name!r}; choose one of {', '.join(OPTIMIZERS)}")
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {cfg.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if not cfg.learning_rate > 0:
        raise ConfigError(f"learning rate must be positive, got {cfg.learning_rate}")
    for field in ("warmup_steps", "decay_steps", "step_every", "clip_global_norm", "clip_value",
                  "weight_decay", "l1", "l2", "final_lr_factor"):
        if getattr(cfg, field) < 0:
            raise ConfigError(f"{field} must be >= 0, got {getattr(cfg, field)}")
    for field in ("momentum", "beta1", "beta2", "rms_decay"):
        if not 0 <= getattr(cfg, field) < 1:
            raise ConfigError(f"{field} must be in [0, 1), got {getattr(cfg, field)}")
    if cfg.nesterov and not cfg.momentum:
        raise ConfigError("nesterov needs momentum > 0")
    if cfg.nesterov and cfg.name not in ("sgd", "rmsprop"):
        raise ConfigError(f"nesterov applies to sgd and rmsprop, not {cfg.name}")
    if cfg.momentum and cfg.name not in ("sgd", "rmsprop"):
        raise ConfigError(f"momentum applies to sgd and rmsprop; {cfg.name} has beta1")
    if cfg.name == "adamw" and not cfg.weight_decay:
        raise ConfigError("adamw needs weight_decay > 0 (with 0 it is adam)")
    if cfg.name == "adam" and cfg.weight_decay:
        raise ConfigError("adam with weight_decay: use adamw for decoupled decay, or l2 for an L2 penalty")
    if cfg.schedule == "step" and not cfg.step_every:
        raise ConfigError("the step schedule needs step_every > 0")
    if cfg.schedule != "step" and cfg.step_every:
        raise ConfigError(f"step_every applies to the step schedule, not {cfg.schedule!r}")


def make_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    lr = cfg.learning_rate
    if cfg.schedule == "constant":
        main = optax.constant_schedule(lr)
    elif cfg.schedule == "cosine":
        length = cfg.decay_steps or max(total_steps - cfg.warmup_steps, 1)
        main = optax.cosine_decay_schedule(lr, length, alpha=cfg.final_lr_factor)
    else:
        main = optax.exponential_decay(lr, cfg.step_every, cfg.step_factor, staircase=True)
    if not cfg.warmup_steps:
        return main
    warmup = optax.linear_schedule(0.0, lr, cfg.warmup_steps)
    return optax.join_schedules([warmup, main], [cfg.warmup_steps])


def _matrices(params: Any) -> Any:
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def _add_l1(l1: float) -> optax.GradientTransformation:
    def update(updates, state, params=None):
        return jax.tree.map(lambda g, p: g + l1 * jnp.sign(p), updates, params), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def make_optimizer(cfg: OptimizerConfig, total_steps: int) -> tuple[optax.GradientTransformation,
                                                                     optax.Schedule]:
    """The optax chain for `cfg` and its learning-rate schedule (for logging)."""
    schedule = make_schedule(cfg, total_steps)
    parts: list[optax.GradientTransformation] = []
    if cfg.l1:
        parts.append(optax.masked(_add_l1(cfg.l1), _matrices))
    if cfg.l2:
        parts.append(optax.add_decayed_weights(cfg.l2, mask=_matrices))
    if cfg.clip_value:
        parts.append(optax.clip(cfg.clip_value))
    if cfg.clip_global_norm:
        parts.append(optax.clip_by_global_norm(cfg.clip_global_norm))
    if cfg.name == "sgd":
        if cfg.momentum:
            parts.append(optax.trace(decay=cfg.momentum, nesterov=cfg.nesterov))
    elif cfg.name in ("adam", "adamw"):
        parts.append(optax.scale_by_adam(b1=cfg.beta1, b2=cfg.beta2, eps=cfg.eps))
    else:
        parts.append(optax.scale_by_rms(decay=cfg.rms_decay, eps=cfg.eps))
        if cfg.momentum:
            parts.append(optax.trace(decay=cfg.momentum, nesterov=cfg.nesterov))
    if cfg.weight_decay:
        parts.append(optax.add_decayed_weights(cfg.weight_decay, mask=_matrices))
    parts.append(optax.scale_by_learning_rate(schedule))
    if cfg.prune.enabled:  # last: it rewrites the final updates of pruned weights
        parts.append(magnitude_pruning(cfg.prune, total_steps))
    return optax.chain(*parts), schedule


def gradient_step(loss_fn: Callable[[Any], tuple[jax.Array, Any]], params: Any, opt_state: Any,
                  tx: optax.GradientTransformation) -> tuple[Any, Any, jax.Array, Any, dict[str, jax.Array]]:
    """One optimizer update of every family: `loss_fn(params) -> (loss, aux)` differentiated, the optax update
    applied. Returns (params, opt_state, loss, aux, norms) with the L2 norms of the gradients, the new
    parameters and the update (`grad_norm`, `param_norm`, `update_norm`). Under model parallelism with the fsdp
    rules the parameters, their gradients and the new parameters are whole (`research.sharding.whole`)."""
    params = whole(params)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    grads = whole(grads)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = whole(optax.apply_updates(params, updates))
    norms = {"grad_norm": optax.global_norm(grads), "param_norm": optax.global_norm(params),
             "update_norm": optax.global_norm(updates)}
    return params, opt_state, loss, aux, norms
