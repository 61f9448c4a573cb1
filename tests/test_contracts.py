"""The contracts the docs promise, for every family (in-process, on 8 fake CPU devices):

- a run stopped by SIGTERM (it saves a checkpoint at the step reached, mid logging window) and resumed, and a
  run resumed from what a kill -9 leaves (its checkpoints up to some step, metrics.jsonl lines past it, no
  final.json), both end bitwise equal to the uninterrupted run: same params_sha256, same metrics.jsonl;
- one train step on 8 devices equals it on 1 device (float tolerance: the gradient all-reduce sums in another
  order).

The families: the MLP (dropout and batch norm), the autoencoder (a denoising VAE: corruption and sampling
draws), the GAN (a DCGAN with batch norm, two critic updates per step), the sequence models (an LSTM on the
adding problem, and the char LM with its carried state), and the MLP with --num_seeds and with --red_blue.
"""

from __future__ import annotations

import os
import shutil
import signal

import jax
import numpy as np
import pytest

from research import parallel
from research.data import DataConfig
from research.errors import Interrupted
from research.families import autoencoder, gan, mlp, rnn
from research.loop import LoopConfig, train_and_evaluate
from research.optim import OptimizerConfig
from research.tasks.autoencoder import AutoencoderConfig
from research.tasks.gan import GANConfig
from research.workdir import Workdir
from research.writers import read_metrics

ADAM = OptimizerConfig("adam", 3e-3)
STEPS = 4


def _loop(**kw) -> LoopConfig:
    return LoopConfig(**{"steps": STEPS, "log_every": 2, "checkpoint_every": 2, "keep_checkpoints": 5,
                         "async_checkpoints": False, "progress_bar": False, **kw})


CONFIGS = {
    "mlp": lambda **kw: mlp.Config(DataConfig("digits", 32), _loop(**kw), ADAM,
                                   mlp.ModelConfig(hidden=(32, 32), dropout=0.2, batch_norm=True)),
    "autoencoder": lambda **kw: autoencoder.Config(
        DataConfig("digits", 32), _loop(**kw), ADAM, autoencoder.ModelConfig(encoder=(32,), latent=2),
        AutoencoderConfig(noise="gaussian", noise_level=0.3, variational=True), eval_batch_size=64),
    "gan": lambda **kw: gan.Config(DataConfig("digits", 16), _loop(**kw), ADAM, ADAM,
                                   gan.ModelConfig(g_width=4, d_width=4), GANConfig(z_dim=8, n_critic=2),
                                   evaluator="none", num_eval_samples=64, eval_batch_size=64, grid_size=16),
    "lstm": lambda **kw: rnn.Config(DataConfig("adding", 32), _loop(**kw), ADAM, task="adding",
                                    model=rnn.ModelConfig(hidden=16), length=8),
    "char_lm": lambda **kw: rnn.Config(DataConfig("tiny_shakespeare", 8), _loop(**kw), ADAM, task="char_lm",
                                       model=rnn.ModelConfig(hidden=16, embed=8), unroll=8, max_eval_chars=400,
                                       sample_chars=0),
    "num_seeds": lambda **kw: CONFIGS["mlp"](num_seeds=2, **kw),
    "red_blue": lambda **kw: CONFIGS["mlp"](red_blue=True, fuse_every=3, **kw),
}
MODULES = {"mlp": mlp, "autoencoder": autoencoder, "gan": gan, "lstm": rnn, "char_lm": rnn, "num_seeds": mlp,
           "red_blue": mlp}


