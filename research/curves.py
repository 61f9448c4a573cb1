"""Training curves of one or more runs, drawn from their metrics.jsonl: a tool for reading finished (or running)
runs side by side, never part of a run itself (a run does not read its own logs back).

The train metric and the test metric of each run share the step axis; a test metric that has a baseline in the
same records (`baseline_<metric>`, e.g. the adding problem's predict-1 MSE) is drawn as a dashed line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from research.errors import ConfigError
from research.writers import read_metrics


def series(records: Sequence[dict[str, Any]], split: str, metric: str) -> list[tuple[int, float]]:
    return [(r["step"], float(r[metric])) for r in records if r.get("split") == split and metric in r]


def figure(workdirs: Sequence[str], metric: str, train_metric: str = "loss", log_scale: bool = True,
           title: str = "") -> Any:
    """A matplotlib figure of `train_metric` (thin) and test `metric` (with markers) for each run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = 0
    for i, workdir in enumerate(workdirs):
        records = read_metrics(workdir)
        name, color = os.path.basename(os.path.normpath(workdir)), f"C{i % 10}"
        train, test = series(records, "train", train_metric), series(records, "test", metric)
        baseline = series(records, "test", f"baseline_{metric}")
        if train:
            ax.plot(*zip(*train, strict=True), color=color, lw=1, alpha=0.6, label=f"{name} train {train_metric}")
        if test:
            ax.plot(*zip(*test, strict=True), "o-", color=color, ms=3, label=f"{name} test {metric}")
        if baseline:
            ax.axhline(baseline[-1][1], color=color, ls="--", lw=1, label=f"{name} baseline {baseline[-1][1]:.4g}")
        drawn += bool(train or test)
    if not drawn:
        raise ConfigError(f"no train {train_metric!r} or test {metric!r} in the metrics.jsonl of {', '.join(workdirs)}")
    ax.set_xlabel("step")
    if log_scale:
        ax.set_yscale("log")
    ax.set_title(title or metric)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
