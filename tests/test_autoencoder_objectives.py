"""Reconstruction losses and the Gaussian KL against their formulas."""

import jax.numpy as jnp
import numpy as np
import pytest

from research.errors import ConfigError
from research.objectives.reconstruction import bernoulli_cross_entropy, gaussian_kl, reconstruction_loss, squared_error


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 3, (4, 5, 5, 1)).astype(np.float32), rng.uniform(0, 1, (4, 5, 5, 1)).astype(np.float32)


def test_bce_matches_formula():
    logits, t = _data()
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    expected = -(t * np.log(p) + (1 - t) * np.log(1 - p)).reshape(4, -1).sum(1)
    np.testing.assert_allclose(bernoulli_cross_entropy(jnp.asarray(logits), jnp.asarray(t)), expected, rtol=1e-5)


def test_bce_is_finite_for_saturated_logits():
    logits = jnp.array([[1000.0, -1000.0]])
    np.testing.assert_allclose(bernoulli_cross_entropy(logits, jnp.array([[1.0, 0.0]])), [0.0], atol=1e-6)
    np.testing.assert_allclose(bernoulli_cross_entropy(logits, jnp.array([[0.0, 1.0]])), [2000.0], rtol=1e-6)


def test_squared_error_matches_formula():
    logits, t = _data(1)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    expected = ((p - t) ** 2).reshape(4, -1).sum(1)
    np.testing.assert_allclose(squared_error(jnp.asarray(logits), jnp.asarray(t)), expected, rtol=1e-5)


def test_gaussian_kl_matches_formula():
    rng = np.random.default_rng(2)
    mean, logvar = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    var = np.exp(logvar)
    expected = np.sum(0.5 * (var + mean ** 2 - 1 - np.log(var)), axis=1)
    np.testing.assert_allclose(gaussian_kl(jnp.asarray(mean, jnp.float32), jnp.asarray(logvar, jnp.float32)),
                               expected, rtol=1e-5)
    np.testing.assert_allclose(gaussian_kl(jnp.zeros((2, 3)), jnp.zeros((2, 3))), [0.0, 0.0], atol=1e-7)


def test_losses_by_name():
    assert reconstruction_loss("bce") is bernoulli_cross_entropy
    assert reconstruction_loss("mse") is squared_error
    with pytest.raises(ConfigError):
        reconstruction_loss("l1")
