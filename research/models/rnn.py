"""GRU and LSTM layers over `lax.scan`, stacked / bidirectional, and the heads the sequence family uses.

Why our own cells instead of `nn.GRUCell` / `nn.OptimizedLSTMCell` inside `nn.RNN`: the fused gate layout
makes the per-gate initialisations explicit (the LSTM forget-gate bias, which Flax's one `bias_init` for all
gates cannot express; identity or orthogonal recurrent blocks), and the scanned step is a few readable lines.
Speed is on par or better (the LSTM does one matmul of [x_t, h] per step); hoisting the input projection of
all steps out of the scan was measured *slower* on CPU (docs/rnn.md has the timings).

Equations (gates in this order in the fused kernels; `*` elementwise):
  LSTM  i, f, g, o = split(x W_i + b + h W_h);  c' = sigmoid(f) * c + sigmoid(i) * tanh(g);
        h' = sigmoid(o) * tanh(c')                                  carry (c, h), f's bias starts at forget_bias
  GRU   r, z, n_x = split(x W_i + b);  r_h, z_h, n_h = split(h W_h);  r = sigmoid(r + r_h); z = sigmoid(z + z_h)
        n = tanh(n_x + r * (n_h + b_hn));  h' = (1 - z) * n + z * h            carry h (as Flax and PyTorch)

Shapes are batch-major: inputs (B, T, F), outputs (B, T, H) or (B, T, 2H) when bidirectional. A stack's
carry is a tuple over layers of the cell carry (unidirectional stacks only take and return carries: a
backward direction cannot be carried from one chunk of a sequence to the next).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.errors import ConfigError

CELLS = ("lstm", "gru")
RECURRENT_INITS = ("orthogonal", "identity")
HEADS = ("last", "flatten", "per_step")

Carry = Any  # LSTM: (c, h); GRU: h; each (B, H)


def _gates(cell: str) -> int:
    return 4 if cell == "lstm" else 3


def recurrent_init(kind: str, gates: int) -> Callable[[jax.Array, tuple[int, ...], Any], jax.Array]:
    """Initialiser of a fused (H, gates*H) recurrent kernel: every gate's (H, H) block orthogonal or identity."""
    if kind not in RECURRENT_INITS:
        raise ConfigError(f"unknown recurrent init {kind!r}; choose one of {', '.join(RECURRENT_INITS)}")

    def init(rng: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        h = shape[0]
        if kind == "identity":
            return jnp.tile(jnp.eye(h, dtype=dtype), (1, gates))
        blocks = [nn.initializers.orthogonal()(k, (h, h), dtype) for k in jax.random.split(rng, gates)]
        return jnp.concatenate(blocks, axis=1)

    return init


def zero_carry(cell: str, batch: int, hidden: int, layers: int = 1, dtype: Any = jnp.float32
               ) -> tuple[Carry, ...]:
    """The all-zeros carry of a unidirectional stack (what a sequence starts from)."""
    zeros = jnp.zeros((batch, hidden), dtype)
    return tuple((zeros, zeros) if cell == "lstm" else zeros for _ in range(layers))


def last_hidden(carry: Carry) -> jax.Array:
    """The hidden state h of a cell carry."""
    return carry[1] if isinstance(carry, tuple) else carry


class RecurrentLayer(nn.Module):
    """One GRU or LSTM layer in one direction: (B, T, F) -> (final carry, outputs (B, T, H))."""

    cell: str
    hidden: int
    reverse: bool = False
    recurrent_init: str = "orthogonal"
    forget_bias: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, carry: Carry | None = None) -> tuple[Carry, jax.Array]:
        if self.cell not in CELLS:
            raise ConfigError(f"unknown cell {self.cell!r}; choose one of {', '.join(CELLS)}")
        g, h = _gates(self.cell), self.hidden
        w_i = self.param("w_i", nn.initializers.lecun_normal(), (x.shape[-1], g * h))
        w_h = self.param("w_h", recurrent_init(self.recurrent_init, g), (h, g * h))
        if self.cell == "lstm":
            forget = self.forget_bias
            b = self.param("b", lambda _, shape: jnp.zeros(shape).at[h:2 * h].set(forget), (g * h,))
        else:
            b = self.param("b", nn.initializers.zeros, (g * h,))
            b_hn = self.param("b_hn", nn.initializers.zeros, (h,))
        if carry is None:
            carry = zero_carry(self.cell, x.shape[0], h, dtype=x.dtype)[0]

        if self.cell == "lstm":
            w_ih = jnp.concatenate([w_i, w_h], axis=0)

            def step(c_h, x_t):  # one matmul of [x_t, h] with the stacked kernels: the fastest variant measured
                c, hh = c_h
                i, f, gg, o = jnp.split(jnp.concatenate([x_t, hh], -1) @ w_ih + b, 4, axis=-1)
                c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(gg)
                hh = jax.nn.sigmoid(o) * jnp.tanh(c)
                return (c, hh), hh
        else:
            def step(hh, x_t):
                r_x, z_x, n_x = jnp.split(x_t @ w_i + b, 3, axis=-1)
                r_h, z_h, n_h = jnp.split(hh @ w_h, 3, axis=-1)
                r, z = jax.nn.sigmoid(r_x + r_h), jax.nn.sigmoid(z_x + z_h)
                n = jnp.tanh(n_x + r * (n_h + b_hn))
                hh = (1.0 - z) * n + z * hh
                return hh, hh

        carry, outputs = jax.lax.scan(step, carry, jnp.swapaxes(x, 0, 1), reverse=self.reverse)
        return carry, jnp.swapaxes(outputs, 0, 1)


