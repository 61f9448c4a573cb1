"""Parameter EMA (`--ema_decay`): the average's math, the state without EMA unchanged, the update after every
optimizer step in the tasks, the `ema_` evaluations, checkpoints and a bitwise resume with EMA and augmentation
(through the launch module and the loop: tests/test_images_launch.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.checkpoint import Checkpointer
from research.data import DataConfig, Dataset
from research.data.augment import NO_AUGMENT, AugmentConfig
from research.errors import ConfigError
from research.evaluators import EvalContext, Evaluation
from research.evaluators.ema import EMAEvaluator, with_ema
from research.loop import LoopConfig
from research.models.gan_mlp import MLPDiscriminator, MLPGenerator
from research.models.mlp import MLP
from research.optim import OptimizerConfig
from research.parallel import make_mesh
from research.state import TrainState, ema_average, ema_view, fingerprint, init_ema, update_ema, with_ema_field
from research.tasks.gan import GANConfig, GANTask
from research.tasks.supervised import SupervisedConfig, SupervisedTask
from tests.test_gan_task import RING, SGD


def images(n_train: int = 64, n_test: int = 32) -> Dataset:
    rng = np.random.default_rng(0)
    split = lambda n: {"x": rng.uniform(size=(n, 6, 6, 1)).astype(np.float32),
                       "y": (np.arange(n) % 3).astype(np.int32)}
    return Dataset("tiny_images", {"train": split(n_train), "test": split(n_test)}, num_classes=3)


DATA = images()


def task(ema_decay=0.0, augment=NO_AUGMENT, batch_norm=True):
    model = MLP(hidden=(8,), out_dim=3, batch_norm=batch_norm)
    return SupervisedTask(model, DATA, OptimizerConfig(learning_rate=1e-2), SupervisedConfig(), batch_size=16,
                          steps=10, augment=augment, ema_decay=ema_decay)


def batch(i=0):
    return {"x": jnp.asarray(DATA.splits["train"]["x"][16 * i:16 * (i + 1)]),
            "y": jnp.asarray(DATA.splits["train"]["y"][16 * i:16 * (i + 1)])}


def test_the_average_is_decay_times_the_average_plus_the_rest_times_the_new_value():
    avg = {"w": jnp.zeros(3), "n": jnp.int32(0)}
    for k in range(1, 6):
        avg = ema_average(avg, {"w": jnp.full(3, 2.0), "n": jnp.int32(k)}, 0.9)
        np.testing.assert_allclose(avg["w"], 2.0 * (1 - 0.9 ** k), rtol=1e-6)
        assert int(avg["n"]) == k  # non-float leaves take the new value
    one = ema_average({"w": jnp.float32(1.0)}, {"w": jnp.float32(3.0)}, 0.75)
    assert float(one["w"]) == 0.75 * 1.0 + 0.25 * 3.0


def test_without_ema_the_state_gains_no_field_and_no_leaf():
    state = jax.eval_shape(task().init_state, jax.random.PRNGKey(0))
    assert type(state) is TrainState and not hasattr(state, "ema")
    assert init_ema(state, 0.0) is state and update_ema(state, 0.9) is state
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
    assert all(p.startswith((".step", ".params", ".opt_state", ".model_state", ".rng")) for p in paths)


def test_with_ema_the_state_is_a_train_state_plus_averages_of_params_and_model_state():
    a, b = (jax.jit(task(0.9).init_state)(jax.random.PRNGKey(s)) for s in (0, 1))
    assert isinstance(a, TrainState) and type(a) is with_ema_field(TrainState) and type(b) is type(a)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert set(a.ema) == {"params", "model_state"} and "batch_stats" in a.ema["model_state"]
    assert fingerprint(a.ema["params"]) == fingerprint(a.params)
    view = ema_view(a)
    assert view.params is a.ema["params"] and view.model_state is a.ema["model_state"]


def test_the_task_updates_the_average_after_every_optimizer_step_and_trains_exactly_as_without():
    plain, averaged = task(), task(0.9)
    s0, e0 = (jax.jit(t.init_state)(jax.random.PRNGKey(0)) for t in (plain, averaged))
    step_plain, step_ema = jax.jit(plain.train_step), jax.jit(averaged.train_step)
    for i in range(3):
        s1, _ = step_plain(s0, batch(i))
        e1, _ = step_ema(e0, batch(i))
        assert fingerprint(s1.params) == fingerprint(e1.params)  # the EMA never feeds back into training
        want = {name: ema_average(e0.ema[name], getattr(e1, name), 0.9) for name in ("params", "model_state")}
        for name in want:
            for got, expected in zip(jax.tree.leaves(e1.ema[name]), jax.tree.leaves(want[name]), strict=True):
                np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
        s0, e0 = s1, e1
    assert fingerprint(e0.ema["params"]) != fingerprint(e0.params)


def test_the_gan_averages_its_generator():
    g = MLPGenerator(out_shape=(2,), hidden=(5,), activation="tanh")
    d = MLPDiscriminator(hidden=(4,), activation="tanh")
    gan = GANTask(g, d, RING, SGD, SGD, GANConfig(z_dim=3), batch_size=8, steps=10, ema_decay=0.5)
    s0 = gan.init_state(jax.random.PRNGKey(0))
    assert set(s0.ema) == {"g_params", "g_state"}
    s1, _ = jax.jit(gan.train_step)(s0, {"x": jnp.asarray(gan.dataset.sample(np.random.default_rng(0), 8)["x"])})
    expected = ema_average(s0.ema["g_params"], s1.g_params, 0.5)
    for got, want in zip(jax.tree.leaves(s1.ema["g_params"]), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert ema_view(s1).g_params is s1.ema["g_params"] and ema_view(s1).d_params is s1.d_params


class Fixed:
    every = 7

    def evaluate(self, state, ctx):
        return Evaluation({"accuracy": float(state.params["a"]), "baseline_mse": 1.0, "pca_sq_error": 2.0},
                          images={"samples": np.zeros((2, 2, 1))}, texts={"sample": "hi"})


def test_the_ema_evaluator_prefixes_everything_and_skips_the_data_baselines():
    state = with_ema_field(TrainState)(step=0, params={"a": 1.0}, opt_state=(), model_state={}, rng=0,
                                       ema={"params": {"a": 0.25}})
    out = EMAEvaluator(Fixed()).evaluate(state, EvalContext(step=1, mesh=make_mesh()))
    assert out.metrics == {"ema_accuracy": 0.25} and set(out.images) == {"ema_samples"}
    assert out.texts == {"ema_sample": "hi"} and EMAEvaluator(Fixed()).every == 7
    evaluators = [Fixed()]
    assert with_ema(evaluators, 0.0) == evaluators and len(with_ema(evaluators, 0.99)) == 2


def test_an_ema_state_checkpoints_and_resumes_bitwise_with_augmentation(tmp_path):
    """Four steps straight, or two, a checkpoint, a restore and two more: the same parameters and averages (the
    augmentation draws from the step's key, the averages are in the checkpoint). A state without EMA is refused."""
    averaged = task(0.8, AugmentConfig(crop=1, flip=0.5, noise=0.05))
    step = jax.jit(averaged.train_step)
    start = jax.jit(averaged.init_state)(jax.random.PRNGKey(0))
    straight = start
    for i in range(4):
        straight = step(straight, batch(i))[0]
    half = step(step(start, batch(0))[0], batch(1))[0]
    ckpt = Checkpointer(tmp_path / "c", async_save=False)
    ckpt.save(2, half, {"data": []})
    resumed, _ = ckpt.restore(2, jax.eval_shape(averaged.init_state, jax.random.PRNGKey(0)))
    assert type(resumed) is type(half) and fingerprint(resumed) == fingerprint(half)
    resumed = jax.tree.map(lambda r, h: jax.device_put(r, h.sharding), resumed, half)  # as placed: no recompile
    for i in (2, 3):
        resumed = step(resumed, batch(i))[0]
    assert fingerprint(resumed.ema) == fingerprint(straight.ema) and fingerprint(resumed) == fingerprint(straight)
    with pytest.raises(ConfigError, match="arrays missing.*unexpected.*ema"):
        ckpt.restore(2, jax.eval_shape(task().init_state, jax.random.PRNGKey(0)))
    ckpt.close()


def _configs(ema_decay: float, augment: AugmentConfig = NO_AUGMENT) -> dict:
    """A small config of every family, on data each family accepts (images where it can)."""
    from research.families import autoencoder, gan, mlp, rnn

    loop, opt = LoopConfig(steps=2, ema_decay=ema_decay), OptimizerConfig()
    digits = DataConfig("digits", 16, augment=augment)
    return {
        "mlp": mlp.Config(data=digits, loop=loop, optimizer=opt, model=mlp.ModelConfig(hidden=(8,))),
        "autoencoder": autoencoder.Config(data=digits, loop=loop, optimizer=opt,
                                          model=autoencoder.ModelConfig(encoder=(8,), latent=2)),
        "gan": gan.Config(data=digits, loop=loop, g_optimizer=opt, d_optimizer=opt, evaluator="none",
                          model=gan.ModelConfig(g_width=4, d_width=4), num_eval_samples=16, eval_batch_size=16),
        "rnn": rnn.Config(data=DataConfig("adding", 16), loop=loop, optimizer=opt, task="adding", length=10,
                          model=rnn.ModelConfig(hidden=4)),
    }


@pytest.mark.parametrize("family", ["mlp", "autoencoder", "gan", "rnn"])
def test_every_family_keeps_an_ema_and_evaluates_it_when_asked(family):
    from research.families import family as family_module

    module = family_module(family)
    plain, averaged = (module.build(_configs(decay)[family], make_mesh()) for decay in (0.0, 0.9))
    assert not any(isinstance(e, EMAEvaluator) for e in plain.evaluators)
    assert len(averaged.evaluators) == 2 * len(plain.evaluators) and isinstance(averaged.evaluators[-1], EMAEvaluator)
    key = jax.random.PRNGKey(0)
    without, with_ = jax.eval_shape(plain.task.init_state, key), jax.eval_shape(averaged.task.init_state, key)
    assert not hasattr(without, "ema") and with_.ema is not None
    assert len(jax.tree.leaves(with_)) == len(jax.tree.leaves(without)) + len(jax.tree.leaves(with_.ema))
    assert module.build(_configs(0.9)[family], make_mesh(), evaluate=False).task.ema_decay == 0.9  # sampling, export


@pytest.mark.parametrize("family", ["mlp", "autoencoder", "gan"])
def test_the_image_families_hand_the_augmentation_to_their_task(family):
    from research.families import family as family_module

    augment = AugmentConfig(crop=1, flip=0.5)
    assert family_module(family).build(_configs(0.0, augment)[family], make_mesh()).task.augment == augment


def test_the_sequence_family_refuses_augmentation():
    from research.families import rnn

    cfg = _configs(0.0)["rnn"]
    cfg = rnn.Config(**{**cfg.__dict__, "data": DataConfig("adding", 16, augment=AugmentConfig(flip=0.5))})
    with pytest.raises(ConfigError, match="--augment applies to image datasets"):
        rnn.build(cfg, make_mesh())
