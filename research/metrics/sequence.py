"""Sequence metrics on host arrays: bits per character, perplexity, per-step classification, and the
baselines the sequence tasks are judged against, computed from the data itself."""

from __future__ import annotations

import math

import numpy as np


def bits_per_char(nll_nats: float) -> float:
    """Mean negative log-likelihood per character, from nats to bits."""
    return float(nll_nats) / math.log(2.0)


def perplexity(nll_nats: float) -> float:
    return float(math.exp(nll_nats))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def per_step_classification_report(logits: np.ndarray, labels: np.ndarray, scored_steps: int = 0
                                   ) -> dict[str, float]:
    """logits (N, T, C), labels (N, T): mean cross-entropy and accuracy over every step; with `scored_steps`,
    also the accuracy over the last `scored_steps` steps (`output_accuracy`) and the fraction of sequences
    with all of them right (`sequence_accuracy`) — for the copy task, where most steps are trivial blanks."""
    logp = _log_softmax(logits)
    labels = np.asarray(labels)
    nll = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]
    correct = np.argmax(logp, -1) == labels
    out = {"loss": float(nll.mean()), "accuracy": float(correct.mean())}
    if scored_steps:
        scored = correct[:, -scored_steps:]
        out["output_accuracy"] = float(scored.mean())
        out["sequence_accuracy"] = float(scored.all(-1).mean())
    return out


def constant_prediction_mse(targets: np.ndarray, constant: float = 1.0) -> float:
    """MSE of always predicting `constant` (the adding problem's baseline predicts 1: expected MSE 1/6)."""
    return float(np.mean((np.asarray(targets, np.float64) - constant) ** 2))


def per_step_marginal_xent(labels: np.ndarray, num_classes: int) -> float:
    """Cross-entropy (nats, mean over steps) of the best memoryless predictor fitted to `labels` (N, T): at
    every step, the empirical distribution of that step's label. For the copy task it tends to the
    memoryless baseline 10 ln 8 / (T + 20) as N grows."""
    labels = np.asarray(labels)
    n, steps = labels.shape
    counts = np.zeros((steps, num_classes))
    np.add.at(counts, (np.broadcast_to(np.arange(steps), labels.shape), labels), 1.0)
    probs = counts / n
    return float(-np.mean(np.log(probs[np.arange(steps)[None, :], labels])))


def persistence_mse(series: np.ndarray, next_values: np.ndarray) -> float:
    """MSE of the persistence forecast (the next value equals the current one): series (N, T[, 1])."""
    series = np.asarray(series, np.float64).reshape(np.shape(next_values))
    return float(np.mean((series - np.asarray(next_values, np.float64)) ** 2))
