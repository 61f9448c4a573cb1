"""DCGAN generator and discriminator/critic (Radford et al. 2016) for square images.

Image sizes of the form s0 * 2^n with s0 <= 7 after halving (28 = 7 * 4, 32 = 4 * 8, 64 = 4 * 16): the generator
projects z to s0 x s0 feature maps and doubles the resolution n times with 4x4 stride-2 transposed convolutions;
the discriminator mirrors it with 4x4 stride-2 convolutions. Weights are drawn from N(0, 0.02) as in DCGAN.

XLA:CPU runs transposed convolutions slowly, so `Upsample2x` computes the same 4x4 stride-2 transposed
convolution from the kernel's four output phases: as four 2x2 convolutions, one per phase, interleaved
("phase2x2": exactly the transposed convolution's multiply-adds), or as one 3x3 convolution to 4x the channels
followed by depth-to-space ("phase": 9/4 of them). `upsample` picks the form per layer (UPSAMPLER_LAYERS): "phase"
(the default, so earlier runs keep their numbers and flags) uses it everywhere; "mixed" uses "phase2x2" for the
hidden upsamplings and `nn.ConvTranspose` for the output layer, whose few (1 or 3) output channels XLA:CPU's
transposed convolution handles faster than four small convolutions; "transpose" uses `nn.ConvTranspose`
everywhere. All hold the same parameters, so checkpoints work with any of
them, and `tests/test_gan_models.py` checks that they agree (outputs and gradients). Timings:
benchmarks/README.md (`dcgan_layers`, `dcgan_torch`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.errors import ConfigError
from research.models.layers import depth_to_space

DCGAN_INIT = nn.initializers.normal(0.02)
# --upsample choice -> (form of the hidden upsamplings, form of the output layer); see upsample_layer
UPSAMPLER_LAYERS = {"mixed": ("phase2x2", "transpose"), "phase": ("phase", "phase"),
                    "phase2x2": ("phase2x2", "phase2x2"), "transpose": ("transpose", "transpose")}
UPSAMPLERS = tuple(UPSAMPLER_LAYERS)

# For output phase p (even/odd rows), which tap of the 4-tap transposed kernel multiplies the input at offsets
# -1, 0, +1 (4 = a zero tap). Derived from lax.conv_transpose's SAME padding for k=4, s=2: output 2i is
# w[0] x[i-1] + w[2] x[i], output 2i+1 is w[1] x[i] + w[3] x[i+1].
_PHASE_TAPS = jnp.array([[0, 2, 4], [4, 1, 3]])


def resolution_plan(size: int) -> tuple[int, int]:
    """(base resolution s0, number of 2x upsamplings n) with size = s0 * 2^n; ConfigError if n would be 0."""
    base, n = size, 0
    while base % 2 == 0 and base > 4:
        base, n = base // 2, n + 1
    if n == 0 or base > 7:
        raise ConfigError(f"image size {size} is not supported by the DCGAN models; use s0 * 2^n with s0 <= 7 "
                          f"and n >= 1 (e.g. 28, 32, 64)")
    return base, n


def phase_kernel(kernel: jax.Array) -> jax.Array:
    """A 4x4 transposed-conv kernel (4, 4, in, out) as a 3x3 conv kernel (3, 3, in, 4 * out) whose output
    channels are ordered (row phase, column phase, out)."""
    k_in, k_out = kernel.shape[2], kernel.shape[3]
    padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))  # index 4 is the zero tap
    rows = padded[_PHASE_TAPS]                  # (2 ph, 3 a, 5, in, out)
    both = rows[:, :, _PHASE_TAPS]              # (2 ph, 3 a, 2 pw, 3 b, in, out)
    both = both.transpose(1, 3, 4, 0, 2, 5)     # (3 a, 3 b, in, 2 ph, 2 pw, out)
    return both.reshape(3, 3, k_in, 4 * k_out)


def phase2x2_kernels(kernel: jax.Array) -> jax.Array:
    """A 4x4 transposed-conv kernel (4, 4, in, out) as its four 2x2 phase sub-kernels, indexed
    [a, row phase, b, column phase, in, out]: phase p of a dimension uses taps p and 2 + p (see _PHASE_TAPS),
    i.e. tap 2a + p, a reshape."""
    return kernel.reshape(2, 2, 2, 2, *kernel.shape[2:])


class Upsample2x(nn.Module):
    """`nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME")`, same parameters and outputs,
    computed from the kernel's four output phases (row parity x column parity) with plain convolutions.

    taps=3: one 3x3 "SAME" convolution to 4x the channels + depth-to-space; each phase uses 4 of its 9 taps, so
    it does 9/4 of the multiply-adds.
    taps=2: four 2x2 convolutions, one per output phase (its exact sub-kernel, padded by one on the side its
    taps reach), interleaved; exactly the transposed convolution's multiply-adds. (Not one 2x2 convolution to
    4x the channels over the input padded by one on both sides: XLA:CPU's kernel gradient of that convolution,
    whose output is larger than its input, took 35 s instead of 0.04 s for the 512->256 4->8 layer.)
    """

    features: int
    kernel_init: nn.initializers.Initializer = DCGAN_INIT
    use_bias: bool = True
    taps: int = 3

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (4, 4, x.shape[-1], self.features))
        if self.taps == 3:
            y = jax.lax.conv_general_dilated(x, phase_kernel(kernel).astype(x.dtype), (1, 1), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            y = depth_to_space(y)
        elif self.taps == 2:
            sub = phase2x2_kernels(kernel).astype(x.dtype)
            n, h, w = x.shape[:3]
            rows = [jnp.stack([jax.lax.conv_general_dilated(x, sub[:, ph, :, pw], (1, 1), ((1 - ph, ph), (1 - pw, pw)),
                                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
                               for pw in (0, 1)], axis=3) for ph in (0, 1)]
            y = jnp.stack(rows, axis=2).reshape(n, 2 * h, 2 * w, self.features)  # (N, H, ph, W, pw, C)
        else:
            raise ConfigError(f"Upsample2x taps must be 2 or 3, not {self.taps}")
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y


def upsample_layer(kind: str, features: int, use_bias: bool, name: str | None) -> nn.Module:
    """A 4x4 stride-2 upsampling layer: `Upsample2x` with a 3x3 ("phase") or four 2x2 ("phase2x2") convolutions,
    or Flax's `nn.ConvTranspose` ("transpose"). All hold the same parameters and compute the same outputs."""
    if kind == "phase":
        return Upsample2x(features, use_bias=use_bias, name=name)
    if kind == "phase2x2":
        return Upsample2x(features, use_bias=use_bias, taps=2, name=name)
    if kind == "transpose":
        return nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME", kernel_init=DCGAN_INIT,
                                use_bias=use_bias, name=name)
    raise ConfigError(f"unknown upsampling {kind!r}; choose one of {', '.join(UPSAMPLERS)}")


