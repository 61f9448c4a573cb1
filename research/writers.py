"""Where metrics and pictures go: `metrics.jsonl`, TensorBoard event files (tensorboardX), PNGs and texts, at the
paths the Workdir decides. The loop feeds a `MetricWriter`; evaluators never write files themselves.

`metrics.jsonl` has one JSON object per logged step and split:
`{"step": 500, "split": "train", "time": <unix>, "elapsed": <train seconds>, "loss": ...}`. Every line is
appended with one `write` on an `O_APPEND` descriptor, so a kill leaves at most one torn last line; on resume
that line is dropped with a warning, lines past the restored step are dropped too (they are written again,
identically), and the file is replaced atomically. TensorBoard purges the same steps.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from research.workdir import METRICS_FILE, Workdir, write_atomic

log = logging.getLogger("research")


def image_grid(images: np.ndarray, ncol: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile NHWC images in [0, 1] into one HWC image (C = 1 or 3), `ncol` per row (default: square)."""
    images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    if images.ndim == 3:
        images = images[..., None]
    n, h, w, c = images.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    grid = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), np.float32)
    for i, img in enumerate(images):
        r, q = divmod(i, ncol)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = img
    return grid


def _parse_lines(text: str, where: pathlib.Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl text; a torn or unreadable line is dropped with a warning."""
    rows = []
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            torn = i == len(lines) - 1  # no newline after it: a write that was cut short
            log.warning("%s line %d is %s; dropped it", where, i + 1, "torn" if torn else "unreadable")
            continue
        rows.append(row)
    return rows


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl (for tools that read a run; the run itself never reads them back)."""
    path = pathlib.Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    return _parse_lines(path.read_text(errors="replace"), path)


def save_png(path: pathlib.Path, image: np.ndarray) -> pathlib.Path:
    """An HWC image in [0, 1] (C = 1 or 3) as a PNG file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0.0, vmax=1.0)
    return path


def save_figure(path: str | os.PathLike, fig: Any) -> pathlib.Path:
    """A matplotlib figure as a PNG file; the figure is closed."""
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


class MetricWriter:
    """Writes scalars to metrics.jsonl + TensorBoard, and pictures and texts to the workdir + TensorBoard; a
    no-op when disabled (every process but the first in a multi-process run)."""

    def __init__(self, workdir: Workdir, *, resume_step: int = 0, reevaluate: bool = False, enabled: bool = True):
        """`resume_step`: records after it are dropped (they will be written again); `reevaluate`: so are the
        evaluations at it (a run resumed exactly at its end evaluates its last step again)."""
        self.workdir, self.enabled = workdir, enabled
        self.elapsed = 0.0
        if not enabled:
            return
        path = workdir.metrics_file
        kept = [r for r in read_metrics(workdir.path) if r["step"] < resume_step or (
            r["step"] == resume_step and not (reevaluate and r.get("split") != "train"))]
        write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(str(workdir.tensorboard), purge_step=resume_step + 1 if resume_step else None,
                                 flush_secs=10)

    def scalars(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "split": split, "time": round(time.time(), 3),
                  "elapsed": round(self.elapsed, 3)}
        record.update({k: float(v) for k, v in metrics.items()})
        os.write(self._fd, (json.dumps(record) + "\n").encode())  # one write: the line lands whole or torn last
        for k, v in metrics.items():
            self._tb.add_scalar(f"{split}/{k}", float(v), int(step))

    def image(self, step: int, tag: str, image: np.ndarray) -> pathlib.Path | None:
        """An HWC image in [0, 1] as `images/<tag>_<step>.png` and in TensorBoard."""
        if not self.enabled:
            return None
        image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
        self._tb.add_image(tag, image, int(step), dataformats="HWC")
        return save_png(self.workdir.image_path(tag, step), image)

    def figure(self, step: int, tag: str, fig: Any) -> pathlib.Path | None:
        """A matplotlib figure as `images/<tag>_<step>.png` and in TensorBoard; the figure is closed."""
        if self.enabled:
            self._tb.add_figure(tag, fig, int(step), close=False)
            return save_figure(self.workdir.image_path(tag, step), fig)
        import matplotlib.pyplot as plt

        plt.close(fig)
        return None

    def text(self, step: int, tag: str, text: str) -> pathlib.Path | None:
        """A text (e.g. a language model's sample) as `samples/<tag>_<step>.txt` and in TensorBoard."""
        if not self.enabled:
            return None
        self._tb.add_text(tag, text, int(step))
        path = self.workdir.sample_path(tag, step)
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, text)
        return path

    def close(self) -> None:
        if self.enabled:
            os.close(self._fd)
            self._tb.close()
            self.enabled = False
