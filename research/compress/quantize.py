"""int8 quantisation with Google's qwix (github.com/google/qwix), for flax linen models; no TensorFlow.

qwix intercepts a linen module's `jax.lax.dot_general` and `conv_general_dilated` calls (`qwix.quantize_model(model,
provider)`), chosen by regex rules (`qwix.QuantizationRule`):

- `int8_dynamic` (and `--qat=int8`): weights int8 (symmetric, absmax, per output channel) and activations int8
  (dynamic range: each example's absmax at run time); the matmuls and convolutions run on int8 operands.
- `int8_weights`: weights int8, activations float32: dense layers dequantise their int8 kernels and multiply in
  float32. qwix 0.1.8 has no weight-only convolution (its PTQ provider refuses a conv whose act_qtype differs from
  its weight_qtype), so convolutions quantise their inputs too under this method (what `int8_dynamic` does to them).

Quantisation-aware training (`--qat=int8`) wraps the model with `qwix.QtProvider`: the forward pass fake-quantises
(quantise, dequantise) weights and activations and gradients pass straight through; the parameters stay float32
with the float model's tree, so a QAT run is a float checkpoint that `launch.quantize` then converts.

Post-training quantisation (`launch.quantize`, `quantize_run`) wraps the model with `qwix.PtqProvider`, builds the
quantised parameter tree abstractly (`jax.eval_shape` of its init: int8 `qvalue` and float32 `scale` per kernel, in
qwix's `WithAux(QArray)`), converts the run's float parameters with `qwix.quantize_params`, evaluates the result on
the run's test set, and writes a workdir holding the quantised checkpoint (config.json says `quant.ptq`), which
`launch.export` exports with the int8 arrays in params.npz.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import qwix

from research import families, parallel
from research.checkpoint import Checkpointer
from research.compress.config import PTQ_METHODS, DistillConfig, QuantConfig
from research.data import facts
from research.errors import ConfigError
from research.evaluators.base import EvalContext
from research.evaluators.supervised import SupervisedEvaluator
from research.loop import restore_latest
from research.state import TrainState, fingerprint
from research.tasks.supervised import SupervisedTask
from research.workdir import Workdir

QAT_RULE_METHOD = {"int8": "int8_dynamic"}  # what a QAT run simulates, as the PTQ method that then serves it


def rules(method: str) -> list[qwix.QuantizationRule]:
    """The qwix rules of `method` (int8_weights | int8_dynamic), for every module of the model."""
    if method == "int8_dynamic":
        return [qwix.QuantizationRule(module_path=".*", weight_qtype=jnp.int8, act_qtype=jnp.int8)]
    if method == "int8_weights":  # convolutions: qwix 0.1.8 quantises their inputs too (no weight-only conv)
        return [qwix.QuantizationRule(module_path=".*", op_names=("conv_general_dilated",), weight_qtype=jnp.int8,
                                      act_qtype=jnp.int8),
                qwix.QuantizationRule(module_path=".*", weight_qtype=jnp.int8)]
    raise ConfigError(f"unknown quantisation method {method!r}; choose one of {', '.join(PTQ_METHODS)}")


def wrap(model: nn.Module, cfg: QuantConfig) -> nn.Module:
    """`model` itself (no quantisation), its QAT twin (`cfg.qat`) or its PTQ twin (`cfg.ptq`, which wins: a
    quantised QAT run serves int8)."""
    if cfg.ptq:
        return qwix.quantize_model(model, qwix.PtqProvider(rules(cfg.ptq)))
    if cfg.qat:
        return qwix.quantize_model(model, qwix.QtProvider(rules(QAT_RULE_METHOD[cfg.qat])))
    return model


def tree_bytes(tree: Any) -> int:
    """Bytes of every array in `tree` (int8 values count 1 byte, their float32 scales 4)."""
    return int(sum(np.dtype(leaf.dtype).itemsize * int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree)))


class PostTrainingQuantizedTask(SupervisedTask):
    """A supervised task whose model is post-training quantised: inference only. Its state has no optimizer
    state (`optax.identity`), so a quantised checkpoint holds the int8 parameters and nothing a server ignores."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.tx = optax.identity()

    def train_step(self, state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict]:
        raise ConfigError("a post-training-quantised run (launch.quantize) is for inference: train the float model "
                          "(or use --qat=int8) and quantise it again")


def quantized_config(cfg: Any, method: str) -> Any:
    """The config of the PTQ twin of the run of `cfg`: the same model and data, `quant.ptq = method`, one replica,
    no parameter average and no teacher (what is served is one plain quantised model)."""
    loop = dataclasses.replace(cfg.loop, num_seeds=1, red_blue=False, fuse_every=0, ema_decay=0.0)
    changes: dict[str, Any] = {"loop": loop, "quant": dataclasses.replace(cfg.quant, ptq=method)}
    if hasattr(cfg, "distill"):
        changes["distill"] = DistillConfig()
    return dataclasses.replace(cfg, **changes)


