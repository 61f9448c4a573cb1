"""Progress reporting: a tqdm bar (steps/s, ETA, loss) on a terminal, plain log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("research")


class Progress:
    def __init__(self, total: int, initial: int, *, bar: bool | None = None):
        self.total, self.step = total, initial
        self._bar = None
        if bar is None:
            bar = sys.stderr.isatty()
        if bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)
        self._t0, self._s0 = time.perf_counter(), initial

    def update(self, step: int) -> None:
        if self._bar is not None:
            self._bar.update(step - self.step)
        self.step = step

    def report(self, step: int, metrics: dict[str, float]) -> None:
        """Show the latest logged training metrics (in the bar, or as a log line with rate and ETA)."""
        keys = sorted(metrics, key=lambda k: (k != "loss", k.endswith("_norm") or k == "learning_rate", k))
        shown = {k: metrics[k] for k in keys[:3]}
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)
            return
        rate = (step - self._s0) / max(time.perf_counter() - self._t0, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        text = " ".join(f"{k}={v:.4g}" for k, v in shown.items())
        log.info("step %d/%d %s | %.1f steps/s, ETA %s", step, self.total, text, rate, _hms(eta))

    def write(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            log.info("%s", message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _hms(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
