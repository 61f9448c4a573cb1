"""--steps_per_call, --num_seeds, --red_blue, --compute_dtype and on-device data, in-process on 8 fake devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import data, replicas
from research.errors import ConfigError
from research.evaluators.supervised import SupervisedEvaluator
from research.loop import LoopConfig, restore_latest, train_and_evaluate
from research.models.mlp import MLP
from research.optim import OptimizerConfig
from research.state import TrainState, fingerprint
from research.tasks.supervised import SupervisedConfig, SupervisedTask
from research.workdir import Workdir

STEPS = 60


def _task(dtype="float32", dropout=0.1):
    return SupervisedTask(MLP(hidden=(32,), out_dim=10, dropout=dropout), data.load("digits"),
                          OptimizerConfig("adam", 3e-3), SupervisedConfig("classify", compute_dtype=dtype),
                          batch_size=64, steps=STEPS)


def _run(tmp_path, name, task=None, **loop):
    wd = Workdir(tmp_path / name)
    wd.create()
    cfg = LoopConfig(steps=STEPS, log_every=10, checkpoint_every=30, progress_bar=False, **loop)
    task = task or _task()
    evaluator = SupervisedEvaluator(task.predict, task.dataset, "classify", 512)
    return train_and_evaluate(task, [evaluator], cfg, wd)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The plain float32 run (host-fed batches, one step per call) the speed features must reproduce."""
    path = tmp_path_factory.mktemp("reference")
    return path / "plain", _run(path, "plain", data_on_device=False)


def _metrics(path):
    import json

    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time", "elapsed")} for r in rows]


def test_steps_per_call_and_device_data_give_the_same_bits(tmp_path, reference):
    path, plain = reference
    for name, loop in {"k7": {"steps_per_call": 7}, "dev": {"data_on_device": True}}.items():
        other = _run(tmp_path, name, **loop)
        assert other["params_sha256"] == plain["params_sha256"], name  # bitwise on XLA:CPU
        assert other["metrics"] == plain["metrics"]
        assert _metrics(tmp_path / name) == _metrics(path)  # same log lines at the same steps


def test_num_seeds_replicas_match_their_single_seed_runs(tmp_path):
    many = _run(tmp_path, "many", num_seeds=3, steps_per_call=5)
    assert [s["seed"] for s in many["seeds"]] == [0, 1, 2]
    accs = [s["metrics"]["accuracy"] for s in many["seeds"]]
    assert np.isclose(many["metrics"]["accuracy"], np.mean(accs))
    assert np.isclose(many["metrics_std"]["accuracy"], np.std(accs))
    for seed in (0, 2):
        single = _run(tmp_path, f"seed{seed}", seed=seed)
        got = many["seeds"][seed]["metrics"]
        for k in ("accuracy", "loss"):
            assert abs(got[k] - single["metrics"][k]) < 2e-3, (seed, k, got[k], single["metrics"][k])
    assert len({s["params_sha256"] for s in many["seeds"]}) == 3
    # --mode=sample reads replica i of the checkpoint: the run of seed i.
    loop = LoopConfig(steps=STEPS, num_seeds=3)
    for i in range(3):
        state, step = restore_latest(_task(), Workdir(tmp_path / "many"), cfg=loop, replica=i)
        assert step == STEPS and fingerprint(_task().params(state)) == many["seeds"][i]["params_sha256"]
    with pytest.raises(ConfigError, match=r"--replica=3: .* trained replicas 0\.\.2"):
        restore_latest(_task(), Workdir(tmp_path / "many"), cfg=loop, replica=3)


def test_num_seeds_params_match_single_runs_to_float_tolerance():
    task, cfg = _task(dropout=0.0), LoopConfig(steps=1, num_seeds=2)
    from research.loop import _init_fn

    stacked = jax.jit(_init_fn(task, cfg))(jax.random.PRNGKey(0))
    batch = {k: jnp.asarray(v[:64]) for k, v in task.dataset.split("train").items()}
    stacked_batch = jax.tree.map(lambda x: jnp.stack([x, x[::-1]]), batch)
    vmapped_step, step, init = jax.jit(jax.vmap(task.train_step)), jax.jit(task.train_step), jax.jit(task.init_state)
    for _ in range(5):
        stacked, _ = vmapped_step(stacked, stacked_batch)
    for i, b in enumerate((batch, jax.tree.map(lambda x: x[::-1], batch))):
        single = init(jax.random.PRNGKey(i))
        for _ in range(5):
            single, _ = step(single, b)
        for x, y in zip(jax.tree.leaves(replicas.take(stacked, i).params), jax.tree.leaves(single.params),
                        strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_fuse_averages_params_and_keeps_optimizer_states():
    a = TrainState(step=jnp.array(0), params={"w": jnp.array([1.0, 3.0])}, opt_state={"m": jnp.array([1.0])},
                   model_state={}, rng=jnp.zeros(2, jnp.uint32))
    b = a.replace(params={"w": jnp.array([3.0, 7.0])}, opt_state={"m": jnp.array([5.0])})
    fused = replicas.fuse(replicas.stack([a, b]))
    np.testing.assert_array_equal(fused.params["w"], [[2.0, 5.0], [2.0, 5.0]])
    np.testing.assert_array_equal(fused.opt_state["m"], [[1.0], [5.0]])


def test_red_blue_halves_are_disjoint_and_the_run_reports_the_fused_model(tmp_path):
    pipe = data.ArrayPipeline({"x": np.arange(101)}, 8, seed=3)
    red, blue = pipe.halves(3)
    assert len(np.intersect1d(red.rows, blue.rows)) == 0 and len(red.rows) + len(blue.rows) == 101
    final = _run(tmp_path, "rb", red_blue=True, fuse_every=10)
    assert final["red_blue"] == {"fuse_every": 10} and final["metrics"]["accuracy"] > 0.8
    with pytest.raises(ConfigError, match="fuse_every"):
        LoopConfig(steps=10, red_blue=True)
    with pytest.raises(ConfigError, match="cannot be combined"):
        LoopConfig(steps=10, red_blue=True, fuse_every=2, num_seeds=2)


def test_bfloat16_compute_trains(tmp_path, reference):
    task = _task("bfloat16")
    final = _run(tmp_path, "bf16", task=task)
    _, ref = reference
    assert final["metrics"]["accuracy"] > 0.8
    assert abs(final["metrics"]["accuracy"] - ref["metrics"]["accuracy"]) < 0.05
    # the matmuls really run in bfloat16 and the parameters stay float32
    state = jax.eval_shape(task.init_state, jax.random.PRNGKey(0))
    batch = {"x": jnp.zeros((64, 8, 8, 1)), "y": jnp.zeros((64,), jnp.int32)}
    dots = [e for e in jax.make_jaxpr(task.train_step)(state, batch).jaxpr.eqns if e.primitive.name == "dot_general"]
    assert dots and all(v.aval.dtype == jnp.bfloat16 for e in dots for v in e.invars)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state.params))
