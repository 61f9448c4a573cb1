"""Stop training cleanly on SIGTERM or SIGINT: finish the current call, save a checkpoint, then exit.

A scheduler's preemption (SLURM, Kubernetes), `kill <pid>`, Ctrl-C and a sweep worker stopping its trial all
send one of these; without this a run loses everything since its last periodic checkpoint. A second signal
acts at once, as it would without this module.

One process: our handlers set a flag that the loop reads after each compiled call. Several processes
(`jax.distributed`): every process must save at the same step, so the decision is JAX's preemption sync point
(the coordination service catches SIGTERM on any host and agrees on a step); SIGINT is left alone there.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

import jax

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignal:
    """Context manager around the training loop; `requested()` once per compiled call, on every process."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._calls = 0

    def __enter__(self) -> StopSignal:
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                if signal.getsignal(sig) != signal.SIG_IGN:  # e.g. SIGINT in a background (nohup, `&`) job
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            return
        previous = self._previous.get(signum, signal.SIG_DFL)  # a second signal: what it would have done
        self._restore()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            os.kill(os.getpid(), signum)

    def requested(self) -> bool:
        """Whether to save and stop after the call just dispatched."""
        if jax.process_count() == 1:
            return self.signum is not None
        from jax.experimental import multihost_utils

        self._calls += 1  # the same sequence on every process: they run the same calls
        try:
            reached = multihost_utils.reached_preemption_sync_point(self._calls)
        except RuntimeError:  # the preemption service is disabled (jax_enable_preemption_service)
            return False
        if reached:
            self.signum = signal.SIGTERM
        return reached

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""
