import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.checkpoint import Checkpointer
from research.data import StreamPipeline
from research.errors import ConfigError, Interrupted, NonFiniteError
from research.evaluators import Evaluation
from research.loop import LoopConfig, train_and_evaluate
from research.state import TrainState, step_rng
from research.workdir import Workdir
from research.writers import read_metrics


class CountingTask:
    """`count` counts steps; `w` accumulates every batch's mean and a draw from the step's RNG, so a run's
    params_sha256 depends on the data order and the randomness. The loss turns NaN from step `nan_at` on (None:
    never); `signum` is sent to this process while step `signal_at`'s input is fetched."""

    def __init__(self, nan_at=None, signal_at=None, signum=signal.SIGTERM):
        self.nan_at, self.signal_at, self.signum = nan_at, signal_at, signum

    def init_state(self, rng):
        # `table`: enough bytes that the checkpoint's data files hold it (Orbax inlines tiny arrays)
        params = {"w": jnp.zeros(2), "count": jnp.zeros(()), "table": jnp.arange(1 << 14, dtype=jnp.float32)}
        return TrainState.create(params, optax.sgd(0.1), rng)

    def train_step(self, state, batch):
        loss = jnp.mean(batch["x"])
        if self.nan_at is not None:
            loss = jnp.where(state.step + 1 >= self.nan_at, jnp.nan, loss)
        w = state.params["w"] + jnp.mean(batch["x"], 0) + jax.random.uniform(step_rng(state), (2,))
        params = {**state.params, "w": w, "count": state.params["count"] + 1}
        return state.replace(step=state.step + 1, params=params), {"loss": loss}

    def train_pipeline(self, seed, sharding):
        fetched = []

        def batch(rng, n):
            fetched.append(n)
            if len(fetched) == self.signal_at:  # a signal while the input of step `signal_at` is fetched
                os.kill(os.getpid(), self.signum)
            return {"x": rng.normal(size=(n, 2)).astype(np.float32)}

        return StreamPipeline(batch, 8, seed=seed, sharding=sharding)

    def params(self, state):
        return state.params


class CountEvaluator:
    def evaluate(self, state, ctx):
        return Evaluation({"count": float(state.params["count"])})


EVALUATORS = [CountEvaluator()]


def test_sigterm_saves_at_the_step_reached_and_resuming_matches_an_uninterrupted_run(tmp_path):
    cfg = LoopConfig(steps=9, log_every=3, checkpoint_every=0, progress_bar=False)  # saves only at the end
    full = train_and_evaluate(CountingTask(), EVALUATORS, cfg, _workdir(tmp_path / "a"))
    wd = _workdir(tmp_path / "b")
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match=r"stopped by SIGTERM at step 5/9; checkpoint saved in .*resume") as e:
        train_and_evaluate(CountingTask(signal_at=5), EVALUATORS, cfg, wd)
    assert e.value.exit_code == 128 + signal.SIGTERM
    assert Checkpointer(wd.checkpoints).all_steps() == [5] and wd.read_final() is None
    assert signal.getsignal(signal.SIGTERM) == before  # the loop's handler is gone again
    resumed = train_and_evaluate(CountingTask(), EVALUATORS, cfg, wd)  # step 5 is mid-window: its window was saved
    assert resumed["params_sha256"] == full["params_sha256"] and resumed["metrics"] == full["metrics"]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("time", "elapsed")} for r in rows]
    assert strip(read_metrics(tmp_path / "b")) == strip(read_metrics(tmp_path / "a"))


def _workdir(path):
    wd = Workdir(path)
    wd.create()
    return wd


