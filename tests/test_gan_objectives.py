"""GAN losses against their formulas on hand-picked logits; the gradient penalty; weight clipping."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.errors import ConfigError
from research.objectives import gan

D_REAL = [0.0, 2.0]
D_FAKE = [-1.0, 1.0]


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _mean(values) -> float:
    return sum(values) / len(values)


def _expected(name: str) -> tuple[float, float]:
    """(d_loss, g_loss) written out from the definitions, with D = sigmoid(logit) where it applies."""
    r, f = D_REAL, D_FAKE
    bce_d = _mean([-math.log(_sig(x)) for x in r]) + _mean([-math.log(1 - _sig(x)) for x in f])
    return {
        "minimax": (bce_d, _mean([math.log(1 - _sig(x)) for x in f])),
        "nonsaturating": (bce_d, _mean([-math.log(_sig(x)) for x in f])),
        "wasserstein": (_mean(f) - _mean(r), -_mean(f)),
        "hinge": (_mean([max(0.0, 1 - x) for x in r]) + _mean([max(0.0, 1 + x) for x in f]), -_mean(f)),
        "least_squares": (0.5 * _mean([(x - 1) ** 2 for x in r]) + 0.5 * _mean([x ** 2 for x in f]),
                          0.5 * _mean([(x - 1) ** 2 for x in f])),
    }[name]


@pytest.mark.parametrize("name", sorted(gan.LOSSES))
def test_loss_matches_formula(name):
    d_loss, g_loss, parts = gan.gan_loss(name)(jnp.array(D_REAL), jnp.array(D_FAKE))
    want_d, want_g = _expected(name)
    np.testing.assert_allclose(float(d_loss), want_d, rtol=1e-6)
    np.testing.assert_allclose(float(g_loss), want_g, rtol=1e-6)
    np.testing.assert_allclose(float(parts["d_loss_real"] + parts["d_loss_fake"]), want_d, rtol=1e-6)


def test_hand_values():
    """Two values computed by hand, independent of the helper above."""
    d_loss, g_loss, parts = gan.wasserstein(jnp.array([1.0, 3.0]), jnp.array([0.0, -2.0]))
    assert float(d_loss) == pytest.approx(-1.0 - 2.0)   # E[C(fake)] - E[C(real)] = -1 - 2
    assert float(g_loss) == pytest.approx(1.0)
    assert float(parts["wasserstein_estimate"]) == pytest.approx(3.0)
    d_loss, g_loss, _ = gan.nonsaturating(jnp.array([0.0]), jnp.array([0.0]))
    assert float(d_loss) == pytest.approx(2 * math.log(2))   # D = 1/2 on both
    assert float(g_loss) == pytest.approx(math.log(2))


def test_unknown_names():
    with pytest.raises(ConfigError, match="unknown GAN loss"):
        gan.gan_loss("relativistic")
    with pytest.raises(ConfigError, match="unknown GAN penalty"):
        gan.gan_penalty("r1", 1.0)


def test_gradient_penalty_linear_critic():
    """A linear critic's gradient is w everywhere, so the penalty is (||w|| - 1)^2 exactly."""
    w = jnp.array([3.0, 4.0])
    critic = lambda x: x @ w + 1.0
    real, fake = jnp.ones((5, 2)), -jnp.ones((5, 2))
    value = gan.gradient_penalty(critic, real, fake, jax.random.PRNGKey(0))
    assert float(value) == pytest.approx((5.0 - 1.0) ** 2, rel=1e-5)


def test_gradient_penalty_against_per_example_gradients():
    rng = jax.random.PRNGKey(3)
    k1, k2, k3, k4 = jax.random.split(rng, 4)
    w1, w2 = jax.random.normal(k1, (12, 7)), jax.random.normal(k2, (7,))
    critic = lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w1) @ w2
    real, fake = jax.random.normal(k3, (6, 2, 3, 2)), jax.random.normal(k4, (6, 2, 3, 2))
    key = jax.random.PRNGKey(11)
    value = jax.jit(lambda r, f, k: gan.gradient_penalty(critic, r, f, k))(real, fake, key)
    eps = np.asarray(jax.random.uniform(key, (6, 1, 1, 1)))  # the interpolation weights it draws
    x_hat = eps * np.asarray(real) + (1 - eps) * np.asarray(fake)
    per_example = jax.jit(jax.vmap(jax.grad(lambda x: critic(x[None])[0])))(x_hat)  # one example at a time
    norms = np.linalg.norm(np.asarray(per_example).reshape(6, -1), axis=1)
    assert float(value) == pytest.approx(float(np.mean((norms - 1.0) ** 2)), rel=1e-5)


def test_weight_clip_bounds():
    params = {"a": jnp.array([-3.0, -0.005, 0.0, 0.2]), "b": {"c": jnp.full((2, 2), 0.5)}}
    clipped = gan.clip_weights(params, 0.01)
    leaves = jax.tree.leaves(clipped)
    assert all(float(jnp.max(jnp.abs(x))) <= 0.01 for x in leaves)
    np.testing.assert_array_equal(np.asarray(clipped["a"]), np.array([-0.01, -0.005, 0.0, 0.01], np.float32))
