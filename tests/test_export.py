"""`python -m launch.export`: artifacts of every family, run where `research` cannot be imported, compute the bits
the in-process model computes on real test inputs; the manifest; --step, --platforms, --overwrite; refusals."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import parallel
from research.errors import ConfigError
from research.evaluators.language_model import TextSampler
from research.export import check_out, check_platforms, export_run, finite
from research.families import load_run
from research.loop import restore_latest
from research.workdir import Workdir
from tests.conftest import REPO
from tests.export_runs import launch, runs  # noqa: F401  (the session's trained runs)

NO_RESEARCH = os.path.join(REPO, "tests", "no_research.py")

# Runs in a process where `import research` fails: loads each artifact with launch.artifact, calls the entries
# on the saved inputs (the char LM: feeds its carry back for every character, then samples greedily), saves
# every output.
WORKER = r"""
import json, sys
import numpy as np
from launch.artifact import Artifact

jobs = json.load(open(sys.argv[1]))
for job in jobs:
    artifact = Artifact.load(job["artifact"])
    inputs = dict(np.load(job["inputs"], allow_pickle=False))
    out = {}
    if "tokens" in inputs:  # the char LM: one step per character, carry fed back
        text = artifact.manifest["text"]
        tokens = inputs["tokens"]
        carry = {n: np.zeros((tokens.shape[1], text["hidden"]), np.float32) for n in text["carry"]}
        for t in range(tokens.shape[0]):
            res = artifact.call("step", {"token": tokens[t], **carry})
            carry = {n: res[n] for n in text["carry"]}
            out[f"logits_{t}"] = res["logits"]
            for n in text["carry"]:
                out[f"{n}_{t}"] = res[n]
        vocab, ids = text["vocab"], [text["vocab"].index(c) for c in job["prompt"]]
        carry = {n: np.zeros((1, text["hidden"]), np.float32) for n in text["carry"]}
        for i in ids:  # the prompt, then the most likely character each time
            res = artifact.call("step", {"token": np.array([i], np.int32), **carry})
            carry = {n: res[n] for n in text["carry"]}
        chars = []
        for _ in range(job["num_chars"]):
            i = int(np.argmax(res["logits"][0]))
            chars.append(vocab[i])
            res = artifact.call("step", {"token": np.array([i], np.int32), **carry})
            carry = {n: res[n] for n in text["carry"]}
        out["greedy"] = np.array("".join(chars))
    else:
        for entry, names in job["entries"].items():
            res = artifact.call(entry, {n: inputs[n] for n in names})
            out.update({f"{entry}.{k}": v for k, v in res.items()})
    np.savez(job["outputs"], **out)
print("research loaded:", any(m.split(".")[0] == "research" for m in sys.modules))
"""


def _restore(workdir, step=None, replica=0):
    wd = Workdir(workdir)
    module, cfg = load_run(wd)
    mesh = parallel.make_mesh()
    run = module.build(cfg, mesh, evaluate=False)
    state, step = restore_latest(run.task, wd, cfg.loop.seed, mesh, cfg.loop, replica=replica, step=step)
    return run, jax.device_get(state), step


def _references(name: str, workdir) -> tuple[dict, dict, dict]:
    """(inputs, {entry: input names}, {entry.output: in-process value}) for run `name` on real test inputs, from
    the task's own methods (not the export's wrappers)."""
    run, state, _ = _restore(workdir)
    task, data = run.task, run.dataset
    if name in ("mlp", "regress", "adding"):
        x = data.split("test")["x"]
        if name == "mlp":
            return {"x": x}, {"predict": ["x"]}, {"predict.logits": jax.jit(task.predict)(state, x)}
        std, mean = float(data.info.get("target_std", 1.0)), float(data.info.get("target_mean", 0.0))
        predict = jax.jit(lambda s, x: task.predict(s, x)[..., 0] * std + mean)
        return {"x": x}, {"predict": ["x"]}, {"predict.prediction": predict(state, x)}
    if name == "vae":
        x = data.split("test")["x"]
        mean, logvar = jax.jit(task.encode)(state, x)
        recon = jax.jit(lambda s, x: task.decode(s, task.encode(s, x)[0]))(state, x)
        return ({"x": x, "z": np.asarray(mean)}, {"encode": ["x"], "decode": ["z"], "reconstruct": ["x"]},
                {"encode.z": mean, "encode.z_logvar": logvar, "decode.x": jax.jit(task.decode)(state, mean),
                 "reconstruct.x": recon})
    if name in ("gan", "ring"):
        z = np.random.default_rng(0).standard_normal((128, task.cfg.z_dim)).astype(np.float32)
        if task.num_classes:
            label = (np.arange(128) % task.num_classes).astype(np.int32)
            return ({"z": z, "label": label}, {"generate": ["z", "label"]},
                    {"generate.x": jax.jit(task.generate)(state, z, label)})
        return {"z": z}, {"generate": ["z"]}, {"generate.x": jax.jit(task.generate)(state, z)}
    raise KeyError(name)


def _char_lm_references(workdir, prompt: str, num_chars: int):
    """Validation text as 4 streams of 24 characters, and the in-process logits and carries after each one (the
    model applied to one character with the previous carry); greedy text from research's own sampler."""
    run, state, _ = _restore(workdir)
    task = run.task
    tokens = run.dataset.split("validation")["tokens"][:96].reshape(4, 24).T.copy()  # (time, streams)
    apply = jax.jit(lambda p, t, c: task.model.apply({"params": p}, t[:, None], c))
    carry, refs = task.model.zero_carry(4), {}
    for t in range(tokens.shape[0]):
        logits, carry = apply(state.params, jnp.asarray(tokens[t]), carry)
        refs[f"logits_{t}"] = logits[:, 0]
        for k, layer in enumerate(carry):
            refs[f"c{k}_{t}"], refs[f"h{k}_{t}"] = layer
    greedy = TextSampler(task).generate(state, prompt, num_chars, 0.0, seed=0)
    return {"tokens": tokens}, refs, greedy


