import os
import signal

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.checkpoint import Checkpointer
from research.data import StreamPipeline
from research.errors import Interrupted, NonFiniteError
from research.loop import LoopConfig, train_and_evaluate
from research.state import TrainState
from research.workdir import Workdir
from research.writers import read_metrics


class CountingTask:
    """w counts steps; the loss turns NaN from step `nan_at` on (None: never); `signum` is sent to this process
    while step `signal_at`'s input is fetched."""

    def __init__(self, nan_at=None, signal_at=None, signum=signal.SIGTERM):
        self.nan_at, self.signal_at, self.signum = nan_at, signal_at, signum

    def init_state(self, rng):
        return TrainState.create({"w": jnp.zeros(2)}, optax.sgd(0.1), rng)

    def train_step(self, state, batch):
        loss = jnp.mean(batch["x"])
        if self.nan_at is not None:
            loss = jnp.where(state.step + 1 >= self.nan_at, jnp.nan, loss)
        return state.replace(step=state.step + 1, params={"w": state.params["w"] + 1}), {"loss": loss}

    def train_pipeline(self, seed, sharding):
        fetched = []

        def batch(rng, n):
            fetched.append(n)
            if len(fetched) == self.signal_at:  # a signal while the input of step `signal_at` is fetched
                os.kill(os.getpid(), self.signum)
            return {"x": rng.normal(size=(n, 2)).astype(np.float32)}

        return StreamPipeline(batch, 8, seed=seed, sharding=sharding)

    def evaluate(self, state, ctx):
        return {"w": float(state.params["w"][0])}

    def params(self, state):
        return state.params


def test_sigterm_saves_at_the_step_reached_and_resuming_matches_an_uninterrupted_run(tmp_path):
    cfg = LoopConfig(steps=9, log_every=3, checkpoint_every=0, progress_bar=False)  # saves only at the end
    full = train_and_evaluate(CountingTask(), cfg, _workdir(tmp_path / "a"))
    wd = _workdir(tmp_path / "b")
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match=r"stopped by SIGTERM at step 5/9; checkpoint saved in .*resume") as e:
        train_and_evaluate(CountingTask(signal_at=5), cfg, wd)
    assert e.value.exit_code == 128 + signal.SIGTERM
    assert Checkpointer(wd.checkpoints).all_steps() == [5] and wd.read_final() is None
    assert signal.getsignal(signal.SIGTERM) == before  # the loop's handler is gone again
    resumed = train_and_evaluate(CountingTask(), cfg, wd)  # step 5 is mid-window: the window was saved too
    assert resumed["params_sha256"] == full["params_sha256"] and resumed["metrics"] == full["metrics"]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("time", "elapsed")} for r in rows]
    assert strip(read_metrics(tmp_path / "b")) == strip(read_metrics(tmp_path / "a"))


def _workdir(path):
    wd = Workdir(path)
    wd.create()
    return wd


def test_loop_writes_the_workdir_contract(tmp_path):
    wd = _workdir(tmp_path)
    final = train_and_evaluate(CountingTask(), LoopConfig(steps=6, log_every=2, eval_every=3, checkpoint_every=4,
                                                          progress_bar=False), wd)
    assert final["step"] == 6 and final["metrics"] == {"w": 6.0} and len(final["params_sha256"]) == 64
    assert wd.read_final() == final
    rows = read_metrics(tmp_path)
    assert [(r["step"], r["split"]) for r in rows] == [(2, "train"), (3, "test"), (4, "train"), (6, "train"),
                                                        (6, "test")]
    assert all("elapsed" in r and "time" in r for r in rows)
    assert Checkpointer(wd.checkpoints).all_steps() == [4, 6]
    # Re-running a finished run does not train again.
    again = train_and_evaluate(CountingTask(), LoopConfig(steps=6, log_every=2, progress_bar=False), wd)
    assert again == final


def test_nan_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    wd = _workdir(tmp_path)
    with pytest.raises(NonFiniteError, match=r"stopped at step 7: non-finite \{'loss': nan\}.*step 6"):
        train_and_evaluate(CountingTask(nan_at=7), LoopConfig(steps=20, log_every=1, checkpoint_every=3,
                                                              progress_bar=False), wd)
    assert Checkpointer(wd.checkpoints).all_steps() == [3, 6]
    assert max(r["step"] for r in read_metrics(tmp_path)) == 6
    assert wd.read_final() is None


def test_resume_continues_from_the_checkpoint(tmp_path):
    full = train_and_evaluate(CountingTask(), LoopConfig(steps=8, log_every=2, checkpoint_every=2,
                                                         progress_bar=False), _workdir(tmp_path / "a"))
    wd = _workdir(tmp_path / "b")
    with pytest.raises(NonFiniteError):
        train_and_evaluate(CountingTask(nan_at=6), LoopConfig(steps=8, log_every=2, checkpoint_every=2,
                                                              progress_bar=False), wd)
    resumed = train_and_evaluate(CountingTask(), LoopConfig(steps=8, log_every=2, checkpoint_every=2,
                                                            progress_bar=False), wd)
    assert resumed["params_sha256"] == full["params_sha256"] and resumed["metrics"] == full["metrics"]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("time", "elapsed")} for r in rows]
    assert strip(read_metrics(tmp_path / "b")) == strip(read_metrics(tmp_path / "a"))


def test_an_ignored_signal_stays_ignored(tmp_path):
    """A background job ignores SIGINT: training must not start catching it (nor stop on it)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        final = train_and_evaluate(CountingTask(signal_at=2, signum=signal.SIGINT),
                                   LoopConfig(steps=4, log_every=2, progress_bar=False), _workdir(tmp_path))
        assert final["step"] == 4 and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
