"""Sweep specs: parsing, validation errors, grid expansion, flag checks by the launch module itself."""

import glob
import os
import sys

import pytest

from research.errors import ConfigError
from research.sweep import spec as spec_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = "experiments/mlp/quickstart.flags"


@pytest.fixture(autouse=True)
def _at_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # spec paths are relative to the current directory


def base(**extra):
    return {"launch": "launch.mlp", "flagfile": QUICK, "seeds": [0, 1], "metrics": ["accuracy", "loss"], **extra}


def test_grid_expansion_order_keys_and_commands():
    spec = spec_lib.parse(base(
        flags={"steps": 20},
        axes={"hidden": [[64], [32, 32]],
              "optimizer": {"sgd": {"optimizer": "sgd", "learning_rate": 0.1},
                            "adamw": {"optimizer": "adamw", "learning_rate": 1e-3, "weight_decay": 1e-4}}}),
        "experiments/sweeps/x.toml")
    assert spec.name == "x" and spec.objective == "accuracy" and spec.direction == "maximize"
    points = spec.points()
    assert len(points) == 2 * 2 * 2
    assert [p.key for p in points[:3]] == ["hidden=64,optimizer=sgd,seed=0", "hidden=64,optimizer=sgd,seed=1",
                                           "hidden=64,optimizer=adamw,seed=0"]
    last = points[-1]
    assert last.labels == {"hidden": "32,32", "optimizer": "adamw"} and last.seed == 1
    assert last.name == "hidden-32_32_optimizer-adamw_seed-1"
    assert last.flags == {"hidden": "32,32", "optimizer": "adamw", "learning_rate": "0.001", "weight_decay": "0.0001"}
    cmd = spec.command(last.flags, last.flagfiles, last.seed, "/tmp/w")
    assert cmd[:3] == [sys.executable, "-m", "launch.mlp"]
    assert cmd[3:] == [f"--flagfile={os.path.join(REPO, QUICK)}", "--steps=20", "--hidden=32,32", "--optimizer=adamw",
                       "--learning_rate=0.001", "--weight_decay=0.0001", "--seed=1", "--workdir=/tmp/w"]
    assert len({p.name for p in points}) == len(points)


def test_no_axes_is_one_combination_and_variant_flagfiles_come_first():
    spec = spec_lib.parse(base(axes={"run": {"quick": {"flagfile": QUICK, "steps": 5}}}))
    (p0, p1) = spec.points()
    assert p0.flagfiles == (os.path.join(REPO, QUICK),) and p0.flags == {"steps": "5"}
    cmd = spec.command(p0.flags, p0.flagfiles, 0, "w")
    assert cmd.index(f"--flagfile={os.path.join(REPO, QUICK)}") < cmd.index("--steps=5")
    assert [p.key for p in spec_lib.parse(base()).points()] == ["seed=0", "seed=1"]


