import json
import os
import socket
import stat
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import parallel
from research.checkpoint import Checkpointer
from research.errors import ConfigError
from research.workdir import Workdir, parse_flags
from tests.conftest import REPO


def _state(width):
    return {"params": {"w": jnp.arange(3 * width, dtype=jnp.float32).reshape(3, width)}, "step": jnp.array(7)}


def _abstract(tree):
    rep = parallel.replicated(parallel.make_mesh())
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), tree)


def test_roundtrip_keeps_k_and_places_on_the_mesh(tmp_path):
    ckpt = Checkpointer(tmp_path / "c", keep=2)
    for step in (1, 2, 3):
        ckpt.save(step, _state(4), {"data": {"epoch": step}})
    ckpt.close()
    ckpt = Checkpointer(tmp_path / "c", keep=2)
    assert ckpt.all_steps() == [2, 3] and ckpt.latest_step() == 3
    state, meta = ckpt.restore(3, _abstract(_state(4)))
    ckpt.close()
    assert meta == {"data": {"epoch": 3}}
    np.testing.assert_array_equal(state["params"]["w"], _state(4)["params"]["w"])
    assert len(state["params"]["w"].sharding.device_set) == jax.device_count()


def test_async_save_keeps_meta_as_it_was_at_the_call(tmp_path):
    # The loop keeps appending to the log window it passed in; the checkpoint must not see those appends.
    window = []
    ckpt = Checkpointer(tmp_path / "c", async_save=True)
    ckpt.save(1, _state(2), {"log_window": window})
    window.append({"loss": 1.0})
    ckpt.close()
    ckpt = Checkpointer(tmp_path / "c")
    _, meta = ckpt.restore(1, _abstract(_state(2)))
    ckpt.close()
    assert meta == {"log_window": []}


def test_other_architecture_is_a_clear_error_and_leaves_files(tmp_path):
    ckpt = Checkpointer(tmp_path / "c")
    ckpt.save(5, _state(4), {})
    ckpt.close()
    before = sorted(str(p) for p in (tmp_path / "c").rglob("*"))
    ckpt = Checkpointer(tmp_path / "c")
    with pytest.raises(ConfigError, match=r"different architecture.*params/w is float32\[3, 4\] there, "
                                          r"float32\[3, 5\] here"):
        ckpt.restore(5, _abstract(_state(5)))
    with pytest.raises(ConfigError, match="missing"):
        ckpt.restore(5, _abstract({"params": {"v": jnp.zeros(2)}, "step": jnp.array(0)}))
    ckpt.close()
    assert sorted(str(p) for p in (tmp_path / "c").rglob("*")) == before


def test_flags_mismatch_is_refused_and_non_defining_flags_may_change(tmp_path):
    wd = Workdir(tmp_path / "run")
    wd.create()
    wd.write_flags({"lr": "0.5", "log_every": "10"})
    wd.check_flags({"lr": "0.1", "log_every": "10"}, ignore={"log_every"})  # no checkpoint yet: may change
    (wd.checkpoints / "10").mkdir(parents=True)
    with pytest.raises(ConfigError, match="--lr: '0.5' there, '0.1' now"):
        wd.check_flags({"lr": "0.1", "log_every": "10"}, ignore={"log_every"})
    wd.check_flags({"lr": "0.5", "log_every": "50"}, ignore={"log_every"})
    wd.write_flags({"lr": "0.5", "log_every": "50"})
    assert parse_flags((tmp_path / "run" / "flags.txt").read_text()) == {"lr": "0.5", "log_every": "50"}
    (tmp_path / "run" / "flags.txt").unlink()
    with pytest.raises(ConfigError, match="has checkpoints but no flags.txt"):
        wd.check_flags({"lr": "0.5"})


def _holder(path):
    """A process that takes the workdir's lock and keeps it until killed."""
    code = ("import sys, time; from research.workdir import Workdir; w = Workdir(sys.argv[1]); w.lock(); "
            "print('locked', flush=True); time.sleep(120)")
    child = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "locked\n"
    return child


def test_lock_refuses_a_live_owner_and_is_taken_once_it_dies(tmp_path):
    wd = Workdir(tmp_path)
    child = _holder(tmp_path)
    try:
        with pytest.raises(ConfigError, match=f"in use by pid {child.pid} on {socket.gethostname()}"):
            wd.lock()
    finally:
        child.kill()  # kill -9: no chance to clean up; the kernel releases the flock
        child.wait()
    assert (tmp_path / ".lock").exists()  # the dead owner's file is still there ...
    wd.lock()  # ... and is no obstacle
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert stat.S_IMODE((tmp_path / ".lock").stat().st_mode) & 0o022 == 0  # 0644 or stricter
    with pytest.raises(ConfigError, match="in use"):
        Workdir(tmp_path).lock()  # a second Workdir of this same process is a second writer too
    wd.unlock()
    assert not (tmp_path / ".lock").exists()
    with wd.holding_lock():
        assert (tmp_path / ".lock").exists()
    assert not (tmp_path / ".lock").exists()


def test_twenty_processes_race_for_the_lock_and_exactly_one_wins_every_round(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tests.lock_race", str(tmp_path), "20", "50"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rounds = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rounds) == 50
    assert all(r == {"won": 1, "refused": 19, "left_lock": False} for r in rounds), rounds


def test_unwritable_workdir(tmp_path):
    with pytest.raises(ConfigError, match="not writable"):  # not even root may create directories in /proc
        Workdir("/proc/research-workdir-test/run").create()


def test_unwritable_workdir_under_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="not writable"):
        Workdir(tmp_path / "file" / "run").create()


def test_clear_removes_exactly_the_contract(tmp_path):
    wd = Workdir(tmp_path)
    wd.create()
    for name in ("flags.txt", "config.json", "dataset.json", "final.json", "metrics.jsonl", "notes.txt"):
        (tmp_path / name).write_text("x")
    for name in ("tensorboard", "checkpoints/10", "images", "samples", "unreadable", "mine"):
        (tmp_path / name).mkdir(parents=True)
    with pytest.raises(RuntimeError, match="lock"):
        wd.clear()
    with wd.holding_lock():
        wd.clear()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "notes.txt"]


def test_dataset_facts_are_checked_on_restart(tmp_path):
    wd = Workdir(tmp_path)
    wd.create()
    wd.write_dataset({"name": "text:a.txt", "vocab": "abc"})
    wd.check_dataset({"name": "text:a.txt", "vocab": "abd"})  # no checkpoint yet: nothing to protect
    with pytest.raises(ConfigError, match="not the data the run"):  # what a sampling entry asks
        wd.check_dataset({"name": "text:a.txt", "vocab": "abd"}, only_with_checkpoints=False)
    (wd.checkpoints / "10").mkdir(parents=True)
    with pytest.raises(ConfigError, match="vocab differ"):
        wd.check_dataset({"name": "text:a.txt", "vocab": "xyz"})
    wd.check_dataset({"name": "text:a.txt", "vocab": "abc"})
