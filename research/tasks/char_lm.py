"""A character language model trained with truncated backpropagation through time.

The hidden state at the end of a batch lives in the train state and starts the next batch (the pipeline's
`reset` flags zero it at epoch starts), so `train_step` stays a pure function of (state, batch). Evaluation
(validation bits per character, perplexity, sampled text) is `research/evaluators/language_model.py`.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import NamedSharding

from research.data import Dataset, Pipeline
from research.data.text import CharVocab, TBPTTPipeline
from research.errors import ConfigError
from research.models.rnn import CharLM
from research.objectives.classification import softmax_cross_entropy
from research.objectives.fused_cross_entropy import FUSED_MIN_VOCAB, linear_softmax_cross_entropy
from research.optim import OptimizerConfig, gradient_step, make_optimizer
from research.state import TrainState, init_ema, step_rng, update_ema


@struct.dataclass
class CharLMState(TrainState):
    carry: Any  # per layer, the hidden state (LSTM: (c, h)) after the previous batch, each (batch, hidden)


class CharLMTask:
    """`batch_size` parallel streams of the training text, `unroll` characters of each per step (the truncation
    length of BPTT), `steps` steps. From `fused_min_vocab` tokens of vocabulary up (word-level vocabularies) the
    train step's loss is the fused decoder + cross-entropy (`research/objectives/fused_cross_entropy.py`): faster
    there, equal up to float rounding; below it the plain optax loss, so character models keep their bits."""

    def __init__(self, model: CharLM, corpus: Dataset, optimizer: OptimizerConfig, *, batch_size: int, unroll: int,
                 steps: int, ema_decay: float = 0.0, fused_min_vocab: int = FUSED_MIN_VOCAB):
        self.vocab = CharVocab(corpus.info["vocab"])
        if model.vocab_size != len(self.vocab):
            raise ConfigError(f"model vocabulary {model.vocab_size} != corpus vocabulary {len(self.vocab)}")
        if unroll < 1:
            raise ConfigError(f"--unroll must be positive, got {unroll}")
        self.model, self.corpus, self.batch_size, self.unroll = model, corpus, batch_size, unroll
        self.tx, self.schedule = make_optimizer(optimizer, steps)
        self.ema_decay = ema_decay  # > 0: the state keeps a moving average of the parameters (research/state.py)
        self.fused = model.vocab_size >= fused_min_vocab

    # ---- pure functions (jitted by the loop)
    def init_state(self, rng: jax.Array) -> CharLMState:
        params_rng, dropout_rng, run_rng = jax.random.split(rng, 3)
        tokens = jnp.zeros((1, 1), jnp.int32)
        params = self.model.init({"params": params_rng, "dropout": dropout_rng}, tokens)["params"]
        state = CharLMState(step=jnp.zeros((), jnp.int32), params=params, opt_state=self.tx.init(params),
                            model_state={}, rng=run_rng, carry=self.model.zero_carry(self.batch_size))
        return init_ema(state, self.ema_decay)

    def train_step(self, state: CharLMState, batch: dict[str, jax.Array]) -> tuple[CharLMState, dict]:
        keep = ~batch["reset"][:, None]
        carry = jax.tree.map(lambda c: jnp.where(keep, c, 0.0), state.carry)

        def loss_fn(params):
            out, new_carry = self.model.apply({"params": params}, batch["x"], carry, train=True,
                                              rngs={"dropout": step_rng(state)}, features=self.fused)
            if self.fused:
                head = params["head"]
                return linear_softmax_cross_entropy(out, head["kernel"], head["bias"], batch["y"]), new_carry
            return softmax_cross_entropy(out, batch["y"]), new_carry

        params, opt_state, loss, new_carry, norms = gradient_step(loss_fn, state.params, state.opt_state, self.tx)
        metrics = {"loss": loss, "bits_per_char": loss / math.log(2.0), "learning_rate": self.schedule(state.step),
                   **norms}
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  carry=jax.lax.stop_gradient(new_carry))
        return update_ema(new_state, self.ema_decay), metrics

    def nll(self, params: Any, xs: jax.Array, ys: jax.Array) -> jax.Array:
        """Summed NLL (nats) of ys given xs, both (chunks, B, U), carrying the state from chunk to chunk."""
        def chunk(carry, xy):
            logits, carry = self.model.apply({"params": params}, xy[0], carry)
            return carry, jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, xy[1]))

        _, sums = jax.lax.scan(chunk, self.model.zero_carry(xs.shape[1]), (xs, ys))
        return jnp.sum(sums)

    def step(self, params: Any, tokens: jax.Array, carry: Any) -> tuple[jax.Array, Any]:
        """One character per stream: (logits (B, vocab) of the next character after `tokens` (B,) ids, the new
        carry). Start from `model.zero_carry(B)`; what an exported sampler calls once per character."""
        logits, carry = self.model.apply({"params": params}, tokens[:, None], carry)
        return logits[:, 0], carry

    def sample(self, params: Any, prompt: jax.Array, rng: jax.Array, temperature: jax.Array | float, *,
               num_chars: int) -> jax.Array:
        """`num_chars` token ids continuing `prompt` (P,) ids; temperature 0 picks the most likely character."""
        logits, carry = self.model.apply({"params": params}, prompt[None, :])

        def draw(key, last_logits):
            drawn = jax.random.categorical(key, last_logits / jnp.maximum(temperature, 1e-6), -1)
            return jnp.where(temperature > 0, drawn, jnp.argmax(last_logits, -1))

        def step(c, key):
            carry, last = c
            token = draw(key, last)
            logits, carry = self.model.apply({"params": params}, token[:, None], carry)
            return (carry, logits[:, -1]), token[0]

        _, tokens = jax.lax.scan(step, (carry, logits[:, -1]), jax.random.split(rng, num_chars))
        return tokens

    # ---- host side
    def train_pipeline(self, seed: int, sharding: NamedSharding) -> Pipeline:
        return TBPTTPipeline(self.corpus.split("train")["tokens"], self.batch_size, self.unroll, seed=seed,
                             sharding=sharding)

    def params(self, state: CharLMState) -> Any:
        return state.params
