"""The GAN task: unrolled generator loss against an explicit computation, n_critic counting, weight clipping,
determinism, and evaluation (2-D metrics, image grid + evaluator metrics)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from research import data, parallel
from research.data import Dataset
from research.errors import ConfigError
from research.evaluators import EvalContext
from research.evaluators.gan import GANEvaluator, GANSampler
from research.metrics import feature_classifier as fc
from research.metrics.frechet import feature_frechet_distance
from research.metrics.modes import mode_report
from research.models.dcgan import DCGANDiscriminator, DCGANGenerator
from research.models.gan_mlp import MLPDiscriminator, MLPGenerator
from research.objectives.gan import gan_loss
from research.optim import OptimizerConfig
from research.state import fingerprint
from research.tasks.gan import GANConfig, GANTask, critic_batches

RING = data.load("gaussians_ring8")
SGD = OptimizerConfig(name="sgd", learning_rate=0.1)


def fake_digits(n_train: int = 32, n_test: int = 48) -> Dataset:
    """A small stand-in for mnist_5k (28x28x1 images in [0, 1], 10 classes) that loads instantly."""
    rng = np.random.default_rng(0)
    split = lambda n: {"x": rng.uniform(size=(n, 28, 28, 1)).astype(np.float32),
                       "y": (np.arange(n) % 10).astype(np.int32)}
    return Dataset("fake_digits", {"train": split(n_train), "test": split(n_test)}, num_classes=10)


def mlp_task(d_opt=SGD, g_opt=SGD, **kw) -> GANTask:
    cfg = GANConfig(**{"z_dim": 3, **kw})
    g = MLPGenerator(out_shape=(2,), hidden=(5,), activation="tanh")
    d = MLPDiscriminator(hidden=(4,), activation="tanh")
    return GANTask(g, d, RING, g_opt, d_opt, cfg, batch_size=8, steps=10)


def _players(task, state):
    """Plain functions L_D(d, g) and L_G(d, g) on flat parameter vectors, for one fixed batch and z."""
    real = jnp.asarray(RING.sample(np.random.default_rng(1), 8)["x"])
    z = jax.random.normal(jax.random.PRNGKey(2), (8, 3))
    d0, unravel_d = ravel_pytree(state.d_params)
    g0, unravel_g = ravel_pytree(state.g_params)
    loss = gan_loss(task.cfg.loss)

    def losses(d, g):
        fake = task.g.apply({"params": unravel_g(g)}, z)
        dp = {"params": unravel_d(d)}
        return loss(task.d.apply(dp, real), task.d.apply(dp, fake))

    return real, z, d0, g0, unravel_g, (lambda d, g: losses(d, g)[0]), (lambda d, g: losses(d, g)[1])


_INIT_CACHE = {}


def _init(task, seed=0):
    """task.init_state(PRNGKey(seed)); MLP tasks with the same players share one compiled init (XLA:CPU compiles
    random initialisers slowly), only the optimizer states (cheap zeros) are rebuilt for each task."""
    key = (type(task.g), task.g, task.d, task.cfg.z_dim, seed)
    if key not in _INIT_CACHE:
        _INIT_CACHE[key] = jax.jit(task.init_state)(jax.random.PRNGKey(seed))
    state = _INIT_CACHE[key]
    return state.replace(g_opt_state=task.g_tx.init(state.g_params), d_opt_state=task.d_tx.init(state.d_params))


def _generator_loss(task, state, real, z):
    return jax.jit(jax.value_and_grad(task.generator_loss, has_aux=True), static_argnums=(6, 8))(
        state.g_params, state.g_state, state.d_params, state.d_opt_state, state.d_state, real, None, z, None,
        jax.random.PRNGKey(0))


def test_unrolled_one_step_equals_explicit_second_order_gradient():
    """K=1 with SGD(eta): d1 = d - eta grad_d L_D(d, g); the generator's gradient of L_G(d1(g), g) is
    dL_G/dg + (dd1/dg)^T dL_G/dd1 with dd1/dg = -eta d^2 L_D / dd dg (an explicit Jacobian here)."""
    task = mlp_task(unroll_steps=1)
    state = _init(task)
    real, z, d0, g0, unravel_g, loss_d, loss_g = _players(task, state)
    eta = 0.1

    @jax.jit
    def explicit(d0, g0):
        d1 = d0 - eta * jax.grad(loss_d, argnums=0)(d0, g0)
        jacobian = -eta * jax.jacfwd(lambda g: jax.grad(loss_d, argnums=0)(d0, g))(g0)  # (n_d, n_g)
        want = jax.grad(loss_g, argnums=1)(d1, g0) + jacobian.T @ jax.grad(loss_g, argnums=0)(d1, g0)
        return d1, want, jax.grad(loss_g, argnums=1)(d1, g0)

    d1, want, plain = explicit(d0, g0)

    (value, _), grads = _generator_loss(task, state, real, z)
    assert float(value) == pytest.approx(float(loss_g(d1, g0)), rel=1e-5)
    np.testing.assert_allclose(np.asarray(ravel_pytree(grads)[0]), np.asarray(want), rtol=1e-4, atol=1e-6)
    # the second-order term matters: without it the gradient is different
    assert not np.allclose(np.asarray(plain), np.asarray(want), rtol=1e-3)


def test_unrolled_two_adam_steps_match_optax_adam():
    """K=2 through the critic's own optimizer (Adam): the same as two optax.adam updates written out."""
    adam = OptimizerConfig(name="adam", learning_rate=0.05, beta1=0.5)
    task = mlp_task(d_opt=adam, unroll_steps=2)
    state = _init(task)
    real, z, d0, g0, _, loss_d, loss_g = _players(task, state)
    tx = optax.adam(0.05, b1=0.5)

    def unrolled(g):
        d, opt = d0, tx.init(d0)
        for _ in range(2):
            updates, opt = tx.update(jax.grad(loss_d, argnums=0)(d, g), opt, d)
            d = optax.apply_updates(d, updates)
        return loss_g(d, g)

    (value, _), grads = _generator_loss(task, state, real, z)
    want_value, want_grad = jax.jit(jax.value_and_grad(unrolled))(g0)
    assert float(value) == pytest.approx(float(want_value), rel=1e-5)
    np.testing.assert_allclose(np.asarray(ravel_pytree(grads)[0]), np.asarray(want_grad), rtol=1e-3, atol=1e-6)


