"""Reconstruction metrics against formulas; the exact PCA baseline against numpy's SVD and scikit-learn."""

import numpy as np
import pytest
from sklearn.decomposition import PCA as SkPCA

from research.errors import ConfigError
from research.metrics.reconstruction import fit_pca, pca_report, reconstruction_report


def _matrix(seed=0, n=40, d=12):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)) @ rng.normal(size=(3, d)) + 0.3 * rng.normal(size=(n, d)) + 2.0


def test_pca_matches_numpy_svd():
    x, k = _matrix(), 3
    pca = fit_pca(x, k)
    centred = x - x.mean(0)
    _, s, vt = np.linalg.svd(centred)
    # Same subspace (components are defined up to sign): equal projection matrices.
    np.testing.assert_allclose(pca.components.T @ pca.components, vt[:k].T @ vt[:k], atol=1e-10)
    np.testing.assert_allclose(pca.reconstruct(x), x.mean(0) + centred @ vt[:k].T @ vt[:k], atol=1e-10)
    # Eckart-Young: the training residual is the energy in the discarded singular values.
    residual = np.sum((pca.reconstruct(x) - x) ** 2)
    np.testing.assert_allclose(residual, np.sum(s[k:] ** 2), rtol=1e-10)
    report = pca_report(pca, x)
    np.testing.assert_allclose(report["pca_sq_error"], np.sum(s[k:] ** 2) / len(x), rtol=1e-10)
    np.testing.assert_allclose(report["pca_mse"], np.sum(s[k:] ** 2) / x.size, rtol=1e-10)
    np.testing.assert_allclose(pca.explained_variance_ratio, np.sum(s[:k] ** 2) / np.sum(s ** 2), rtol=1e-12)


def test_pca_matches_sklearn_on_held_out_rows_and_images():
    x, held_out = _matrix(1, d=16), _matrix(2, d=16)
    pca = fit_pca(x.reshape(-1, 4, 4, 1), 5)
    sk = SkPCA(n_components=5, svd_solver="full").fit(x)
    ours = pca.reconstruct(held_out.reshape(-1, 4, 4, 1))
    assert ours.shape == (len(held_out), 4, 4, 1)
    np.testing.assert_allclose(ours.reshape(len(held_out), -1), sk.inverse_transform(sk.transform(held_out)),
                               atol=1e-10)
    np.testing.assert_allclose(pca.explained_variance_ratio, sk.explained_variance_ratio_.sum(), rtol=1e-10)


def test_pca_denoising_report_compares_with_clean_targets():
    x = _matrix(3)
    noisy = x + np.random.default_rng(4).normal(size=x.shape)
    pca = fit_pca(x, 2)
    expected = np.mean(np.sum((pca.reconstruct(noisy) - x) ** 2, axis=1))
    np.testing.assert_allclose(pca_report(pca, noisy, x)["pca_sq_error"], expected, rtol=1e-12)


@pytest.mark.parametrize("k", [0, 13])
def test_pca_component_count_is_checked(k):
    with pytest.raises(ConfigError):
        fit_pca(_matrix(), k)


def test_reconstruction_report_matches_formulas():
    rng = np.random.default_rng(5)
    logits, t = rng.normal(0, 2, (6, 3, 3, 1)), rng.uniform(size=(6, 3, 3, 1))
    p = 1 / (1 + np.exp(-logits))
    report = reconstruction_report(logits, t)
    np.testing.assert_allclose(report["sq_error"], np.mean(np.sum(((p - t) ** 2).reshape(6, -1), 1)), rtol=1e-12)
    np.testing.assert_allclose(report["mse"], np.mean((p - t) ** 2), rtol=1e-12)
    np.testing.assert_allclose(report["bce"], np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p))), rtol=1e-10)
    saturated = reconstruction_report(np.array([[800.0, -800.0]]), np.array([[1.0, 0.0]]))
    assert saturated == {"sq_error": 0.0, "mse": 0.0, "bce": 0.0}
