"""Where the LSTM LM step's time goes: the recurrence and the vocabulary projection, XLA:CPU vs PyTorch.

The profile behind `lstm_torch`'s result, at its main row's sizes (embedding 200, hidden 200, 2 layers, bptt 35,
batch 20, WikiText-2's vocabulary of 33,278). Each part is timed as forward + backward (gradients of all its
parameters and inputs):
- recurrence: the 2-layer LSTM over 35 steps (ours: `RecurrentStack`, a `lax.scan` per layer; PyTorch:
  `nn.LSTM`) on random inputs, loss = sum of the outputs;
- vocabulary: embedding lookup + linear decoder to 33,278 logits + softmax cross-entropy over the 700 tokens,
  no recurrence in between; ours twice: autodiff through optax's loss on the decoder's logits (what `CharLMTask`
  runs below 4,096 classes) and the fused `linear_softmax_cross_entropy` it runs from there up.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.timing import median_seconds, table

VOCAB, EMB, HIDDEN, BPTT, BATCH = 33_278, 200, 200, 35, 20


def _ours_recurrence(repeats: int) -> float:
    from research.models.rnn import RecurrentStack

    model = RecurrentStack("lstm", HIDDEN, layers=2)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((BATCH, BPTT, EMB), np.float32))
    params = model.init(jax.random.PRNGKey(0), x)
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(model.apply(p, x)[1]), argnums=(0, 1)))
    return median_seconds(lambda: jax.block_until_ready(grad(params, x)), repeats, warmup=2)


def _ours_vocabulary(repeats: int, fused: bool = False) -> float:
    from research.objectives.fused_cross_entropy import linear_softmax_cross_entropy

    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, VOCAB, (BATCH, BPTT + 1)), jnp.int32)
    params = {"embed": jnp.asarray(rng.standard_normal((VOCAB, EMB), np.float32) * 0.1),
              "w": jnp.asarray(rng.standard_normal((EMB, VOCAB), np.float32) * 0.07),
              "b": jnp.zeros(VOCAB)}

    def loss(p):
        x = p["embed"][tokens[:, :-1]]
        if fused:
            return linear_softmax_cross_entropy(x, p["w"], p["b"], tokens[:, 1:])
        return optax.softmax_cross_entropy_with_integer_labels(x @ p["w"] + p["b"], tokens[:, 1:]).mean()

    grad = jax.jit(jax.grad(loss))
    return median_seconds(lambda: jax.block_until_ready(grad(params)), repeats, warmup=2)


def _torch_recurrence(repeats: int) -> float:
    import torch

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(EMB, HIDDEN, 2)
    x = torch.randn(BPTT, BATCH, EMB, requires_grad=True)

    def call():
        lstm.zero_grad()
        x.grad = None
        lstm(x)[0].sum().backward()

    return median_seconds(call, repeats, warmup=2)


def _torch_vocabulary(repeats: int) -> float:
    import torch

    torch.manual_seed(0)
    embed, decoder = torch.nn.Embedding(VOCAB, EMB), torch.nn.Linear(EMB, VOCAB)
    tokens = torch.randint(0, VOCAB, (BPTT + 1, BATCH))

    def call():
        embed.zero_grad()
        decoder.zero_grad()
        logits = decoder(embed(tokens[:-1]))
        torch.nn.functional.cross_entropy(logits.view(-1, VOCAB), tokens[1:].reshape(-1)).backward()

    return median_seconds(call, repeats, warmup=2)


def main(repeats: int = 5) -> str:
    rows = []
    fused = lambda repeats: _ours_vocabulary(repeats, fused=True)
    for name, ours, theirs in (("2-layer LSTM recurrence", _ours_recurrence, _torch_recurrence),
                               ("embedding + decoder + softmax CE (optax, autodiff)", _ours_vocabulary,
                                _torch_vocabulary),
                               ("embedding + decoder + softmax CE (fused)", fused, _torch_vocabulary)):
        o, t = ours(repeats * 4), theirs(repeats * 4)
        rows.append([name, o * 1e3, t * 1e3, t / o])
    return table("LSTM LM parts (bptt 35, batch 20, hidden 200, vocab 33,278), forward + backward: ms per call",
                 ["part", "XLA:CPU ms", "PyTorch ms", "speed vs PyTorch"], rows)


if __name__ == "__main__":
    main()
