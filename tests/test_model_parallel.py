"""Model parallelism on 8 fake CPU devices (research/sharding.py): the mesh and its refusals, the sharding rules,
the same training on data:8, data:4,model:2 and data:2,model:4 for the four families, per-device bytes measured
from the arrays' shards, resuming data:8 -> data:2,model:4 -> 1 device, and (slow) the launch flags and two
processes of 4 devices each with model:2."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from research import parallel, sharding
from research.checkpoint import Checkpointer
from research.data import DataConfig, Dataset
from research.errors import ConfigError
from research.families import autoencoder, gan, mlp, rnn
from research.loop import LoopConfig, abstract_state, restore_latest, train_and_evaluate
from research.models.mlp import MLP
from research.models.rnn import SequenceModel
from research.optim import OptimizerConfig
from research.sharding import MeshConfig, make_mesh, parse_mesh
from research.tasks.gan import GANConfig
from research.tasks.supervised import SupervisedConfig, SupervisedTask
from research.workdir import Workdir
from research.writers import read_metrics
from tests.conftest import REPO, launch

P = jax.sharding.PartitionSpec


# ---- the mesh

def test_mesh_flags_parse_into_a_mesh_config():
    assert parse_mesh(None) == MeshConfig()
    assert parse_mesh("data:2,model:4") == MeshConfig(data=2, model=4)
    assert parse_mesh(" model:2 ") == MeshConfig(model=2)
    assert parse_mesh(None, 4, rules="tensor") == MeshConfig(model=4, rules="tensor")
    for text, message in (("data:4,tensor:2", "unknown axis 'tensor'"), ("model:2,model:2", "given twice"),
                          ("model:x", "model needs a size"), ("model:0", "must be positive"),
                          (",", "names no axis")):
        with pytest.raises(ConfigError, match=message):
            parse_mesh(text)
    with pytest.raises(ConfigError, match="not both"):
        parse_mesh("model:2", 2)
    with pytest.raises(ConfigError, match="unknown --sharding_rules 'megatron'"):
        MeshConfig(rules="megatron")


def test_the_mesh_must_fit_the_devices_and_keep_the_model_axis_on_one_host():
    assert dict(make_mesh().shape) == {"data": 8, "model": 1}
    mesh = make_mesh(MeshConfig(data=2, model=4))
    assert dict(mesh.shape) == {"data": 2, "model": 4}
    assert [d.id for d in mesh.devices[1]] == [d.id for d in jax.devices()[4:]]
    assert dict(make_mesh(MeshConfig(), jax.devices()[:1]).shape) == {"data": 1, "model": 1}
    with pytest.raises(ConfigError, match="asks for 4 devices, but this run has 8"):
        make_mesh(MeshConfig(data=2, model=2))
    with pytest.raises(ConfigError, match="a model axis of 3 does not divide this run's 8 devices"):
        make_mesh(MeshConfig(model=3))
    hosts = [types.SimpleNamespace(id=i, process_index=i // 4) for i in range(8)]  # 2 processes x 4 devices
    with pytest.raises(ConfigError, match="the model axis would span hosts"):
        parallel.make_mesh(hosts, model=8)


# ---- the rules

def _mlp_task(widths=(1024, 1024), inputs=784, classes=10) -> SupervisedTask:
    rng = np.random.default_rng(0)
    x = rng.random((64, inputs), np.float32)
    kind = "classify" if classes else "regress"
    y = rng.integers(0, classes, 64).astype(np.int32) if classes else rng.random(64).astype(np.float32)
    ds = Dataset("random", {"train": {"x": x, "y": y}, "test": {"x": x, "y": y}}, num_classes=classes or None)
    return SupervisedTask(MLP(hidden=widths, out_dim=classes or 1), ds, OptimizerConfig("adam", 1e-3),
                          SupervisedConfig(kind), batch_size=64, steps=10)


def _specs(task, mesh_cfg: MeshConfig, **loop) -> dict[str, P]:
    mesh = make_mesh(mesh_cfg)
    shardings = abstract_state(task, jax.random.PRNGKey(0), mesh, LoopConfig(steps=1, mesh=mesh_cfg, **loop))[1]
    return {sharding.path_name(path): s.spec for path, s in jax.tree_util.tree_flatten_with_path(shardings)[0]}


def test_fsdp_splits_the_largest_divisible_dimension_and_lays_the_optimizer_state_out_like_its_parameters():
    specs = _specs(_mlp_task(), MeshConfig(data=4, model=2))
    assert specs["params/Dense_0/kernel"] == P(None, "model")   # (784, 1024)
    assert specs["params/Dense_1/kernel"] == P(None, "model")   # (1024, 1024): ties split the later dimension
    assert specs["params/Dense_2/kernel"] == P("model", None)   # (1024, 10): 10240 elements, 1024 splits
    assert specs["params/Dense_0/bias"] == P() and specs["step"] == P() and specs["rng"] == P()  # small
    params = [k for k in specs if k.startswith("params/")]
    for moment in ("mu", "nu"):
        assert all(specs[f"opt_state/0/{moment}/{k.removeprefix('params/')}"] == specs[k] for k in params)
    assert all(spec == P() for spec in _specs(_mlp_task(), MeshConfig()).values())  # model:1: data parallelism


def test_a_replica_axis_is_never_split():
    specs = _specs(_mlp_task(), MeshConfig(data=4, model=2), num_seeds=3)
    assert specs["params/Dense_0/kernel"] == P(None, None, "model")
    assert all(len(spec) == 0 or spec[0] is None for spec in specs.values())


def test_tensor_rules_pair_columns_and_rows_and_split_recurrent_gates():
    specs = _specs(_mlp_task(), MeshConfig(data=4, model=2, rules="tensor", min_shard_size=1))
    assert specs["params/Dense_0/kernel"] == P(None, "model") and specs["params/Dense_0/bias"] == P("model")
    assert specs["params/Dense_1/kernel"] == P("model", None) and specs["params/Dense_1/bias"] == P()
    assert specs["params/Dense_2/kernel"] == P(None, "model")
    assert specs["opt_state/0/mu/Dense_1/kernel"] == P("model", None)
    assert _specs(_mlp_task(), MeshConfig(data=2, model=4, rules="tensor"))["params/Dense_2/kernel"] == P()  # 10 % 4
    rng = np.random.default_rng(0)
    seq = Dataset("seq", {"train": {"x": rng.random((64, 10, 2), np.float32), "y": rng.random(64, np.float32)}})
    lstm = SupervisedTask(SequenceModel(out_dim=1, hidden=32), seq, OptimizerConfig("adam", 1e-3),
                          SupervisedConfig("regress"), batch_size=64, steps=10)
    specs = _specs(lstm, MeshConfig(data=4, model=2, rules="tensor", min_shard_size=1))
    assert specs["params/rnn/layer0_fwd/w_i"] == P(None, "model") == specs["params/rnn/layer0_fwd/w_h"]
    assert specs["params/rnn/layer0_fwd/b"] == P("model") and specs["params/head/kernel"] == P()


def test_a_model_axis_that_splits_nothing_is_refused():
    task = _mlp_task(widths=(99, 99), inputs=10, classes=0)  # 10, 99 and 1: none divides by 4
    with pytest.raises(ConfigError, match="mesh data:2,model:4 splits nothing.*divisible by 4"):
        _specs(task, MeshConfig(data=2, model=4))
    small = MeshConfig(data=4, model=2, min_shard_size=1)
    assert _specs(task, small)["params/Dense_0/kernel"] == P("model", None)  # (10, 99): 10 % 2 == 0


def test_whole_does_nothing_outside_a_model_parallel_step():
    x = np.arange(4.0)
    assert sharding.whole(x) is x
    with sharding.parameters_whole(make_mesh(), MeshConfig()):
        assert sharding.whole(x) is x
    with sharding.parameters_whole(make_mesh(MeshConfig(model=2)), MeshConfig(model=2, rules="tensor")):
        assert sharding.whole(x) is x


def test_bytes_per_device_are_measured_from_the_shards():
    """The 784-1024-1024-10 MLP's parameters and Adam moments: <= 0.6x per device at model:2, <= 0.35x at model:4."""
    task = _mlp_task()
    unsplit = None
    for model, bound in ((1, 1.0), (2, 0.6), (4, 0.35)):
        cfg = MeshConfig(model=model)
        mesh = make_mesh(cfg)
        shardings = abstract_state(task, jax.random.PRNGKey(0), mesh, LoopConfig(steps=1, mesh=cfg))[1]
        state = jax.jit(task.init_state, out_shardings=shardings)(jax.random.PRNGKey(0))
        report = sharding.memory_report(state)
        per = sharding.bytes_per_device(state)
        assert len(per) == 8 and len({tuple(v.values()) for v in per.values()}) == 1  # every device alike
        n = sum(p.size for p in jax.tree.leaves(state.params))
        unsplit = unsplit or report["params_and_opt_state"]
        assert report["unsplit_params_and_opt_state"] == unsplit == 3 * 4 * n + 8  # params, mu, nu; 2 int32 counts
        assert report["params_and_opt_state"] <= bound * unsplit, (model, report)
        assert report["params"] == sum(s.data.nbytes for leaf in jax.tree.leaves(state.params)
                                       for s in leaf.addressable_shards if s.device == jax.devices()[0])


