"""XLA:CPU settings this codebase applies before JAX starts its backend (imported by `research/__init__.py`).

`--xla_cpu_use_xnnpack=false`: with jaxlib 0.10.2 on our 2-core CPU machine, a jitted program can wedge
forever in its first call, at load 0, with every XLA Eigen worker idle and the executable waiting for
completion (gdb: `CpuPjRtRawLoadedExecutable::Execute` -> `tsl::BlockUntilReady`). It reproduces with the
8-seed ring GAN (`python -m launch.gan --flagfile=experiments/gan/ring8_gan.flags --num_seeds=8 --steps=200`):
5 hangs in 7 runs with XNNPACK on, 1 in 14 with it off (`--xla_cpu_multi_thread_eigen=false` alone: 1 in 5).
Turning XNNPACK off makes the hang rarer; it does not remove it, and we have not found the cause (no host
callbacks are involved). A run that hangs can be killed and restarted: it resumes from its last checkpoint, if any.
The same family of bug (a thunk re-entering the intra-op pool it runs on) is described in
PyAutoLabs/PyAutoFit#1530 for the FFT thunk. Anyone who sets `xla_cpu_use_xnnpack` in XLA_FLAGS keeps their
own value.
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
