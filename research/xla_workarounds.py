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
"""

from __future__ import annotations

import os

FLAGS = ("--xla_cpu_use_xnnpack=false",)


def apply() -> None:
    """Append our XLA flags to XLA_FLAGS unless already set there; no effect once JAX's backend is up."""
    current = os.environ.get("XLA_FLAGS", "")
    extra = [f for f in FLAGS if f.split("=", 1)[0] not in current]
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([current, *extra]).strip()