class SignalAt:
    """The task of `run`, but this process gets one SIGTERM while the input of training step `step` is fetched
    (of the first replica's pipeline: a second signal would act at once)."""

    def __init__(self, task, step: int):
        self._task, self._step, self._pipelines = task, step, 0

    def __getattr__(self, name):
        return getattr(self._task, name)

    def train_pipeline(self, seed, sharding):
        pipeline = self._task.train_pipeline(seed, sharding)
        self._pipelines += 1
        if self._pipelines == 1:
            self._arm(pipeline)
        return pipeline

    def _arm(self, pipeline) -> None:
        """Signal at the `step`-th fetch of `pipeline` (or, for --red_blue, of its first half)."""
        fetched = [0]
        name = "next_rows" if hasattr(pipeline, "next_rows") else "next_local"  # one call per step
        original = getattr(pipeline, name)

        def counted():
            fetched[0] += 1
            if fetched[0] == self._step:
                os.kill(os.getpid(), signal.SIGTERM)
            return original()

        setattr(pipeline, name, counted)
        if hasattr(pipeline, "halves"):
            halves = pipeline.halves

            def armed_halves(split_seed):
                red, blue = halves(split_seed)
                self._arm(red)
                return red, blue

            pipeline.halves = armed_halves


def _train(name: str, path, *, signal_at: int | None = None) -> dict:
    cfg = CONFIGS[name]()
    mesh = parallel.make_mesh()
    run = MODULES[name].build(cfg, mesh)
    task = run.task if signal_at is None else SignalAt(run.task, signal_at)
    wd = Workdir(path)
    wd.create()
    return train_and_evaluate(task, run.evaluators, cfg.loop, wd, mesh)


def _rows(path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("time", "elapsed")} for r in read_metrics(path)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    cache = {}

    def get(name: str):
        if name not in cache:
            path = tmp_path_factory.mktemp(name)
            cache[name] = path, _train(name, path)
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(CONFIGS))
def test_stopped_or_killed_and_resumed_is_bitwise_equal(name, uninterrupted, tmp_path):
    path, full = uninterrupted(name)
    # SIGTERM during step 3: a checkpoint at step 3 (mid logging window), Interrupted, then the same command again
    stopped = tmp_path / "stopped"
    with pytest.raises(Interrupted, match="stopped by SIGTERM at step 3/4"):
        _train(name, stopped, signal_at=3)
    assert sorted(p.name for p in (stopped / "checkpoints").iterdir()) == ["2", "3"]
    resumed = _train(name, stopped)
    assert resumed["params_sha256"] == full["params_sha256"] and resumed["metrics"] == full["metrics"]
    assert _rows(stopped) == _rows(path)
    # kill -9 after the checkpoint of step 2 was written: later checkpoints, final.json and log lines left behind
    killed = tmp_path / "killed"
    shutil.copytree(path, killed)
    shutil.rmtree(killed / "checkpoints" / "4")
    (killed / "final.json").unlink()
    resumed = _train(name, killed)
    assert resumed["params_sha256"] == full["params_sha256"] and resumed["metrics"] == full["metrics"]
    assert _rows(killed) == _rows(path)
    if name == "num_seeds":
        assert [s["params_sha256"] for s in resumed["seeds"]] == [s["params_sha256"] for s in full["seeds"]]


@pytest.mark.parametrize("name", ["mlp", "autoencoder", "gan", "lstm", "char_lm"])
def test_a_train_step_on_eight_devices_equals_it_on_one(name):
    cfg = CONFIGS[name]()
    results = []
    for devices in (jax.devices(), jax.devices()[:1]):
        mesh = parallel.make_mesh(devices)
        task = MODULES[name].build(cfg, mesh, evaluate=False).task
        rep = parallel.replicated(mesh)
        state = jax.jit(task.init_state, out_shardings=rep)(jax.random.PRNGKey(0))
        pipeline = task.train_pipeline(0, parallel.batch_sharding(mesh))
        step = jax.jit(task.train_step)
        for _ in range(2):
            state, metrics = step(state, next(pipeline))
        results.append((jax.device_get(task.params(state)), jax.device_get(metrics)))
    (p8, m8), (p1, m1) = results
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(p8)[0], jax.tree.leaves(p1), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))
    for k in m8:
        np.testing.assert_allclose(m8[k], m1[k], rtol=1e-4, atol=1e-6, err_msg=k)
