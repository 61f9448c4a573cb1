"""XLA:CPU settings this codebase applies before JAX starts its backend (imported by `research/__init__.py`).

`--xla_cpu_use_xnnpack=false`: with jaxlib 0.10.2 on our 2-core CPU machine, a jitted program could wedge
forever in its first call, at load 0, with the executable waiting for completion (gdb:
`CpuPjRtRawLoadedExecutable::Execute` -> `tsl::BlockUntilReady`). It reproduced with the 8-seed ring GAN
(`python -m launch.gan --flagfile=experiments/gan/ring8_gan.flags --num_seeds=8 --steps=200`): 5 hangs in 7 runs
with XNNPACK on, 1 in 14 with it off. The cause, found later: the `--num_seeds` init was a `jax.vmap`, which makes
each orthogonal initialiser's QR one batched LAPACK call, and jaxlib 0.10.2 runs a batched LAPACK call by
splitting it over the intra-op pool from inside a pool task and blocking; two such calls at once hold both
threads of our pool, each waiting for the other (gdb: every XLA Eigen thread in `jax::ParallelBatchMap` under
`QrFactorization`). Replicas are now initialised one after the other (`research.replicas.init_each`; test:
tests/test_replica_init.py), which removes the hang. XNNPACK stays off so that runs keep the numbers they
had. Anyone who sets `xla_cpu_use_xnnpack` in XLA_FLAGS keeps their own value.

OpenBLAS on one thread (`OPENBLAS_NUM_THREADS=1`): XLA:CPU runs LAPACK calls (the QR of an orthogonal init, flax's
default for recurrent kernels and the ring GANs' players) through scipy's OpenBLAS, whose own threads compete
with XLA's pool for our 2 cores. On the loaded machine each QR of a 256x128 random matrix then took 1.27 s instead
of 1 ms (measured with two trainings beside; with one OpenBLAS thread: 1 ms), so a 5-replica ring-GAN init took
~12 s. One thread also makes these factorisations independent of the machine's core count: for matrices with both
sides at most 128 (every shipped config) the bits are the same as threaded; for 256x256 and larger they differ.
Anyone who sets OPENBLAS_NUM_THREADS keeps their own value.
"""

from __future__ import annotations

import os

FLAGS = ("--xla_cpu_use_xnnpack=false",)


BLAS_THREADS = "1"


def apply() -> None:
    """Append our XLA flags to XLA_FLAGS unless already set there (no effect once JAX's backend is up), and put
    OpenBLAS on one thread unless OPENBLAS_NUM_THREADS is set: libraries loaded later read the variable, ones
    already loaded (numpy, or scipy's if jax was imported first) are limited in place."""
    current = os.environ.get("XLA_FLAGS", "")
    extra = [f for f in FLAGS if f.split("=", 1)[0] not in current]
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([current, *extra]).strip()
    if "OPENBLAS_NUM_THREADS" not in os.environ:
        os.environ["OPENBLAS_NUM_THREADS"] = BLAS_THREADS
        from threadpoolctl import threadpool_limits

        threadpool_limits(int(BLAS_THREADS), user_api="blas")  # persists: not used as a context manager
