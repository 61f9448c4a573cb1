"""Sequence data: the adding / copy / forecast generators and their baselines, seq_mnist, char corpora and
the TBPTT pipeline."""

import math

import numpy as np
import pytest

from research import data
from research.data import sequences
from research.data.registry import Dataset
from research.data.sequences import adding_sample, copy_sample, forecast_sample
from research.data.text import CharVocab, TBPTTPipeline, char_corpus, stream_chunks
from research.errors import ConfigError
from research.metrics import sequence as seqm


def test_adding_markers_and_targets():
    t = 30
    batch = adding_sample(np.random.default_rng(0), 500, t)
    x, y = batch["x"], batch["y"]
    assert x.shape == (500, t, 2) and x.dtype == np.float32 and y.shape == (500,)
    markers = x[..., 1]
    assert set(np.unique(markers)) == {0.0, 1.0}
    assert np.all(markers[:, :t // 2].sum(1) == 1) and np.all(markers[:, t // 2:].sum(1) == 1)
    np.testing.assert_allclose(y, (x[..., 0] * markers).sum(1), rtol=1e-6)
    assert x[..., 0].min() >= 0 and x[..., 0].max() < 1


def test_adding_baseline_from_data_matches_one_sixth():
    y = adding_sample(np.random.default_rng(1), 200_000, 10)["y"]
    assert abs(seqm.constant_prediction_mse(y, 1.0) - 1 / 6) < 3e-3


def test_copy_layout():
    delay = 7
    batch = copy_sample(np.random.default_rng(0), 50, delay)
    tokens, y = batch["x"].argmax(-1), batch["y"]
    assert batch["x"].shape == (50, delay + 20, 10) and np.all(batch["x"].sum(-1) == 1)
    symbols = tokens[:, :10]
    assert symbols.min() >= 1 and symbols.max() <= 8
    assert np.all(tokens[:, 10:10 + delay - 1] == 0)          # T - 1 blanks
    assert np.all(tokens[:, 10 + delay - 1] == 9)              # the delimiter
    assert np.all(tokens[:, -10:] == 0)                        # 10 blanks while the model answers
    assert np.all(y[:, :-10] == 0) and np.array_equal(y[:, -10:], symbols)


@pytest.mark.parametrize("delay", [10, 100])
def test_copy_memoryless_baseline_from_data_matches_formula(delay):
    y = copy_sample(np.random.default_rng(2), 20_000, delay)["y"]
    formula = 10 * math.log(8) / (delay + 20)
    assert abs(seqm.per_step_marginal_xent(y, 10) - formula) < 2e-3 * formula + 1e-4
    assert data.load("copy", length=delay, test_size=8).info["baseline_loss"] == pytest.approx(formula)


def test_forecast_targets_are_the_next_values_and_persistence():
    batch = forecast_sample(np.random.default_rng(0), 20, 50)
    x, y = batch["x"], batch["y"]
    assert x.shape == (20, 50, 1) and y.shape == (20, 50)
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:, 0])
    assert seqm.persistence_mse(x, y) == pytest.approx(float(np.mean((x[..., 0] - y) ** 2)), rel=1e-6)


def test_generated_datasets_are_registered_and_fixed():
    a, b = data.load("adding", length=12), data.load("adding", length=12)
    assert a.sample is not None and a.input_shape == (12, 2)
    np.testing.assert_array_equal(a.split("test")["x"], b.split("test")["x"])
    assert not np.array_equal(a.split("train")["x"][:10], a.split("test")["x"][:10])
    with pytest.raises(ConfigError, match="length"):
        data.load("copy", length=0)


def test_seq_mnist_is_mnist_5k_row_by_row(monkeypatch):
    # a stand-in for mnist_5k (the real one takes many seconds to load): the view only reshapes it
    rng = np.random.default_rng(0)
    splits = {s: {"x": rng.uniform(size=(n, 28, 28, 1)).astype(np.float32),
                  "y": rng.integers(0, 10, n).astype(np.int32)} for s, n in (("train", 8), ("test", 4))}
    img = Dataset("mnist_5k", splits, num_classes=10)
    monkeypatch.setattr(sequences, "mnist_5k", lambda: img)
    seq = data.load("seq_mnist")
    assert seq.split("train")["x"].shape == (8, 28, 28) and seq.num_classes == 10 and seq.input_shape == (28, 28)
    np.testing.assert_array_equal(seq.split("test")["x"][1, 5], img.split("test")["x"][1, 5, :, 0])  # row 5
    np.testing.assert_array_equal(seq.split("test")["y"], img.split("test")["y"])


