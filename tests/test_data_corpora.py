"""The char corpus shipped with the package (`tiny_shakespeare`) and that no experiment reads data from outside
the repository."""

import hashlib
import importlib.resources
import pathlib
import re
import tomllib

import numpy as np
import pytest

from research import data
from research.data import text
from research.data.text import load_char_corpus
from research.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parent.parent
CORPUS = REPO / "research" / "data" / "corpora" / "tiny_shakespeare.txt"


def test_tiny_shakespeare_has_tfds_splits_and_the_pinned_text():
    corpus = data.load("tiny_shakespeare")
    sizes = {split: len(arrays["tokens"]) for split, arrays in corpus.splits.items()}
    assert sizes == {"train": 1_003_854, "validation": 55_770, "test": 55_770}
    raw = CORPUS.read_bytes()
    assert len(raw) == sum(sizes.values()) == 1_115_394
    assert hashlib.sha256(raw).hexdigest() == text.TINY_SHAKESPEARE_SHA256
    # TFDS's rule: train = int(0.9 n), validation = half of the rest (rounded down), test = the remainder
    n = len(raw)
    assert sizes["train"] == int(n * 0.9) and sizes["validation"] == int((n - int(n * 0.9)) * 0.5)
    vocab = corpus.info["vocab"]
    assert len(vocab) == 65 and vocab == "".join(sorted(set(raw.decode("ascii"))))
    decoded = "".join(vocab[i] for i in np.concatenate([corpus.split(s)["tokens"] for s in sizes]))
    assert decoded == raw.decode("ascii")  # splits are consecutive, in order, and cover the whole file
    assert decoded.startswith("First Citizen:\n")


def test_tiny_shakespeare_equals_text_path_on_what_the_char_lm_experiment_reads():
    shipped = load_char_corpus("tiny_shakespeare")
    as_text = load_char_corpus(f"text:{CORPUS}")
    assert shipped.info["vocab"] == as_text.info["vocab"]
    np.testing.assert_array_equal(shipped.split("train")["tokens"], as_text.split("train")["tokens"])
    np.testing.assert_array_equal(shipped.split("validation")["tokens"],
                                  as_text.split("validation")["tokens"][:55_770])


def test_tiny_shakespeare_refuses_a_changed_file(monkeypatch):
    monkeypatch.setattr(text, "TINY_SHAKESPEARE_SHA256", "0" * 64)
    with pytest.raises(ConfigError, match=r"tiny_shakespeare.txt: checksum mismatch: sha256 86c4e6aa"):
        data.load("tiny_shakespeare")
    monkeypatch.setattr(text, "TINY_SHAKESPEARE", ("corpora", "missing.txt"))
    with pytest.raises(ConfigError, match="missing from this installation"):
        data.load("tiny_shakespeare")


def test_the_corpus_is_package_data():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["research.data"]
    package_dir = REPO / "research" / "data"
    assert any(CORPUS in package_dir.glob(p) for p in patterns)
    assert importlib.resources.files("research.data").joinpath(*text.TINY_SHAKESPEARE).is_file()


def test_no_experiment_reads_data_outside_the_repository():
    """Flagfiles and sweep specs name datasets the package provides, not data files outside the repository."""
    offenders = [f"{path.relative_to(REPO)}: {line.strip()}"
                 for path in sorted((REPO / "experiments").rglob("*")) if path.is_file()
                 for line in path.read_text().splitlines()
                 if not line.lstrip().startswith("#") and re.search(r"(^|[=:\s\"'])(\.\./|/)\S*(shared|data)", line)]
    assert offenders == []
    flags = (REPO / "experiments" / "rnn" / "char_lm_lstm.flags").read_text()
    assert "--dataset=tiny_shakespeare\n" in flags
