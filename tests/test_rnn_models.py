"""GRU / LSTM layers against hand-written numpy references; initialisations; bidirectional shapes; carries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.errors import ConfigError
from research.models.rnn import CharLM, RecurrentLayer, RecurrentStack, SequenceModel, recurrent_init, zero_carry


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _numpy_lstm(p, xs, c, h):
    """The LSTM equations step by step in float64: gates i, f, g, o."""
    hs = []
    for x in xs.transpose(1, 0, 2):
        z = x @ p["w_i"] + h @ p["w_h"] + p["b"]
        i, f, g, o = np.split(z, 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        hs.append(h)
    return (c, h), np.stack(hs, 1)


def _numpy_gru(p, xs, h):
    """The GRU equations (reset gate applied to the recurrent part of the candidate, as Flax / PyTorch)."""
    hs = []
    w_ir, w_iz, w_in = np.split(p["w_i"], 3, axis=-1)
    w_hr, w_hz, w_hn = np.split(p["w_h"], 3, axis=-1)
    b_r, b_z, b_n = np.split(p["b"], 3)
    for x in xs.transpose(1, 0, 2):
        r = _sigmoid(x @ w_ir + b_r + h @ w_hr)
        z = _sigmoid(x @ w_iz + b_z + h @ w_hz)
        n = np.tanh(x @ w_in + b_n + r * (h @ w_hn + p["b_hn"]))
        h = (1 - z) * n + z * h
        hs.append(h)
    return h, np.stack(hs, 1)


def _random_params(model, *inputs, seed=0):
    """Parameters of `model` with every entry (biases too) random, so each term of the equations matters.
    Shapes come from `jax.eval_shape`: nothing is compiled for the init (tests stay fast)."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *inputs))["params"]
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (0.5 * rng.standard_normal(s.shape)).astype(np.float32), shapes)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cell_matches_numpy_reference(cell):
    b, t, f, h = 3, 6, 4, 5
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(b, t, f)).astype(np.float32)
    layer = RecurrentLayer(cell, h)
    params = _random_params(layer, xs)
    p64 = {k: np.asarray(v, np.float64) for k, v in params.items()}
    h0 = rng.normal(size=(b, h)).astype(np.float32)
    apply = jax.jit(lambda carry: layer.apply({"params": params}, xs, carry))
    if cell == "lstm":
        c0 = rng.normal(size=(b, h)).astype(np.float32)
        (c, hh), out = apply((c0, h0))
        (c_ref, h_ref), out_ref = _numpy_lstm(p64, xs.astype(np.float64), c0, h0)
        np.testing.assert_allclose(c, c_ref, rtol=1e-5, atol=1e-5)
    else:
        hh, out = apply(h0)
        h_ref, out_ref = _numpy_gru(p64, xs.astype(np.float64), h0)
    np.testing.assert_allclose(out, out_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hh, h_ref, rtol=1e-5, atol=1e-5)


def test_initialisations():
    x, h = jnp.zeros((1, 2, 3)), 4
    p = jax.jit(RecurrentLayer("lstm", h, recurrent_init="identity", forget_bias=1.0).init)(
        jax.random.PRNGKey(0), x)["params"]
    expected_bias = np.zeros(4 * h)
    expected_bias[h:2 * h] = 1.0                                 # only the forget gate
    np.testing.assert_array_equal(p["b"], expected_bias)
    np.testing.assert_array_equal(p["w_h"], np.tile(np.eye(h), (1, 4)))
    w = np.asarray(recurrent_init("orthogonal", 3)(jax.random.PRNGKey(0), (h, 3 * h)))
    blocks = [w[:, k * h:(k + 1) * h] for k in range(3)]
    for block in blocks:                                         # every gate's recurrent block orthogonal
        np.testing.assert_allclose(block.T @ block, np.eye(h), atol=1e-5)
    assert not np.allclose(blocks[0], blocks[1])
    with pytest.raises(ConfigError, match="recurrent init"):
        recurrent_init("zeros", 3)
    with pytest.raises(ConfigError, match="unknown cell"):
        jax.eval_shape(lambda: RecurrentLayer("rnn", h).init(jax.random.PRNGKey(0), x))


