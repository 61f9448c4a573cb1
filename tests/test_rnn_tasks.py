"""The sequence tasks: TBPTT state carry in the char LM's train step and evaluation, sampling determinism,
sequence metrics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.data.text import TBPTTPipeline, corpus_from_texts
from research.errors import ConfigError
from research.evaluators import EvalContext
from research.evaluators.language_model import LanguageModelEvaluator, TextSampler
from research.metrics import sequence as seqm
from research.models.rnn import CharLM
from research.optim import OptimizerConfig
from research.parallel import make_mesh
from research.tasks.char_lm import CharLMTask

TEXT = "the quick brown fox jumps over the lazy dog. " * 40


@pytest.fixture(scope="module")
def lm():
    corpus = corpus_from_texts("fake", {"train": TEXT, "validation": TEXT[:400]})
    # identity recurrent init: the orthogonal one (a QR per gate) costs seconds of compilation and is not under test
    model = CharLM(vocab_size=len(corpus.info["vocab"]), embed=8, cell="lstm", hidden=16, layers=2,
                   recurrent_init="identity")
    task = CharLMTask(model, corpus, OptimizerConfig(learning_rate=1e-2), batch_size=8, unroll=12, steps=10)
    apply = jax.jit(lambda params, x, carry: model.apply({"params": params}, x, carry))  # compiled once per shape
    return task, jax.jit(task.init_state)(jax.random.PRNGKey(0)), apply


def test_train_step_carries_the_hidden_state_and_resets_it(lm):
    task, state, apply = lm
    pipe = TBPTTPipeline(task.corpus.split("train")["tokens"], 8, 12, seed=0)
    first, second = next(pipe), next(pipe)
    step = jax.jit(task.train_step)
    after_first, metrics = step(state, first)
    assert metrics["bits_per_char"] == pytest.approx(float(metrics["loss"]) / math.log(2), rel=1e-5)
    close = lambda a, b: [np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
                          for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)]
    # the carry kept in the state is the model's final state on this batch, under the pre-update params
    close(after_first.carry, apply(state.params, first["x"], state.carry)[1])
    assert np.abs(jax.tree.leaves(after_first.carry)[0]).max() > 0
    # the next batch continues from that carry ...
    close(step(after_first, second)[0].carry, apply(after_first.params, second["x"], after_first.carry)[1])
    # ... and a reset batch starts from zeros whatever the state holds
    reset = dict(second, reset=np.ones_like(second["reset"]))
    close(step(after_first, reset)[0].carry, step(after_first.replace(carry=state.carry), second)[0].carry)


def test_validation_in_two_half_chunks_equals_one_full_pass(lm):
    task, state, apply = lm
    tokens = jnp.asarray(task.corpus.split("validation")["tokens"][:97])
    x, y = tokens[:96].reshape(4, 24), tokens[1:97].reshape(4, 24)
    halves = jax.jit(task.nll)(state.params, jnp.stack([x[:, :12], x[:, 12:]]), jnp.stack([y[:, :12], y[:, 12:]]))
    logits, _ = apply(state.params, x, task.model.zero_carry(4))
    full = -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits), y[..., None], -1))
    np.testing.assert_allclose(halves, full, rtol=1e-5)


def test_sampling_is_deterministic_for_a_seed(lm):
    task, state, _ = lm
    generate = TextSampler(task).generate
    a = generate(state, "the ", 40, 1.0, seed=3)
    assert a == generate(state, "the ", 40, 1.0, seed=3) and len(a) == 40
    assert a != generate(state, "the ", 40, 1.0, seed=4)
    # temperature 0: the most likely character at every step, whatever the seed
    assert generate(state, "the ", 40, 0.0, seed=0) == generate(state, "the ", 40, 0.0, seed=9)
    with pytest.raises(ConfigError, match="vocabulary"):
        generate(state, "THE", 5, 1.0, seed=0)


def test_evaluator_scores_the_validation_text_and_samples(lm):
    task, state, apply = lm
    ev = LanguageModelEvaluator(task, task.corpus, batch_size=8, sample_chars=20, prompt="the ", temperature=0.5)
    out = ev.evaluate(state, EvalContext(3, make_mesh()))
    xs, ys = ev.chunks  # 8 streams of the validation text in chunks of 12 characters
    nll = float(jax.jit(task.nll)(state.params, jnp.asarray(xs), jnp.asarray(ys))) / ys.size
    assert out.metrics["loss"] == pytest.approx(nll, rel=1e-5) and out.metrics["chars"] == ys.size
    assert out.metrics["bits_per_char"] == pytest.approx(nll / math.log(2), rel=1e-5)
    assert out.texts == {"sample": "the " + TextSampler(task).generate(state, "the ", 20, 0.5, seed=3) + "\n"}
    assert not ev.evaluate(state, EvalContext(3, make_mesh(), pictures=False)).texts
    with pytest.raises(ConfigError, match="vocabulary"):  # an unknown prompt character: refused before training
        LanguageModelEvaluator(task, task.corpus, batch_size=8, sample_chars=20, prompt="THE")


def test_sequence_metrics():
    assert seqm.bits_per_char(math.log(2)) == pytest.approx(1.0)
    assert seqm.perplexity(math.log(7)) == pytest.approx(7.0)
    logits = np.zeros((2, 3, 4))
    logits[0, :, 1] = logits[1, :2, 0] = 10.0
    labels = np.array([[1, 1, 1], [0, 0, 3]])
    report = seqm.per_step_classification_report(logits, labels, scored_steps=1)
    assert report["accuracy"] == pytest.approx(5 / 6) and report["output_accuracy"] == 0.5
    assert report["sequence_accuracy"] == 0.5 and report["loss"] > 0
