"""The sequence family's tasks.

- `SequenceTask`: the supervised task (research/tasks/supervised.py) for recurrent models, with last-state
  classification / regression (mnist1d, seq_mnist, adding) and per-step classification / regression (copy,
  forecast). Its evaluation adds the task's baseline computed on the same test data (`baseline_<metric>`)
  and draws the training curve against it (`images/curve_<step>.png`).
- `CharLMTask`: a character language model trained with truncated backpropagation through time. The hidden
  state at the end of a batch lives in the train state and starts the next batch (the pipeline's `reset`
  flags zero it at epoch starts), so `train_step` stays a pure function of (state, batch). Evaluation:
  validation bits per character and perplexity over the validation text read as consecutive chunks, plus a
  short sample written to `samples/sample_<step>.txt`.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import NamedSharding, PartitionSpec

from research import parallel
from research.data import Dataset, Pipeline, map_batches
from research.data.registry import Arrays
from research.data.text import CharVocab, TBPTTPipeline, stream_chunks, validation_split
from research.errors import ConfigError
from research.loop import EvalContext
from research.metrics import sequence as seqm
from research.models.rnn import CharLM
from research.objectives.classification import softmax_cross_entropy
from research.optim import OptimizerConfig, make_optimizer
from research.parallel import batch_sharding, check_divisible
from research.state import TrainState, global_norm, step_rng
from research.tasks.supervised import SupervisedConfig, SupervisedTask
from research.writers import read_metrics


def data_baseline(dataset: Dataset) -> Callable[[Arrays], dict[str, float]] | None:
    """The baseline named in `dataset.info["baseline"]`, as a function of the evaluation arrays."""
    kind = dataset.info.get("baseline")
    if kind is None:
        return None
    if kind == "predict 1":
        return lambda a: {"baseline_mse": seqm.constant_prediction_mse(a["y"], 1.0)}
    if kind == "memoryless":
        return lambda a: {"baseline_loss": seqm.per_step_marginal_xent(a["y"], dataset.num_classes)}
    if kind == "persistence":
        return lambda a: {"baseline_mse": seqm.persistence_mse(a["x"], a["y"])}
    raise ValueError(f"unknown baseline {kind!r} in dataset {dataset.name!r}")


def plot_curve(workdir: pathlib.Path, metric: str, baseline: float | None, title: str,
               current: tuple[int, float] | None = None):
    """A matplotlib figure of the train loss and the test `metric` from metrics.jsonl (plus `current`, the
    evaluation being made, not yet written there), and the baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(workdir)
    train = [(r["step"], r["loss"]) for r in records if r["split"] == "train" and "loss" in r]
    test = [(r["step"], r[metric]) for r in records if r["split"] == "test" and metric in r]
    test += [current] if current else []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", lw=1)
    if test:
        ax.plot(*zip(*test, strict=True), "o-", label=f"test {metric}", ms=3)
    if baseline is not None:
        ax.axhline(baseline, color="k", ls="--", lw=1, label=f"baseline {baseline:.4g}")
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


class SequenceTask(SupervisedTask):
    """SupervisedTask plus per-step classification reports, the data's baseline and a training-curve plot."""

    def __init__(self, model, dataset: Dataset, optimizer: OptimizerConfig, cfg: SupervisedConfig,
                 per_step: bool = False):
        super().__init__(model, dataset, optimizer, cfg)
        self.per_step = per_step
        self.scored_steps = int(dataset.info.get("scored_steps", 0))
        self._baseline_fn = data_baseline(dataset)
        self._baselines: dict[str, dict[str, float]] = {}

    def baseline(self, split: str = "test") -> dict[str, float]:
        if self._baseline_fn is None:
            return {}
        if split not in self._baselines:
            self._baselines[split] = self._baseline_fn(self.dataset.split(split))
        return self._baselines[split]

    def evaluate(self, state: TrainState, ctx: EvalContext, split: str = "test") -> dict[str, float]:
        if self.per_step and self.cfg.kind == "classify":
            arrays = self.dataset.split(split)
            logits = map_batches(lambda b: self._predict(state, b["x"]), {"x": arrays["x"]}, self.eval_batch_size,
                                 batch_sharding(ctx.mesh))
            metrics = seqm.per_step_classification_report(logits, arrays["y"], self.scored_steps)
        else:
            metrics = super().evaluate(state, ctx, split)
        metrics.update(self.baseline(split))
        metric = "loss" if self.cfg.kind == "classify" else "mse"
        fig = plot_curve(ctx.workdir, metric, metrics.get(f"baseline_{metric}"), self.dataset.name,
                         (ctx.step, metrics[metric]))
        ctx.writer.figure(ctx.step, "curve", fig)
        return metrics


# ---------------------------------------------------------------------------------------------------------------
# Character language model with truncated backpropagation through time.


@struct.dataclass
class CharLMState(TrainState):
    carry: Any  # per layer, the hidden state (LSTM: (c, h)) after the previous batch, each (batch, hidden)


@dataclasses.dataclass(frozen=True)
class CharLMConfig:
    batch_size: int
    unroll: int                 # characters per batch and stream: the truncation length of BPTT
    steps: int
    eval_batch_size: int = 0    # streams for validation (0: batch_size)
    max_eval_chars: int = 0     # 0: the whole validation split
    sample_chars: int = 200     # characters sampled at each evaluation (0: none)
    sample_prompt: str = "\n"
    sample_temperature: float = 0.8


