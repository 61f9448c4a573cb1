"""MLP generator and discriminator for low-dimensional data (the 2-D Gaussian mixtures), or flattened images.

Metz et al.'s (2017) ring networks, as used by VEEGAN and GDPP, are `MLPGenerator(hidden=(128, 128),
activation="tanh")` on z in R^256 and `MLPDiscriminator(hidden=(128, 128), activation="tanh")`.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research.errors import ConfigError
from research.models.activations import activation

INITS = ("default", "orthogonal")


def kernel_init(name: str, gain: float = 1.0) -> nn.initializers.Initializer:
    """Flax's default (LeCun normal) or an orthogonal matrix scaled by `gain`."""
    if name == "default":
        return nn.initializers.lecun_normal()
    if name == "orthogonal":
        return nn.initializers.orthogonal(scale=gain)
    raise ConfigError(f"unknown initialisation {name!r}; choose one of {', '.join(INITS)}")


class MLPGenerator(nn.Module):
    """z -> hidden layers -> an output of `out_shape`; `tanh` output for images in [-1, 1], linear otherwise."""

    out_shape: Sequence[int]
    hidden: Sequence[int] = (128, 128)
    activation: str = "tanh"
    weight_init: str = "default"
    init_gain: float = 1.0
    output_tanh: bool = False

    @nn.compact
    def __call__(self, z: jax.Array, labels: jax.Array | None = None, *, train: bool = False) -> jax.Array:
        act, init = activation(self.activation), kernel_init(self.weight_init, self.init_gain)
        x = z
        for width in self.hidden:
            x = act(nn.Dense(width, kernel_init=init)(x))
        x = nn.Dense(int(np.prod(self.out_shape)), kernel_init=init)(x)
        if self.output_tanh:
            x = jnp.tanh(x)
        return x.reshape(z.shape[0], *self.out_shape)


class MLPDiscriminator(nn.Module):
    """x (flattened) -> hidden layers -> one logit / critic value per example."""

    hidden: Sequence[int] = (128, 128)
    activation: str = "tanh"
    weight_init: str = "default"
    init_gain: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array | None = None, *, train: bool = False) -> jax.Array:
        act, init = activation(self.activation), kernel_init(self.weight_init, self.init_gain)
        x = x.reshape(x.shape[0], -1)
        for width in self.hidden:
            x = act(nn.Dense(width, kernel_init=init)(x))
        return nn.Dense(1, kernel_init=init)(x)[:, 0]