def test_text_source_vocab_and_splits(tmp_path):
    path = tmp_path / "t.txt"
    text = "hello world, said the rnn.\n" * 20
    path.write_text(text, encoding="utf-8")
    corpus = data.load(f"text:{path}")
    vocab = CharVocab(corpus.info["vocab"])
    assert vocab.chars == "".join(sorted(set(text)))
    joined = vocab.decode(np.concatenate([corpus.split("train")["tokens"], corpus.split("validation")["tokens"]]))
    assert joined == text and len(corpus.split("validation")["tokens"]) == len(text) - int(len(text) * 0.9)
    with pytest.raises(ConfigError, match="not in the vocabulary"):
        vocab.encode("XYZ")
    with pytest.raises(ConfigError, match="does not exist"):
        data.load(f"text:{tmp_path / 'missing.txt'}")


def test_char_corpus_from_a_text_feature():
    # the shape tfds:tiny_shakespeare has: one string per split under `text`
    ds = Dataset("tfds:fake", {"train": {"text": np.array([b"abcab"], dtype=object)},
                               "validation": {"text": np.array([b"cba!"], dtype=object)}})
    corpus = char_corpus(ds)
    assert corpus.info["vocab"] == "!abc"
    np.testing.assert_array_equal(corpus.split("validation")["tokens"], [3, 2, 1, 0])
    with pytest.raises(ConfigError, match="no `text` feature"):
        char_corpus(Dataset("x", {"train": {"x": np.zeros((2, 3))}}))


def test_tbptt_batches_continue_each_stream():
    tokens = np.arange(1000, dtype=np.int32)
    pipe = TBPTTPipeline(tokens, batch_size=4, unroll=10, seed=3)
    first, second = next(pipe), next(pipe)
    assert first["x"].shape == (4, 10) and first["reset"].all() and not second["reset"].any()
    np.testing.assert_array_equal(first["y"], first["x"] + 1)            # targets: the next character
    np.testing.assert_array_equal(second["x"][:, 0], first["x"][:, -1] + 1)  # chunk 2 continues chunk 1
    # the next epoch starts afresh (reset) at a seeded offset
    for _ in range(pipe.steps_per_epoch - 2):
        next(pipe)
    assert pipe.position == {"epoch": 1, "index": 0} and next(pipe)["reset"].all()


def test_tbptt_position_restores_the_same_batches():
    tokens = np.random.default_rng(0).integers(0, 50, 3000).astype(np.int32)
    a = TBPTTPipeline(tokens, batch_size=8, unroll=16, seed=5)
    for _ in range(30):  # crosses an epoch boundary (23 batches per epoch)
        next(a)
    saved = a.position
    expected = [next(a) for _ in range(5)]
    b = TBPTTPipeline(tokens, batch_size=8, unroll=16, seed=5)
    b.restore(saved)
    for want in expected:
        got = next(b)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    with pytest.raises(ConfigError):
        b.restore({"epoch": 0, "index": 10_000})
    with pytest.raises(ConfigError, match="too short"):
        TBPTTPipeline(tokens[:20], batch_size=8, unroll=16, seed=0)


def test_stream_chunks_cover_consecutive_text():
    tokens = np.arange(101, dtype=np.int32)
    xs, ys = stream_chunks(tokens, batch=2, unroll=10)
    assert xs.shape == (5, 2, 10)
    np.testing.assert_array_equal(xs[:, 0].reshape(-1), np.arange(50))
    np.testing.assert_array_equal(xs[:, 1].reshape(-1), np.arange(50, 100))
    np.testing.assert_array_equal(ys, xs + 1)


def test_tiny_shakespeare_from_tfds_mock_data():
    """`tfds:tiny_shakespeare` through the registry's TFDS source (mocked: nothing downloaded or prepared)."""
    import tensorflow_datasets as tfds

    from research.data.text import load_char_corpus, validation_split

    with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
        corpus = load_char_corpus("tfds:tiny_shakespeare")
    assert corpus.name == "tfds:tiny_shakespeare" and len(corpus.info["vocab"]) > 1
    tokens = corpus.split("train")["tokens"]
    assert tokens.dtype == np.int32 and len(tokens) > 0 and tokens.max() < len(corpus.info["vocab"])
    assert validation_split(corpus) in corpus.splits
