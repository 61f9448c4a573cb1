"""2-D mode coverage on constructed samples; Fréchet distance against scipy; classifier scores; the evaluator
cache; the Gaussian mixtures."""

import dataclasses
import json

import numpy as np
import pytest
import scipy.linalg

from research import data
from research.metrics import feature_classifier as ev
from research.metrics.frechet import class_histogram_kl, classifier_score, feature_frechet_distance, frechet_distance
from research.metrics.modes import mode_report

RING = data.load("gaussians_ring8")
MODES, STD = np.asarray(RING.info["modes"]), RING.info["std"]


def test_ring_and_grid_datasets():
    np.testing.assert_allclose(np.linalg.norm(MODES, axis=1), 1.0)
    np.testing.assert_allclose(np.arctan2(MODES[:, 1], MODES[:, 0]) % (2 * np.pi), 2 * np.pi * np.arange(8) / 8,
                               atol=1e-12)
    assert STD == 0.01
    a, b = RING.sample(np.random.default_rng(5), 20000), RING.sample(np.random.default_rng(5), 20000)
    np.testing.assert_array_equal(a["x"], b["x"])
    offsets = a["x"] - MODES[a["y"]]
    assert offsets.std() == pytest.approx(0.01, rel=0.05)
    grid = data.load("gaussians_grid25")
    assert sorted(set(np.asarray(grid.info["modes"]).ravel())) == [-4, -2, 0, 2, 4]
    assert len(grid.info["modes"]) == 25 and grid.info["std"] == 0.05
    assert grid.split("test")["x"].shape == (2500, 2)


def test_all_modes_covered():
    samples = np.repeat(MODES, 100, axis=0) + 0.5 * STD * np.random.default_rng(0).standard_normal((800, 2))
    r = mode_report(samples, MODES, STD)
    assert r == {"modes": 8.0, "high_quality": 100.0, "mode_kl": pytest.approx(0.0, abs=1e-12)}


def test_one_mode():
    samples = np.repeat(MODES[2:3], 50, axis=0)
    r = mode_report(samples, MODES, STD)
    assert r["modes"] == 1.0 and r["high_quality"] == 100.0
    assert r["mode_kl"] == pytest.approx(np.log(8))


def test_off_mode_junk():
    junk = np.full((40, 2), 0.5)          # between modes: nearest mode is 0.5 away, far beyond 3 sigma
    r = mode_report(junk, MODES, STD)
    assert r["modes"] == 0.0 and r["high_quality"] == 0.0
    # half on two modes, half junk: 2 modes, 50 % high quality; a point at 2.9 sigma counts, one at 3.1 does not
    mixed = np.concatenate([np.repeat(MODES[:2], 10, axis=0), junk[:20]])
    assert mode_report(mixed, MODES, STD)["modes"] == 2.0
    assert mode_report(mixed, MODES, STD)["high_quality"] == 50.0
    edge = MODES[[0, 1]] + np.array([[2.9 * STD, 0.0], [3.1 * STD, 0.0]])
    r = mode_report(edge, MODES, STD)
    assert r["modes"] == 1.0 and r["high_quality"] == 50.0


def _scipy_frechet(a, b):
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


def test_frechet_against_scipy():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 6)) @ rng.standard_normal((6, 6))
    b = rng.standard_normal((300, 6)) * 2 + 1
    assert feature_frechet_distance(a, b) == pytest.approx(_scipy_frechet(a, b), rel=1e-6)
    assert feature_frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_frechet_closed_form():
    """Diagonal covariances: sum (mu1 - mu2)^2 + sum (sqrt(v1) - sqrt(v2))^2."""
    mu1, mu2 = np.array([0.0, 1.0]), np.array([2.0, 1.0])
    v1, v2 = np.array([1.0, 4.0]), np.array([9.0, 1.0])
    want = 4.0 + (1 - 3) ** 2 + (2 - 1) ** 2
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(want)


def test_classifier_scores():
    confident = np.eye(10)[np.arange(100) % 10]
    assert classifier_score(confident) == pytest.approx(10.0, rel=1e-6)
    assert class_histogram_kl(confident) == pytest.approx(0.0, abs=1e-12)
    same = np.tile(np.eye(10)[3], (50, 1))
    assert classifier_score(same) == pytest.approx(1.0, rel=1e-6)
    assert class_histogram_kl(same) == pytest.approx(np.log(10))
    assert classifier_score(np.full((20, 10), 0.1)) == pytest.approx(1.0)


def _synthetic_digits() -> data.Dataset:
    """28x28 images whose class is where a bright 6x6 square sits: learnable, and loads instantly."""
    rng = np.random.default_rng(0)

    def split(n):
        y = np.arange(n) % 10
        x = 0.1 * rng.uniform(size=(n, 28, 28, 1))
        for i, c in enumerate(y):
            r, q = divmod(int(c), 5)
            x[i, 4 + 12 * r:10 + 12 * r, 2 + 5 * q:8 + 5 * q] = 1.0
        return {"x": x.astype(np.float32), "y": y.astype(np.int32)}

    return data.Dataset("synthetic_digits", {"train": split(256), "test": split(100)}, num_classes=10)


def test_evaluator_is_trained_once_and_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("RESEARCH_CACHE_DIR", str(tmp_path))
    digits = _synthetic_digits()
    monkeypatch.setattr(data, "load", lambda name, **_: digits)
    cfg = ev.FeatureClassifierConfig(dataset="synthetic_digits", widths=(2, 4), feature_dim=8, epochs=1, batch_size=64,
                             min_accuracy=0.0)
    first = ev.load_or_train(cfg)
    files = sorted(p.name for p in (tmp_path / "evaluators").iterdir())
    assert files == [f"lenet-synthetic_digits-{cfg.key()}.json", f"lenet-synthetic_digits-{cfg.key()}.npz"]
    report = json.loads((tmp_path / "evaluators" / files[0]).read_text())
    assert report["key"] == cfg.key() and 0.0 <= report["test_accuracy"] <= 1.0
    with np.load(tmp_path / "evaluators" / files[1], allow_pickle=False) as f:  # plain arrays, no pickle
        assert all(f[k].dtype == np.float32 for k in f.files)

    def no_training(_):
        raise AssertionError("the cached evaluator was trained again")

    monkeypatch.setattr(ev, "train_classifier", no_training)
    second = ev.load_or_train(cfg)
    images = digits.split("test")["x"]
    f1, p1 = first.predict(images)
    f2, p2 = second.predict(images)
    np.testing.assert_array_equal(f1, f2)
    assert f1.shape == (100, 8) and p1.shape == (100, 10)
    np.testing.assert_allclose(p1.sum(1), 1.0, rtol=1e-5)
    big = np.repeat(np.repeat(images, 2, axis=1)[:, :32], 2, axis=2)[:, :, :32]  # 32x32 inputs are resized
    assert second.predict(big)[0].shape == (100, 8)
    metrics = second.report(images, f1)
    assert set(metrics) == {"frechet_lenet", "classifier_score", "class_kl"}
    assert cfg.key() != ev.FeatureClassifierConfig().key()
    with pytest.raises(ev.ConfigError, match="reaches only"):
        ev.load_or_train(dataclasses.replace(cfg, min_accuracy=1.01))   # cached, but not good enough
