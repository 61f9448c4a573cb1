import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.errors import ConfigError
from research.optim import OptimizerConfig, make_optimizer, make_schedule

PARAMS = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.1, -0.2])}
GRADS = [{"w": jnp.array([[0.3, -0.1], [0.2, 0.4]]), "b": jnp.array([0.5, -0.5])},
         {"w": jnp.array([[-0.2, 0.6], [0.1, -0.3]]), "b": jnp.array([-0.1, 0.2])}]


def _run(tx, steps=2):
    params, state = PARAMS, tx.init(PARAMS)
    for g in GRADS[:steps]:
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params


def _close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cfg, reference", [
    (OptimizerConfig("sgd", 0.1), optax.sgd(0.1)),
    (OptimizerConfig("sgd", 0.1, momentum=0.9), optax.sgd(0.1, momentum=0.9)),
    (OptimizerConfig("sgd", 0.1, momentum=0.9, nesterov=True), optax.sgd(0.1, momentum=0.9, nesterov=True)),
    (OptimizerConfig("adam", 0.01, beta1=0.5, beta2=0.9), optax.adam(0.01, b1=0.5, b2=0.9)),
    (OptimizerConfig("rmsprop", 0.01, rms_decay=0.95), optax.rmsprop(0.01, decay=0.95)),
])
def test_optimizers_match_optax(cfg, reference):
    _close(_run(make_optimizer(cfg, 10)[0]), _run(reference))


def test_adamw_decays_only_matrices():
    tx, _ = make_optimizer(OptimizerConfig("adamw", 0.01, weight_decay=0.1), 10)
    reference = optax.adamw(0.01, weight_decay=0.1, mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p))
    _close(_run(tx), _run(reference))


def test_l2_penalty_equals_gradient_of_the_penalised_loss():
    tx, _ = make_optimizer(OptimizerConfig("sgd", 1.0, l2=0.5, l1=0.25), 10)
    got = _run(tx, steps=1)
    w, g = PARAMS["w"], GRADS[0]["w"]
    np.testing.assert_allclose(got["w"], w - (g + 0.5 * w + 0.25 * jnp.sign(w)), rtol=1e-6)
    np.testing.assert_allclose(got["b"], PARAMS["b"] - GRADS[0]["b"], rtol=1e-6)  # biases untouched


def test_clipping():
    tx, _ = make_optimizer(OptimizerConfig("sgd", 1.0, clip_value=0.25), 10)
    got = _run(tx, steps=1)
    np.testing.assert_allclose(got["w"], PARAMS["w"] - jnp.clip(GRADS[0]["w"], -0.25, 0.25), rtol=1e-6)
    tx, _ = make_optimizer(OptimizerConfig("sgd", 1.0, clip_global_norm=0.1), 10)
    step = jax.tree.map(lambda a, b: a - b, PARAMS, _run(tx, steps=1))
    np.testing.assert_allclose(optax.global_norm(step), 0.1, rtol=1e-5)


def test_schedules():
    s = make_schedule(OptimizerConfig(learning_rate=1.0, schedule="cosine", final_lr_factor=0.1), 100)
    np.testing.assert_allclose([s(0), s(50), s(100)], [1.0, 0.55, 0.1], rtol=1e-5)
    s = make_schedule(OptimizerConfig(learning_rate=1.0, schedule="step", step_every=10, step_factor=0.5), 100)
    np.testing.assert_allclose([s(9), s(10), s(25)], [1.0, 0.5, 0.25], rtol=1e-6)
    s = make_schedule(OptimizerConfig(learning_rate=1.0, warmup_steps=10), 100)
    np.testing.assert_allclose([s(0), s(5), s(10), s(50)], [0.0, 0.5, 1.0, 1.0], rtol=1e-6)
    s = make_schedule(OptimizerConfig(learning_rate=1.0, schedule="cosine", warmup_steps=10), 110)
    np.testing.assert_allclose([s(10), s(60), s(110)], [1.0, 0.5, 0.0], atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "lion"}, "unknown optimizer"),
    ({"learning_rate": -0.1}, "positive"),
    ({"schedule": "linear"}, "unknown schedule"),
    ({"name": "adam", "momentum": 0.9}, "beta1"),
    ({"name": "sgd", "nesterov": True}, "nesterov needs momentum"),
    ({"name": "adamw"}, "weight_decay > 0"),
    ({"name": "adam", "weight_decay": 0.1}, "use adamw"),
    ({"schedule": "step"}, "step_every"),
    ({"clip_value": -1.0}, ">= 0"),
])
def test_bad_configs_are_rejected(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_optimizer(OptimizerConfig(**kwargs), 10)
