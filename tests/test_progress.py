"""Progress: the metrics worth showing, an ETA that starts after compilation, log lines above the bar."""

import logging

from research import progress
from research.progress import Progress, shown_metrics


def test_losses_come_first_and_norms_never():
    gan = {"d_fake": 0.1, "d_grad_norm": 3.0, "d_learning_rate": 2e-4, "d_loss": 1.2, "d_loss_real": 0.6,
           "d_real": 0.4, "g_grad_norm": 1.0, "g_learning_rate": 2e-4, "g_loss": 0.7, "g_param_norm": 9.0}
    assert list(shown_metrics(gan)) == ["d_loss", "g_loss", "d_fake"]
    assert list(shown_metrics({"accuracy": 0.9, "grad_norm": 1.0, "learning_rate": 1e-3, "loss": 0.3})) == [
        "loss", "accuracy"]


def test_eta_counts_from_the_end_of_the_first_call(monkeypatch, caplog):
    clock = iter([0.0, 60.0, 70.0])  # created at 0; the first (compiling) call ends at 60; step 200 at 70
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    p = Progress(1100, 0, bar=False)
    p.start(100)
    with caplog.at_level(logging.INFO, logger="research"):
        p.report(200, {"loss": 0.5})
    line = caplog.records[-1].getMessage()
    assert "step 200/1100 loss=0.5 | 10.0 steps/s, ETA 1:30" in line, line  # 900 steps at 10/s, not 200/70


def test_log_lines_go_above_the_bar(capsys, monkeypatch):
    monkeypatch.setattr(logging.getLogger("research"), "level", logging.INFO)
    p = Progress(10, 0, bar=True)
    p.start(1)
    logging.getLogger("research").info("eval step 1: loss=2")
    p.update(2)
    p.close()
    err = capsys.readouterr().err
    line = next(row for row in err.replace("\r", "\n").splitlines() if "eval step 1" in row)
    assert line.endswith("eval step 1: loss=2") and "it/s" not in line and "step/s" not in line
    assert logging.getLogger("research").propagate  # handlers restored when the bar closes
