import json
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


QUICK = ["--flagfile=experiments/mlp/quickstart.flags", "--steps=300", "--checkpoint_every=0", "--eval_every=0",
         "--log_every=20", "--progress=log"]


def _two_processes(workdir, logs, stop_after: str | None = None) -> list[int]:
    """launch.mlp as two local processes of 2 fake devices each (gloo collectives over 127.0.0.1); with
    `stop_after`, process 1 gets SIGTERM once its log shows that text. Returns the exit codes."""
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "launch.mlp", *QUICK, f"--workdir={workdir}",
           f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]
    with open(logs[0], "w") as out0, open(logs[1], "w") as out1:
        procs = [subprocess.Popen([*cmd, f"--process_id={i}"], cwd=REPO, env=env, stdout=out,
                                  stderr=subprocess.STDOUT) for i, out in enumerate((out0, out1))]
        try:
            if stop_after is not None:
                deadline = time.time() + 240
                while stop_after not in logs[1].read_text() and time.time() < deadline:
                    assert all(p.poll() is None for p in procs), logs[1].read_text()[-3000:]
                    time.sleep(0.05)
                procs[1].send_signal(signal.SIGTERM)
            return [p.wait(timeout=300) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()


def _sha(log) -> list[str]:
    return [line.split("params_sha256=")[1].split()[0] for line in log.read_text().splitlines()
            if "params_sha256=" in line]


@pytest.mark.slow
def test_two_processes_match_one_and_resume_bitwise_after_sigterm(tmp_path):
    """Two processes x 2 devices train what one process with 4 devices trains on the same global batch (each
    process feeds its own rows: were both fed the same rows, this would differ); SIGTERM to one of them stops both
    at the same step after one collective checkpoint (JAX's preemption sync point), and the same command again
    ends bitwise where an uninterrupted two-process run ends."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "PYTHONUNBUFFERED": "1"}
    one = subprocess.run([sys.executable, "-m", "launch.mlp", *QUICK, f"--workdir={tmp_path / 'one'}"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    reference = json.loads((tmp_path / "one" / "final.json").read_text())

    logs = [tmp_path / f"two{i}.log" for i in range(2)]
    assert _two_processes(tmp_path / "two", logs) == [0, 0], logs[0].read_text()[-3000:]
    shas = [_sha(log) for log in logs]
    assert shas[0] and shas[0] == shas[1]  # both processes hold the same parameters
    two = json.loads((tmp_path / "two" / "final.json").read_text())
    assert two["num_processes"] == 2 and two["num_devices"] == 4 == reference["num_devices"]
    for key in ("metrics", "train_metrics"):
        for name, value in reference[key].items():
            assert two[key][name] == pytest.approx(value, rel=1e-6, abs=1e-9), (key, name)

    stopped = [tmp_path / f"stopped{i}.log" for i in range(2)]
    assert _two_processes(tmp_path / "stopped", stopped, stop_after="step 20/") == [143, 143]
    stops = [[line for line in log.read_text().splitlines() if line.startswith("stopped by SIGTERM at step ")]
             for log in stopped]
    assert len(stops[0]) == 1 and stops[0] == stops[1], stops
    step = int(stops[0][0].split("at step ")[1].split("/")[0])
    assert 20 <= step < 300
    assert [p.name for p in (tmp_path / "stopped" / "checkpoints").iterdir() if p.name.isdigit()] == [str(step)]
    resumed = [tmp_path / f"resumed{i}.log" for i in range(2)]
    assert _two_processes(tmp_path / "stopped", resumed) == [0, 0], resumed[0].read_text()[-3000:]
    assert "resumed from" in resumed[0].read_text()
    assert _sha(resumed[0]) == _sha(resumed[1]) == shas[0]
