"""Export a trained run to a portable artifact: one `jax.export` function (serialized StableHLO) per entry point,
the parameters beside them, and a manifest saying what each function takes and returns.

    <out>/manifest.json          format version, family, entries (file, inputs, outputs), the source run (flags,
                                 step, params_sha256, metrics), jax / jaxlib versions, platforms
    <out>/params.npz             the inference parameters: one .npy member per array, read with allow_pickle=False
    <out>/<entry>.jax_export     `Exported.serialize()` of `fn(params, *inputs) -> {output name: array}`
    <out>/saved_model/1/         only with `saved_model=True`: a TF SavedModel of the same functions (jax2tf)

Entries (inputs exactly as the dataset registry's arrays hold them; any preprocessing is inside the function):
    mlp, rnn supervised   predict(x) -> logits, label (classifiers) | prediction (regressors: in the targets'
                          original units, standardised targets scaled back with info target_std / target_mean)
    autoencoder           encode(x) -> z [, z_logvar]; decode(z) -> x (pixels in [0, 1]); reconstruct(x) -> x
    gan                   generate(z [, label]) -> x (images in [0, 1], or 2-D points)
    rnn char_lm           step(token, carry...) -> logits, carry...; the manifest's `text` holds the vocabulary
                          and names the carry (zeros to start), enough to sample text with jax and numpy alone
Every input and output has a symbolic leading dimension "batch": one artifact serves any batch size.

Why the parameters are stored beside the functions rather than embedded as constants:
- the exported program is then the program the run evaluates in-process (parameters are arguments of both), so
  on CPU it computes the same bits; as constants, XLA could fold arithmetic on them (batch norm's
  scale * rsqrt(var + eps)) at compile time with its host evaluator, which need not round like the compiled code;
- one copy serves every entry (encode, decode and reconstruct share the weights) and the serialized functions
  stay a few kB;
- `.npz` without pickle is read by numpy alone (`allow_pickle=False`), so the server needs nothing beyond jax and
  numpy (safetensors would be one more package); the manifest keeps its sha256.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib.metadata
import io
import json
import math
import os
import pathlib
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from research import families, parallel
from research.data import Dataset, facts
from research.errors import ConfigError
from research.loop import restore_latest
from research.state import fingerprint
from research.tasks.autoencoder import AutoencoderTask
from research.tasks.char_lm import CharLMTask
from research.tasks.gan import GANTask
from research.tasks.supervised import SupervisedTask
from research.workdir import Workdir, parse_flags
from research.writers import read_metrics

FORMAT, FORMAT_VERSION = "research-export", 1  # launch/artifact.py reads these (it cannot import this module)
MANIFEST, PARAMS_FILE, ENTRY_SUFFIX, SAVED_MODEL_DIR = "manifest.json", "params.npz", ".jax_export", "saved_model"
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # what jax.export lowers for
FORMATS = ("jax", "saved_model")
BATCH = "batch"  # the symbolic leading dimension of every input and output
# State fields that only training reads; dropped so that the artifact holds what inference needs.
_TRAINING_ONLY = ("opt_state", "g_opt_state", "d_opt_state", "d_params", "d_state", "rng", "step", "carry")


@dataclasses.dataclass(frozen=True)
class Tensor:
    """An input of an entry: name, shape (BATCH for the symbolic batch dimension) and dtype."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str
    doc: str = ""
    range: tuple[int, int] | None = None  # integer inputs (ids): valid values lo <= v < hi

    def describe(self) -> dict[str, Any]:
        out = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "doc": self.doc}
        return out if self.range is None else {**out, "range": list(self.range)}

    def spec(self, batch: Any) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(tuple(batch if d == BATCH else d for d in self.shape), np.dtype(self.dtype))


@dataclasses.dataclass(frozen=True)
class Entry:
    """An exported function: `fn(state, *inputs) -> {output name: array}` of the run's (inference) state."""

    name: str
    fn: Callable[..., dict[str, jax.Array]]
    inputs: tuple[Tensor, ...]
    doc: str


