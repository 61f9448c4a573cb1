import numpy as np
from sklearn.metrics import f1_score, precision_score, r2_score, recall_score, roc_auc_score

from research.metrics.classification import binary_auc, classification_report
from research.metrics.regression import regression_report


def test_classification_report_matches_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=300)
    logits = rng.normal(size=(300, 4)) + 1.5 * np.eye(4)[labels]
    got = classification_report(logits, labels, 4)
    pred = logits.argmax(-1)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert np.isclose(got["accuracy"], np.mean(pred == labels))
    assert np.isclose(got["precision"], precision_score(labels, pred, average="macro"))
    assert np.isclose(got["recall"], recall_score(labels, pred, average="macro"))
    assert np.isclose(got["f1"], f1_score(labels, pred, average="macro"))
    assert np.isclose(got["auc"], roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    assert np.isclose(got["loss"], -np.mean(np.log(probs[np.arange(300), labels])))


def test_auc_with_ties():
    scores = np.array([0.1, 0.4, 0.4, 0.8, 0.4])
    pos = np.array([0, 0, 1, 1, 1], bool)
    assert np.isclose(binary_auc(scores, pos), roc_auc_score(pos, scores))


def test_regression_report():
    rng = np.random.default_rng(1)
    y = rng.normal(size=50)
    p = y + 0.3 * rng.normal(size=50)
    got = regression_report(p, y)
    assert np.isclose(got["mse"], np.mean((p - y) ** 2))
    assert np.isclose(got["rmse"], np.sqrt(got["mse"]))
    assert np.isclose(got["r2"], r2_score(y, p))
