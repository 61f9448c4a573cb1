"""The run's model post-training quantised to int8 (qwix; research/compress/quantize.py), scored beside the float
model at every evaluation (`--ptq_eval=int8_weights,int8_dynamic`): `<method>_accuracy`, `<method>_loss`, ...
(every metric of the supervised evaluator, prefixed), `<method>_bytes` and `float32_bytes` (parameters and model
state) and their ratio `<method>_bytes_ratio`. It is the conversion `launch.quantize` writes to disk, so a sweep's
final.json holds the PTQ rows of a training run without a second process."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import qwix

from research.compress.config import QuantConfig
from research.compress.quantize import tree_bytes, wrap
from research.data import Dataset
from research.evaluators.base import EvalContext, Evaluation
from research.evaluators.supervised import SupervisedEvaluator


class QuantizedEvaluator:
    """Metrics of `model` (the float module the run trains, unwrapped) post-training quantised with each of
    `methods`, from the state's float parameters."""

    def __init__(self, model: nn.Module, methods: Sequence[str], dataset: Dataset, kind: str, batch_size: int):
        self.methods = tuple(methods)
        x = jnp.zeros((1, *dataset.input_shape), jnp.float32)
        rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)}
        self.convert, self.evaluators = {}, {}
        for method in self.methods:
            qmodel = wrap(model, QuantConfig(ptq=method))
            abstract = jax.eval_shape(lambda m=qmodel: m.init(rngs, x, train=False))["params"]
            self.convert[method] = jax.jit(lambda p, a=abstract: qwix.quantize_params(p, a))
            self.evaluators[method] = SupervisedEvaluator(self._predict(qmodel), dataset, kind, batch_size)

    @staticmethod
    def _predict(qmodel: nn.Module):
        def predict(state: dict[str, Any], x: jax.Array) -> jax.Array:
            return qmodel.apply({"params": state["params"], **state["model_state"]}, x, train=False).astype(
                jnp.float32)

        return predict

    def evaluate(self, state: Any, ctx: EvalContext) -> Evaluation:
        metrics = {"float32_bytes": float(tree_bytes(state.params) + tree_bytes(state.model_state))}
        for method in self.methods:
            qparams = self.convert[method](state.params)
            quantized = {"params": qparams, "model_state": state.model_state}
            out = self.evaluators[method].evaluate(quantized, ctx).metrics
            metrics.update({f"{method}_{k}": v for k, v in out.items() if not k.startswith("baseline_")})
            metrics[f"{method}_bytes"] = float(tree_bytes(qparams) + tree_bytes(state.model_state))
            metrics[f"{method}_bytes_ratio"] = metrics[f"{method}_bytes"] / metrics["float32_bytes"]
        return Evaluation(metrics)
