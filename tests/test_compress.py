"""Compression (research/compress): the pruning schedule and masks, int8 quantisation with qwix (QAT, PTQ, export),
and distillation's loss and teacher. In-process, on the 8x8 digits; the end-to-end launches are in
tests/test_compress_launch.py."""

from __future__ import annotations

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import families
from research.compress import prune
from research.compress.config import DistillConfig, PruneConfig, QuantConfig
from research.compress.quantize import quantize_run, tree_bytes
from research.data import DataConfig, facts
from research.errors import ConfigError
from research.families import family, load_run, to_dict
from research.loop import LoopConfig, restore_latest, train_and_evaluate
from research.objectives.distillation import distillation_loss
from research.optim import OptimizerConfig, make_optimizer
from research.parallel import make_mesh
from research.workdir import Workdir

MLP = family("mlp")


# ---- the pruning schedule and masks

def test_the_schedule_is_zhu_and_gupta_cubic():
    s = lambda t: float(prune.target_sparsity(t, 0.8, 100, 200))
    assert s(0) == 0 and s(100) == 0
    assert s(150) == pytest.approx(0.8 * (1 - 0.5 ** 3))  # 0.7
    assert s(125) == pytest.approx(0.8 * (1 - 0.75 ** 3))
    assert s(200) == pytest.approx(0.8) and s(5000) == pytest.approx(0.8)
    steps = [t for t in range(0, 260) if prune.is_pruning_step(t, 100, 200, 30)]
    assert steps == [100, 130, 160, 190, 200]  # every 30 from the start, and the end
    assert float(prune.target_sparsity(7, 0.5, 7, 7)) == 0.5  # one-shot: start == end


def test_defaults_resolve_to_the_middle_half_of_the_run_and_an_end_past_the_run_is_refused():
    assert prune.resolve(PruneConfig(0.5), 1000) == (250, 750, 10)
    with pytest.raises(ConfigError, match="--prune_end=2000 is past the run's last step"):
        prune.resolve(PruneConfig(0.5, start=10, end=2000), 1000)


def test_kth_smallest_is_exact():
    x = np.abs(np.random.default_rng(0).normal(size=5001)).astype(np.float32)
    for k in (1, 2, 17, 2500, 5001):
        assert float(prune.kth_smallest(jnp.asarray(x), jnp.int32(k))) == np.sort(x)[k - 1]


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_masks_prune_the_smallest_magnitudes(scope):
    rng = np.random.default_rng(1)
    w = {"a": jnp.asarray(rng.normal(size=(20, 30)), jnp.float32),
         "b": jnp.asarray(3 * rng.normal(size=(30, 10)), jnp.float32)}
    masks = prune.magnitude_masks(w, jnp.float32(0.75), scope)
    if scope == "layer":
        for k in w:
            assert int((~masks[k]).sum()) == int(0.75 * w[k].size)
            assert float(jnp.abs(w[k])[~masks[k]].max()) <= float(jnp.abs(w[k])[masks[k]].min())
    else:
        pruned = sum(int((~m).sum()) for m in masks.values())
        assert pruned == int(0.75 * 900)
        largest_pruned = max(float(jnp.abs(w[k])[~masks[k]].max()) for k in w)
        assert largest_pruned <= min(float(jnp.abs(w[k])[masks[k]].min()) for k in w)
        assert float((~masks["a"]).mean()) > float((~masks["b"]).mean())  # the small layer loses more


def _toy_problem():
    rng = np.random.default_rng(2)
    params = {"Dense_0": {"kernel": jnp.asarray(rng.normal(size=(16, 12)), jnp.float32),
                          "bias": jnp.asarray(rng.normal(size=(12,)), jnp.float32)},
              "Dense_1": {"kernel": jnp.asarray(rng.normal(size=(12, 4)), jnp.float32)}}
    target = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
    loss = lambda p: sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(target),
                                                                   strict=True))
    return params, loss


