"""The issue's end-to-end promises for compression, through the real launch modules (docs/compression.md):
the quickstart pruned to 90 % keeps >= 0.95 test accuracy with >= 89 % of its kernel weights zero; launch.quantize
of the quickstart run stays within 1 point of its accuracy in <= 30 % of its bytes and exports int8 arrays; a
student distils from the quickstart run."""

import json

import numpy as np
import pytest

QUICKSTART = ["--flagfile=experiments/mlp/quickstart.flags", "--progress=log"]


@pytest.mark.slow
def test_the_quickstart_pruned_to_90_percent_keeps_its_accuracy(run_launch, tmp_path):
    run_launch("mlp", *QUICKSTART, "--prune_sparsity=0.9", f"--workdir={tmp_path / 'pruned'}")
    final = json.loads((tmp_path / "pruned" / "final.json").read_text())
    m = final["metrics"]
    assert m["accuracy"] >= 0.95 and m["sparsity"] >= 0.89, m
    assert {k for k in m if k.startswith("sparsity/")} == {f"sparsity/Dense_{i}/kernel" for i in range(3)}


@pytest.mark.slow
def test_the_quickstart_quantized_exported_and_distilled(run_launch, tmp_path):
    run, q, export = tmp_path / "run", tmp_path / "int8", tmp_path / "export"
    run_launch("mlp", *QUICKSTART, f"--workdir={run}")
    accuracy = json.loads((run / "final.json").read_text())["metrics"]["accuracy"]

    proc = run_launch("quantize", f"--workdir={run}", "--method=int8_weights", f"--out={q}")
    assert "bytes:" in proc.stdout
    final = json.loads((q / "final.json").read_text())
    assert final["float_metrics"]["accuracy"] == pytest.approx(accuracy)  # the same test set, the same model
    assert abs(final["metrics"]["accuracy"] - accuracy) <= 0.01 and final["bytes"]["ratio"] <= 0.30, final

    run_launch("export", f"--workdir={q}", f"--out={export}")
    arrays = np.load(export / "params.npz")
    assert sum(a.dtype == np.int8 for a in arrays.values()) == 3  # the three kernels

    student = tmp_path / "student"
    run_launch("mlp", *QUICKSTART, "--hidden=32", "--steps=300", f"--distill_from={run}", f"--workdir={student}")
    distilled = json.loads((student / "final.json").read_text())
    assert distilled["metrics"]["accuracy"] > 0.85 and "soft_kl" in distilled["train_metrics"]
