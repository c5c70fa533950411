"""The batched EM of Gaussian mixtures (custseg.cluster._em) against scikit-learn's own."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from custseg.cluster import GaussianMixtureClustering, make_estimator
from custseg.cluster._em import fit_full


def _data(kind: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    if kind == "blobs":
        centres = rng.normal(0, 4, (5, 4))
        return np.vstack([rng.normal(c, 1.0, (300, 4)) for c in centres])
    if kind == "skewed":  # long tails like spend and frequency, then standardised
        raw = np.column_stack([rng.lognormal(3, 1, 2000), rng.poisson(3, 2000) + 1.0, rng.exponential(90, 2000)])
        logged = np.log1p(raw)
        return (logged - logged.mean(axis=0)) / logged.std(axis=0)
    return rng.normal(size=(800, 6))  # no structure at all


@pytest.mark.parametrize("kind", ["blobs", "skewed", "noise"])
@pytest.mark.parametrize("k", [1, 2, 5, 9])
@pytest.mark.parametrize("seed", [0, 3])
def test_the_same_fit_as_scikit_learn(kind, k, seed):
    X = _data(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs = GaussianMixture(k, random_state=seed)
        labels = theirs.fit_predict(X)
        ours = fit_full(X, k, random_state=seed)
    assert ours.n_iter_ == theirs.n_iter_ and ours.converged_ == theirs.converged_
    np.testing.assert_array_equal(ours.labels, labels)
    np.testing.assert_allclose(ours.weights_, theirs.weights_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours.covariances_, theirs.covariances_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours.precisions_cholesky_, theirs.precisions_cholesky_, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(ours.precisions_, theirs.precisions_, rtol=1e-8, atol=1e-9)
    assert ours.lower_bound_ == pytest.approx(theirs.lower_bound_, rel=1e-10)
    assert len(ours.lower_bounds_) == len(theirs.lower_bounds_)


def test_several_starts_keep_the_best_like_scikit_learn():
    X = _data("skewed")
    theirs = GaussianMixture(6, n_init=3, random_state=1).fit(X)
    ours = fit_full(X, 6, n_init=3, random_state=1)
    assert ours.lower_bound_ == pytest.approx(theirs.lower_bound_, rel=1e-10)
    np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-8, atol=1e-10)


def test_a_mixture_that_does_not_converge_warns_as_scikit_learn_does():
    X = _data("skewed")
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        ours = fit_full(X, 8, max_iter=2, random_state=0)
    assert ours.n_iter_ == 2 and not ours.converged_


def test_a_collapsed_component_is_scikit_learns_error():
    X = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]), 20, axis=0)
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        fit_full(X, 3, reg_covar=0.0, random_state=0)
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        GaussianMixture(3, reg_covar=0.0, random_state=0).fit(X)


def test_the_clusterer_is_a_working_scikit_learn_mixture():
    X = _data("blobs")
    gmm = make_estimator("gmm", n_clusters=5, random_state=0).fit(X)
    reference = GaussianMixture(5, random_state=0).fit(X)
    np.testing.assert_array_equal(gmm.labels_, gmm.predict(X))
    np.testing.assert_array_equal(gmm.labels_, reference.predict(X))
    np.testing.assert_allclose(gmm.predict_proba(X), reference.predict_proba(X), atol=1e-9)
    assert gmm.mixture_.bic(X) == pytest.approx(reference.bic(X), rel=1e-10)
    assert gmm.mixture_.score(X) == pytest.approx(reference.score(X), rel=1e-10)
    # other settings are fitted by scikit-learn itself
    diag = GaussianMixtureClustering(3, covariance_type="diag", random_state=0).fit(X)
    np.testing.assert_array_equal(diag.labels_, GaussianMixture(3, covariance_type="diag", random_state=0).fit_predict(X))
    with pytest.raises(ValueError):
        GaussianMixtureClustering(3, tol=-1.0).fit(X)
