"""Flags every launch module shares, the readers that turn them into the library's configs, and the one way a
launch module trains and exits.

Only `launch/` reads absl flags. Each family module defines its own flags, reads all of them in one
`config_from_flags()` into the family's frozen config (research/families/<family>.py, validated as it is built),
and calls `train()`. Modules that import JAX are imported inside the functions that use them, so that a bad flag
is answered before JAX loads (about a second).

Bad input ends the process with one line on stderr and the exit code its exception carries (research/errors.py):
2 for a configuration error, 3 when training stops on a NaN/Inf, 128 + the signal's number (143, 130) when
SIGTERM/SIGINT stopped it after a checkpoint.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from absl import app, flags

from launch.cli import fail, parse_flags
from research.errors import ConfigError, Interrupted, NonFiniteError

FLAGS = flags.FLAGS

# ---- run
flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics.jsonl, TensorBoard, final.json).")
flags.DEFINE_bool("overwrite", False, "Delete the workdir's previous outputs and start afresh.")
flags.DEFINE_integer("seed", 0, "Seed of the initialisation, the data order and every random draw.")
flags.DEFINE_integer("replica", None, "--mode=sample of a --num_seeds run: read replica i, the run of --seed + i "
                     "(default 0). Unset in training, so flags.txt never holds it.")
flags.DEFINE_integer("steps", 1000, "Training steps (optimizer updates).")
flags.DEFINE_string("tfds_data_dir", None, "Where prepared TFDS datasets live (for tfds:NAME datasets).")
flags.DEFINE_string("data_dir", None, "Where local dataset files live (fashion_mnist, mnist: the four IDX files); "
                    "searched before $RESEARCH_DATA_DIR/<name>/ (docs/data.md).")
flags.DEFINE_integer("log_every", 100, "Log training metrics (averaged over the interval) every N steps.")
flags.DEFINE_integer("eval_every", 0, "Evaluate every N steps (0: only at the end).")
flags.DEFINE_integer("checkpoint_every", 1000, "Checkpoint every N steps (0: only at the end).")
flags.DEFINE_integer("keep_checkpoints", 3, "How many checkpoints to keep.")
flags.DEFINE_enum("progress", "auto", ["auto", "bar", "log"], "Progress bar (bar), log lines (log), or by TTY.")
# ---- augmentation and weight averaging (docs/images.md); unset: off, and absent from flags.txt
flags.DEFINE_string("augment", None, "On-device augmentation of training images, any subset of "
                    "crop:N,flip[:P],translate:PX,rotate:DEG,noise:STD (e.g. crop:4,flip); image datasets only.")
flags.DEFINE_float("ema_decay", None, "Keep an exponential moving average of the parameters with this decay, in "
                   "[0, 1) (unset or 0: off); evaluations also report the averaged model's metrics as ema_*.")
# ---- compression (research/compress; docs/compression.md); unset: off, and absent from flags.txt
flags.DEFINE_float("prune_sparsity", None, "Gradual magnitude pruning (Zhu & Gupta 2017) to this final fraction of "
                   "zero weights in [0, 1) (unset or 0: off); every family, every network it trains.")
flags.DEFINE_integer("prune_start", None, "Pruning: first pruning step (default: a quarter of --steps).")
flags.DEFINE_integer("prune_end", None, "Pruning: step at which the final sparsity is reached (default: three "
                     "quarters of --steps); the masks are kept from there on.")
flags.DEFINE_integer("prune_every", None, "Pruning: recompute the masks every N steps between start and end "
                     "(default 10).")
flags.DEFINE_enum("prune_scope", None, ["global", "layer"], "Pruning: one magnitude threshold over all pruned "
                  "arrays (global, the default) or the same sparsity in each (layer).")
flags.DEFINE_string("prune_params", None, "Pruning: regex over parameter paths (e.g. Dense_0/kernel) choosing what "
                    "to prune (default: kernels, i.e. not biases, normalisation scales or embeddings).")
flags.DEFINE_enum("qat", None, ["int8"], "Quantisation-aware training with qwix: int8 weights and activations, "
                  "fake-quantised in the forward pass (unset: off).")
flags.DEFINE_list("ptq_eval", None, "Also evaluate the model post-training quantised with these methods "
                  "(int8_weights, int8_dynamic): <method>_accuracy, ..., <method>_bytes (supervised runs).")
# ---- speed
flags.DEFINE_integer("steps_per_call", 1, "Training steps per compiled call (lax.scan); boundaries stay exact.")
flags.DEFINE_integer("num_seeds", 1, "Train seeds seed..seed+N-1 together in one program (jax.vmap).")
flags.DEFINE_bool("red_blue", False, "Two replicas on the two halves of the training set, parameters averaged "
                  "every --fuse_every steps (model averaging).")
flags.DEFINE_integer("fuse_every", 0, "Red-blue: average the two replicas' parameters every N steps.")
flags.DEFINE_bool("data_on_device", True, "Copy in-memory datasets to the devices once; gather batches there.")
flags.DEFINE_string("compilation_cache_dir", None, "Persistent XLA compilation cache (default: a user cache "
                    "dir; empty string: off).")
# ---- model parallelism (research/sharding.py; docs/parallel.md)
flags.DEFINE_string("mesh", None, "Device mesh as data:D,model:M (either may be left out; data x model = all "
                    "devices; the model axis stays within a host). Default: data parallelism over every device.")
flags.DEFINE_integer("model_parallel", None, "Shorthand for --mesh=model:M (the data axis is devices / M).")
flags.DEFINE_enum("sharding_rules", "fsdp", ["fsdp", "tensor"], "How the state is split over the model axis: fsdp "
                  "(each array's largest divisible dimension; batch over both axes) or tensor (Megatron-style "
                  "column/row Dense pairs and recurrent gate kernels, the rest replicated; batch over data).")
flags.DEFINE_integer("min_shard_size", 4096, "Arrays with fewer elements stay replicated on every device.")
flags.DEFINE_bool("print_sharding", False, "Print each array of the train state with its shape and partition "
                  "spec, and the bytes per device, then exit without training (no --workdir needed).")
# ---- multi-host
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 for multi-process runs.")
flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")

# Flags that do not change what is computed: a workdir may be resumed with other values.
# The mesh flags only decide where the state's arrays live and which devices compute which part; every mesh
# computes the same steps from the same data order, equal up to float summation order (as a resume on another
# device count already is), so a run saved on one mesh may continue on another (docs/parallel.md).
NON_DEFINING = {"workdir", "overwrite", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
                "progress", "coordinator_address", "num_processes", "process_id", "tfds_data_dir", "data_dir",
                "data_on_device", "compilation_cache_dir", "replica",
                "mesh", "model_parallel", "sharding_rules", "min_shard_size", "print_sharding"}


def define_data_flags(dataset: str | None = None, batch_size: int = 128) -> None:
    """`--dataset` and `--batch_size`, with the family's defaults (each launch module calls this once)."""
    flags.DEFINE_string("dataset", dataset, "Dataset name from the registry (see docs/data.md).")
    flags.DEFINE_integer("batch_size", batch_size, "Global batch size (split over all devices).")


