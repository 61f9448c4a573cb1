import json
import os
import subprocess
import sys

from research import xla_workarounds


def test_adds_our_flags_and_keeps_the_users(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    xla_workarounds.apply()
    assert xla_workarounds.FLAGS[0] in os.environ["XLA_FLAGS"].split()
    assert "--xla_force_host_platform_device_count=8" in os.environ["XLA_FLAGS"]
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_xnnpack=true")
    xla_workarounds.apply()
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_use_xnnpack=true"
    monkeypatch.delenv("XLA_FLAGS")
    xla_workarounds.apply()
    assert os.environ["XLA_FLAGS"] == " ".join(xla_workarounds.FLAGS)


def _blas_threads(env: dict) -> list[int]:
    """OpenBLAS thread counts in a fresh process that imports jax (loading scipy's OpenBLAS) and then research."""
    script = ("import jax, jax.numpy as jnp, research, threadpoolctl;"
              "jnp.linalg.qr(jnp.ones((4, 4))).Q.block_until_ready();"
              "print([p['num_threads'] for p in threadpoolctl.threadpool_info() if p['internal_api'] == 'openblas'])")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout)


def test_openblas_runs_on_one_thread_unless_the_user_says_otherwise():
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    threads = _blas_threads(env)
    assert threads and set(threads) == {1}  # numpy's and scipy's OpenBLAS, both loaded before `import research`
    if os.cpu_count() > 1:  # a user's value is kept (OpenBLAS caps it at the core count)
        assert set(_blas_threads({**env, "OPENBLAS_NUM_THREADS": "2"})) == {2}
