"""End-to-end: `python -m launch.gan` on 8 fake CPU devices (train, evaluate, checkpoint, sample), and its
one-line errors."""

import json

import numpy as np
import pytest

RING = ["--dataset=gaussians_ring8", "--architecture=mlp", "--g_hidden=16", "--d_hidden=16", "--z_dim=8",
        "--batch_size=64", "--steps=6", "--log_every=3", "--eval_every=3", "--checkpoint_every=3",
        "--num_eval_samples=256", "--eval_batch_size=64", "--progress=log"]


@pytest.mark.slow
def test_ring_wgan_gp_unrolled_then_sample(run_launch, tmp_path):
    wd = tmp_path / "ring"
    run_launch("gan", *RING, "--gan_loss=wasserstein", "--gan_penalty=gradient_penalty", "--gp_weight=0.1",
               "--n_critic=2", "--unroll_steps=1", f"--workdir={wd}")
    final = json.loads((wd / "final.json").read_text())
    assert final["step"] == 6 and final["num_devices"] == 8
    assert {"modes", "high_quality", "mode_kl", "finite_samples"} <= set(final["metrics"])
    rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "test"] == [3, 6]
    assert {"d_loss", "g_loss", "gradient_penalty"} <= set(next(r for r in rows if r["split"] == "train"))
    assert (wd / "images" / "samples_0000003.png").exists() and (wd / "images" / "samples_0000006.png").exists()
    assert any((wd / "tensorboard").iterdir())

    proc = run_launch("gan", "--mode=sample", f"--workdir={wd}", "--num_samples=100", "--sample_seed=3")
    assert "step 6" in proc.stdout
    with np.load(wd / "samples" / "samples_step0000006_seed3.npz", allow_pickle=False) as f:
        assert f["x"].shape == (100, 2) and np.all(np.isfinite(f["x"]))
    assert (wd / "samples" / "samples_step0000006_seed3.png").exists()
    assert json.loads((wd / "final.json").read_text()) == final   # sampling does not touch the run


@pytest.mark.slow
def test_conditional_dcgan_on_mnist(run_launch, tmp_path):
    wd = tmp_path / "dcgan"
    run_launch("gan", "--dataset=mnist_5k", "--g_width=4", "--d_width=4", "--z_dim=8", "--batch_size=16",
               "--steps=2", "--conditional", "--gan_loss=hinge", "--spectral_norm", "--evaluator=none",
               "--num_eval_samples=64", "--eval_batch_size=64", "--grid_size=20", "--progress=log", f"--workdir={wd}")
    final = json.loads((wd / "final.json").read_text())
    assert final["metrics"] == {"finite_samples": 1.0}
    assert (wd / "images" / "samples_0000002.png").exists()