def define_optimizer_flags(prefix: str = "", defaults: dict | None = None, who: str = "") -> None:
    """Optimizer flags, optionally prefixed (the GAN family has `g_` and `d_` sets)."""
    d = {"optimizer": "adam", "learning_rate": 1e-3, **(defaults or {})}
    who = f" ({who})" if who else ""
    p = prefix
    flags.DEFINE_enum(p + "optimizer", d["optimizer"], ["sgd", "adam", "adamw", "rmsprop"], "Optimizer" + who)
    flags.DEFINE_float(p + "learning_rate", d["learning_rate"], "Peak learning rate" + who)
    flags.DEFINE_float(p + "momentum", d.get("momentum", 0.0), "Momentum for sgd/rmsprop (0: none)" + who)
    flags.DEFINE_bool(p + "nesterov", d.get("nesterov", False), "Nesterov momentum" + who)
    flags.DEFINE_float(p + "beta1", d.get("beta1", 0.9), "Adam beta1" + who)
    flags.DEFINE_float(p + "beta2", d.get("beta2", 0.999), "Adam beta2" + who)
    flags.DEFINE_float(p + "eps", d.get("eps", 1e-8), "Adam/RMSProp epsilon" + who)
    flags.DEFINE_float(p + "rms_decay", d.get("rms_decay", 0.9), "RMSProp decay of the squared-gradient average" + who)
    flags.DEFINE_enum(p + "schedule", d.get("schedule", "constant"), ["constant", "cosine", "step"],
                      "Learning-rate schedule" + who)
    flags.DEFINE_integer(p + "warmup_steps", 0, "Linear warmup steps" + who)
    flags.DEFINE_integer(p + "decay_steps", 0, "Cosine decay length (0: rest of training)" + who)
    flags.DEFINE_float(p + "final_lr_factor", 0.0, "Cosine: final lr as a fraction of the peak" + who)
    flags.DEFINE_integer(p + "step_every", 0, "Step schedule: decay every N steps" + who)
    flags.DEFINE_float(p + "step_factor", 0.1, "Step schedule: multiply the lr by this" + who)
    flags.DEFINE_float(p + "clip_global_norm", d.get("clip_global_norm", 0.0), "Clip gradients to this global "
                       "norm (0: off)" + who)
    flags.DEFINE_float(p + "clip_value", d.get("clip_value", 0.0), "Clip each gradient element to +-this (0: off)"
                       + who)
    flags.DEFINE_float(p + "weight_decay", d.get("weight_decay", 0.0), "Decoupled weight decay (adamw, sgd, "
                       "rmsprop)" + who)
    flags.DEFINE_float(p + "l1", 0.0, "L1 penalty on weight matrices" + who)
    flags.DEFINE_float(p + "l2", 0.0, "L2 penalty on weight matrices (coupled)" + who)


