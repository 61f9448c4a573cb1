import json
import os
import socket
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
    wd.check_flags({"lr": "0.5", "log_every": "10"}, ignore={"log_every"})
    wd.check_flags({"lr": "0.1", "log_every": "10"}, ignore={"log_every"})  # no checkpoint yet: may change
    (wd.checkpoints / "10").mkdir(parents=True)
    wd.check_flags({"lr": "0.1", "log_every": "50"}, ignore={"log_every"})
    assert parse_flags((tmp_path / "run" / "flags.txt").read_text()) == {"lr": "0.1", "log_every": "50"}
    with pytest.raises(ConfigError, match="--lr: '0.1' there, '0.2' now"):
        wd.check_flags({"lr": "0.2", "log_every": "50"}, ignore={"log_every"})


def test_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path):
    wd = Workdir(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(json.dumps({"pid": child.pid, "host": socket.gethostname()}))
        with pytest.raises(ConfigError, match=f"in use by pid {child.pid}"):
            wd.lock()
    finally:
        child.kill()
        child.wait()
    wd.lock()  # the owner is dead now: stale lock taken over
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    wd.unlock()
    assert not (tmp_path / ".lock").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_workdir(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="not writable"):
            Workdir(tmp_path / "x").create()
    finally:
        tmp_path.chmod(0o700)


def test_unwritable_workdir_under_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="not writable"):
        Workdir(tmp_path / "file" / "run").create()
