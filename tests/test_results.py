"""`python -m experiments.results`: every block it owns is in its doc, tables keep the rows it did not rerun, and (slow)
the quickstart numbers the docs show are what a fresh run of the shipped code prints."""

import json

import pytest

from experiments import results


def test_every_block_is_marked_in_its_doc():
    for name, block in results.BLOCKS.items():
        assert results.block_text(block.doc, name) is not None
    names = {c.block for c in results.CHECKS}
    assert names <= set(results.BLOCKS)


def test_runs_know_their_steps_and_cost():
    assert results.MLP_QUICK.steps == 1500 and results.MLP_QUICK.cheap
    assert results.CHECKS[1].run.steps == 250  # a later --steps overrides the flagfile's
    assert not results.GAN_MNIST.rows[1].run.cheap  # dcgan_mnist: a long run, rerun only with --only


def test_a_table_keeps_the_rows_it_did_not_rerun(tmp_path):
    table = results.README_MLP
    old = results.block_text(table.doc, table.name)
    workdir = tmp_path / "mlp_quickstart"
    workdir.mkdir()
    final = {"step": 1500, "metrics": {"accuracy": 0.5}, "train_metrics": {}, "wall_seconds": 12.3}
    (workdir / "final.json").write_text(json.dumps(final))
    (workdir / "metrics.jsonl").write_text("")
    (workdir / "dataset.json").write_text(json.dumps({"name": "digits", "splits": {
        "train": {"x": [1438, 8, 8, 1]}, "test": {"x": [359, 8, 8, 1]}}}))
    done = results.read_result(results.MLP_QUICK, workdir, {})
    text = table.render({"mlp_quickstart": done}, old)
    rows = [line for line in text.splitlines() if line.startswith("| `experiments")]
    assert rows[0] == ("| `experiments/mlp/quickstart.flags` | digits (1,438 / 359) | 64-256-256-10, Adam | "
                       "accuracy 0.500 | — | 1,500 | 12 s |")
    assert rows[1:] == [line for line in old.splitlines() if line.startswith("| `experiments")][1:]
    assert "Rows whose \"run at\" is older" in text
    # a run whose workdir stopped short of its --steps is not read
    (workdir / "final.json").write_text(json.dumps({**final, "step": 500}))
    assert results.read_result(results.MLP_QUICK, workdir, {}) is None


def test_number_formats():
    assert results.sig(0.000503, 2) == "0.00050" and results.sig(0.05648) == "0.0565" and results.sig(2.334) == "2.33"
    assert results.pct(0.8561) == "85.6%"


def test_runs_are_on_one_device(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_cpu_use_xnnpack=false")
    assert results.run_env()["XLA_FLAGS"] == "--xla_cpu_use_xnnpack=false"
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    assert "XLA_FLAGS" not in results.run_env()


@pytest.mark.slow
@pytest.mark.parametrize("check", results.CHECKS, ids=[c.run.name for c in results.CHECKS])
def test_the_docs_show_what_a_fresh_run_prints(check, tmp_path):
    """One short run per family (the MLP quickstart, 250 steps of the RNN's, 1,000 of the autoencoder's; about a
    minute together on 1 CPU device): the number it prints is in the doc block verbatim."""
    ledger = results.Ledger(tmp_path)
    result = results.execute(check.run, tmp_path, ledger, log=lambda _: None)
    block = results.BLOCKS[check.block]
    assert check.value(result) in results.block_text(block.doc, check.block)
