"""Progress reporting: a tqdm bar (steps/s, ETA, the main losses) on a terminal, plain log lines otherwise.

Rates and ETAs count from `start()`, which the loop calls once its first compiled call has finished, so
compilation does not inflate the first ETA. While the bar is shown, the `research` logger writes above it
instead of through it.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("research")


def shown_metrics(metrics: dict[str, float], k: int = 3) -> dict[str, float]:
    """The `k` training metrics worth a glance: losses first (`loss`, `*_loss`), then the rest, never the norms
    or learning rates."""
    keep = [name for name in metrics if not (name.endswith(("_norm", "learning_rate")))]
    keep.sort(key=lambda n: (not (n == "loss" or n.endswith("_loss")), n))
    return {name: metrics[name] for name in keep[:k]}


class _AboveBar(logging.Handler):
    def __init__(self, bar):
        super().__init__()
        self.bar = bar
        self.setFormatter(logging.Formatter("%(levelname).1s%(asctime)s %(message)s", "%m%d %H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        self.bar.write(self.format(record), file=sys.stderr)


class Progress:
    def __init__(self, total: int, initial: int, *, bar: bool | None = None):
        self.total, self.step = total, initial
        self._want_bar = sys.stderr.isatty() if bar is None else bar
        self._bar = self._handler = None
        self._t0, self._s0 = time.perf_counter(), initial

    def start(self, step: int) -> None:
        """The first compiled call is done: rates count from here, and the bar appears."""
        self._t0, self._s0, self.step = time.perf_counter(), step, step
        if self._want_bar and self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=step, unit="step", dynamic_ncols=True, file=sys.stderr)
            self._handler = _AboveBar(self._bar)
            log.addHandler(self._handler)
            self._propagate, log.propagate = log.propagate, False

    def update(self, step: int) -> None:
        if self._bar is not None:
            self._bar.update(step - self.step)
        self.step = step

    def report(self, step: int, metrics: dict[str, float]) -> None:
        """Show the latest logged training metrics (in the bar, or as a log line with rate and ETA)."""
        shown = shown_metrics(metrics)
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)
            return
        elapsed = time.perf_counter() - self._t0
        rate = (step - self._s0) / elapsed if step > self._s0 and elapsed > 0 else 0.0
        eta = _hms((self.total - step) / rate) if rate > 0 else "?"
        text = " ".join(f"{k}={v:.4g}" for k, v in shown.items())
        log.info("step %d/%d %s | %.1f steps/s, ETA %s", step, self.total, text, rate, eta)

    def write(self, message: str) -> None:
        log.info("%s", message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            log.removeHandler(self._handler)
            log.propagate = self._propagate
            self._bar = self._handler = None


def _hms(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