def test_bidirectional_backward_direction_reads_the_sequence_reversed():
    b, t, f, h = 3, 7, 2, 5
    xs = np.random.default_rng(0).normal(size=(b, t, f)).astype(np.float32)
    stack = RecurrentStack("lstm", h, bidirectional=True)
    params = _random_params(stack, xs)
    (carry,), out = jax.jit(lambda: stack.apply({"params": params}, xs))()
    assert out.shape == (b, t, 2 * h)
    # the backward direction is a forward layer run on the time-reversed input, its outputs re-reversed
    (_, h_last), ref = jax.jit(lambda: RecurrentLayer("lstm", h).apply({"params": params["layer0_bwd"]},
                                                                       xs[:, ::-1]))()
    np.testing.assert_allclose(out[..., h:], np.asarray(ref)[:, ::-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(carry[1][1], h_last, rtol=1e-5, atol=1e-6)  # its final state: after step 0


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_output_shapes(cell):
    """Shapes only (jax.eval_shape: nothing is compiled): heads, bidirectional stacks, 1-D and 2-D inputs."""
    key = jax.random.PRNGKey(0)
    shape = lambda model, x: jax.eval_shape(lambda: model.apply(model.init(key, x), x))
    x = jnp.ones((3, 7, 2))
    assert shape(RecurrentStack(cell, 5, layers=2, bidirectional=True), x)[1].shape == (3, 7, 10)
    for head, bidirectional, out in (("last", False, (3, 4)), ("last", True, (3, 4)), ("flatten", True, (3, 4)),
                                     ("per_step", True, (3, 7, 4))):
        model = SequenceModel(out_dim=4, head=head, cell=cell, hidden=5, bidirectional=bidirectional, layers=2)
        assert shape(model, x).shape == out
    for signal in (jnp.ones((2, 40)), jnp.ones((2, 28, 28)), jnp.ones((2, 28, 28, 1))):
        assert shape(SequenceModel(out_dim=3, cell=cell, hidden=4), signal).shape == (2, 3)
    logits, carry = shape(CharLM(vocab_size=11, embed=3, cell=cell, hidden=6, layers=3), jnp.ones((2, 9), jnp.int32))
    assert logits.shape == (2, 9, 11) and len(carry) == 3


def test_dropout_between_layers_only_when_training():
    xs = jnp.ones((2, 5, 3))
    model = RecurrentStack("gru", 8, layers=2, dropout=0.5)
    v = {"params": _random_params(model, xs)}
    run = jax.jit(lambda key: (model.apply(v, xs)[1], model.apply(v, xs, train=True, rngs={"dropout": key})[1]))
    (eval_a, train_a), (eval_b, train_b) = run(jax.random.PRNGKey(1)), run(jax.random.PRNGKey(2))
    np.testing.assert_array_equal(eval_a, eval_b)                    # evaluation: no dropout
    assert not np.allclose(train_a, eval_a) and not np.allclose(train_a, train_b)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_two_half_chunks_with_carried_state_equal_one_full_pass(cell):
    tokens = jax.random.randint(jax.random.PRNGKey(0), (3, 16), 0, 11)
    model = CharLM(vocab_size=11, embed=6, cell=cell, hidden=8, layers=2)
    params = _random_params(model, tokens)
    apply = jax.jit(lambda x, carry: model.apply({"params": params}, x, carry))
    full_logits, full_carry = apply(tokens, zero_carry(cell, 3, 8, 2))
    first, carry = apply(tokens[:, :8], zero_carry(cell, 3, 8, 2))
    second, carry = apply(tokens[:, 8:], carry)
    np.testing.assert_allclose(jnp.concatenate([first, second], 1), full_logits, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(carry), jax.tree.leaves(full_carry), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert jax.tree.structure(full_carry) == jax.tree.structure(zero_carry(cell, 3, 8, 2))


def test_bidirectional_stack_refuses_a_carry():
    stack = RecurrentStack("gru", 4, bidirectional=True)
    xs = jnp.ones((1, 3, 2))
    with pytest.raises(ConfigError, match="bidirectional"):
        jax.eval_shape(lambda: stack.init(jax.random.PRNGKey(0), xs, zero_carry("gru", 1, 4)))
