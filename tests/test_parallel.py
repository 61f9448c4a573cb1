import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from research import parallel
from research.errors import ConfigError
from research.optim import OptimizerConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
