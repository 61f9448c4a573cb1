"""Autoencoders: dense or convolutional encoder/decoder pairs, optionally variational, and input corruption.

Every decoder returns *logits* shaped like the input; the reconstruction is `sigmoid(logits)` (pixels in
[0, 1]), so Bernoulli cross-entropy can be computed stably from the logits and squared error from the sigmoid.

- Dense: `input -> hidden... -> code` and `code -> hidden... -> input`, e.g. the classic small 64-32-16 / 16-32-64
  autoencoder, or Hinton & Salakhutdinov's (2006) 784-1000-500-250-30 with a linear code layer.
- Convolutional: stride-2 3x3 convolutions down, and up again with a 3x3 convolution to 4x the channels
  followed by depth-to-space (sub-pixel convolution), which XLA:CPU runs several times faster than a
  transposed convolution.
- Variational: the encoder emits a Gaussian's mean and log-variance; `__call__` draws the code by
  reparameterisation from the `latent` RNG stream; `encode` returns the mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.errors import ConfigError
from research.models.activations import activation
from research.models.layers import depth_to_space

ARCHS = ("dense", "conv")
NOISES = ("none", "gaussian", "mask")


class DenseEncoder(nn.Module):
    """Flatten, `hidden` dense layers with `activation`, then a dense code layer of `features` units."""

    hidden: Sequence[int]
    features: int
    activation: str = "relu"
    code_activation: str = "identity"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation(self.activation)
        x = x.reshape((x.shape[0], -1))
        for width in self.hidden:
            x = act(nn.Dense(width)(x))
        return activation(self.code_activation)(nn.Dense(self.features)(x))


class DenseDecoder(nn.Module):
    """`hidden` dense layers with `activation`, then a linear layer to logits reshaped to `output_shape`."""

    hidden: Sequence[int]
    output_shape: Sequence[int]
    activation: str = "relu"

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        act = activation(self.activation)
        for width in self.hidden:
            z = act(nn.Dense(width)(z))
        logits = nn.Dense(math.prod(self.output_shape))(z)
        return logits.reshape((z.shape[0], *self.output_shape))


class ConvEncoder(nn.Module):
    """A stride-2 3x3 convolution per entry of `channels` (each halves H and W), then a dense code layer."""

    channels: Sequence[int]
    features: int
    activation: str = "relu"
    code_activation: str = "identity"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation(self.activation)
        for c in self.channels:
            x = act(nn.Conv(c, (3, 3), strides=(2, 2), padding="SAME")(x))
        x = x.reshape((x.shape[0], -1))
        return activation(self.code_activation)(nn.Dense(self.features)(x))


class ConvDecoder(nn.Module):
    """The mirror of `ConvEncoder`: dense to the smallest feature map, then per level a 3x3 convolution to 4x
    the channels and depth-to-space (doubling H and W); the last level emits the image's channels as logits."""

    channels: Sequence[int]
    output_shape: Sequence[int]
    activation: str = "relu"

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        act = activation(self.activation)
        h, w, c_out = self.output_shape
        scale = 2 ** len(self.channels)
        x = act(nn.Dense((h // scale) * (w // scale) * self.channels[-1])(z))
        x = x.reshape((z.shape[0], h // scale, w // scale, self.channels[-1]))
        targets = [*reversed(self.channels[:-1]), c_out]
        for i, c in enumerate(targets):
            x = depth_to_space(nn.Conv(4 * c, (3, 3), padding="SAME")(x))
            if i < len(targets) - 1:
                x = act(x)
        return x


class Autoencoder(nn.Module):
    """`encoder` maps x to the code (or to [mean, log-variance] when `variational`), `decoder` maps a code to
    logits shaped like x. `__call__` returns (logits, mean, logvar); logvar is None unless variational."""

    encoder: nn.Module
    decoder: nn.Module
    latent: int
    variational: bool = False

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """(code or posterior mean, posterior log-variance or None)."""
        h = self.encoder(x)
        if not self.variational:
            return h, None
        return h[:, :self.latent], h[:, self.latent:]

    def decode(self, z: jax.Array) -> jax.Array:
        return self.decoder(z)

    def reconstruct(self, x: jax.Array) -> jax.Array:
        """Pixels in [0, 1] decoded from the code (the posterior mean for a VAE)."""
        return nn.sigmoid(self.decode(self.encode(x)[0]))

    def __call__(self, x: jax.Array, *, sample: bool = False) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        mean, logvar = self.encode(x)
        z = mean
        if self.variational and sample:
            eps = jax.random.normal(self.make_rng("latent"), mean.shape, mean.dtype)
            z = mean + jnp.exp(0.5 * logvar) * eps
        return self.decode(z), mean, logvar


def make_autoencoder(arch: str, input_shape: Sequence[int], latent: int, *, hidden: Sequence[int] = (),
                     decoder_hidden: Sequence[int] | None = None, channels: Sequence[int] = (32, 64),
                     activation_name: str = "relu", code_activation: str = "identity",
                     variational: bool = False) -> Autoencoder:
    """Build an autoencoder for inputs of `input_shape` (no batch axis); `decoder_hidden=None` mirrors `hidden`."""
    activation(activation_name)
    activation(code_activation)
    if arch not in ARCHS:
        raise ConfigError(f"unknown autoencoder architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if latent < 1:
        raise ConfigError(f"--latent must be positive, got {latent}")
    if variational and code_activation != "identity":
        raise ConfigError("a variational encoder emits a Gaussian's mean and log-variance: its code layer is "
                          "linear (leave --code_activation unset)")
    features = 2 * latent if variational else latent
    if arch == "dense":
        decoder_hidden = list(reversed(hidden)) if decoder_hidden is None else list(decoder_hidden)
        encoder = DenseEncoder(tuple(hidden), features, activation_name, code_activation)
        decoder = DenseDecoder(tuple(decoder_hidden), tuple(input_shape), activation_name)
    else:
        if len(input_shape) != 3:
            raise ConfigError(f"the convolutional autoencoder needs images (H, W, C); inputs have shape "
                              f"{tuple(input_shape)}")
        if not channels:
            raise ConfigError("--conv_channels needs at least one level")
        scale = 2 ** len(channels)
        if input_shape[0] % scale or input_shape[1] % scale:
            raise ConfigError(f"{len(channels)} stride-2 levels need H and W divisible by {scale}; images are "
                              f"{input_shape[0]}x{input_shape[1]}")
        encoder = ConvEncoder(tuple(channels), features, activation_name, code_activation)
        decoder = ConvDecoder(tuple(channels), tuple(input_shape), activation_name)
    return Autoencoder(encoder, decoder, latent, variational)


def corrupt(rng: jax.Array, x: jax.Array, noise: str, level: float) -> jax.Array:
    """The input a denoising autoencoder sees: `gaussian` adds N(0, level^2) noise and clips to [0, 1];
    `mask` sets each pixel to 0 with probability `level`; `none` returns x."""
    if noise == "none":
        return x
    if noise == "gaussian":
        return jnp.clip(x + level * jax.random.normal(rng, x.shape, x.dtype), 0.0, 1.0)
    if noise == "mask":
        return jnp.where(jax.random.bernoulli(rng, level, x.shape), jnp.zeros_like(x), x)
    raise ConfigError(f"unknown noise {noise!r}; choose one of {', '.join(NOISES)}")
