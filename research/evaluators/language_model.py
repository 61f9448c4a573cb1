"""A character language model's validation bits per character and perplexity, and a sampled text.

The validation text is read as `batch_size` consecutive streams cut into chunks of `unroll` characters, the
hidden state carried from chunk to chunk. The sample (`samples/sample_<step>.txt`) continues `prompt`, drawn
with the step as its seed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from research import parallel
from research.data import Dataset
from research.data.text import stream_chunks, validation_split
from research.errors import ConfigError
from research.evaluators.base import EvalContext, Evaluation
from research.metrics import sequence as seqm
from research.tasks.char_lm import CharLMState, CharLMTask


class TextSampler:
    """Text from a char LM task's parameters, on this process's default device."""

    def __init__(self, task: CharLMTask):
        self.task = task
        self._sample = jax.jit(task.sample, static_argnames=("num_chars",))

    def generate(self, state: CharLMState, prompt: str, num_chars: int, temperature: float, seed: int) -> str:
        """Deterministic for a fixed (state, prompt, num_chars, temperature, seed)."""
        if not prompt:
            raise ConfigError("the prompt must hold at least one character")
        if num_chars < 1:
            raise ConfigError(f"the number of characters must be positive, got {num_chars}")
        if not temperature >= 0:
            raise ConfigError(f"the temperature must be >= 0, got {temperature}")
        params = parallel.to_host(state.params)  # params may span processes: every process samples the same
        ids = self._sample(params, jnp.asarray(self.task.vocab.encode(prompt)), jax.random.PRNGKey(seed),
                           jnp.float32(temperature), num_chars=num_chars)
        return self.task.vocab.decode(np.asarray(ids))


class LanguageModelEvaluator:
    def __init__(self, task: CharLMTask, corpus: Dataset, *, batch_size: int, max_chars: int = 0,
                 sample_chars: int = 200, prompt: str = "\n", temperature: float = 0.8, every: int = 0):
        self.task, self.batch_size, self.every = task, batch_size, every
        self.sample_chars, self.prompt, self.temperature = sample_chars, prompt, temperature
        self.sampler = TextSampler(task)
        if sample_chars:
            task.vocab.encode(prompt)  # an unknown prompt character fails now, not at the first evaluation
        tokens = corpus.split(validation_split(corpus))["tokens"]
        self.chunks = stream_chunks(tokens[:max_chars + 1] if max_chars else tokens, batch_size, task.unroll)
        self._nll = jax.jit(task.nll)

    def evaluate(self, state: CharLMState, ctx: EvalContext) -> Evaluation:
        xs, ys = self.chunks
        rows = parallel.process_rows(self.batch_size)
        sharding = NamedSharding(ctx.mesh, PartitionSpec(None, parallel.DATA_AXIS))
        xs, ys = parallel.to_global((xs[:, rows], ys[:, rows]), sharding)
        nll = float(parallel.to_host(self._nll(state.params, xs, ys))) / ys.size
        out = Evaluation({"loss": nll, "bits_per_char": seqm.bits_per_char(nll), "perplexity": seqm.perplexity(nll),
                          "chars": float(ys.size)})
        if self.sample_chars and ctx.pictures:
            text = self.sampler.generate(state, self.prompt, self.sample_chars, self.temperature, seed=ctx.step)
            out.texts["sample"] = self.prompt + text + "\n"
        return out
