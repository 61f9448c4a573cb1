import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from research import data, parallel
from research.errors import ConfigError
from research.models.mlp import MLP
from research.optim import OptimizerConfig
from research.tasks.supervised import SupervisedConfig, SupervisedTask

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _task(batch_norm: bool) -> SupervisedTask:
    model = MLP(hidden=(32, 32), out_dim=10, batch_norm=batch_norm, dropout=0.1)
    return SupervisedTask(model, data.load("digits"), OptimizerConfig("adam", 1e-2),
                          SupervisedConfig("classify"), batch_size=64, steps=10)


def _train(task, mesh, steps=3):
    rep = parallel.replicated(mesh)
    state = jax.jit(task.init_state, out_shardings=rep)(jax.random.PRNGKey(0))
    pipe = task.train_pipeline(0, parallel.batch_sharding(mesh))
    step = jax.jit(task.train_step)
    for _ in range(steps):
        batch = next(pipe)
        state, metrics = step(state, batch)
    return state, metrics, batch


@pytest.mark.parametrize("batch_norm", [False, True])
def test_eight_devices_match_one(batch_norm):
    assert jax.device_count() == 8, "conftest should provide 8 fake CPU devices"
    task = _task(batch_norm)
    s8, m8, b8 = _train(task, parallel.make_mesh())
    s1, m1, _ = _train(task, parallel.make_mesh(jax.devices()[:1]))
    assert len(b8["x"].sharding.device_set) == 8 and b8["x"].sharding.spec == parallel.batch_sharding(
        parallel.make_mesh()).spec
    for a, b in zip(jax.tree.leaves((s8.params, s8.model_state)), jax.tree.leaves((s1.params, s1.model_state)),
                    strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(float(m8["loss"]), float(m1["loss"]), rtol=1e-5)


def test_batch_must_divide_by_devices():
    from research.data import DataConfig
    from research.families import mlp
    from research.loop import LoopConfig

    for batch, eval_batch, what in ((20, 0, "--batch_size=20"), (16, 100, "--eval_batch_size=100")):
        cfg = mlp.Config(DataConfig("digits", batch), LoopConfig(steps=1), OptimizerConfig(),
                         eval_batch_size=eval_batch)
        with pytest.raises(ConfigError, match=f"{what} does not divide by the 8 devices"):
            mlp.build(cfg, parallel.make_mesh())


def test_distributed_flags_must_be_complete(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(var, raising=False)
    assert parallel.initialize_distributed() is False
    with pytest.raises(ConfigError, match="need all of"):
        parallel.initialize_distributed(coordinator_address="127.0.0.1:1234")
    with pytest.raises(ConfigError, match="outside"):
        parallel.initialize_distributed("127.0.0.1:1234", 2, 5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_identical_params(tmp_path):
    """Two local processes (gloo collectives over 127.0.0.1), 2 devices each, one shared workdir."""
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "launch.mlp", "--flagfile=experiments/mlp/quickstart.flags", "--steps=30",
           "--checkpoint_every=10", "--eval_every=0", "--log_every=10", "--progress=log",
           f"--workdir={tmp_path / 'run'}", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]
    procs = [subprocess.Popen([*cmd, f"--process_id={i}"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        outs.append(out)
        assert p.returncode == 0, out[-3000:]
    shas = [[line.split("params_sha256=")[1].split()[0] for line in out.splitlines() if "params_sha256=" in line]
            for out in outs]
    assert shas[0] and shas[0] == shas[1]
    final = (tmp_path / "run" / "final.json").read_text()
    assert shas[0][0] in final and '"num_processes": 2' in final and '"num_devices": 4' in final


@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_saves_one_checkpoint_and_stops_both(tmp_path):
    """JAX's preemption sync point: SIGTERM on process 1 stops both processes at the same step, after one
    collective checkpoint at that step (research/preemption.py)."""
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "launch.mlp", "--flagfile=experiments/mlp/quickstart.flags", "--steps=1000000",
           "--checkpoint_every=0", "--eval_every=0", "--log_every=20", "--progress=log",
           f"--workdir={tmp_path / 'run'}", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]
    logs = [tmp_path / f"p{i}.log" for i in range(2)]
    with open(logs[0], "w") as out0, open(logs[1], "w") as out1:
        procs = [subprocess.Popen([*cmd, f"--process_id={i}"], cwd=REPO, env=env, stdout=out,
                                  stderr=subprocess.STDOUT) for i, out in enumerate((out0, out1))]
        try:
            deadline = time.time() + 240
            while "step 20/" not in logs[1].read_text() and time.time() < deadline:
                assert all(p.poll() is None for p in procs), logs[1].read_text()[-3000:]
                time.sleep(0.5)
            procs[1].send_signal(signal.SIGTERM)
            codes = [p.wait(timeout=120) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
    outs = [log.read_text() for log in logs]
    assert codes == [143, 143], outs[1][-3000:]
    stops = [[line for line in out.splitlines() if line.startswith("stopped by SIGTERM at step ")] for out in outs]
    assert len(stops[0]) == 1 and stops[0] == stops[1], stops
    step = int(stops[0][0].split("at step ")[1].split("/")[0])
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit()] == [str(step)]