def _run_without_research(jobs, tmp_path) -> subprocess.CompletedProcess:
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    proc = subprocess.run([sys.executable, NO_RESEARCH, "-c", WORKER, str(tmp_path / "jobs.json")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "research loaded: False" in proc.stdout
    return proc


@pytest.mark.slow
def test_every_family_round_trips_bitwise_where_research_cannot_be_imported(runs, tmp_path):  # noqa: F811
    names = ["mlp", "regress", "vae", "gan", "ring", "adding"]
    runs.workdirs(*names, "char_lm")
    jobs, expected = [], {}
    for name in names:
        inputs, entries, expected[name] = _references(name, runs.workdir(name))
        np.savez(tmp_path / f"{name}_in.npz", **inputs)
        jobs.append({"artifact": str(runs.export(name)), "inputs": str(tmp_path / f"{name}_in.npz"),
                     "entries": entries, "outputs": str(tmp_path / f"{name}_out.npz")})
    prompt, num_chars = "ROMEO:", 40
    inputs, lm_refs, greedy = _char_lm_references(runs.workdir("char_lm"), prompt, num_chars)
    np.savez(tmp_path / "char_lm_in.npz", **inputs)
    jobs.append({"artifact": str(runs.export("char_lm")), "inputs": str(tmp_path / "char_lm_in.npz"),
                 "outputs": str(tmp_path / "char_lm_out.npz"), "prompt": prompt, "num_chars": num_chars})
    _run_without_research(jobs, tmp_path)

    for name in names:
        got = np.load(tmp_path / f"{name}_out.npz")
        assert set(got.files) >= set(expected[name]), (name, got.files)
        for key, want in expected[name].items():
            want = np.asarray(want)
            assert got[key].dtype == want.dtype and got[key].shape == want.shape, (name, key)
            assert np.array_equal(got[key], want), (name, key, np.abs(got[key] - want).max())
    got = np.load(tmp_path / "char_lm_out.npz")
    for key, want in lm_refs.items():
        assert np.array_equal(got[key], np.asarray(want)), key
    assert str(got["greedy"]) == greedy and len(greedy) == num_chars

    # What the outputs mean: mlp labels and accuracy as final.json has them; regression in the target's units;
    # generated images in [0, 1].
    mlp_final = json.loads((runs.workdir("mlp") / "final.json").read_text())
    mlp_out = np.load(tmp_path / "mlp_out.npz")
    y = _restore(runs.workdir("mlp"))[0].dataset.split("test")["y"]
    assert np.array_equal(mlp_out["predict.label"], np.argmax(mlp_out["predict.logits"], -1))
    assert float(np.mean(mlp_out["predict.label"] == y)) == mlp_final["metrics"]["accuracy"]
    reg_run = _restore(runs.workdir("regress"))[0]
    info, test = reg_run.dataset.info, reg_run.dataset.split("test")
    y_units = test["y"].astype(np.float64) * info["target_std"] + info["target_mean"]
    rmse = np.sqrt(np.mean((np.load(tmp_path / "regress_out.npz")["predict.prediction"] - y_units) ** 2))
    final_rmse = json.loads((runs.workdir("regress") / "final.json").read_text())["metrics"]["rmse"]
    assert rmse == pytest.approx(final_rmse, rel=1e-5) and 20 < rmse < 400  # disease-progression units
    images = np.load(tmp_path / "gan_out.npz")["generate.x"]
    assert images.shape == (128, 8, 8, 1) and images.min() >= 0 and images.max() <= 1


@pytest.mark.slow
def test_manifest_describes_the_run_and_the_functions(runs):  # noqa: F811
    out = runs.export("mlp")
    manifest = json.loads((out / "manifest.json").read_text())
    final = json.loads((runs.workdir("mlp") / "final.json").read_text())
    assert manifest["format"] == "research-export" and manifest["format_version"] == 1
    assert manifest["family"] == "mlp" and manifest["platforms"] == ["cpu"]
    assert manifest["jax_version"] == jax.__version__
    source = manifest["source"]
    assert source["step"] == final["step"] == 30 and source["params_sha256"] == final["params_sha256"]
    assert source["metrics"] == final["metrics"] and source["flags"]["dataset"] == "digits"
    assert manifest["params"]["sha256"] == hashlib.sha256((out / "params.npz").read_bytes()).hexdigest()
    with np.load(out / "params.npz", allow_pickle=False) as npz:  # no object arrays: readable without pickle
        assert "params/Dense_0/kernel" in npz.files and any(f.startswith("model_state/batch_stats") for f in npz.files)
        assert not any("opt_state" in f for f in npz.files)
    entry = manifest["entries"]["predict"]
    assert entry["inputs"][0]["shape"] == ["batch", 8, 8, 1] and entry["inputs"][0]["dtype"] == "float32"
    assert {o["name"]: o["shape"] for o in entry["outputs"]} == {"logits": ["batch", 10], "label": ["batch"]}
    assert (out / entry["file"]).stat().st_size > 0
    gan = json.loads((runs.export("gan") / "manifest.json").read_text())
    assert gan["sample"] == {"entry": "generate", "noise": "z", "noise_dim": 16, "label": "label",
                             "num_classes": 10, "output": "x", "images": True}
    assert gan["entries"]["generate"]["inputs"][1]["range"] == [0, 10]
    lm = json.loads((runs.export("char_lm") / "manifest.json").read_text())
    assert lm["text"]["carry"] == ["c0", "h0", "c1", "h1"] and len(lm["text"]["vocab"]) == 65


@pytest.mark.slow
def test_older_step_several_platforms_and_overwrite(runs, tmp_path):  # noqa: F811
    from launch.artifact import Artifact

    out = runs.export("mlp", "--step=15", "--platforms=cpu,cuda")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["step"] == 15 and manifest["platforms"] == ["cpu", "cuda"]
    assert manifest["source"]["metrics"] == {} and manifest["source"]["metrics_step"] is None  # not evaluated at 15
    run, state, step = _restore(runs.workdir("mlp"), step=15)
    assert step == 15
    x = run.dataset.split("test")["x"]
    got = Artifact.load(out).call("predict", {"x": x})["logits"]
    assert np.array_equal(got, np.asarray(jax.jit(run.task.predict)(state, x)))
    final = json.loads((runs.workdir("mlp") / "final.json").read_text())
    assert manifest["source"]["params_sha256"] != final["params_sha256"]

    # --out holding an export: refused, then replaced with --overwrite
    target = tmp_path / "exp"
    export_run(Workdir(runs.workdir("mlp")), target, step=15)
    with pytest.raises(ConfigError, match="already holds an export"):
        export_run(Workdir(runs.workdir("mlp")), target)
    assert json.loads((target / "manifest.json").read_text())["source"]["step"] == 15
    export_run(Workdir(runs.workdir("mlp")), target, overwrite=True)
    assert json.loads((target / "manifest.json").read_text())["source"]["step"] == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]  # no temporary directories left behind


@pytest.mark.slow
def test_a_replica_of_a_num_seeds_run(runs, tmp_path):  # noqa: F811
    from launch.artifact import Artifact

    (workdir,) = runs.workdirs("seeds")
    final = json.loads((workdir / "final.json").read_text())
    manifest = export_run(Workdir(workdir), tmp_path / "replica1", replica=1)
    mine = final["seeds"][1]
    assert manifest["source"]["replica"] == 1 and manifest["source"]["params_sha256"] == mine["params_sha256"]
    assert manifest["source"]["metrics"] == mine["metrics"] != final["seeds"][0]["metrics"]
    run, state, _ = _restore(workdir, replica=1)
    x = run.dataset.split("test")["x"]
    got = Artifact.load(tmp_path / "replica1").call("predict", {"x": x})["logits"]
    assert np.array_equal(got, np.asarray(jax.jit(run.task.predict)(state, x)))
    with pytest.raises(ConfigError, match="replica"):
        export_run(Workdir(workdir), tmp_path / "replica2", replica=2)


@pytest.mark.slow
def test_refusals(runs, tmp_path, error_line):  # noqa: F811
    (wd,) = runs.workdirs("mlp")
    blank = tmp_path / "blank"
    blank.mkdir()
    (blank / "config.json").write_text((wd / "config.json").read_text())  # a run that never saved a checkpoint
    alien = tmp_path / "alien"
    alien.mkdir()
    (alien / "config.json").write_text(json.dumps({"family": "transformer", "config": {}}))
    cases = [
        (tmp_path / "missing", {}, "does not exist"),
        (tmp_path, {}, "config.json is missing"),
        (blank, {}, "no checkpoint"),
        (alien, {}, "unknown family 'transformer'"),
        (wd, {"step": 0}, "--step must be a positive"),
        (wd, {"step": 7}, "no checkpoint at step 7 .* saved steps: 15, 30"),
        (wd, {"platforms": ["cpu", "gpu"]}, "--platforms=cpu,gpu"),
        (wd, {"platforms": ["cpu", "cpu"]}, "name each platform once"),
        (wd, {"fmt": "onnx"}, "unknown --format"),
    ]
    for workdir, kwargs, message in cases:
        with pytest.raises(ConfigError, match=message):
            export_run(Workdir(workdir), tmp_path / "out", **kwargs)
        assert not (tmp_path / "out").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty and holds no export"):
        export_run(Workdir(wd), tmp_path / "busy")
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r'pip install -e "\.\[tf\]"'):
            export_run(Workdir(wd), tmp_path / "out", fmt="saved_model")

    # The command line: one line on stderr, exit 2.
    exported = runs.export("mlp")
    for args, message in [((f"--workdir={wd}",), "--out is required"),
                          ((f"--workdir={wd}", f"--out={tmp_path / 'o'}", "--platforms=cpu,metal"), "metal"),
                          ((f"--workdir={wd}", f"--out={exported}"), "already holds an export"),
                          ((f"--workdir={wd}", f"--out={tmp_path / 'o'}", "--step=29"), "no checkpoint at step 29")]:
        proc = launch("export", *args)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert message in error_line(proc)


