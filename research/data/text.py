"""Character-level text: `text:PATH` sources, the char vocabulary, and the TBPTT batch pipeline.

A char corpus is a `Dataset` whose splits hold `tokens` (int32, one per character) and whose
`info["vocab"]` is the string of its characters in sorted order (token i is `vocab[i]`). Sources:
- `text:PATH`: any local UTF-8 file; the first 90% of its characters are `train`, the rest `validation`.
- `tiny_shakespeare`: Karpathy's Tiny Shakespeare (public-domain text, 1,115,394 ASCII characters), shipped
  as package data (`research/data/corpora/tiny_shakespeare.txt`, checked against its sha256), split as
  TFDS's `tiny_shakespeare` is: `train` the first 1,003,854 characters (90%), `validation` the next 55,770,
  `test` the last 55,770. Its `train` split and the first 55,770 characters of its `validation` equal
  those of `text:PATH` on the same file.
- any dataset with a `text` feature, e.g. `tfds:tiny_shakespeare` (splits train / validation / test, one
  string each), through `char_corpus(load(...))`.

Truncated backpropagation through time (`TBPTTPipeline`): the training text is cut into `batch_size`
parallel streams and every batch is the next `unroll` characters of each stream, so the hidden state at the
end of one batch is the right start for the next. Each batch carries `reset` (B,) flags, true on the first
chunk of an epoch, when the carried state must start from zeros.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
from collections.abc import Mapping

import numpy as np
from jax.sharding import NamedSharding

from research import parallel
from research.data.pipeline import Batch, EpochPipeline
from research.data.registry import Dataset, load, register
from research.errors import ConfigError

VALIDATION_FRACTION = 0.1
TINY_SHAKESPEARE = ("corpora", "tiny_shakespeare.txt")  # under research/data, shipped as package data
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINY_SHAKESPEARE_SPLITS = (("train", 1_003_854), ("validation", 55_770), ("test", 55_770))  # TFDS's 90/5/5


class CharVocab:
    """Characters <-> int32 ids, in sorted character order."""

    def __init__(self, chars: str):
        self.chars = "".join(sorted(set(chars)))
        self._index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        unknown = sorted(set(text) - self._index.keys())
        if unknown:
            raise ConfigError(f"characters {''.join(unknown)!r} are not in the vocabulary of this corpus")
        return np.fromiter((self._index[c] for c in text), np.int32, len(text))

    def decode(self, ids: np.ndarray) -> str:
        return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))


def corpus_from_texts(name: str, texts: Mapping[str, str], info: Mapping | None = None) -> Dataset:
    """A char corpus from {split: text}; the vocabulary covers every split."""
    vocab = CharVocab("".join(texts.values()))
    splits = {split: {"tokens": vocab.encode(text)} for split, text in texts.items()}
    return Dataset(name, splits, info={**(info or {}), "vocab": vocab.chars})


@register("text:")
def text_file(path: str) -> Dataset:
    if not os.path.isfile(path):
        raise ConfigError(f"text file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        try:
            text = f.read()
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path} is not UTF-8 text: {e}") from None
    cut = int(len(text) * (1 - VALIDATION_FRACTION))
    if cut < 2 or len(text) - cut < 2:
        raise ConfigError(f"{path} is too short for a char corpus ({len(text)} characters)")
    return corpus_from_texts(f"text:{path}", {"train": text[:cut], "validation": text[cut:]},
                             {"source": os.path.abspath(path), "validation_fraction": VALIDATION_FRACTION})


@register("tiny_shakespeare")
def tiny_shakespeare() -> Dataset:
    resource = importlib.resources.files("research.data").joinpath(*TINY_SHAKESPEARE)
    try:
        data = resource.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"the package data file research/data/{'/'.join(TINY_SHAKESPEARE)} is missing from this "
                          f"installation (reinstall the package)") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != TINY_SHAKESPEARE_SHA256:  # e.g. line endings rewritten by a git checkout
        raise ConfigError(f"{resource}: checksum mismatch: sha256 {digest}, expected {TINY_SHAKESPEARE_SHA256}")
    text = data.decode("ascii")
    texts, start = {}, 0
    for split, size in TINY_SHAKESPEARE_SPLITS:
        texts[split], start = text[start:start + size], start + size
    assert start == len(text), (start, len(text))
    return corpus_from_texts("tiny_shakespeare", texts, {
        "source": f"research/data/{'/'.join(TINY_SHAKESPEARE)} (package data)", "sha256": digest,
        "origin": "github.com/karpathy/char-rnn data/tinyshakespeare/input.txt", "licence": "public domain",
        "splits": "TFDS tiny_shakespeare: first 90% train, next 5% validation, last 5% test"})


def char_corpus(dataset: Dataset) -> Dataset:
    """`dataset` as a char corpus: as is if it already is one, else from its `text` feature (e.g. TFDS)."""
    if "vocab" in dataset.info:
        return dataset
    texts = {}
    for split, arrays in dataset.splits.items():
        if "text" not in arrays:
            raise ConfigError(f"dataset {dataset.name!r} has no `text` feature; use text:PATH or a text dataset")
        texts[split] = "".join(t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in arrays["text"])
    return corpus_from_texts(dataset.name, texts, {"source": dataset.name})


def load_char_corpus(name: str, **options) -> Dataset:
    return char_corpus(load(name, **options))


def validation_split(corpus: Dataset) -> str:
    """The split used for validation: `validation` when there is one, else `test`."""
    for split in ("validation", "test"):
        if split in corpus.splits:
            return split
    raise ConfigError(f"dataset {corpus.name!r} has neither a validation nor a test split")


def stream_chunks(tokens: np.ndarray, batch: int, unroll: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of shape (chunks, batch, unroll): `batch` consecutive streams of `tokens` cut into chunks; y is x
    shifted by one character. The remainder that fills no whole chunk is dropped."""
    stream = (len(tokens) - 1) // batch
    chunks = stream // unroll
    if chunks < 1:
        raise ConfigError(f"{len(tokens)} characters are too few for {batch} streams of {unroll}-character chunks "
                          f"(validation: lower --eval_batch_size or --unroll, or raise --max_eval_chars)")
    starts = stream * np.arange(batch)
    idx = starts[None, :, None] + unroll * np.arange(chunks)[:, None, None] + np.arange(unroll)[None, None, :]
    return tokens[idx], tokens[idx + 1]