# ---- the entry points of each family's task

def _supervised(task: SupervisedTask, dataset: Dataset) -> tuple[list[Entry], dict[str, Any]]:
    x = Tensor("x", (BATCH, *dataset.input_shape), "float32", f"like the x arrays of dataset {dataset.name}")
    if task.cfg.kind == "classify":
        def predict(state, x):
            logits = task.predict(state, x)
            return {"logits": logits, "label": jnp.argmax(logits, -1).astype(jnp.int32)}

        doc = "class logits and the most likely class"
        extra = {"kind": "classify", "num_classes": dataset.num_classes}
    else:
        std, mean = float(dataset.info.get("target_std", 1.0)), float(dataset.info.get("target_mean", 0.0))

        def predict(state, x):
            return {"prediction": task.predict(state, x)[..., 0] * std + mean}

        doc = "regression output in the targets' original units"
        extra = {"kind": "regress", "target_std": std, "target_mean": mean}
    return [Entry("predict", predict, (x,), doc)], extra


def _autoencoder(task: AutoencoderTask, dataset: Dataset) -> tuple[list[Entry], dict[str, Any]]:
    shape, latent = dataset.input_shape, task.model.latent
    x = Tensor("x", (BATCH, *shape), "float32", f"like the x arrays of dataset {dataset.name} (pixels in [0, 1])")
    z = Tensor("z", (BATCH, latent), "float32", "codes (a VAE's: the posterior mean, or draws from N(0, I))")

    def encode(state, x):
        mean, logvar = task.encode(state, x)
        return {"z": mean} if logvar is None else {"z": mean, "z_logvar": logvar}

    def decode(state, z):
        return {"x": task.decode(state, z)}

    def reconstruct(state, x):
        return {"x": task.decode(state, task.encode(state, x)[0])}

    entries = [Entry("encode", encode, (x,), "the code of x (a VAE: posterior mean and log-variance)"),
               Entry("decode", decode, (z,), "pixels in [0, 1] decoded from codes"),
               Entry("reconstruct", reconstruct, (x,), "decode(encode(x)): pixels in [0, 1]")]
    extra: dict[str, Any] = {"latent": latent, "variational": bool(task.model.variational)}
    if task.model.variational:  # a generator too: decode draws from the prior
        extra["sample"] = {"entry": "decode", "noise": "z", "noise_dim": latent, "label": None, "num_classes": 0,
                           "output": "x", "images": len(shape) == 3}
    return entries, extra


def _gan(task: GANTask, dataset: Dataset) -> tuple[list[Entry], dict[str, Any]]:
    inputs = [Tensor("z", (BATCH, task.cfg.z_dim), "float32", "standard normal noise")]
    if task.num_classes:
        inputs.append(Tensor("label", (BATCH,), "int32", "class of each sample", (0, task.num_classes)))

    def generate(state, z, label=None):
        return {"x": task.generate(state, z, label)}

    what = "images in [0, 1]" if task.images else "2-D points"
    extra = {"images": task.images, "sample": {
        "entry": "generate", "noise": "z", "noise_dim": task.cfg.z_dim, "label": "label" if task.num_classes else None,
        "num_classes": task.num_classes, "output": "x", "images": task.images}}
    return [Entry("generate", generate, tuple(inputs), f"samples: {what}")], extra


def carry_names(cell: str, layers: int) -> list[str]:
    """Names of a char LM's carry arrays in the flattened order of its carry: c0, h0, c1, h1... (GRU: h0, h1...)."""
    return [n for k in range(layers) for n in ((f"c{k}", f"h{k}") if cell == "lstm" else (f"h{k}",))]