# ---- the same training on three meshes, for every family

STEPS = 6
SMALL = 256  # --min_shard_size for the small test models, so that their kernels split


def _config(family: str, mesh: MeshConfig, **loop):
    loop = LoopConfig(steps=STEPS, log_every=3, checkpoint_every=0, progress_bar=False, mesh=mesh, **loop)
    if family == "mlp":  # (the 784-1024-1024-10 MLP's bytes: test_bytes_per_device_...)
        return mlp, mlp.Config(DataConfig("digits", 64), loop, OptimizerConfig("adam", 1e-3),
                               mlp.ModelConfig(hidden=(256, 256), dropout=0.1))
    if family == "autoencoder":
        return autoencoder, autoencoder.Config(DataConfig("digits", 64), loop, OptimizerConfig("adam", 1e-3),
                                               autoencoder.ModelConfig(encoder=(128, 64), latent=4))
    if family == "dcgan":
        adam = OptimizerConfig("adam", 2e-4, beta1=0.5)
        return gan, gan.Config(DataConfig("digits", 64), loop, adam, adam, gan.ModelConfig(g_width=16, d_width=16),
                               GANConfig(z_dim=16), evaluator="none", num_eval_samples=128, eval_batch_size=64,
                               grid_size=16)
    return rnn, rnn.Config(DataConfig("adding", 64), loop, OptimizerConfig("adam", 1e-3), task="adding",
                           model=rnn.ModelConfig(hidden=32), length=10)


