"""Classification metrics on host arrays: accuracy, macro precision/recall/F1, one-vs-rest ROC-AUC."""

from __future__ import annotations

import numpy as np


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, -1) == labels))


def macro_precision_recall_f1(predicted: np.ndarray, labels: np.ndarray, num_classes: int
                              ) -> tuple[float, float, float]:
    """Per-class precision, recall and F1 averaged over classes (a class never predicted has precision 0)."""
    p, r, f = [], [], []
    for c in range(num_classes):
        tp = np.sum((predicted == c) & (labels == c))
        fp = np.sum((predicted == c) & (labels != c))
        fn = np.sum((predicted != c) & (labels == c))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        p.append(precision)
        r.append(recall)
        f.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return float(np.mean(p)), float(np.mean(r)), float(np.mean(f))


def binary_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counting half."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # average ranks over ties (1-based)
    uniq, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def ovr_roc_auc(probabilities: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Macro average of one-vs-rest AUCs over the classes present in `labels`."""
    aucs = [binary_auc(probabilities[:, c], labels == c) for c in range(num_classes)]
    aucs = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def classification_report(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    logits = np.asarray(logits, np.float64)
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    probs = shifted / shifted.sum(-1, keepdims=True)
    predicted = np.argmax(logits, -1)
    precision, recall, f1 = macro_precision_recall_f1(predicted, labels, num_classes)
    nll = -np.mean(np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-30)))
    return {"accuracy": float(np.mean(predicted == labels)), "loss": float(nll), "precision": precision,
            "recall": recall, "f1": f1, "auc": ovr_roc_auc(probs, labels, num_classes)}