def test_cheap_checks():
    assert check_platforms(["cpu", " cuda"]) == ("cpu", "cuda")
    for bad in ([], ["tpu", "tpu"], ["CPU"]):
        with pytest.raises(ConfigError):
            check_platforms(bad)


def test_manifest_values_are_standard_json():
    value = {"metrics": {"mode_kl": float("nan"), "modes": 8.0}, "shape": (2, float("inf"))}
    assert finite(value) == {"metrics": {"mode_kl": None, "modes": 8.0}, "shape": [2, None]}
    json.dumps(finite(value), allow_nan=False)


def test_check_out(tmp_path):
    check_out(tmp_path / "new", overwrite=False)
    check_out(tmp_path, overwrite=False)  # empty
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(ConfigError, match="already holds an export"):
        check_out(tmp_path, overwrite=False)
    check_out(tmp_path, overwrite=True)
    with pytest.raises(ConfigError, match="is a file"):
        check_out(tmp_path / "manifest.json", overwrite=True)


@pytest.mark.slow
def test_saved_model_where_tensorflow_is_installed(runs, tmp_path):  # noqa: F811
    tf = pytest.importorskip("tensorflow")  # pip install -e ".[tf]"; docs/deploy.md has what we measured
    (workdir,) = runs.workdirs("vae")
    out = tmp_path / "sm"
    export_run(Workdir(workdir), out, fmt="saved_model")
    manifest = json.loads((out / "manifest.json").read_text())
    loaded = tf.saved_model.load(str(out / manifest["saved_model"]["dir"]))
    x = np.random.default_rng(0).random((5, 8, 8, 1), np.float32)
    from launch.artifact import Artifact

    want = Artifact.load(out).call("reconstruct", {"x": x})["x"]
    got = loaded.signatures["reconstruct"](x=tf.constant(x))["x"].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
