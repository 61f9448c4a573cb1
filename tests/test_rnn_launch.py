"""End-to-end runs of `python -m launch.rnn` on 8 fake CPU devices (subprocesses; conftest sets the devices)."""

import json

import pytest

TINY = ["--hidden=16", "--progress=log", "--log_every=5", "--checkpoint_every=10"]


@pytest.mark.slow
def test_copy_runs_on_eight_devices_and_reports_its_baseline(run_launch, tmp_path):
    wd = tmp_path / "copy"
    run_launch("rnn", "--task=copy", "--length=5", "--cell=gru", "--batch_size=16", "--steps=10", *TINY,
               f"--workdir={wd}")
    final = json.loads((wd / "final.json").read_text())
    assert final["num_devices"] == 8 and final["step"] == 10
    metrics = final["metrics"]
    assert metrics["baseline_loss"] == pytest.approx(10 * 2.0794415 / 25, rel=0.02)  # 10 ln 8 / (T + 20)
    assert {"loss", "accuracy", "output_accuracy", "sequence_accuracy"} <= metrics.keys()
    assert not (wd / "images").exists()  # the curve against the baseline: TensorBoard, or launch.curves


@pytest.mark.slow
def test_char_lm_trains_and_samples(run_launch, tmp_path):
    """The char LM from the command line (its bitwise resume, with the TBPTT position and the carried state, is
    tests/test_contracts.py's)."""
    text = tmp_path / "tiny.txt"
    text.write_text("To be, or not to be, that is the question:\n" * 60, encoding="utf-8")
    args = ["--task=char_lm", f"--dataset=text:{text}", "--layers=2", "--embed=8", "--unroll=16", "--steps=20",
            "--batch_size=8", "--learning_rate=1e-2", "--sample_chars=20", "--steps_per_call=5", *TINY]
    wd = tmp_path / "lm"
    run_launch("rnn", *args, f"--workdir={wd}")
    final = json.loads((wd / "final.json").read_text())
    assert final["step"] == 20 and final["num_devices"] == 8
    assert final["metrics"]["bits_per_char"] < 3.5  # log2(18 characters) = 4.17 bits at chance
    assert (wd / "samples" / "sample_0000020.txt").read_text().startswith("\n")  # the prompt, then 20 characters
    # the sampling entry (its determinism for a seed is a unit test in test_rnn_tasks.py)
    out = run_launch("rnn", "--mode=sample", f"--workdir={wd}", "--prompt=To be", "--num_chars=30").stdout
    assert "# step 20" in out and len(out.split("To be", 1)[1]) == 30 + 1  # 30 characters and print's newline