class CharLMTask:
    def __init__(self, model: CharLM, corpus: Dataset, optimizer: OptimizerConfig, cfg: CharLMConfig):
        self.vocab = CharVocab(corpus.info["vocab"])
        if model.vocab_size != len(self.vocab):
            raise ConfigError(f"model vocabulary {model.vocab_size} != corpus vocabulary {len(self.vocab)}")
        self.model, self.corpus, self.cfg = model, corpus, cfg
        self.tx, self.schedule = make_optimizer(optimizer, cfg.steps)
        self.eval_split = validation_split(corpus)
        self.eval_batch_size = cfg.eval_batch_size or cfg.batch_size
        # The validation text as consecutive chunks of eval_batch_size streams (checked now, not at the first eval).
        tokens = corpus.split(self.eval_split)["tokens"]
        self.eval_chunks = stream_chunks(tokens[:cfg.max_eval_chars + 1] if cfg.max_eval_chars else tokens,
                                         self.eval_batch_size, cfg.unroll)
        self._eval = jax.jit(self.eval_nll)
        self._sample = jax.jit(self.sample, static_argnames=("num_chars",))

    # ---- pure functions (jitted by the loop)
    def init_state(self, rng: jax.Array) -> CharLMState:
        params_rng, dropout_rng, run_rng = jax.random.split(rng, 3)
        tokens = jnp.zeros((1, 1), jnp.int32)
        params = self.model.init({"params": params_rng, "dropout": dropout_rng}, tokens)["params"]
        return CharLMState(step=jnp.zeros((), jnp.int32), params=params, opt_state=self.tx.init(params),
                           model_state={}, rng=run_rng, carry=self.model.zero_carry(self.cfg.batch_size))

    def train_step(self, state: CharLMState, batch: dict[str, jax.Array]) -> tuple[CharLMState, dict]:
        keep = ~batch["reset"][:, None]
        carry = jax.tree.map(lambda c: jnp.where(keep, c, 0.0), state.carry)

        def loss_fn(params):
            logits, new_carry = self.model.apply({"params": params}, batch["x"], carry, train=True,
                                                 rngs={"dropout": step_rng(state)})
            return softmax_cross_entropy(logits, batch["y"]), new_carry

        (loss, new_carry), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "bits_per_char": loss / math.log(2.0), "learning_rate": self.schedule(state.step),
                   "grad_norm": global_norm(grads), "param_norm": global_norm(params),
                   "update_norm": global_norm(updates)}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                             carry=jax.lax.stop_gradient(new_carry)), metrics

    def eval_nll(self, params: Any, xs: jax.Array, ys: jax.Array) -> jax.Array:
        """Summed NLL (nats) of ys given xs, both (chunks, B, U), carrying the state from chunk to chunk."""
        def chunk(carry, xy):
            logits, carry = self.model.apply({"params": params}, xy[0], carry)
            nll = optax.softmax_cross_entropy_with_integer_labels(logits, xy[1])
            return carry, jnp.sum(nll)

        _, sums = jax.lax.scan(chunk, self.model.zero_carry(xs.shape[1]), (xs, ys))
        return jnp.sum(sums)

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
    def generate(self, state: CharLMState, prompt: str, num_chars: int, temperature: float, seed: int) -> str:
        """Sample text: deterministic for a fixed (state, prompt, num_chars, temperature, seed)."""
        if not prompt:
            raise ConfigError("the prompt must hold at least one character")
        if num_chars < 1:
            raise ConfigError(f"the number of characters must be positive, got {num_chars}")
        if temperature < 0:
            raise ConfigError(f"the temperature must be >= 0, got {temperature}")
        params = parallel.to_host(state.params)  # sample on this process's default device
        ids = self._sample(params, jnp.asarray(self.vocab.encode(prompt)), jax.random.PRNGKey(seed),
                           jnp.float32(temperature), num_chars=num_chars)
        return self.vocab.decode(np.asarray(ids))

    def train_pipeline(self, seed: int, sharding: NamedSharding) -> Pipeline:
        check_divisible(self.cfg.batch_size, sharding.mesh)
        check_divisible(self.eval_batch_size, sharding.mesh, "--eval_batch_size")  # now, not after training
        return TBPTTPipeline(self.corpus.split("train")["tokens"], self.cfg.batch_size, self.cfg.unroll, seed=seed,
                             sharding=sharding)

    def evaluate(self, state: CharLMState, ctx: EvalContext) -> dict[str, float]:
        check_divisible(self.eval_batch_size, ctx.mesh, "--eval_batch_size")
        xs, ys = self.eval_chunks
        rows = parallel.process_rows(self.eval_batch_size)
        sharding = NamedSharding(ctx.mesh, PartitionSpec(None, parallel.DATA_AXIS))
        xs, ys = parallel.to_global((xs[:, rows], ys[:, rows]), sharding)
        nll = float(parallel.to_host(self._eval(state.params, xs, ys))) / ys.size
        metrics = {"loss": nll, "bits_per_char": seqm.bits_per_char(nll), "perplexity": seqm.perplexity(nll),
                   "chars": float(ys.size)}
        if self.cfg.sample_chars and ctx.replica == 0:  # every process samples (params may span them); one writes
            text = self.generate(state, self.cfg.sample_prompt, self.cfg.sample_chars, self.cfg.sample_temperature,
                                 seed=ctx.step)
            if jax.process_index() == 0:
                path = ctx.workdir / "samples" / f"sample_{ctx.step:07d}.txt"
                path.parent.mkdir(exist_ok=True)
                path.write_text(self.cfg.sample_prompt + text + "\n")
        return metrics

    def params(self, state: CharLMState) -> Any:
        return state.params
