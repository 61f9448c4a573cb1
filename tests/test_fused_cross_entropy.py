"""The fused decoder + cross-entropy equals the plain optax loss (value and gradients) and the LM step using it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.data.registry import Dataset
from research.models.rnn import CharLM
from research.objectives.fused_cross_entropy import FUSED_MIN_VOCAB, linear_softmax_cross_entropy
from research.optim import OptimizerConfig
from research.tasks.char_lm import CharLMTask


def _plain(x, w, b, y):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(x @ w + b, y))


@pytest.mark.parametrize("vocab", [5000, FUSED_MIN_VOCAB])
def test_loss_and_gradients_equal_plain(vocab):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((8, 5, 16), np.float32))
    w = jnp.asarray(rng.standard_normal((16, vocab), np.float32) * 0.5)
    b = jnp.asarray(rng.standard_normal(vocab, np.float32))
    y = jnp.asarray(rng.integers(0, vocab, (8, 5)), jnp.int32).at[0, 0].set(vocab - 1)
    fused = jax.jit(jax.value_and_grad(lambda *a: linear_softmax_cross_entropy(*a, y), argnums=(0, 1, 2)))
    plain = jax.jit(jax.value_and_grad(lambda *a: _plain(*a, y), argnums=(0, 1, 2)))
    (lf, gf), (lp, gp) = fused(x, w, b), plain(x, w, b)
    np.testing.assert_allclose(lf, lp, rtol=1e-6)
    for a, p in zip(gf, gp, strict=True):
        np.testing.assert_allclose(a, p, rtol=1e-5, atol=1e-8)


def _task(vocab, **kwargs):
    chars = "".join(chr(0x4E00 + i) for i in range(vocab))
    tokens = np.random.default_rng(1).integers(0, vocab, 2000).astype(np.int32)
    corpus = Dataset("random", {"train": {"tokens": tokens}, "validation": {"tokens": tokens[:200]}},
                     info={"vocab": chars})
    model = CharLM(vocab, embed=8, hidden=8, layers=1, dropout=0.2, io_dropout=True)
    return CharLMTask(model, corpus, OptimizerConfig("sgd", 20.0, clip_global_norm=0.25), batch_size=8, unroll=5,
                      steps=10, **kwargs), tokens


def test_threshold():
    assert not _task(FUSED_MIN_VOCAB - 1)[0].fused
    assert _task(FUSED_MIN_VOCAB)[0].fused


def test_lm_step_losses_match_plain_formulation():
    losses = {}
    for name, threshold in (("fused", 0), ("plain", 10**9)):
        task, tokens = _task(5000, fused_min_vocab=threshold)
        assert task.fused == (name == "fused")
        state = task.init_state(jax.random.PRNGKey(0))
        x = tokens[:120].reshape(3, 8, 5)
        batch = {"x": x, "y": tokens[1:121].reshape(3, 8, 5), "reset": np.zeros((3, 8), bool)}
        _, metrics = jax.jit(lambda s, b, t=task: jax.lax.scan(t.train_step, s, b))(state, batch)
        out = np.asarray(metrics["loss"])
        losses[name] = out
    np.testing.assert_allclose(losses["fused"], losses["plain"], rtol=1e-5)
