"""End-to-end runs of `launch.autoencoder` (subprocesses on 8 fake CPU devices)."""

import json

import pytest


@pytest.mark.slow
def test_short_run_beats_pca_and_writes_pictures(run_launch, tmp_path):
    workdir = tmp_path / "run"
    proc = run_launch("autoencoder", "--dataset=digits", "--arch=dense", "--encoder=64", "--latent=4",
                      "--learning_rate=3e-3", "--batch_size=64", "--steps=300", "--log_every=100",
                      "--checkpoint_every=0", "--progress=log", f"--workdir={workdir}")
    final = json.loads((workdir / "final.json").read_text())
    metrics = final["metrics"]
    assert final["step"] == 300 and final["num_devices"] == 8
    assert metrics["sq_error"] < metrics["pca_sq_error"], metrics
    assert "PCA with 4 components" in proc.stdout
    images = {p.name for p in (workdir / "images").iterdir()}
    assert images == {"reconstructions_0000300.png", "interpolation_0000300.png"}
    assert list((workdir / "tensorboard").iterdir())
    assert "--latent=4" in (workdir / "flags.txt").read_text()
