"""Regression losses."""

import jax
import jax.numpy as jnp


def mean_squared_error(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(predictions - targets))
