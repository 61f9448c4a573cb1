"""The autoencoder task: pure, deterministic train steps that learn; evaluation metrics, PCA and pictures."""

import dataclasses

import jax
import numpy as np
import pytest

from research import data, parallel
from research.data import map_batches
from research.errors import ConfigError
from research.evaluators import EvalContext
from research.evaluators.reconstruction import ReconstructionEvaluator
from research.models.autoencoder import make_autoencoder
from research.optim import OptimizerConfig
from research.state import TrainState
from research.tasks.autoencoder import AutoencoderConfig, AutoencoderTask


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def _task(dataset, latent=4, variational=False, **cfg):
    model = make_autoencoder("dense", dataset.input_shape, latent, hidden=[32], variational=variational)
    config = AutoencoderConfig(variational=variational, **cfg)
    return AutoencoderTask(model, dataset, OptimizerConfig(learning_rate=3e-3), config, batch_size=32, steps=100)


@pytest.fixture(scope="module")
def denoising_vae(digits):
    """A denoising VAE with a 2-D code: exercises every branch of training, evaluation and pictures."""
    task = _task(digits, latent=2, variational=True, noise="gaussian", noise_level=0.3)
    # The state init_state would make, with numpy-drawn weights: compiling Flax's truncated-normal
    # initialisers costs seconds per kernel on CPU (init_state itself runs in the end-to-end test).
    shapes = jax.eval_shape(task.init_state, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: (rng.normal(size=s.shape) / np.sqrt(s.shape[0]) if len(s.shape) == 2
                                     else np.zeros(s.shape)).astype(np.float32), shapes.params)
    return task, TrainState.create(params, task.tx, jax.random.PRNGKey(1))


def _batch(dataset, n=32, start=0):
    return {"x": dataset.split("train")["x"][start:start + n]}


def test_train_step_is_pure_and_learns(digits, denoising_vae):
    task, state = denoising_vae
    step = jax.jit(task.train_step)
    a, ma = step(state, _batch(digits))
    b, mb = step(state, _batch(digits))
    assert ma["loss"] == mb["loss"]
    np.testing.assert_array_equal(jax.tree.leaves(a.params)[0], jax.tree.leaves(b.params)[0])
    assert float(ma["kl"]) >= 0
    np.testing.assert_allclose(float(ma["loss"]), -float(ma["elbo"]), rtol=1e-6)  # kl_weight 1: loss = -ELBO
    for i in range(60):
        a, m = step(a, _batch(digits, start=32 * (i % 40)))
    assert int(a.step) == 61 and float(m["loss"]) < 0.8 * float(ma["loss"])
    assert set(m) >= {"loss", "sq_error", "kl", "elbo", "learning_rate", "grad_norm", "param_norm", "update_norm"}


def test_evaluate_reports_ae_beside_pca_and_draws(digits, denoising_vae):
    task, state = denoising_vae
    evaluator = ReconstructionEvaluator(task, digits, 64)
    out = evaluator.evaluate(state, EvalContext(7, parallel.make_mesh()))
    metrics = out.metrics
    assert {"sq_error", "mse", "bce", "pca_sq_error", "pca_mse", "elbo", "kl", "denoise_sq_error",
            "pca_denoise_sq_error"} <= set(metrics)
    x = digits.split("test")["x"]
    assert metrics["pca_sq_error"] == pytest.approx(np.mean(np.sum((evaluator.pca.reconstruct(x) - x) ** 2,
                                                                   (1, 2, 3))))
    recon = np.asarray(jax.jit(task.decode)(state, jax.jit(task.encode)(state, x)[0]))
    assert metrics["sq_error"] == pytest.approx(np.mean(np.sum((recon - x) ** 2, (1, 2, 3))), rel=1e-5)
    assert sorted(out.images) == ["interpolation", "manifold", "reconstructions", "samples"]
    assert sorted(out.figures) == ["codes"]
    # reconstructions: rows input, corrupted, its reconstruction, autoencoder, PCA; one column per class (10)
    assert out.images["reconstructions"].shape[:2] == (5 * (8 + 1) * 4 + 4, 10 * (8 + 1) * 4 + 4)
    quiet = evaluator.evaluate(state, EvalContext(7, parallel.make_mesh(), pictures=False))
    assert quiet.metrics == metrics and not quiet.images and not quiet.figures


def test_eval_draws_do_not_depend_on_batching(digits, denoising_vae):
    """Corruption and VAE draws at evaluation are keyed by example index, so batching cannot change them."""
    task, state = denoising_vae
    evaluator = ReconstructionEvaluator(task, digits, 64)
    x = digits.split("test")["x"]
    sharding = parallel.batch_sharding(parallel.make_mesh())

    def outputs(start):  # rows start..start+15 at batch positions 0..15 (the evaluation's compiled program)
        arrays = {"x": x[start:start + 16], "idx": np.arange(start, start + 16, dtype=np.int32)}
        return map_batches(lambda b: evaluator._outputs(state, b), arrays, 64, sharding)

    first, shifted = outputs(0), outputs(8)
    for k in ("noisy", "noisy_logits", "elbo"):
        np.testing.assert_allclose(first[k][8:], shifted[k][:8], rtol=1e-5, atol=1e-6)
        assert not np.allclose(first[k][:8], shifted[k][:8])  # other examples, other draws


@pytest.mark.parametrize("variational,cfg", [
    (True, {"loss": "mse"}),
    (False, {"kl_weight": 0.5}),
    (False, {"noise_level": 0.1}),
    (False, {"noise": "mask"}),
    (False, {"noise": "mask", "noise_level": 1.0}),
    (False, {"noise": "blur", "noise_level": 0.1}),
    (False, {"loss": "l1"}),
])
def test_bad_configs(digits, variational, cfg):
    with pytest.raises(ConfigError):
        _task(digits, variational=variational, **cfg)


def test_pixels_outside_unit_interval_are_refused(digits):
    train = digits.split("train")
    shifted = dataclasses.replace(digits, splits={"train": {"x": train["x"] * 2 - 1, "y": train["y"]},
                                                  "test": digits.split("test")}, scales={})  # float values
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        _task(shifted)


def test_one_step_is_sgd_on_the_documented_loss(digits):
    """A plain autoencoder's step with SGD: params - lr * grad of the mean per-image Bernoulli cross-entropy of
    the input's reconstruction, computed here from the model and the objective directly."""
    from research.objectives.reconstruction import bernoulli_cross_entropy

    model = make_autoencoder("dense", digits.input_shape, 3, hidden=[8])
    task = AutoencoderTask(model, digits, OptimizerConfig("sgd", 0.5), AutoencoderConfig(), batch_size=32, steps=1)
    state = jax.jit(task.init_state)(jax.random.PRNGKey(0))
    x = _batch(digits)["x"]
    new, metrics = jax.jit(task.train_step)(state, {"x": x})

    def loss(params):
        logits, _, _ = model.apply({"params": params}, x)
        return jax.numpy.mean(bernoulli_cross_entropy(logits, x))

    value, grads = jax.value_and_grad(loss)(state.params)
    np.testing.assert_allclose(float(metrics["loss"]), float(value), rtol=1e-6)
    for got, p, g in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params), jax.tree.leaves(grads),
                         strict=True):
        np.testing.assert_allclose(got, p - 0.5 * g, rtol=1e-5, atol=1e-7)
    assert int(new.step) == 1