def test_loop_writes_the_workdir_contract(tmp_path):
    wd = _workdir(tmp_path)
    cfg = LoopConfig(steps=6, log_every=2, eval_every=3, checkpoint_every=4, progress_bar=False)
    final = train_and_evaluate(CountingTask(), EVALUATORS, cfg, wd)
    assert final["step"] == 6 and final["metrics"] == {"count": 6.0} and len(final["params_sha256"]) == 64
    assert wd.read_final() == final
    rows = read_metrics(tmp_path)
    assert [(r["step"], r["split"]) for r in rows] == [(2, "train"), (3, "test"), (4, "train"), (6, "train"),
                                                        (6, "test")]
    assert all("elapsed" in r and "time" in r for r in rows)
    assert Checkpointer(wd.checkpoints).all_steps() == [4, 6]
    # Re-running a finished run does not train again.
    again = train_and_evaluate(CountingTask(), EVALUATORS, LoopConfig(steps=6, log_every=2, progress_bar=False), wd)
    assert again == final


def test_nan_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    wd = _workdir(tmp_path)
    with pytest.raises(NonFiniteError, match=r"stopped at step 7: non-finite \{'loss': nan\}.*step 6"):
        train_and_evaluate(CountingTask(nan_at=7), EVALUATORS, LoopConfig(steps=20, log_every=1, checkpoint_every=3,
                                                                          progress_bar=False), wd)
    assert Checkpointer(wd.checkpoints).all_steps() == [3, 6]
    assert max(r["step"] for r in read_metrics(tmp_path)) == 6
    assert wd.read_final() is None


def test_resume_continues_from_the_checkpoint(tmp_path):
    cfg = LoopConfig(steps=8, log_every=2, checkpoint_every=2, progress_bar=False)
    full = train_and_evaluate(CountingTask(), EVALUATORS, cfg, _workdir(tmp_path / "a"))
    wd = _workdir(tmp_path / "b")
    with pytest.raises(NonFiniteError):
        train_and_evaluate(CountingTask(nan_at=6), EVALUATORS, cfg, wd)
    resumed = train_and_evaluate(CountingTask(), EVALUATORS, cfg, wd)
    assert resumed["params_sha256"] == full["params_sha256"] and resumed["metrics"] == full["metrics"]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("time", "elapsed")} for r in rows]
    assert strip(read_metrics(tmp_path / "b")) == strip(read_metrics(tmp_path / "a"))