@pytest.mark.parametrize("raw, message", [
    (base(axes={"hidden": []}), "[axes] hidden is empty"),
    (base(axes={"opt": {}}), "[axes] opt is empty"),
    (base(axes={"opt": {"a": {}}}), "must be a non-empty table"),
    (base(axes={"seed": [1, 2]}), "--seed is set by the sweep itself"),
    (base(axes={"steps": [1, 2]}, flags={"steps": 3}), "--steps is set both in [flags] and by axis"),
    (base(axes={"a": {"x": {"steps": 1}}, "steps": [2]}), "--steps is set by two axes"),
    (base(axes={"dropout": [0.1, 0.1]}), "repeats a value"),
    (base(axes={"dropout": [{"a": 1}]}), "is not a flag value"),
    (base(search={"n_trials": 3, "params": {"learning_rate": {"low": 1e-1, "high": 1e-3, "log": True}}},
          direction="maximize"), "bad range: low (0.1) must be below high (0.001)"),
    (base(search={"n_trials": 3, "params": {"learning_rate": {"low": 0.0, "high": 1.0, "log": True}}},
          direction="maximize"), "bad range: a log range needs low > 0"),
    (base(search={"n_trials": 3, "params": {"learning_rate": {"low": 1e-3}}}, direction="maximize"), "bad range"),
    (base(search={"n_trials": 0, "params": {"learning_rate": {"low": 1e-3, "high": 1.0}}}, direction="maximize"),
     "n_trials must be a positive integer"),
    (base(search={"n_trials": 3, "params": {"learning_rate": {"low": 1e-3, "high": 1.0}}}), "a search must say"),
    (base(search={"n_trials": 3, "params": {"x": {"low": 0, "high": 1}}}, axes={"hidden": [[8]]}), "not both"),
    (base(seeds=[]), "seeds must be a non-empty list"),
    (base(seeds=[1, 1]), "seeds repeat"),
    (base(metrics=[]), "metrics must be a non-empty list"),
    (base(objective="f1"), "objective 'f1' must be one of the metrics"),
    (base(flagfile="experiments/mlp/nope.flags"), "flagfile experiments/mlp/nope.flags does not exist"),
    ({**base(), "launch": "launch/mlp.py"}, "launch must name a Python module"),
    (base(axis={"hidden": [[8]]}), "unknown key 'axis'"),
    (base(axes={"optimizer": ["sgd", "adam"]}, paper={"rows": [{"optimizer": "rmsprop", "accuracy": 0.5}]}),
     "axis optimizer has no label 'rmsprop'"),
    (base(axes={"optimizer": ["sgd", "adam"]}, paper={"rows": [{"optimizer": "sgd", "bleu": 0.5}]}),
     "'bleu' is neither an axis nor one of the metrics"),
])
def test_structural_errors(raw, message):
    with pytest.raises(ConfigError) as e:
        spec_lib.parse(raw, "s.toml")
    assert message in str(e.value)


