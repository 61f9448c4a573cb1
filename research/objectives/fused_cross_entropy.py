"""Mean softmax cross-entropy of a linear decoder's logits, decoder and loss fused: for large vocabularies.

`linear_softmax_cross_entropy(features, kernel, bias, labels)` equals
`mean(optax.softmax_cross_entropy_with_integer_labels(features @ kernel + bias, labels))` up to float rounding.
Why not autodiff through that (what `research/tasks/char_lm.py` does below `FUSED_MIN_VOCAB`): at a word-level
vocabulary (WikiText-2, 33,278) the (tokens, vocabulary) arrays dominate the LSTM LM's step, and the profile
(`benchmarks/lstm_parts.py`) showed XLA:CPU's worst part was the bias gradient, a column sum of the
(tokens, vocabulary) gradient that its reduction ran ~80x slower than the same sum as a matrix product, followed
by separate passes for the bias add, the saved log-softmax and the label cotangent scattered into a zero array.
Here the bias is one more row of the kernel against a column of ones, so the decoder is a single GEMM
([tokens, hidden + 1] @ [hidden + 1, vocabulary]) and the bias gradient comes out of the kernel-gradient GEMM; a
`jax.custom_vjp` keeps only exp(logits - max) and its row sums (one logits-sized array) and its backward is one
fused pass, softmax - onehot (the one-hot an iota comparison, never stored), feeding the two gradient GEMMs.
It sums in another order than the optax formulation, so it is used only from `FUSED_MIN_VOCAB` classes up,
which keeps the character models' (vocabulary ~65) bits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

FUSED_MIN_VOCAB = 4096  # below: the plain optax loss (bitwise the old results; the decoder is small there)


def linear_softmax_cross_entropy(features: jax.Array, kernel: jax.Array, bias: jax.Array,
                                 labels: jax.Array) -> jax.Array:
    """Mean cross-entropy (nats) of integer `labels` (...) under logits `features (..., H) @ kernel (H, V) + bias`."""
    return _fused(features.reshape(-1, features.shape[-1]), kernel, bias, labels.reshape(-1))


@jax.custom_vjp
def _fused(x: jax.Array, kernel: jax.Array, bias: jax.Array, y: jax.Array) -> jax.Array:
    return _forward(x, kernel, bias, y)[0]


def _forward(x, kernel, bias, y):
    x1 = jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1)
    logits = x1 @ jnp.concatenate([kernel, bias[None].astype(kernel.dtype)], axis=0)  # bias inside the one GEMM
    peak = jnp.max(logits, axis=-1, keepdims=True)
    e = jnp.exp(logits - peak)                                # the one (tokens, vocabulary) array kept
    total = jnp.sum(e, axis=-1, keepdims=True)
    picked = jnp.take_along_axis(logits, y[:, None], axis=-1)
    return jnp.mean(jnp.log(total) + peak - picked), (x1, kernel, y, e, total)


def _backward(res, g):
    x1, kernel, y, e, total = res
    hit = jax.lax.broadcasted_iota(y.dtype, e.shape, 1) == y[:, None]
    d = (e / total - hit.astype(e.dtype)) * (g / y.shape[0])  # softmax - onehot, one pass
    d_kernel_bias = x1.T @ d                                  # the bias gradient is its last row
    return d @ kernel.T, d_kernel_bias[:-1], d_kernel_bias[-1], None


_fused.defvjp(_forward, _backward)
