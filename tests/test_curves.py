"""launch.curves / research.curves: curves of several runs from their metrics.jsonl, baselines dashed."""

import json

import pytest

from research.curves import figure, series
from research.errors import ConfigError
from research.writers import read_metrics
from tests.conftest import launch


def _run(path, scale):
    path.mkdir()
    rows = [{"step": s, "split": "train", "loss": scale / s} for s in (10, 20, 30)]
    rows += [{"step": s, "split": "test", "mse": 2 * scale / s, "baseline_mse": 0.25} for s in (15, 30)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_every_run_gets_its_curves_and_its_baseline(tmp_path):
    a, b = _run(tmp_path / "a", 1.0), _run(tmp_path / "b", 3.0)
    assert series(read_metrics(a), "test", "mse") == [(15, 2 / 15), (30, 2 / 30)]
    fig = figure([a, b], "mse")
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"a train loss", "a test mse", "a baseline 0.25", "b train loss", "b test mse",
                          "b baseline 0.25"}
    assert list(lines["b test mse"].get_ydata()) == [6 / 15, 6 / 30]
    assert ax.get_yscale() == "log"
    with pytest.raises(ConfigError, match="no train 'nll' or test 'acc'"):
        figure([a], "acc", train_metric="nll")


def test_the_command_writes_a_png_and_refuses_a_missing_run(tmp_path):
    a = _run(tmp_path / "a", 1.0)
    proc = launch("curves", f"--workdir={a}", "--metric=mse", f"--out={tmp_path / 'c.png'}")
    assert proc.returncode == 0 and (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