def test_pruned_weights_stay_exactly_zero_after_every_update_and_the_sparsity_is_reached():
    cfg = OptimizerConfig("adam", 0.05, prune=PruneConfig(0.8, start=3, end=30, every=3, scope="global"))
    tx, _ = make_optimizer(cfg, 40)
    params, loss = _toy_problem()
    state = tx.init(params)
    step = jax.jit(lambda p, s: (lambda g: tx.update(g, s, p))(jax.grad(loss)(p)))
    previous, pruning_steps = None, [t for t in range(41) if prune.is_pruning_step(t, 3, 30, 3)]
    for t in range(1, 41):
        updates, state = step(params, state)
        params = optax.apply_updates(params, updates)
        masks = state[-1].masks  # the pruning state is the chain's last
        assert set(masks) == {"Dense_0/kernel", "Dense_1/kernel"}  # kernels only: no bias
        for name, mask in masks.items():
            layer = params[name.split("/")[0]]["kernel"]
            assert np.all(np.asarray(layer)[~np.asarray(mask)] == 0.0), (t, name)  # exactly zero, every step
            if previous is not None:
                assert not np.any(np.asarray(mask) & ~previous[name]), "a pruned weight grew back"
        previous = {k: np.asarray(v) for k, v in masks.items()}
        last = max([s for s in pruning_steps if s <= t], default=None)
        target = 0.0 if last is None else np.float32(prune.target_sparsity(last, 0.8, 3, 30))
        expected = int(np.floor(np.float32(target) * np.float32(240)))
        assert prune.sparsity_report(params, r"kernel$")["nonzero_weights"] == 240 - expected, t
    report = prune.sparsity_report(params, r"(^|/)kernel$")
    assert report["sparsity"] == pytest.approx(int(0.8 * 240) / 240)
    assert report["weights"] == 240 and report["nonzero_weights"] == 240 - int(0.8 * 240)
    assert set(report) >= {"sparsity/Dense_0/kernel", "sparsity/Dense_1/kernel"}
    assert np.all(np.asarray(params["Dense_0"]["bias"]) != 0)


def test_without_pruning_the_optimizer_state_is_what_it_was():
    params, _ = _toy_problem()
    plain = make_optimizer(OptimizerConfig("adam", 1e-3), 10)[0].init(params)
    assert jax.tree.structure(plain) == jax.tree.structure(optax.chain(
        optax.scale_by_adam(), optax.scale_by_learning_rate(optax.constant_schedule(1e-3))).init(params))
    assert not any(isinstance(s, prune.PruneState) for s in plain)


# ---- configs: old config.json files still load; bad values are refused (tests/test_families.py has the rest)

def test_a_config_json_from_before_compression_loads_with_everything_off(tmp_path):
    cfg = MLP.Config(DataConfig("digits", 64), LoopConfig(steps=3), OptimizerConfig("sgd", 0.1),
                     MLP.ModelConfig(hidden=(8,)))
    old = to_dict(cfg)
    del old["quant"], old["distill"], old["optimizer"]["prune"]
    wd = Workdir(tmp_path)
    wd.create()
    wd.write_config("mlp", old)
    assert load_run(wd)[1] == cfg


# ---- a small trained run shared by the quantisation and distillation tests

def _config(workdir_steps: int = 200, **kw) -> MLP.Config:
    parts = {"data": DataConfig("digits", 64),
             "loop": LoopConfig(steps=workdir_steps, log_every=100, checkpoint_every=0, progress_bar=False,
                                async_checkpoints=False),
             "optimizer": OptimizerConfig("adam", 3e-3), "model": MLP.ModelConfig(hidden=(64,))}
    return MLP.Config(**{**parts, **kw})


def _train(cfg: MLP.Config, path) -> dict:
    """What launch.mlp does, in-process: build, record config.json and dataset.json, train."""
    mesh = make_mesh()
    run = MLP.build(cfg, mesh)
    wd = Workdir(path)
    wd.create()
    wd.write_config("mlp", to_dict(cfg))
    wd.write_dataset(facts(run.dataset))
    return train_and_evaluate(run.task, run.evaluators, cfg.loop, wd, mesh)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("compress") / "float"
    final = _train(_config(), path)
    assert final["metrics"]["accuracy"] > 0.9
    return path


def test_a_resumed_pruned_run_is_bitwise_equal_to_an_uninterrupted_one(tmp_path):
    loop = LoopConfig(steps=16, log_every=4, checkpoint_every=8, keep_checkpoints=3, progress_bar=False,
                      async_checkpoints=False)
    cfg = _config(loop=loop, optimizer=OptimizerConfig("adam", 3e-3, prune=PruneConfig(0.8, start=2, end=12,
                                                                                          every=2)))
    full = _train(cfg, tmp_path / "a")
    assert full["metrics"]["sparsity"] == pytest.approx(0.8, abs=1e-3)
    shutil.rmtree(tmp_path / "a" / "checkpoints" / "16")  # as if stopped at step 8: resume from there
    (tmp_path / "a" / "final.json").unlink()
    resumed = _train(cfg, tmp_path / "a")
    assert resumed["params_sha256"] == full["params_sha256"]
    assert resumed["metrics"] == full["metrics"]


