"""End-to-end: a convolutional classifier with on-device augmentation and a parameter EMA through `launch.mlp`
(a subprocess on 8 fake CPU devices), resumed from a copy of its checkpoint at half way."""

import json
import shutil

import jax
import pytest

from research import families
from research.loop import restore_latest
from research.parallel import make_mesh
from research.state import fingerprint
from research.workdir import Workdir


@pytest.mark.slow
def test_cnn_with_augmentation_and_ema_resumes_bitwise(run_launch, tmp_path):
    args = ["--dataset=mnist_5k", "--architecture=cnn", "--dropout=0.5", "--batch_size=32", "--steps=20",
            "--augment=crop:2,flip,translate:1,rotate:10,noise:0.05", "--ema_decay=0.9", "--log_every=5",
            "--checkpoint_every=10", "--eval_every=10", "--progress=log"]
    straight, wd = tmp_path / "straight", tmp_path / "resumed"
    run_launch("mlp", *args, f"--workdir={straight}")
    # A copy of the run as it was at step 10 resumes from there and must end bit for bit where the uninterrupted
    # run ended: the augmentation draws from the step's key, the averages come back from the checkpoint.
    shutil.copytree(straight, wd)
    shutil.rmtree(wd / "checkpoints" / "20")
    (wd / "final.json").unlink()
    assert "resumed from" in run_launch("mlp", *args, f"--workdir={wd}").stderr
    a, b = (json.loads((p / "final.json").read_text()) for p in (straight, wd))
    assert a["params_sha256"] == b["params_sha256"] and a["metrics"] == b["metrics"]
    assert a["train_metrics"] == b["train_metrics"]
    assert {"accuracy", "ema_accuracy", "ema_loss"} <= a["metrics"].keys() and a["metrics"]["accuracy"] > 0.3
    flags_txt = (wd / "flags.txt").read_text()
    assert "--architecture=cnn" in flags_txt and "--ema_decay=0.9" in flags_txt and "--augment=crop:2" in flags_txt
    # the whole state, the moving averages included
    module, cfg = families.load_run(Workdir(wd))
    assert cfg.data.augment.rotate == 10.0 and cfg.loop.ema_decay == 0.9 and cfg.model.architecture == "cnn"
    task = module.build(cfg, make_mesh(), evaluate=False).task
    states = [restore_latest(task, Workdir(p), cfg.loop.seed, make_mesh(), cfg.loop)[0] for p in (straight, wd)]
    assert fingerprint(jax.device_get(states[0])) == fingerprint(jax.device_get(states[1]))
    assert set(states[0].ema) == {"params", "model_state"}