def test_critic_batches_are_disjoint_and_device_local():
    x = jnp.arange(12)
    np.testing.assert_array_equal(np.asarray(critic_batches(x, 3)), [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]])
    np.testing.assert_array_equal(np.asarray(critic_batches(x, 1)), [np.arange(12)])


def _batch(task, seed=0):
    n = task.batch_size * task.cfg.n_critic
    return {"x": jnp.asarray(RING.sample(np.random.default_rng(seed), n)["x"])}


def test_n_critic_updates_clipping_and_determinism():
    adam = OptimizerConfig(name="adam", learning_rate=0.05)
    task = mlp_task(d_opt=adam, g_opt=adam, n_critic=3, loss="wasserstein", penalty="weight_clip", weight_clip=0.01)
    step = jax.jit(task.train_step)
    init = _init(task)
    assert max(float(jnp.max(jnp.abs(p))) for p in jax.tree.leaves(init.d_params)) > 0.01
    fingerprints = []
    for _ in range(2):
        state = init
        for i in range(2):
            state, metrics = step(state, _batch(task, i))
        fingerprints.append(fingerprint(task.params(state)))
    assert fingerprints[0] == fingerprints[1]   # same seed, same data: bitwise the same
    assert fingerprints[0] != fingerprint(task.params(init))
    assert int(state.step) == 2
    assert int(state.d_opt_state[0].count) == 6   # ScaleByAdamState of the critic: 3 per train step
    assert int(state.g_opt_state[0].count) == 2
    assert {"d_loss", "g_loss", "wasserstein_estimate", "d_grad_norm", "g_grad_norm", "d_real", "d_fake"} <= set(
        metrics)
    # weight clipping after each critic update: every critic parameter in [-c, c], and the bound is active
    leaves = jax.tree.leaves(state.d_params)
    assert max(float(jnp.max(jnp.abs(p))) for p in leaves) <= 0.01 + 1e-9
    assert any(bool(jnp.any(jnp.abs(p) == jnp.float32(0.01))) for p in leaves)
    with pytest.raises(TypeError):  # a pipeline batch must hold n_critic * batch_size rows
        step(state, {"x": jnp.zeros((10, 2))})


def test_bad_configurations():
    with pytest.raises(ConfigError, match="batch norm"):
        GANTask(DCGANGenerator(size=28, channels=1, width=4), DCGANDiscriminator(size=28, width=4),
                fake_digits(), SGD, SGD, GANConfig(penalty="gradient_penalty"), batch_size=8, steps=1)
    with pytest.raises(ConfigError, match="n_critic"):
        mlp_task(n_critic=0)
    with pytest.raises(ConfigError, match="conditional"):
        mlp_task(conditional=True)