def _bn(train: bool, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        scale_init=lambda k, s, d=jnp.float32: 1.0 + 0.02 * jax.random.normal(k, s, d), name=name)


class DCGANGenerator(nn.Module):
    """z (and a label, if conditional) -> image in [-1, 1] of shape (size, size, channels).

    Widths: the last upsampling block has `width` channels, each earlier one twice as many, the projection
    of z as many as the first block's input.
    """

    size: int
    channels: int
    width: int = 64
    batch_norm: bool = True
    num_classes: int = 0        # > 0: conditional on an integer label (embedding concatenated to z)
    embed_dim: int = 16
    upsample: str = "phase"     # a key of UPSAMPLER_LAYERS

    @nn.compact
    def __call__(self, z: jax.Array, labels: jax.Array | None = None, *, train: bool = False) -> jax.Array:
        base, n_up = resolution_plan(self.size)
        if self.num_classes:
            z = jnp.concatenate([z, nn.Embed(self.num_classes, self.embed_dim, name="label_embed")(labels)], -1)
        width0 = self.width * 2 ** (n_up - 1)
        x = nn.Dense(base * base * width0, kernel_init=DCGAN_INIT, use_bias=not self.batch_norm, name="project")(z)
        x = x.reshape(z.shape[0], base, base, width0)
        if self.batch_norm:
            x = _bn(train, "project_bn")(x)
        x = nn.relu(x)
        if self.upsample not in UPSAMPLER_LAYERS:
            raise ConfigError(f"unknown upsampling {self.upsample!r}; choose one of {', '.join(UPSAMPLERS)}")
        hidden, last = UPSAMPLER_LAYERS[self.upsample]
        for i in range(n_up - 1):
            x = upsample_layer(hidden, self.width * 2 ** (n_up - 2 - i), not self.batch_norm, f"up{i}")(x)
            if self.batch_norm:
                x = _bn(train, f"up{i}_bn")(x)
            x = nn.relu(x)
        x = upsample_layer(last, self.channels, True, f"up{n_up - 1}")(x)
        return jnp.tanh(x)


class DCGANDiscriminator(nn.Module):
    """Image (and a label, if conditional) -> one logit / critic value per example.

    4x4 stride-2 convolutions with LeakyReLU(0.2); batch norm on every block but the first (`batch_norm=False`
    for WGAN-GP critics, whose penalty is per example); optional spectral normalisation of every layer.
    """

    size: int
    width: int = 64
    batch_norm: bool = True
    spectral_norm: bool = False
    num_classes: int = 0        # > 0: conditional (a learned label map concatenated as an input channel)

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array | None = None, *, train: bool = False) -> jax.Array:
        _, n_down = resolution_plan(self.size)

        def layer(module: nn.Module, h: jax.Array) -> jax.Array:
            if self.spectral_norm:
                return nn.SpectralNorm(module)(h, update_stats=train)
            return module(h)

        if self.num_classes:
            label_map = nn.Embed(self.num_classes, x.shape[1] * x.shape[2], name="label_embed")(labels)
            x = jnp.concatenate([x, label_map.reshape(*x.shape[:3], 1)], -1)
        for i in range(n_down):
            use_bn = self.batch_norm and i > 0
            x = layer(nn.Conv(self.width * 2 ** i, (4, 4), strides=(2, 2), padding="SAME", kernel_init=DCGAN_INIT,
                              use_bias=not use_bn, name=f"down{i}"), x)
            if use_bn:
                x = _bn(train, f"down{i}_bn")(x)
            x = nn.leaky_relu(x, 0.2)
        x = x.reshape(x.shape[0], -1)
        return layer(nn.Dense(1, kernel_init=DCGAN_INIT, name="logit"), x)[:, 0]
