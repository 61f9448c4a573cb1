"""Autoencoder modules: shapes, output range, the Hinton architecture, depth-to-space, VAE sampling, corruption."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.errors import ConfigError
from research.models.autoencoder import Autoencoder, corrupt, make_autoencoder
from research.models.layers import depth_to_space


def _init(model, shape, seed=0):
    """Random parameters of the right shapes, and a random input batch. Shapes come from `jax.eval_shape`
    and values from numpy: compiling Flax's truncated-normal initialisers costs seconds per kernel on CPU."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=shape).astype(np.float32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)["params"]
    fan_in = lambda s: math.prod(s.shape[:-1]) if len(s.shape) > 1 else 1
    params = jax.tree.map(lambda s: (rng.normal(size=s.shape) / math.sqrt(fan_in(s))).astype(np.float32), shapes)
    return params, x


def _apply(model, *args, **kwargs):
    return jax.jit(functools.partial(model.apply, **kwargs))(*args)


def test_small_dense_autoencoder_shapes_and_range():
    model = make_autoencoder("dense", (8, 8, 1), 16, hidden=[32], code_activation="relu")
    params, x = _init(model, (5, 8, 8, 1))
    logits, code, logvar = _apply(model, {"params": params}, x)
    assert logits.shape == (5, 8, 8, 1) and code.shape == (5, 16) and logvar is None
    assert bool(jnp.all(code >= 0))  # ReLU code
    recon = _apply(model, {"params": params}, x, method=Autoencoder.reconstruct)
    assert recon.shape == x.shape and bool(jnp.all((recon >= 0) & (recon <= 1)))
    np.testing.assert_allclose(recon, jax.nn.sigmoid(logits), rtol=1e-6)


def test_hinton_architecture_layer_sizes():
    model = make_autoencoder("dense", (28, 28, 1), 30, hidden=[1000, 500, 250])
    params, x = _init(model, (2, 28, 28, 1))
    enc = [params["encoder"][f"Dense_{i}"]["kernel"].shape for i in range(4)]
    dec = [params["decoder"][f"Dense_{i}"]["kernel"].shape for i in range(4)]
    assert enc == [(784, 1000), (1000, 500), (500, 250), (250, 30)]
    assert dec == [(30, 250), (250, 500), (500, 1000), (1000, 784)]
    code, _ = _apply(model, {"params": params}, x, method=Autoencoder.encode)
    assert bool(jnp.any(code < 0))  # a linear code layer


def test_decoder_hidden_can_differ_from_the_encoder():
    model = make_autoencoder("dense", (8, 8, 1), 4, hidden=[32], decoder_hidden=[16, 24])
    params, _ = _init(model, (2, 8, 8, 1))
    assert [params["decoder"][f"Dense_{i}"]["kernel"].shape for i in range(3)] == [(4, 16), (16, 24), (24, 64)]


def test_conv_autoencoder_shapes():
    model = make_autoencoder("conv", (28, 28, 1), 30, channels=(8, 16))
    params, x = _init(model, (3, 28, 28, 1))
    logits, code, _ = _apply(model, {"params": params}, x)
    assert logits.shape == (3, 28, 28, 1) and code.shape == (3, 30)
    assert params["encoder"]["Conv_1"]["kernel"].shape == (3, 3, 8, 16)
    assert params["decoder"]["Conv_1"]["kernel"].shape == (3, 3, 8, 4)  # 4 sub-pixel phases of 1 channel


def test_depth_to_space_places_channel_phases():
    x = jnp.arange(2 * 3 * 3 * 8, dtype=jnp.float32).reshape(2, 3, 3, 8)
    y = np.asarray(depth_to_space(x))
    assert y.shape == (2, 6, 6, 2)
    for i in range(2):
        for j in range(2):
            np.testing.assert_array_equal(y[:, i::2, j::2, :], np.asarray(x)[..., (i * 2 + j) * 2:(i * 2 + j + 1) * 2])


def test_variational_samples_from_the_latent_stream():
    model = make_autoencoder("dense", (8, 8, 1), 2, hidden=[16], variational=True)
    params, x = _init(model, (4, 8, 8, 1))
    v = {"params": params}
    mean, logvar = _apply(model, v, x, method=Autoencoder.encode)
    assert mean.shape == logvar.shape == (4, 2)
    sample = jax.jit(lambda key: model.apply(v, x, sample=True, rngs={"latent": key})[0])
    a, b, again = (sample(jax.random.PRNGKey(k)) for k in (0, 1, 0))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, again)
    deterministic = _apply(model, v, x)[0]
    np.testing.assert_allclose(deterministic, _apply(model, v, mean, method=Autoencoder.decode), rtol=1e-6)


@pytest.mark.parametrize("kwargs", [
    {"arch": "lstm", "input_shape": (8, 8, 1), "latent": 4},
    {"arch": "dense", "input_shape": (8, 8, 1), "latent": 0},
    {"arch": "conv", "input_shape": (10, 10, 1), "latent": 4},   # 10 is not divisible by 2**2
    {"arch": "conv", "input_shape": (64,), "latent": 4},         # not an image
    {"arch": "dense", "input_shape": (8, 8, 1), "latent": 4, "variational": True, "code_activation": "relu"},
    {"arch": "dense", "input_shape": (8, 8, 1), "latent": 4, "activation_name": "swish9"},
])
def test_bad_configurations_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        make_autoencoder(**kwargs)


def test_corruption():
    x = np.random.default_rng(0).uniform(0.1, 1.0, (64, 28, 28, 1)).astype(np.float32)
    rng = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(corrupt(rng, x, "none", 0.0), x)
    corrupt_jit = jax.jit(corrupt, static_argnums=(2, 3))
    masked = np.asarray(corrupt_jit(rng, x, "mask", 0.3))
    zeroed = masked == 0
    assert abs(zeroed.mean() - 0.3) < 0.01  # 50,176 pixels: the std of the mean is 0.002
    np.testing.assert_array_equal(masked[~zeroed], np.asarray(x)[~zeroed])
    noisy = np.asarray(corrupt_jit(rng, x, "gaussian", 0.2))
    assert noisy.min() >= 0 and noisy.max() <= 1
    inside = (noisy > 0) & (noisy < 1)
    assert abs(np.std((noisy - np.asarray(x))[inside]) - 0.2) < 0.03  # clipping trims the tails slightly
    with pytest.raises(ConfigError):
        corrupt(rng, x, "salt", 0.1)