def _train(family: str, mesh: MeshConfig, path, **loop) -> tuple[dict, object]:
    """final.json and the final parameters (on the host) of `family` trained on `mesh` in workdir `path`."""
    module, cfg = _config(family, mesh, **loop)
    devices = make_mesh(mesh)
    run = module.build(cfg, devices)
    wd = Workdir(path)
    wd.create()
    final = train_and_evaluate(run.task, run.evaluators, cfg.loop, wd, devices)
    state, _ = restore_latest(run.task, wd, cfg.loop.seed, make_mesh(), cfg.loop)
    return final, jax.device_get(run.task.params(state))


MESHES = {"data:8": {}, "data:4,model:2": {"data": 4, "model": 2}, "data:2,model:4": {"data": 2, "model": 4},
          "data:4,model:2 tensor": {"data": 4, "model": 2, "rules": "tensor"}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(family, mesh name) -> (final.json, params); each trained once per module."""
    root, runs = tmp_path_factory.mktemp("meshes"), {}

    def get(family: str, mesh: str):
        if (family, mesh) not in runs:
            size = {"min_shard_size": SMALL}
            path = root / f"{family}-{mesh.replace(':', '').replace(',', '-').replace(' ', '-')}"
            runs[family, mesh] = _train(family, MeshConfig(**MESHES[mesh], **size), path)
        return runs[family, mesh]

    return get


def _close(a: dict[str, float], b: dict[str, float], what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-6, err_msg=f"{what}: {k}")


def _same_params(a, b, what: str) -> None:
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4, err_msg=f"{what}: {jax.tree_util.keystr(path)}")


@pytest.mark.parametrize("family", ["mlp", "autoencoder", "dcgan", "lstm"])
def test_every_mesh_trains_the_same_model_with_less_memory_per_device(family, trained):
    ref, ref_params = trained(family, "data:8")
    assert ref["mesh"] == {"data": 8, "model": 1, "rules": "fsdp"}
    assert ref["bytes_per_device"]["params_and_opt_state"] == ref["bytes_per_device"]["unsplit_params_and_opt_state"]
    meshes = ["data:4,model:2", "data:2,model:4"] + (["data:4,model:2 tensor"] if family == "lstm" else [])
    for mesh in meshes:
        final, params = trained(family, mesh)
        assert final["mesh"]["model"] == MESHES[mesh]["model"] and final["num_devices"] == 8
        _close(final["metrics"], ref["metrics"], f"{family} {mesh} test metrics")
        _close(final["train_metrics"], ref["train_metrics"], f"{family} {mesh} train metrics")
        _same_params(params, ref_params, f"{family} {mesh}")
        memory = final["bytes_per_device"]
        ratio = memory["params_and_opt_state"] / memory["unsplit_params_and_opt_state"]
        assert memory["unsplit_params_and_opt_state"] == ref["bytes_per_device"]["unsplit_params_and_opt_state"]
        assert ratio <= {2: 0.6, 4: 0.35}[MESHES[mesh]["model"]], (mesh, memory)


def test_vectorised_seeds_and_red_blue_under_model_parallelism(tmp_path):
    """--num_seeds (fsdp, model:2) and --red_blue (tensor rules, model:2) train what they train on data:8."""
    for name, loop, mesh in (("seeds", {"num_seeds": 2, "steps_per_call": 3}, {"model": 2}),
                             ("red_blue", {"red_blue": True, "fuse_every": 3}, {"model": 2, "rules": "tensor"})):
        runs = [_train("mlp", MeshConfig(**m, min_shard_size=SMALL), tmp_path / f"{name}{i}", **loop)
                for i, m in enumerate(({}, mesh))]
        (ref, ref_params), (final, params) = runs
        _close(final["metrics"], ref["metrics"], name)
        _same_params(params, ref_params, name)
        assert final["bytes_per_device"]["params_and_opt_state"] < 0.6 * ref["bytes_per_device"]["params_and_opt_state"]
        if name == "seeds":
            for mine, theirs in zip(final["seeds"], ref["seeds"], strict=True):
                _close(mine["metrics"], theirs["metrics"], f"seed {mine['seed']}")


# ---- checkpoints across meshes

def _resume_config(mesh: MeshConfig):
    loop = LoopConfig(steps=30, log_every=5, checkpoint_every=10, progress_bar=False, mesh=mesh)
    return mlp.Config(DataConfig("digits", 64), loop, OptimizerConfig("adam", 1e-3),
                      mlp.ModelConfig(hidden=(256, 256), dropout=0.1))


def _resume(path, mesh: MeshConfig, devices=None, *, from_dir=None, step: int | None = None):
    """Train to step 30 in `path` on `mesh`, first copying checkpoint `step` of `from_dir` there (if given)."""
    if from_dir is not None:
        shutil.copytree(from_dir / "checkpoints" / str(step), path / "checkpoints" / str(step))
    cfg = _resume_config(mesh)
    grid = make_mesh(mesh, devices)
    run = mlp.build(cfg, grid)
    wd = Workdir(path)
    wd.create()
    final = train_and_evaluate(run.task, run.evaluators, cfg.loop, wd, grid)
    state, _ = restore_latest(run.task, wd, 0, make_mesh(), cfg.loop)
    train_rows = [r for r in read_metrics(path) if r["split"] == "train"]
    return final, jax.device_get(state.params), train_rows, run.task


def test_a_run_saved_on_data8_resumes_on_data2_model4_then_on_one_device(tmp_path):
    a, b, c = tmp_path / "data8", tmp_path / "data2-model4", tmp_path / "one-device"
    full, full_params, full_rows, task = _resume(a, MeshConfig())
    mid, mid_params, mid_rows, _ = _resume(b, MeshConfig(data=2, model=4), from_dir=a, step=10)
    end, end_params, end_rows, _ = _resume(c, MeshConfig(), jax.devices()[:1], from_dir=b, step=20)
    assert mid["mesh"] == {"data": 2, "model": 4, "rules": "fsdp"} and end["num_devices"] == 1
    assert [r["step"] for r in mid_rows] == [15, 20, 25, 30] and [r["step"] for r in end_rows] == [25, 30]
    by_step = {r["step"]: r for r in full_rows}
    for row in mid_rows + end_rows:  # the same batches in the same order, the same losses
        _close({k: row[k] for k in ("loss", "accuracy")}, {k: by_step[row["step"]][k] for k in ("loss", "accuracy")},
               f"step {row['step']}")
    for final, params in ((mid, mid_params), (end, end_params)):
        _same_params(params, full_params, f"resumed on {final['mesh']}")
        _close(final["metrics"], full["metrics"], f"resumed on {final['mesh']}")
    abstract = abstract_state(task, jax.random.PRNGKey(0), make_mesh(), _resume_config(MeshConfig()).loop)[0]
    positions = [Checkpointer(path / "checkpoints", async_save=False).restore(20, abstract)[1]["data"]
                 for path in (a, b)]
    assert positions[0] == positions[1]  # the data position saved at step 20 on data:2,model:4 is data:8's


# ---- launch flags, end to end (slow)

QUICK = ["--flagfile=experiments/mlp/quickstart.flags", "--steps=20", "--checkpoint_every=10", "--log_every=10",
         "--eval_every=0", "--progress=log", "--model_parallel=2"]


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """The digits MLP quickstart, 20 steps at --model_parallel=2 (data:4,model:2), via launch.mlp."""
    wd = tmp_path_factory.mktemp("launched") / "run"
    proc = launch("mlp", *QUICK, f"--workdir={wd}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return wd, proc


@pytest.mark.slow
def test_launch_reports_the_mesh_and_resumes_on_another(launched, tmp_path):
    wd, proc = launched
    final = json.loads((wd / "final.json").read_text())
    assert final["mesh"] == {"data": 4, "model": 2, "rules": "fsdp"}
    memory = final["bytes_per_device"]
    assert memory["params_and_opt_state"] <= 0.6 * memory["unsplit_params_and_opt_state"]
    assert "mesh data:4,model:2 (fsdp rules): parameters + optimizer state" in proc.stderr
    assert json.loads((wd / "config.json").read_text())["config"]["loop"]["mesh"]["model"] == 2
    other = tmp_path / "run"
    shutil.copytree(wd, other)
    shutil.rmtree(other / "checkpoints" / "20")
    (other / "final.json").unlink()
    resumed = launch("mlp", *QUICK[:-1], "--mesh=data:2,model:4", "--sharding_rules=tensor", f"--workdir={other}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]  # the mesh flags may change on resume
    assert f"resumed from {other}/checkpoints/10 at step 10" in resumed.stderr
    again = json.loads((other / "final.json").read_text())
    assert again["mesh"] == {"data": 2, "model": 4, "rules": "tensor"}
    _close(again["metrics"], final["metrics"], "resumed at data:2,model:4")
    _close(again["train_metrics"], final["train_metrics"], "resumed at data:2,model:4")


@pytest.mark.slow
def test_print_sharding_lists_the_layout_and_trains_nothing(tmp_path):
    proc = launch("mlp", "--flagfile=experiments/mlp/quickstart.flags", "--mesh=data:2,model:4", "--print_sharding")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("mesh data:2,model:4 (8 devices), rules fsdp")
    assert any(line.split()[:3] == ["params/Dense_1/kernel", "float32[256,", "256]"] and "P(None, 'model')" in line
               and line.endswith("[256, 64]") for line in lines), proc.stdout
    assert lines[-3].startswith("params: ") and "first call done" not in proc.stderr


@pytest.mark.slow
def test_two_processes_of_four_devices_train_and_checkpoint_with_model_parallelism(launched, tmp_path):
    """Processes 0 and 1 (gloo over 127.0.0.1), 4 devices each, --model_parallel=2: data:4,model:2 with each
    model pair on one process; the same training as one process of 8 devices."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "PYTHONUNBUFFERED": "1"}
    wd = tmp_path / "run"
    cmd = [sys.executable, "-m", "launch.mlp", *QUICK, f"--workdir={wd}", f"--coordinator_address=127.0.0.1:{port}",
           "--num_processes=2"]
    procs = [subprocess.Popen([*cmd, f"--process_id={i}"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=300)
            outs.append(out)
            assert p.returncode == 0, out[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    shas = [[line.split("params_sha256=")[1].split()[0] for line in out.splitlines() if "params_sha256=" in line]
            for out in outs]
    assert shas[0] and shas[0] == shas[1]
    final = json.loads((wd / "final.json").read_text())
    assert final["num_processes"] == 2 and final["mesh"] == {"data": 4, "model": 2, "rules": "fsdp"}
    assert final["bytes_per_device"]["params_and_opt_state"] <= 0.6 * final["bytes_per_device"][
        "unsplit_params_and_opt_state"]
    assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit()) == [10, 20]
    single = json.loads((launched[0] / "final.json").read_text())
    _close(final["metrics"], single["metrics"], "two processes vs one")
    _close(final["train_metrics"], single["train_metrics"], "two processes vs one")


def test_the_mesh_flags_are_layout_only():
    from launch import common

    assert {"mesh", "model_parallel", "sharding_rules", "min_shard_size", "print_sharding"} <= common.NON_DEFINING
    assert dataclasses.asdict(LoopConfig(steps=1))["mesh"] == dataclasses.asdict(MeshConfig())