def test_an_ignored_signal_stays_ignored(tmp_path):
    """A background job ignores SIGINT: training must not start catching it (nor stop on it)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        final = train_and_evaluate(CountingTask(signal_at=2, signum=signal.SIGINT), EVALUATORS,
                                   LoopConfig(steps=4, log_every=2, progress_bar=False), _workdir(tmp_path))
        assert final["step"] == 4 and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


CORRUPTIONS = {  # what a kill or a full disk in the middle of a save leaves (tests/test_faults.py: the real runs)
    "truncated data files": lambda c: [_truncate(p) for p in (c / "state" / "ocdbt.process_0" / "d").iterdir()],
    "truncated state metadata": lambda c: _truncate(c / "state" / "_METADATA"),
    "truncated meta": lambda c: _truncate(c / "meta" / "metadata"),
    "state missing": lambda c: __import__("shutil").rmtree(c / "state"),
}


def _truncate(path):
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_an_unreadable_checkpoint_is_moved_aside_and_the_run_resumes_from_the_previous_one(tmp_path, how, caplog):
    cfg = LoopConfig(steps=8, log_every=2, checkpoint_every=2, progress_bar=False, async_checkpoints=False)
    full = train_and_evaluate(CountingTask(), EVALUATORS, cfg, _workdir(tmp_path / "a"))
    wd = _workdir(tmp_path / "b")
    with pytest.raises(NonFiniteError):  # a run that died after saving step 6
        train_and_evaluate(CountingTask(nan_at=7), EVALUATORS, cfg, wd)
    CORRUPTIONS[how](wd.checkpoints / "6")
    damaged = sorted(str(p.relative_to(wd.checkpoints / "6")) for p in (wd.checkpoints / "6").rglob("*"))
    with caplog.at_level("WARNING", logger="research"):
        resumed = train_and_evaluate(CountingTask(), EVALUATORS, cfg, wd)
    assert resumed["params_sha256"] == full["params_sha256"] and resumed["metrics"] == full["metrics"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "checkpoints/6 is unreadable" in warnings[0], warnings
    kept = wd.unreadable / "checkpoints-6"  # moved, never deleted: every file it had is still there
    assert sorted(str(p.relative_to(kept)) for p in kept.rglob("*")) == damaged
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("time", "elapsed")} for r in rows]
    assert strip(read_metrics(tmp_path / "b")) == strip(read_metrics(tmp_path / "a"))


def test_a_torn_metrics_line_and_an_unreadable_final_json_are_set_right(tmp_path, caplog):
    cfg = LoopConfig(steps=6, log_every=2, checkpoint_every=2, progress_bar=False)
    wd = _workdir(tmp_path)
    full = train_and_evaluate(CountingTask(), EVALUATORS, cfg, wd)
    rows = read_metrics(tmp_path)
    with wd.metrics_file.open("a") as f:  # a kill in the middle of writing a line
        f.write('{"step": 8, "split": "tr')
    wd.final_file.write_text('{"step": 6, "metr')  # and a torn final.json
    with caplog.at_level("WARNING", logger="research"):
        again = train_and_evaluate(CountingTask(), EVALUATORS, cfg, wd)
    assert again["params_sha256"] == full["params_sha256"] and wd.read_final() == again
    assert (wd.unreadable / "final.json").read_text() == '{"step": 6, "metr'
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("time", "elapsed")} for r in rows]
    assert strip(read_metrics(tmp_path)) == strip(rows) and wd.metrics_file.read_text().endswith("\n")
    assert any("torn" in r.getMessage() for r in caplog.records)


class PictureEvaluator:
    """Evaluates every 2 steps on its own; draws a picture and writes a text."""

    every = 2

    def evaluate(self, state, ctx):
        out = Evaluation({"w0": float(state.params["w"][0])})
        if ctx.pictures:
            out.images["grid"] = np.full((4, 4, 1), 0.5, np.float32)
            out.texts["note"] = f"step {ctx.step}\n"
        return out


def test_evaluators_have_their_own_periods_and_their_pictures_go_to_the_workdir(tmp_path):
    wd = _workdir(tmp_path)
    cfg = LoopConfig(steps=6, log_every=3, eval_every=3, checkpoint_every=0, progress_bar=False)
    final = train_and_evaluate(CountingTask(), [CountEvaluator(), PictureEvaluator()], cfg, wd)
    tests = [(r["step"], sorted(k for k in r if k not in ("step", "split", "time", "elapsed")))
             for r in read_metrics(tmp_path) if r["split"] == "test"]
    assert tests == [(2, ["w0"]), (3, ["count"]), (4, ["w0"]), (6, ["count", "w0"])]
    assert set(final["metrics"]) == {"count", "w0"}
    assert sorted(p.name for p in wd.images.iterdir()) == ["grid_0000002.png", "grid_0000004.png",
                                                           "grid_0000006.png"]
    assert wd.sample_path("note", 4).read_text() == "step 4\n"


def test_resuming_exactly_at_the_end_evaluates_and_a_checkpoint_past_the_end_is_refused(tmp_path):
    cfg = LoopConfig(steps=6, log_every=2, checkpoint_every=2, progress_bar=False)
    wd = _workdir(tmp_path)
    full = train_and_evaluate(CountingTask(), EVALUATORS, cfg, wd)
    wd.final_file.unlink()  # killed after the last checkpoint, before final.json
    again = train_and_evaluate(CountingTask(), EVALUATORS, cfg, wd)
    assert again["metrics"] == full["metrics"] and again["params_sha256"] == full["params_sha256"]
    assert [r["step"] for r in read_metrics(tmp_path) if r["split"] == "test"] == [6]
    with pytest.raises(ConfigError, match=r"already holds a checkpoint at step 6 > --steps=4"):
        train_and_evaluate(CountingTask(), EVALUATORS, LoopConfig(steps=4, progress_bar=False), wd)


def test_a_second_signal_acts_at_once():
    """The first SIGTERM asks for a clean stop; a second one does what SIGTERM did before the loop (here: a
    handler of the test's), at once."""
    from research.preemption import StopSignal

    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with StopSignal() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.requested() and stop.name == "SIGTERM" and seen == []
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is not None and seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)