def test_qat_trains_with_the_float_parameter_tree():
    cfg = _config(150, quant=QuantConfig(qat="int8"))
    run = MLP.build(cfg, make_mesh())
    state = jax.jit(run.task.init_state)(jax.random.PRNGKey(0))
    float_state = jax.jit(MLP.build(_config(150), make_mesh()).task.init_state)(jax.random.PRNGKey(0))
    assert jax.tree.structure(state.params) == jax.tree.structure(float_state.params)
    pipeline = run.task.train_pipeline(0, None)
    step = jax.jit(run.task.train_step)
    losses = []
    for _ in range(150):
        state, metrics = step(state, pipeline.next_local())
        losses.append(float(metrics["loss"]))
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])


def test_ptq_reproduces_the_float_accuracy_in_a_quarter_of_the_bytes_and_exports_int8(trained, tmp_path):
    from research.export import export_run

    for method in ("int8_weights", "int8_dynamic"):
        out = tmp_path / method
        final = quantize_run(Workdir(trained), method, out)
        assert abs(final["metrics"]["accuracy"] - final["float_metrics"]["accuracy"]) <= 0.01
        assert final["bytes"]["ratio"] <= 0.30 and final["bytes"]["float32"] == 4 * (64 * 64 + 64 + 64 * 10 + 10)
        assert json.loads((out / "final.json").read_text())["metrics"] == final["metrics"]
    with pytest.raises(ConfigError, match="is not empty"):
        quantize_run(Workdir(trained), "int8_weights", tmp_path / "int8_weights")
    manifest = export_run(Workdir(tmp_path / "int8_weights"), tmp_path / "export")
    arrays = np.load(tmp_path / "export" / "params.npz")
    assert {a.dtype for a in arrays.values()} == {np.dtype("int8"), np.dtype("float32")}
    assert sum(a.nbytes for a in arrays.values()) == json.loads(
        (tmp_path / "int8_weights" / "final.json").read_text())["bytes"]["quantized"]
    assert manifest["source"]["metrics"]["accuracy"] == json.loads(
        (tmp_path / "int8_weights" / "final.json").read_text())["metrics"]["accuracy"]
    int8 = [k for k, a in arrays.items() if a.dtype == np.int8]
    assert sorted(int8) == ["params/Dense_0/kernel/array/qvalue", "params/Dense_1/kernel/array/qvalue"]
    from launch.artifact import Artifact  # what launch.serve loads: jax and numpy alone

    test = MLP.build(_config(), make_mesh(), evaluate=False).dataset.split("test")
    served = Artifact.load(tmp_path / "export").call("predict", {"x": test["x"]})
    assert np.mean(served["label"] == test["y"]) == pytest.approx(manifest["source"]["metrics"]["accuracy"])


def test_ptq_eval_scores_what_launch_quantize_writes(trained, tmp_path):
    """--ptq_eval's evaluator (every evaluation of a training run) gives the metrics and bytes launch.quantize's
    conversion of the same checkpoint gives."""
    from research.evaluators.base import EvalContext
    from research.evaluators.quantized import QuantizedEvaluator

    mesh = make_mesh()
    run = MLP.build(_config(quant=QuantConfig(evaluate=("int8_weights", "int8_dynamic"))), mesh)
    [quantized] = [e for e in run.evaluators if isinstance(e, QuantizedEvaluator)]
    state, step = restore_latest(run.task, Workdir(trained), mesh=mesh)
    got = quantized.evaluate(state, EvalContext(step, mesh, pictures=False)).metrics
    for method in ("int8_weights", "int8_dynamic"):
        final = quantize_run(Workdir(trained), method, tmp_path / method)
        assert got[f"{method}_accuracy"] == pytest.approx(final["metrics"]["accuracy"])
        assert got[f"{method}_bytes"] == final["bytes"]["quantized"]
        assert got[f"{method}_bytes_ratio"] == pytest.approx(final["bytes"]["ratio"])
    assert got["float32_bytes"] == final["bytes"]["float32"]


def test_tree_bytes_counts_one_byte_per_int8():
    assert tree_bytes({"a": jnp.zeros((3, 4), jnp.int8), "b": jnp.zeros(5, jnp.float32)}) == 12 + 20


# ---- distillation