def test_load_reports_toml_errors_with_the_path(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("launch = \n")
    with pytest.raises(ConfigError, match="bad.toml is not valid TOML"):
        spec_lib.load(str(bad))
    with pytest.raises(ConfigError, match="cannot read spec"):
        spec_lib.load(str(tmp_path / "missing.toml"))


def test_flags_are_checked_by_the_launch_module():
    """Unknown flag names and bad values are spec errors, found by asking launch.mlp (one subprocess each)."""
    typo = spec_lib.parse(base(axes={"learning_rat": [0.1, 0.01]}), "typo.toml")
    with pytest.raises(ConfigError) as e:
        spec_lib.check_flags(typo)
    assert "unknown flag --learning_rat in [axes] learning_rat" in str(e.value)
    assert "did you mean --learning_rate?" in str(e.value)
    bad_value = spec_lib.parse(base(axes={"opt": {"good": {"optimizer": "sgd"}, "bad": {"optimizer": "lion"}}}))
    with pytest.raises(ConfigError, match=r"opt=bad: flag --optimizer=lion: value should be one of"):
        spec_lib.check_flags(bad_value)
    # values that parse but that the run itself would refuse are found before any trial starts, too
    refused = spec_lib.parse(base(axes={"opt": {"sgd": {"optimizer": "sgd"}, "adamw": {"optimizer": "adamw"}}}))
    with pytest.raises(ConfigError, match=r"opt=adamw: optimizer flags: adamw needs weight_decay > 0"):
        spec_lib.check_flags(refused)


def test_shipped_mlp_spec_expands_to_twelve_runs_in_four_trials():
    spec = spec_lib.load("experiments/sweeps/mlp_optimizers.toml")
    assert [a.name for a in spec.axes] == ["optimizer"]
    assert spec.axes[0].labels() == ["sgd", "momentum", "adam", "adamw"] and spec.seeds == (0, 1, 2)
    assert spec.vectorize_seeds and [p.key for p in spec.points()] == [
        f"optimizer={o},seeds=0-2" for o in ("sgd", "momentum", "adam", "adamw")]
    assert sum(len(spec.seed_points(labels)) for labels in spec.combos()) == 12


SHIPPED = sorted(glob.glob(os.path.join(REPO, "experiments", "sweeps", "*.toml"))
                 + glob.glob(os.path.join(REPO, "experiments", "repro", "*.toml")))


@pytest.mark.parametrize("path", SHIPPED, ids=os.path.basename)
def test_shipped_specs_are_valid(path):
    """Every shipped spec parses (every flagfile it names exists) and its launch module accepts all of its flags."""
    spec_lib.check_flags(spec_lib.load(os.path.relpath(path, REPO)))


def test_search_spec_and_metric_lookup():
    spec = spec_lib.parse(base(direction="maximize", search={"n_trials": 4, "sampler": "random", "params": {
        "learning_rate": {"low": 1e-4, "high": 1e-1, "log": True}, "batch_size": {"low": 8, "high": 64, "step": 8},
        "activation": {"choices": ["relu", "tanh"]}}}))
    kinds = {p.name: p.kind for p in spec.search.params}
    assert kinds == {"learning_rate": "float", "batch_size": "int", "activation": "categorical"}
    assert spec.search.params[1].text(16.0) == "16" and spec.search.params[0].text(0.001) == "0.001"
    final = {"metrics": {"accuracy": 0.5}, "train_metrics": {"loss": 2.0}, "wall_seconds": 3, "step": True}
    assert spec_lib.metric(final, "accuracy") == 0.5
    assert spec_lib.metric(final, "train_metrics.loss") == 2.0
    assert spec_lib.metric(final, "wall_seconds") == 3.0
    assert spec_lib.metric(final, "step") is None and spec_lib.metric(final, "f1") is None


# ------------------------------------------------------------------------------------------ vectorised seeds
def test_vectorized_points_are_one_block_per_combination():
    spec = spec_lib.parse(base(seeds=[3, 4, 5], vectorize_seeds=True, flags={"steps": 20},
                               axes={"optimizer": {"sgd": {"optimizer": "sgd"}, "adam": {"optimizer": "adam"}}}))
    points = spec.points()
    assert [(p.key, p.name, p.seed, p.num_seeds, p.seeds) for p in points] == [
        ("optimizer=sgd,seeds=3-5", "optimizer-sgd_seeds-3-5", 3, 3, (3, 4, 5)),
        ("optimizer=adam,seeds=3-5", "optimizer-adam_seeds-3-5", 3, 3, (3, 4, 5))]
    cmd = spec.command(points[1].flags, points[1].flagfiles, points[1].seed, "/tmp/w", points[1].num_seeds)
    assert cmd[-4:] == ["--optimizer=adam", "--seed=3", "--num_seeds=3", "--workdir=/tmp/w"]
    assert [p.key for p in spec.seed_points({"optimizer": "adam"})] == [
        "optimizer=adam,seed=3", "optimizer=adam,seed=4", "optimizer=adam,seed=5"]
    assert spec.block({"optimizer": "sgd"}, [7]).key == "optimizer=sgd,seeds=7-7"
    # vectorising changes what a trial is: a plain sweep's ledger cannot be continued vectorised (and vice versa)
    plain = spec_lib.parse(base(seeds=[3, 4, 5], flags={"steps": 20},
                                axes={"optimizer": {"sgd": {"optimizer": "sgd"}, "adam": {"optimizer": "adam"}}}))
    assert spec.identity() == {"vectorize_seeds": True, **plain.identity()}
    assert "vectorize_seeds" not in plain.identity()
    assert spec.record()["vectorize_seeds"] is True and plain.record()["vectorize_seeds"] is False


@pytest.mark.parametrize("raw, message", [
    (base(seeds=[0, 2], vectorize_seeds=True), "seeds must be consecutive increasing integers such as [0, 1, 2]; "
                                               "got [0, 2]"),
    (base(seeds=[2, 1], vectorize_seeds=True), "must be consecutive increasing"),
    (base(vectorize_seeds="yes"), "vectorize_seeds must be true or false"),
    (base(flags={"num_seeds": 3}), "--num_seeds is set by the sweep: put `vectorize_seeds = true`"),
    (base(axes={"num_seeds": [1, 2]}), "--num_seeds is set by the sweep"),
])
def test_vectorized_spec_errors(raw, message):
    with pytest.raises(ConfigError) as e:
        spec_lib.parse(raw, "s.toml")
    assert message in str(e.value)


def test_seed_finals_split_a_vectorised_final_json():
    final = {"step": 20, "wall_seconds": 7.5, "train_metrics": {"loss": 1.0}, "params_sha256": "all",
             "metrics": {"accuracy": 0.5}, "metrics_std": {"accuracy": 0.1},
             "seeds": [{"seed": 4, "metrics": {"accuracy": 0.4}, "params_sha256": "a"},
                       {"seed": 5, "metrics": {"accuracy": 0.6}, "params_sha256": "b"}]}
    (s4, f4), (s5, f5) = spec_lib.seed_finals(final, 4, 2)
    assert (s4, s5) == (4, 5)
    assert f5 == {"step": 20, "wall_seconds": 7.5, "train_metrics": {"loss": 1.0}, "metrics": {"accuracy": 0.6},
                  "params_sha256": "b", "vectorized": {"first_seed": 4, "num_seeds": 2}}
    assert spec_lib.metric(f4, "accuracy") == 0.4 and spec_lib.metric(f4, "wall_seconds") == 7.5
    with pytest.raises(ValueError, match=r"final.json holds seeds \[4, 5\], expected \[3, 4\]"):
        spec_lib.seed_finals(final, 3, 2)
    with pytest.raises(ValueError, match="no per-seed results"):
        spec_lib.seed_finals({"metrics": {"accuracy": 0.5}}, 0, 2)
    single = {"metrics": {"accuracy": 0.5}, "step": 1}  # a one-seed block runs without replicas
    assert spec_lib.seed_finals(single, 7, 1) == [(7, single)]
    assert spec_lib.consecutive_runs([6, 0, 1, 2, 5]) == [[0, 1, 2], [5, 6]] and spec_lib.consecutive_runs([]) == []


STAND_IN = '''
from absl import flags
flags.DEFINE_string("workdir", None, "")
flags.DEFINE_integer("seed", 0, "")
flags.DEFINE_float("lr", 0.1, "")
'''
WITH_REPLICAS = STAND_IN + '''
flags.DEFINE_integer("num_seeds", 1, "")
flags.DEFINE_bool("red_blue", False, "")
'''


def test_vectorized_flags_are_checked_by_the_launch_module(tmp_path, monkeypatch):
    """--num_seeds must exist; --red_blue (the loop refuses it with --num_seeds) and a --num_seeds hidden in a
    flagfile of a plain sweep are spec errors. Stand-in modules keep the probes fast."""
    (tmp_path / "no_replicas.py").write_text(STAND_IN)
    (tmp_path / "replicas_ok.py").write_text(WITH_REPLICAS)
    flagfile = tmp_path / "rb.flags"
    flagfile.write_text("--red_blue\n--num_seeds=2\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))

    def spec(launch, **extra):
        return spec_lib.parse({"launch": launch, "seeds": [0, 1], "metrics": ["score"], **extra}, "v.toml")

    with pytest.raises(ConfigError, match="vectorize_seeds = true needs a launch module .* no_replicas does not "
                                          "define --num_seeds"):
        spec_lib.check_flags(spec("no_replicas", vectorize_seeds=True))
    spec_lib.check_flags(spec("no_replicas"))  # a plain sweep does not need it
    spec_lib.check_flags(spec("replicas_ok", vectorize_seeds=True, axes={"lr": [0.1, 0.2]}))
    with pytest.raises(ConfigError, match=r"rb=on: --red_blue trains its own two replicas and cannot be combined"):
        spec_lib.check_flags(spec("replicas_ok", vectorize_seeds=True,
                                  axes={"rb": {"off": {"lr": 0.1}, "on": {"red_blue": True}}}))
    with pytest.raises(ConfigError, match=r"the flagfiles set --num_seeds=2, but each seed of the sweep is its own"):
        spec_lib.check_flags(spec("replicas_ok", flagfile=str(flagfile)))