class RecurrentStack(nn.Module):
    """`layers` GRU/LSTM layers, optionally bidirectional (outputs concatenated), dropout between layers.

    Returns (final carries, outputs of the top layer). With `bidirectional`, a layer's final carry is the pair
    (forward carry after the last step, backward carry after the first step).
    """

    cell: str = "lstm"
    hidden: int = 128
    layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    recurrent_init: str = "orthogonal"
    forget_bias: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, carry: tuple[Carry, ...] | None = None, *, train: bool = False
                 ) -> tuple[tuple[Carry, ...], jax.Array]:
        if carry is not None and self.bidirectional:
            raise ConfigError("a bidirectional stack cannot carry state across chunks of a sequence")
        layer = lambda reverse, name: RecurrentLayer(self.cell, self.hidden, reverse, self.recurrent_init,
                                                     self.forget_bias, name=name)
        finals = []
        for k in range(self.layers):
            if k and self.dropout:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
            fwd_carry, fwd = layer(False, f"layer{k}_fwd")(x, None if carry is None else carry[k])
            if self.bidirectional:
                bwd_carry, bwd = layer(True, f"layer{k}_bwd")(x)
                finals.append((fwd_carry, bwd_carry))
                x = jnp.concatenate([fwd, bwd], axis=-1)
            else:
                finals.append(fwd_carry)
                x = fwd
        return tuple(finals), x


def as_sequence(x: jax.Array) -> jax.Array:
    """(B, T) -> (B, T, 1); (B, T, ...) -> (B, T, features): 1-D signals and images read row by row."""
    if x.ndim == 2:
        return x[..., None]
    return x.reshape(x.shape[0], x.shape[1], -1)


class SequenceModel(nn.Module):
    """A recurrent stack and a linear head, as a `model(x, train=...)` for the supervised task.

    head="last": outputs (B, out_dim) from the top layer's final hidden state (both directions concatenated
    when bidirectional); head="flatten": (B, out_dim) from the top layer's outputs at every step, concatenated
    (the MNIST-1D paper's GRU); head="per_step": outputs (B, T, out_dim) at every step.
    """

    out_dim: int
    head: str = "last"
    cell: str = "lstm"
    hidden: int = 128
    layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    recurrent_init: str = "orthogonal"
    forget_bias: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if self.head not in HEADS:
            raise ConfigError(f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        carries, outputs = RecurrentStack(self.cell, self.hidden, self.layers, self.bidirectional, self.dropout,
                                          self.recurrent_init, self.forget_bias, name="rnn")(
            as_sequence(x), train=train)
        if self.head == "per_step":
            return nn.Dense(self.out_dim, name="head")(outputs)
        if self.head == "flatten":
            return nn.Dense(self.out_dim, name="head")(outputs.reshape(outputs.shape[0], -1))
        top = carries[-1]
        if self.bidirectional:
            features = jnp.concatenate([last_hidden(top[0]), last_hidden(top[1])], axis=-1)
        else:
            features = last_hidden(top)
        return nn.Dense(self.out_dim, name="head")(features)


class CharLM(nn.Module):
    """Embedding -> unidirectional recurrent stack -> per-step logits over the vocabulary.

    `__call__(tokens (B, T) int, carry)` returns (logits (B, T, vocab), final carry), so consecutive chunks
    of a text can be fed with the carry of the previous one (truncated backpropagation through time).
    `dropout` acts between recurrent layers; with `io_dropout` also on the embeddings and on the top layer's
    outputs (PyTorch's word_language_model).
    """

    vocab_size: int
    embed: int = 64
    cell: str = "lstm"
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.0
    recurrent_init: str = "orthogonal"
    forget_bias: float = 1.0
    io_dropout: bool = False

    def zero_carry(self, batch: int) -> tuple[Carry, ...]:
        return zero_carry(self.cell, batch, self.hidden, self.layers)

    @nn.compact
    def __call__(self, tokens: jax.Array, carry: tuple[Carry, ...] | None = None, *, train: bool = False,
                 features: bool = False) -> tuple[jax.Array, tuple[Carry, ...]]:
        """`features`: return the head's inputs (B, T, hidden) instead of the logits (for a fused loss that
        applies the head itself, `research/objectives/fused_cross_entropy.py`)."""
        if carry is None:
            carry = self.zero_carry(tokens.shape[0])
        x = nn.Embed(self.vocab_size, self.embed, name="embed")(tokens)
        if self.io_dropout and self.dropout:
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        carry, outputs = RecurrentStack(self.cell, self.hidden, self.layers, False, self.dropout,
                                        self.recurrent_init, self.forget_bias, name="rnn")(x, carry, train=train)
        if self.io_dropout and self.dropout:
            outputs = nn.Dropout(self.dropout, deterministic=not train)(outputs)
        if features:
            return outputs, carry
        return nn.Dense(self.vocab_size, name="head")(outputs), carry