# ---- flags -> the library's configs (called from each family's config_from_flags)

def optimizer_config(prefix: str = ""):
    from research.optim import OptimizerConfig

    prune = prune_config()
    v = lambda name: getattr(FLAGS, prefix + name)
    try:
        return OptimizerConfig(
            name=v("optimizer"), learning_rate=v("learning_rate"), momentum=v("momentum"), nesterov=v("nesterov"),
            beta1=v("beta1"), beta2=v("beta2"), eps=v("eps"), rms_decay=v("rms_decay"), schedule=v("schedule"),
            warmup_steps=v("warmup_steps"), decay_steps=v("decay_steps"), final_lr_factor=v("final_lr_factor"),
            step_every=v("step_every"), step_factor=v("step_factor"), clip_global_norm=v("clip_global_norm"),
            clip_value=v("clip_value"), weight_decay=v("weight_decay"), l1=v("l1"), l2=v("l2"), prune=prune)
    except ConfigError as e:
        raise ConfigError(f"{prefix}optimizer flags: {e}") from None


PRUNE_FLAGS = ("prune_start", "prune_end", "prune_every", "prune_scope", "prune_params")


def prune_config():
    """The pruning flags as a PruneConfig (off unless --prune_sparsity > 0; its other flags need it)."""
    from research.compress.config import PruneConfig

    if not FLAGS.prune_sparsity:  # unset or 0: off
        refuse_given(PRUNE_FLAGS, "applies only with --prune_sparsity > 0")
        return PruneConfig()
    d = PruneConfig()
    return PruneConfig(sparsity=FLAGS.prune_sparsity, start=FLAGS.prune_start, end=FLAGS.prune_end,
                       every=d.every if FLAGS.prune_every is None else FLAGS.prune_every,
                       scope=FLAGS.prune_scope or d.scope, params=FLAGS.prune_params or d.params)