def test_distillation_loss_equals_a_hand_computation():
    student = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    teacher = np.array([[2.0, 0.0, 1.0], [1.0, 1.0, 4.0]])
    labels = np.array([1, 2])
    t, a = 2.0, 0.7

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    ce = -np.mean(np.log(softmax(student)[np.arange(2), labels]))
    p, q = softmax(teacher / t), softmax(student / t)
    kl = np.mean(np.sum(p * np.log(p / q), -1))
    loss, parts = distillation_loss(jnp.asarray(student), jnp.asarray(teacher), jnp.asarray(labels), t, a)
    assert float(parts["hard_ce"]) == pytest.approx(ce, rel=1e-6)
    assert float(parts["soft_kl"]) == pytest.approx(kl, rel=1e-5)
    assert float(loss) == pytest.approx((1 - a) * ce + a * t * t * kl, rel=1e-5)
    grad = jax.grad(lambda tl: distillation_loss(jnp.asarray(student), tl, jnp.asarray(labels), t, a)[0])(
        jnp.asarray(teacher))
    assert not np.any(np.asarray(grad))  # the teacher is frozen


def test_a_distilled_student_trains_and_its_checkpoints_hold_no_teacher(trained, tmp_path):
    cfg = _config(60, model=MLP.ModelConfig(hidden=(16,)),
                  distill=DistillConfig(teacher=str(trained), temperature=4.0, weight=0.9))
    final = _train(cfg, tmp_path / "student")
    assert final["metrics"]["accuracy"] > 0.3 and "soft_kl" in final["train_metrics"]  # chance: 0.1
    plain = MLP.build(dataclasses.replace(cfg, distill=DistillConfig()), make_mesh(), evaluate=False).task
    state, step = restore_latest(plain, Workdir(tmp_path / "student"))  # shapes and tree checked: a student's
    assert step == 60 and jax.tree.structure(state) == jax.tree.structure(jax.eval_shape(plain.init_state,
                                                                                         jax.random.PRNGKey(0)))


def test_a_teacher_of_other_data_or_a_missing_one_is_refused(trained, tmp_path):
    with pytest.raises(ConfigError, match="no such directory"):
        MLP.build(_config(distill=DistillConfig(teacher=str(tmp_path / "none"))), make_mesh())
    other = tmp_path / "other"  # a classifier of 28x28 MNIST digits posing as a teacher for the 8x8 digits
    wd = Workdir(other)
    wd.create()
    cfg = dataclasses.replace(_config(), data=DataConfig("mnist_5k", 64))
    wd.write_config("mlp", families.to_dict(cfg))
    (other / "checkpoints" / "1").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"the teacher learned mnist_5k .* this run digits"):
        MLP.build(_config(distill=DistillConfig(teacher=str(other))), make_mesh())


# ---- every family: pruning (in the optimizer) and QAT (the model wrapped) train, and report their sparsity

PRUNE = PruneConfig(0.5, start=1, end=2, every=1)
FAMILY_CONFIGS = {
    "autoencoder": lambda m, opt, q: m.Config(DataConfig("digits", 64), LoopConfig(steps=3), opt,
                                              m.ModelConfig(encoder=(16,), latent=2), quant=q),
    "gan": lambda m, opt, q: m.Config(DataConfig("gaussians_ring8", 64), LoopConfig(steps=3), opt, opt,
                                      m.ModelConfig(architecture="mlp", g_hidden=(8,), d_hidden=(8,)),
                                      evaluator="none", num_eval_samples=64, eval_batch_size=64, quant=q),
    "rnn": lambda m, opt, q: m.Config(DataConfig("adding", 16), LoopConfig(steps=3), opt, task="adding", length=6,
                                      model=m.ModelConfig(hidden=8), quant=q),
}


@pytest.mark.parametrize("name", sorted(FAMILY_CONFIGS))
def test_every_family_prunes_and_trains_quantisation_aware(name):
    module = family(name)
    cfg = FAMILY_CONFIGS[name](module, OptimizerConfig("adam", 1e-2, prune=PRUNE), QuantConfig(qat="int8"))
    run = module.build(cfg, make_mesh())
    assert any(type(e).__name__ == "SparsityEvaluator" for e in run.evaluators)
    state = jax.jit(run.task.init_state)(jax.random.PRNGKey(0))
    pipeline, step = run.task.train_pipeline(0, None), jax.jit(run.task.train_step)
    for _ in range(3):
        state, metrics = step(state, pipeline.next_local())
    assert all(np.isfinite(float(v)) for v in metrics.values())
    report = prune.sparsity_report(run.task.params(state), PRUNE.params)
    assert report["sparsity"] == pytest.approx(0.5, abs=0.02), report
    with pytest.raises(ConfigError, match="implemented for the mlp family"):
        FAMILY_CONFIGS[name](module, OptimizerConfig("adam", 1e-2), QuantConfig(evaluate=("int8_weights",)))
