"""Classification losses."""

import jax
import jax.numpy as jnp
import optax


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy (nats) of integer `labels` under `logits` (..., classes)."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