class TBPTTPipeline(EpochPipeline):
    """Consecutive chunks of `batch_size` parallel streams (see the module docstring).

    Epoch `e` starts its streams `default_rng([seed, e]).integers(unroll)` characters into the text, so chunk
    boundaries move from epoch to epoch; every epoch has the same number of batches. Position: (epoch, index).
    """

    source = "text"

    def __init__(self, tokens: np.ndarray, batch_size: int, unroll: int, *, seed: int,
                 sharding: NamedSharding | None = None):
        if batch_size < 1 or unroll < 1:
            raise ConfigError(f"--batch_size ({batch_size}) and --unroll ({unroll}) must be positive")
        self.tokens, self.batch_size, self.unroll, self.seed, self.sharding = tokens, batch_size, unroll, seed, \
            sharding
        self.steps_per_epoch = ((len(tokens) - 1 - (unroll - 1)) // batch_size) // unroll
        if self.steps_per_epoch < 1:
            raise ConfigError(f"the training text ({len(tokens)} characters) is too short for --batch_size="
                              f"{batch_size} streams of --unroll={unroll} characters")
        self._epoch, self._index, self._chunks = 0, 0, None

    def offset(self, epoch: int) -> int:
        return int(np.random.default_rng([self.seed, epoch]).integers(self.unroll))

    def next_local(self) -> Batch:
        if self._chunks is None or self._chunks[0] != self._epoch:
            stream = (len(self.tokens) - 1 - (self.unroll - 1)) // self.batch_size
            self._chunks = (self._epoch, self.offset(self._epoch) + stream * np.arange(self.batch_size))
        starts = self._chunks[1][parallel.process_rows(self.batch_size)] + self._index * self.unroll
        idx = starts[:, None] + np.arange(self.unroll)[None, :]
        batch = {"x": self.tokens[idx], "y": self.tokens[idx + 1], "reset": np.full(len(starts), self._index == 0)}
        self._index += 1
        if self._index == self.steps_per_epoch:
            self._epoch, self._index = self._epoch + 1, 0
        return batch