def _char_lm(task: CharLMTask, dataset: Dataset) -> tuple[list[Entry], dict[str, Any]]:
    model = task.model
    names = carry_names(model.cell, model.layers)
    treedef = jax.tree.structure(model.zero_carry(1))
    inputs = (Tensor("token", (BATCH,), "int32", "id of the current character (token i is text.vocab[i])",
                     (0, len(task.vocab))),
              *(Tensor(n, (BATCH, model.hidden), "float32", "recurrent state (zeros at the start)") for n in names))

    def step(state, token, *carry):
        logits, carry = task.step(state.params, token, jax.tree.unflatten(treedef, carry))
        return {"logits": logits, **dict(zip(names, jax.tree.leaves(carry), strict=True))}

    extra = {"text": {"vocab": task.vocab.chars, "entry": "step", "token": "token", "logits": "logits",
                      "carry": names, "initial_carry": "zeros", "hidden": model.hidden}}
    return [Entry("step", step, inputs, "one character per stream: next-character logits and the new carry")], extra


def entries_of(task: Any, dataset: Dataset) -> tuple[list[Entry], dict[str, Any]]:
    """The entry points of a run's task, and what the manifest says about them (kind, sampling, vocabulary)."""
    for cls, build in ((SupervisedTask, _supervised), (AutoencoderTask, _autoencoder), (GANTask, _gan),
                       (CharLMTask, _char_lm)):
        if isinstance(task, cls):
            return build(task, dataset)
    raise ConfigError(f"no export is defined for a {type(task).__name__}")


# ---- parameters

def inference_state(state: Any) -> Any:
    """`state` without what only training reads (optimizer states, the critic, the RNG, the step, a carry)."""
    return state.replace(**{f: None for f in _TRAINING_ONLY if hasattr(state, f)})