def quant_config():
    """--qat and --ptq_eval as a QuantConfig (research/compress/quantize.py)."""
    from research.compress.config import QuantConfig

    return QuantConfig(qat=FLAGS.qat or "", evaluate=tuple(m.strip() for m in FLAGS.ptq_eval or [] if m.strip()))


def loop_config():
    from research.loop import LoopConfig
    from research.sharding import parse_mesh

    bar = {"auto": None, "bar": True, "log": False}[FLAGS.progress]
    mesh = parse_mesh(FLAGS.mesh, FLAGS.model_parallel, rules=FLAGS.sharding_rules,
                      min_shard_size=FLAGS.min_shard_size)
    return LoopConfig(steps=FLAGS.steps, seed=FLAGS.seed, log_every=FLAGS.log_every, eval_every=FLAGS.eval_every,
                      checkpoint_every=FLAGS.checkpoint_every, keep_checkpoints=FLAGS.keep_checkpoints,
                      progress_bar=bar, steps_per_call=FLAGS.steps_per_call, num_seeds=FLAGS.num_seeds,
                      red_blue=FLAGS.red_blue, fuse_every=FLAGS.fuse_every, data_on_device=FLAGS.data_on_device,
                      mesh=mesh, ema_decay=FLAGS.ema_decay or 0.0)


def data_config(name: str | None = None):
    from research.data import DataConfig
    from research.data.augment import AugmentConfig

    return DataConfig(name=name or FLAGS.dataset or "", batch_size=FLAGS.batch_size,
                      tfds_data_dir=FLAGS.tfds_data_dir, data_dir=FLAGS.data_dir,
                      augment=AugmentConfig.parse(FLAGS.augment))


def widths(name: str, allow_none: bool = False) -> tuple[int, ...] | None:
    """A list flag of layer widths as integers (ConfigError naming the flag otherwise)."""
    values = FLAGS[name].value
    if values is None and allow_none:
        return None
    try:
        return tuple(int(v) for v in values or [] if v.strip())
    except ValueError:
        raise ConfigError(f"--{name} must be integers, got {values}") from None


def refuse_given(names: Iterable[str], why: str) -> None:
    """ConfigError if any flag of `names` was given on the command line or in a flagfile."""
    given = [n for n in names if FLAGS[n].present]
    if given:
        raise ConfigError(f"--{given[0]} {why}")


# ---- flags.txt

