"""Where metrics and pictures go: `metrics.jsonl`, TensorBoard event files (tensorboardX) and PNG files.

`metrics.jsonl` has one JSON object per logged step and split:
`{"step": 500, "split": "train", "time": <unix>, "elapsed": <train seconds>, "loss": ...}`. On resume, lines
past the restored step are dropped (they are written again, identically) and TensorBoard purges them too.
"""

from __future__ import annotations

import json
import math
import pathlib
import time
from typing import Any

import numpy as np

METRICS_FILE = "metrics.jsonl"


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


def read_metrics(workdir: str | pathlib.Path) -> list[dict[str, Any]]:
    path = pathlib.Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _close_figure(fig: Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


class MetricWriter:
    """Writes scalars to metrics.jsonl + TensorBoard and images to PNG + TensorBoard; a no-op when disabled
    (every process but the first in a multi-process run)."""

    def __init__(self, workdir: str | pathlib.Path, *, resume_step: int = 0, enabled: bool = True):
        self.workdir, self.enabled = pathlib.Path(workdir), enabled
        self.elapsed = 0.0
        if not enabled:
            return
        path = self.workdir / METRICS_FILE
        kept = [r for r in read_metrics(self.workdir) if r["step"] <= resume_step]
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._jsonl = path.open("a")
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(str(self.workdir / "tensorboard"), purge_step=resume_step + 1 if resume_step
                                 else None, flush_secs=10)

    def scalars(self, step: int, split: str, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "split": split, "time": round(time.time(), 3),
                  "elapsed": round(self.elapsed, 3)}
        record.update({k: float(v) for k, v in metrics.items()})
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for k, v in metrics.items():
            self._tb.add_scalar(f"{split}/{k}", float(v), int(step))

    def image(self, step: int, tag: str, image: np.ndarray) -> pathlib.Path | None:
        """Save an HWC image in [0, 1] as `images/<tag>_<step>.png` and to TensorBoard."""
        if not self.enabled:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
        path = self.workdir / "images" / f"{tag}_{step:07d}.png"
        path.parent.mkdir(exist_ok=True)
        plt.imsave(path, image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0.0, vmax=1.0)
        self._tb.add_image(tag, image, int(step), dataformats="HWC")
        return path

    def figure(self, step: int, tag: str, fig: Any) -> pathlib.Path | None:
        """Save a matplotlib figure as `images/<tag>_<step>.png` and to TensorBoard, then close it."""
        import matplotlib.pyplot as plt

        if not self.enabled:
            plt.close(fig)
            return None
        path = self.workdir / "images" / f"{tag}_{step:07d}.png"
        path.parent.mkdir(exist_ok=True)
        fig.savefig(path, dpi=100)
        self._tb.add_figure(tag, fig, int(step), close=True)
        return path

    def without_images(self) -> MetricWriter:
        """A view of this writer that drops images and figures (for replicas other than the first)."""
        view = MetricWriter.__new__(MetricWriter)
        view.__dict__.update(self.__dict__)
        view.image = lambda *a, **k: None
        view.figure = lambda step, tag, fig: _close_figure(fig)
        return view

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tb.close()