def test_evaluate_2d():
    task = mlp_task()
    state = _init(task)
    mesh = parallel.make_mesh()
    out = GANEvaluator(task, RING, batch_size=64, num_samples=300, seed=3).evaluate(state, EvalContext(5, mesh))
    samples = GANSampler(task, 64).sample(state, 300, 3, mesh)["x"]
    assert samples.shape == (300, 2)
    np.testing.assert_array_equal(samples, GANSampler(task, 64).sample(state, 300, 3, mesh)["x"])
    np.testing.assert_allclose(samples, GANSampler(task, 8).sample(state, 300, 3, mesh)["x"], rtol=1e-5, atol=1e-6)
    assert out.metrics == {**mode_report(samples, np.asarray(RING.info["modes"]), RING.info["std"]),
                           "finite_samples": 1.0}
    assert set(out.figures) == {"samples"} and not out.images
    quiet = GANEvaluator(task, RING, batch_size=64, num_samples=300, seed=3).evaluate(
        state, EvalContext(5, mesh, pictures=False))
    assert quiet.metrics == out.metrics and not quiet.figures


def test_evaluate_2d_with_no_finite_sample():
    task = mlp_task()
    state = _init(task)
    state = state.replace(g_params=jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), state.g_params))
    out = GANEvaluator(task, RING, batch_size=64, num_samples=64).evaluate(state, EvalContext(1, parallel.make_mesh()))
    assert out.metrics["finite_samples"] == 0.0 and out.metrics["modes"] == 0.0 and out.metrics["high_quality"] == 0.0


def test_evaluate_images_with_a_tiny_classifier():
    tiny_cfg = fc.FeatureClassifierConfig(widths=(2, 4), feature_dim=8)
    shapes = jax.eval_shape(tiny_cfg.model().init, jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: (0.1 * rng.standard_normal(a.shape)).astype(np.float32), shapes)
    tiny = fc.FeatureClassifier(tiny_cfg, params)  # untrained: the evaluation path does not care
    digits = fake_digits(n_test=48)
    task = GANTask(MLPGenerator(out_shape=(28, 28, 1), hidden=(8,), output_tanh=True), MLPDiscriminator(hidden=(8,)),
                   digits, SGD, SGD, GANConfig(z_dim=4), batch_size=8, steps=1)
    state = _init(task)
    mesh = parallel.make_mesh()
    out = GANEvaluator(task, digits, batch_size=64, num_samples=48, grid_size=20, classifier=tiny).evaluate(
        state, EvalContext(1, mesh))
    samples = GANSampler(task, 64).sample(state, 48, 0, mesh)["x"]
    assert samples.shape == (48, 28, 28, 1) and samples.min() >= 0.0 and samples.max() <= 1.0
    want = tiny.report(samples, tiny.predict(digits.split("test")["x"])[0])  # against the real test images
    assert out.metrics == {**want, "finite_samples": 1.0}
    # the Fréchet distance, from the features themselves: generated and real features differ, so it is positive
    fake_features, real_features = tiny.predict(samples)[0], tiny.predict(digits.split("test")["x"])[0]
    assert out.metrics["frechet_lenet"] == pytest.approx(feature_frechet_distance(fake_features, real_features))
    assert out.metrics["frechet_lenet"] > 1e-3
    assert out.images["samples"].shape == (4 * 29 + 1, 5 * 29 + 1, 1)  # the first 20 samples, 5 per row
    np.testing.assert_array_equal(out.images["samples"][1:29, 1:29, 0], samples[0, ..., 0])


def test_conditional_sampling_layout():
    """A conditional model samples labels 0, 1, 2, ... and draws one column per class."""
    digits = fake_digits()
    task = GANTask(DCGANGenerator(size=28, channels=1, width=4, num_classes=10),
                   DCGANDiscriminator(size=28, width=4, num_classes=10), digits, SGD, SGD,
                   GANConfig(z_dim=4, conditional=True), batch_size=8, steps=1)
    assert set(task.train_arrays) == {"x", "y"}
    sampler = GANSampler(task, 8)
    x = np.random.default_rng(0).uniform(size=(25, 28, 28, 1)).astype(np.float32)
    grid = sampler.picture({"x": x, "y": np.arange(25) % 10}, limit=20)
    assert grid.shape == (2 * 29 + 1, 10 * 29 + 1, 1)   # 20 of 25 images: whole rows of 10
    np.testing.assert_array_equal(grid[30:58, 30:58], x[11])  # row 1, column 1: the 12th sample, label 1
    labels = sampler.sample(_init(task), 16, 0, parallel.make_mesh())["y"]
    np.testing.assert_array_equal(labels, np.arange(16) % 10)
