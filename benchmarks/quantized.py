"""Inference throughput of int8 models (qwix; research/compress/quantize.py) vs float32: the jitted forward pass of
a batch of 1024 on CPU, for an MLP 784-1024-1024-10 and the MLP family's `cnn` (the Keras convnet, 28x28x1), each
as float32, int8_weights (int8 storage, dequantised to float32 matmuls) and int8_dynamic (int8 x int8 matmuls /
convolutions with dynamically quantised activations). Examples per second, median over repeats, and the ratio to
float32 measured in the same run. Parameters are random: speed does not depend on their values. No target: the
question is whether XLA:CPU turns int8 storage into speed, not only into bytes."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmarks.timing import median_seconds, table

BATCH = 1024


def _models():
    from research.models.lenet import conv_classifier
    from research.models.mlp import MLP

    return {"mlp 784-1024-1024-10": (MLP(hidden=(1024, 1024), out_dim=10), (BATCH, 784)),
            "cnn (Keras convnet, 28x28)": (conv_classifier("cnn", 10), (BATCH, 28, 28, 1))}


def main(repeats: int = 5) -> str:
    import qwix

    from research.compress.config import QuantConfig
    from research.compress.quantize import tree_bytes, wrap

    rows = []
    for name, (model, shape) in _models().items():
        x = jax.random.uniform(jax.random.PRNGKey(1), shape)
        one = jnp.zeros((1, *shape[1:]))
        params = jax.jit(lambda m=model, one=one: m.init(jax.random.PRNGKey(0), one, train=False))()["params"]
        float_fn = jax.jit(lambda p, x, m=model: m.apply({"params": p}, x, train=False))
        base = None
        for method in ("float32", "int8_weights", "int8_dynamic"):
            if method == "float32":
                fn, p = float_fn, params
            else:
                qmodel = wrap(model, QuantConfig(ptq=method))
                abstract = jax.eval_shape(lambda m=qmodel, one=one: m.init(jax.random.PRNGKey(0), one, train=False))
                p = qwix.quantize_params(params, abstract["params"])
                fn = jax.jit(lambda p, x, m=qmodel: m.apply({"params": p}, x, train=False))
            seconds = median_seconds(lambda fn=fn, p=p, x=x: jax.block_until_ready(fn(p, x)), repeats, warmup=2)
            base = base or seconds
            rows.append([name, method, tree_bytes(p), 1e3 * seconds, BATCH / seconds, base / seconds])
    return table(f"int8 vs float32 inference, jitted, batch {BATCH} (median of {repeats})",
                 ["model", "weights", "bytes", "ms / batch", "examples / s", "speed vs float32"], rows)


if __name__ == "__main__":
    main()