def _format(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def resolved_flags() -> dict[str, str]:
    """Every flag defined by the launch modules, as `--name=value` text (unset optional flags omitted)."""
    out = {}
    for module, module_flags in FLAGS.flags_by_module_dict().items():
        name = os.path.basename(module)
        if not (module.startswith("launch") or module == "__main__" or name.startswith(("launch", "__main__"))
                or "/launch/" in module):
            continue
        for flag in module_flags:
            if flag.value is not None and flag.name != "overwrite":
                out[flag.name] = _format(flag.value)
    return out


def adopt_run_flags(allowed: Iterable[str] = ()) -> None:
    """Set every run-defining flag from the workdir's flags.txt (for entries that sample from a trained run).

    A defining flag also given on the command line must agree with the run; `allowed` names flags that the
    entry itself uses (e.g. --mode, --num_samples) and are left as given.
    """
    from research.workdir import Workdir
    from research.workdir import parse_flags as parse_flags_text

    if not FLAGS.workdir:
        raise ConfigError("--workdir is required")
    workdir = Workdir(FLAGS.workdir)
    if not workdir.flags_file.exists():
        raise ConfigError(f"{workdir.flags_file} does not exist: --workdir must hold a trained run")
    try:
        saved = parse_flags_text(workdir.flags_file.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {workdir.flags_file}: {e}") from None
    skip = NON_DEFINING | set(allowed)
    current = resolved_flags()
    for name, text in saved.items():
        if name in skip or name not in FLAGS:
            continue
        if FLAGS[name].present and current.get(name) != text:
            raise ConfigError(f"--{name}={current.get(name)} disagrees with the run in {FLAGS.workdir} ({text})")
        try:
            FLAGS[name].parse(text)
        except flags.Error as e:
            raise ConfigError(f"{workdir.flags_file}: {e}") from None


# ---- running

def setup_runtime() -> None:
    """Join a multi-process run if asked, and turn on the persistent compilation cache."""
    from research.parallel import enable_compilation_cache, initialize_distributed
    from research.paths import cache_dir

    initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    path = FLAGS.compilation_cache_dir
    if path is None:
        path = str(cache_dir("xla"))
    if path:
        enable_compilation_cache(path)


def train(family: str, config: Any, *, non_defining: Iterable[str] = (),
          summary: Callable[[dict, Any], Sequence[str]] | None = None) -> dict:
    """Build the run of `config`, take the workdir (lock, --overwrite, flags.txt, dataset.json, config.json),
    train and evaluate, and print the final lines (plus `summary(final, run)`); returns final.json's dict.
    Everything that can be refused is refused before the workdir is touched. With --print_sharding: print the
    state's layout on the mesh and return {} without training or touching any workdir."""
    import jax

    from research import families, sharding
    from research.data import facts
    from research.loop import abstract_state, train_and_evaluate
    from research.workdir import Workdir

    if not FLAGS.workdir and not FLAGS.print_sharding:
        raise ConfigError("--workdir is required")
    if FLAGS.replica is not None:
        raise ConfigError("--replica applies to --mode=sample (which replica of a --num_seeds run to read)")
    mesh = sharding.make_mesh(config.loop.mesh)
    run = families.family(family).build(config, mesh)
    abstract = abstract_state(run.task, jax.random.PRNGKey(config.loop.seed), mesh, config.loop)[0]  # may refuse
    if FLAGS.print_sharding:
        if jax.process_index() == 0:
            print(sharding.describe(abstract, mesh, config.loop.mesh))
        return {}
    workdir = Workdir(FLAGS.workdir)
    chief = jax.process_index() == 0
    flags_now, data_now = resolved_flags(), facts(run.dataset)

    def record() -> None:  # once the state is restored or initialised: nothing was refused
        if chief:
            workdir.write_flags(flags_now)
            workdir.write_dataset(data_now)
            workdir.write_config(family, families.to_dict(config))

    if chief:
        workdir.create()
        workdir.lock()
    try:
        if chief:
            if FLAGS.overwrite:
                workdir.clear()
            workdir.check_dataset(data_now)
            workdir.check_flags(flags_now, ignore=NON_DEFINING | set(non_defining))
        final = train_and_evaluate(run.task, run.evaluators, config.loop, workdir, mesh, on_start=record)
    finally:
        workdir.unlock()
    if chief:
        print(f"final test metrics (step {final['step']}): "
              + " ".join(f"{k}={v:.4f}" for k, v in final["metrics"].items()))
        for line in summary(final, run) if summary else ():
            print(line)
        for what, path in (("pictures", workdir.images), ("samples", workdir.samples)):
            if path.is_dir():
                print(f"{what} in {path}")
        print(f"wrote {workdir.final_file}")
    return final


def run(main: Callable[[], object]) -> None:
    """`app.run` with one-line errors and the exit code each stopping exception carries."""

    def _main(argv):
        logging.getLogger("research").setLevel(logging.INFO)
        logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every file it writes at INFO
        logging.getLogger("jax").setLevel(logging.WARNING)
        try:
            main()
        except (ConfigError, NonFiniteError) as e:
            fail(str(e), e.exit_code)
        except Interrupted as e:  # not an error: the run saved a checkpoint and can be resumed
            fail(str(e), e.exit_code, prefix="")

    app.run(_main, flags_parser=parse_flags)