def _key_name(entry: Any) -> str:
    for attr in ("name", "key", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def flatten_params(state: Any) -> tuple[dict[str, np.ndarray], Callable[[dict[str, Any]], Any]]:
    """({"params/Dense_0/kernel": array, ...}, a function rebuilding the state from such a dict)."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(jax.device_get(state))
    names = ["/".join(_key_name(k) for k in path) for path, _ in leaves]
    if len(set(names)) != len(names):
        raise ValueError(f"parameter names collide: {sorted(names)}")
    arrays = {}
    for name, (_, leaf) in zip(names, leaves, strict=True):
        arr = np.asarray(leaf)
        if arr.dtype.kind not in "fiub" or arr.dtype.itemsize > 8 or arr.dtype.name == "bfloat16":
            raise ConfigError(f"parameter {name} has dtype {arr.dtype}, which the .npz format cannot hold portably")
        arrays[name] = arr
    return arrays, lambda params: jax.tree_util.tree_unflatten(treedef, [params[n] for n in names])


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """`arrays` as an uncompressed .npz (numpy's zip of .npy files; no object arrays, so no pickle)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


# ---- exporting

def export_entry(entry: Entry, params: dict[str, np.ndarray], rebuild: Callable[[dict[str, Any]], Any],
                 platforms: Sequence[str]) -> jax.export.Exported:
    """`jax.export` of `fn(params, *inputs) = entry.fn(rebuild(params), *inputs)` with a symbolic batch."""
    (batch,) = jax.export.symbolic_shape(BATCH)

    def fn(params, *inputs):
        return entry.fn(rebuild(params), *inputs)

    fn.__name__ = entry.name
    params_spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in params.items()}
    return jax.export.export(jax.jit(fn), platforms=tuple(platforms))(params_spec, *(t.spec(batch) for t in
                                                                                       entry.inputs))


def _shape(shape: Sequence[Any]) -> list[int | str]:
    return [d if isinstance(d, int) else str(d) for d in shape]


def _outputs(exp: jax.export.Exported) -> list[dict[str, Any]]:
    index = jax.tree_util.tree_unflatten(exp.out_tree, range(len(exp.out_avals)))
    return [{"name": name, "shape": _shape(exp.out_avals[i].shape), "dtype": str(exp.out_avals[i].dtype)}
            for name, i in sorted(index.items(), key=lambda kv: kv[1])]


def check_platforms(platforms: Sequence[str]) -> tuple[str, ...]:
    """The platforms, validated (ConfigError for an unknown or repeated name, or none)."""
    platforms = tuple(p.strip() for p in platforms if p.strip())
    unknown = [p for p in platforms if p not in PLATFORMS]
    if unknown or not platforms or len(set(platforms)) != len(platforms):
        raise ConfigError(f"--platforms={','.join(platforms)}: name each platform once, from {', '.join(PLATFORMS)}")
    return platforms


def check_out(out: pathlib.Path, overwrite: bool) -> None:
    """Refuse an --out that holds an export (unless `overwrite`), that holds anything else, or that is a file."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out={out} is a file, not a directory")
    if (out / MANIFEST).exists():
        if not overwrite:
            raise ConfigError(f"--out={out} already holds an export; use --overwrite to replace it, or another --out")
    elif out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"--out={out} is not empty and holds no export; choose a new or an empty directory")


def _source_metrics(workdir: Workdir, step: int, final: dict[str, Any] | None, seed: int | None
                    ) -> tuple[dict[str, Any], int | None]:
    """The run's test metrics at `step`: final.json's for its final step, else the metrics.jsonl row of that step;
    `seed`: those of the replica of a --num_seeds run trained with that seed (not the mean over replicas)."""
    if final and final.get("step") == step:
        if seed is None:
            return dict(final.get("metrics", {})), step
        mine = [r["metrics"] for r in final.get("seeds", []) if r.get("seed") == seed]
        return (dict(mine[0]), step) if mine else ({}, None)
    split = "test" if seed is None else f"test_seed{seed}"
    rows = [r for r in read_metrics(workdir.path) if r.get("split") == split and r.get("step") == step]
    if rows:
        return {k: v for k, v in rows[-1].items() if k not in ("step", "split", "time", "elapsed")}, step
    return {}, None


def finite(value: Any) -> Any:
    """`value` with non-finite floats (a NaN metric) as None: standard JSON, which every client can parse."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def _publish(tmp: pathlib.Path, out: pathlib.Path) -> None:
    """Move the finished export `tmp` to `out` (replacing an export there) so readers never see half of one."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)


def export_run(workdir: Workdir, out: str | os.PathLike, *, step: int | None = None,
               platforms: Sequence[str] = ("cpu",), replica: int = 0, overwrite: bool = False,
               fmt: str = "jax") -> dict[str, Any]:
    """Export the run in `workdir` (its latest checkpoint, or the one at `step`) to `out`; returns the manifest.

    Everything the user can get wrong is refused (ConfigError) before anything is written; the export is
    assembled beside `out` and moved into place at the end.
    """
    platforms = check_platforms(platforms)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = pathlib.Path(out).absolute()
    check_out(out, overwrite)
    if step is not None and step < 1:
        raise ConfigError(f"--step must be a positive checkpoint step, got {step}")
    if not workdir.path.is_dir():
        raise ConfigError(f"workdir {workdir.path} does not exist")
    module, cfg = families.load_run(workdir)
    if not workdir.has_checkpoints():
        raise ConfigError(f"no checkpoint in {workdir.checkpoints}; train first")
    if fmt == "saved_model":
        _import_tf()  # refuse before the slow part when TensorFlow is missing

    mesh = parallel.make_mesh()
    run = module.build(cfg, mesh, evaluate=False)
    workdir.check_dataset(facts(run.dataset), only_with_checkpoints=False)
    state, step = restore_latest(run.task, workdir, cfg.loop.seed, mesh, cfg.loop, replica=replica, step=step)
    state = jax.device_get(state)
    entries, extra = entries_of(run.task, run.dataset)
    params, rebuild = flatten_params(inference_state(state))

    final = workdir.read_final()
    seed = cfg.loop.seed + replica if cfg.loop.num_seeds > 1 else None
    metrics, metrics_step = _source_metrics(workdir, step, final, seed)
    flags = parse_flags(workdir.flags_file.read_text()) if workdir.flags_file.exists() else {}
    params_blob = npz_bytes(params)
    manifest: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "family": module.FAMILY,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "jax_version": jax.__version__, "jaxlib_version": importlib.metadata.version("jaxlib"),
        "platforms": list(platforms),
        "params": {"file": PARAMS_FILE, "format": "npz (numpy .npy members, no pickle)", "arrays": len(params),
                   "values": int(sum(a.size for a in params.values())),
                   "sha256": hashlib.sha256(params_blob).hexdigest()},
        "dataset": facts(run.dataset),
        "source": {"workdir": str(workdir.path), "config": families.to_dict(cfg), "flags": flags, "step": step,
                   "final_step": final.get("step") if final else None, "replica": replica,
                   "params_sha256": fingerprint(run.task.params(state)), "metrics": metrics,
                   "metrics_step": metrics_step},
        **extra, "entries": {},
    }
    exported = {}
    for entry in entries:
        exp = export_entry(entry, params, rebuild, platforms)
        exported[entry.name] = exp
        manifest["entries"][entry.name] = {
            "file": entry.name + ENTRY_SUFFIX, "doc": entry.doc,
            "inputs": [t.describe() for t in entry.inputs],
            "outputs": _outputs(exp), "calling_convention_version": exp.calling_convention_version,
            "nr_devices": exp.nr_devices}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        (tmp / PARAMS_FILE).write_bytes(params_blob)
        for name, exp in exported.items():
            (tmp / (name + ENTRY_SUFFIX)).write_bytes(exp.serialize())
        if fmt == "saved_model":
            manifest["saved_model"] = write_saved_model(tmp / SAVED_MODEL_DIR / "1", exported, params, manifest)
        (tmp / MANIFEST).write_text(json.dumps(finite(manifest), indent=2, allow_nan=False) + "\n")
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


# ---- TensorFlow SavedModel (optional: pip install -e ".[tf]")

def _import_tf() -> tuple[Any, Any]:
    try:
        import tensorflow as tf
        from jax.experimental import jax2tf
    except ImportError as e:
        raise ConfigError(f"--format=saved_model needs TensorFlow ({e}); install it with pip install -e \".[tf]\"") \
            from None
    return tf, jax2tf


def write_saved_model(path: pathlib.Path, exported: dict[str, jax.export.Exported], params: dict[str, np.ndarray],
                      manifest: dict[str, Any]) -> dict[str, Any]:
    """A TF SavedModel at `path` (TF Serving's `<model>/<version>/` layout) with one signature per entry (the
    first one also as `serving_default`), converted with jax2tf from the exported functions themselves, so TF
    runs the same StableHLO (an XlaCallModule op); the parameters are TF variables of the SavedModel."""
    tf, jax2tf = _import_tf()
    module = tf.Module()
    module.params = {k: tf.Variable(v, trainable=False, name=k.replace("/", "__")) for k, v in params.items()}
    signatures = {}
    for name, exp in exported.items():
        inputs = manifest["entries"][name]["inputs"]
        converted = jax2tf.convert(exp.call, polymorphic_shapes=[None] + [f"({BATCH}, ...)"] * len(inputs),
                                   native_serialization_platforms=tuple(manifest["platforms"]),
                                   with_gradient=False)  # inference only: the exports carry no VJP
        spec = [tf.TensorSpec([None, *t["shape"][1:]], tf.as_dtype(t["dtype"]), name=t["name"]) for t in inputs]
        fn = tf.function(_with_params(converted, module.params), input_signature=spec, autograph=False)
        setattr(module, name, fn)
        signatures[name] = fn.get_concrete_function()
    signatures["serving_default"] = signatures[next(iter(exported))]
    path.parent.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(path), signatures=signatures)
    return {"dir": path.relative_to(path.parent.parent).as_posix(), "signatures": sorted(signatures),
            "tensorflow_version": tf.__version__}


def _with_params(converted: Callable[..., Any], params: dict[str, Any]) -> Callable[..., Any]:
    """`converted(params, *inputs)` as a function of the inputs alone (what a SavedModel signature takes)."""
    def fn(*inputs):
        return converted(dict(params), *inputs)  # a plain dict: TF wraps module attributes in trackable types

    return fn

