"""Reconstruction losses with one signature, chosen by name, and the Gaussian KL of a VAE.

`loss(logits, targets) -> per-example loss`, summed over every non-batch axis (pixels), so the batch mean is
nats per image for `bce` and the squared error per image (the number Hinton & Salakhutdinov 2006 report)
for `mse`. Targets are pixels in [0, 1]; the reconstruction is `sigmoid(logits)`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from research.errors import ConfigError


def _sum_per_example(x: jax.Array) -> jax.Array:
    return jnp.sum(x.reshape((x.shape[0], -1)), axis=1)


def bernoulli_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """-sum_i [t_i log p_i + (1 - t_i) log(1 - p_i)] with p = sigmoid(logits), per example (nats)."""
    return _sum_per_example(jax.nn.softplus(logits) - targets * logits)


def squared_error(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """sum_i (sigmoid(logit_i) - t_i)^2 per example."""
    return _sum_per_example(jnp.square(jax.nn.sigmoid(logits) - targets))


LOSSES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "bce": bernoulli_cross_entropy,
    "mse": squared_error,
}


def reconstruction_loss(name: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    if name not in LOSSES:
        raise ConfigError(f"unknown reconstruction loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, I)) per example, in nats."""
    return 0.5 * jnp.sum(jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar, axis=-1)