def _check_out(out: Workdir, source: Workdir, overwrite: bool) -> None:
    if out.path == source.path:
        raise ConfigError(f"--out={out.path} is the run itself; choose another directory")
    if out.path.exists() and not out.path.is_dir():
        raise ConfigError(f"--out={out.path} is a file, not a directory")
    if out.path.is_dir() and any(out.path.iterdir()) and not overwrite:
        raise ConfigError(f"--out={out.path} is not empty; use --overwrite to replace what it holds, or another --out")


def quantize_run(workdir: Workdir, method: str, out: str | os.PathLike, *, replica: int = 0,
                 overwrite: bool = False) -> dict[str, Any]:
    """Post-training quantise the run in `workdir` (its latest checkpoint; replica `replica` of a --num_seeds run)
    with `method`, evaluate the float and the quantised model on its test set, and write a workdir at `out` holding
    the quantised checkpoint, config.json, dataset.json and final.json (metrics, float_metrics, bytes); returns
    final.json's dict. Everything refusable is refused (ConfigError) before `out` is written."""
    t0 = time.perf_counter()
    if method not in PTQ_METHODS:
        raise ConfigError(f"unknown --method {method!r}; choose one of {', '.join(PTQ_METHODS)}")
    out_dir = Workdir(out)
    _check_out(out_dir, workdir, overwrite)
    if not workdir.path.is_dir():
        raise ConfigError(f"workdir {workdir.path} does not exist")
    module, cfg = families.load_run(workdir)
    if not hasattr(cfg, "quant") or module.FAMILY != "mlp":
        raise ConfigError(f"launch.quantize quantises runs of the mlp family; {workdir.path} holds a "
                          f"{module.FAMILY} run")
    if cfg.quant.ptq:
        raise ConfigError(f"{workdir.path} is already quantised ({cfg.quant.ptq}); quantise the float run")
    if not workdir.has_checkpoints():
        raise ConfigError(f"no checkpoint in {workdir.checkpoints}; train first")

    mesh = parallel.make_mesh()
    run = module.build(cfg, mesh, evaluate=False)
    workdir.check_dataset(facts(run.dataset), only_with_checkpoints=False)
    state, step = restore_latest(run.task, workdir, cfg.loop.seed, mesh, cfg.loop, replica=replica)
    qcfg = quantized_config(cfg, method)
    qrun = module.build(qcfg, mesh, evaluate=False)
    qtask = qrun.task
    abstract = jax.eval_shape(qtask.init_state, jax.random.PRNGKey(0))
    float_params = jax.tree.map(jnp.asarray, jax.device_get(state.params))  # qwix wants jax.Arrays
    qparams = qwix.quantize_params(float_params, abstract.params)
    qstate = TrainState(step=state.step, params=qparams, opt_state=qtask.tx.init(qparams),
                        model_state=state.model_state, rng=state.rng)
    qstate = jax.device_put(qstate, parallel.replicated(mesh))

    kind, batch = cfg.task.kind, module.eval_batch_size(cfg.eval_batch_size, cfg.data.batch_size)
    ctx = EvalContext(step, mesh, pictures=False)
    float_metrics = SupervisedEvaluator(run.task.predict, run.dataset, kind, batch).evaluate(state, ctx).metrics
    metrics = SupervisedEvaluator(qtask.predict, qrun.dataset, kind, batch).evaluate(qstate, ctx).metrics
    float_bytes = tree_bytes(jax.device_get(state.params)) + tree_bytes(state.model_state)
    q_bytes = tree_bytes(jax.device_get(qparams)) + tree_bytes(state.model_state)
    final = {"step": step, "method": method, "metrics": metrics, "float_metrics": float_metrics,
             "metrics_change": {k: metrics[k] - float_metrics[k] for k in metrics if k in float_metrics},
             "bytes": {"float32": float_bytes, "quantized": q_bytes, "ratio": q_bytes / float_bytes},
             "source": {"workdir": str(workdir.path), "step": step, "replica": replica,
                        "params_sha256": fingerprint(state.params)},
             "params_sha256": fingerprint(qparams)}

    out_dir.create()
    with out_dir.holding_lock():
        if overwrite:
            out_dir.clear()  # the contract's paths only
        out_dir.write_dataset(facts(qrun.dataset))
        out_dir.write_config(module.FAMILY, families.to_dict(qcfg))
        ckpt = Checkpointer(out_dir.checkpoints, async_save=False)
        try:
            ckpt.save(step, qstate, {"data": [], "quantized_from": str(workdir.path), "method": method})
        finally:
            ckpt.close()
        final["wall_seconds"] = round(time.perf_counter() - t0, 3)
        out_dir.write_final(final)
    return final


def describe(final: dict[str, Any]) -> list[str]:
    """The lines launch.quantize prints."""
    b = final["bytes"]
    show = lambda m: " ".join(f"{k}={v:.4f}" for k, v in m.items())
    return [f"float32   (step {final['step']}): {show(final['float_metrics'])}",
            f"{final['method']}: {show(final['metrics'])}",
            f"bytes: {b['quantized']:,} quantised vs {b['float32']:,} float32 ({100 * b['ratio']:.1f} %)"]
