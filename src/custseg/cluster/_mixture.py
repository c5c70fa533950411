"""Gaussian mixture as a clusterer: ``labels_`` plus membership probabilities."""

from __future__ import annotations

from typing import Literal

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.mixture import GaussianMixture
from sklearn.utils.validation import check_is_fitted, validate_data

from custseg.cluster._base import DEFAULT_N_CLUSTERS, check_int, count_clusters


class GaussianMixtureClustering(ClusterMixin, BaseEstimator):
    """Soft segments from a Gaussian mixture (scikit-learn ``GaussianMixture``).

    Full covariances from a K-Means start (the default) are fitted by :mod:`custseg.cluster._em`,
    the same EM with every component computed at once (2-3 times faster on the sweep's
    matrices), and put on a scikit-learn ``GaussianMixture``; other settings are fitted by
    scikit-learn itself.

    Takes a numeric matrix ``X`` of shape (n_customers, n_features), usually the output of
    :func:`custseg.preprocessing.build_preprocessor`, and gives each customer the component
    with the highest posterior probability (``labels_``) and the probabilities themselves
    (``predict_proba``, rows sum to 1).

    Parameters
    ----------
    n_clusters : int, default=4
        Number of mixture components (segments).
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
    n_init : int, default=1
        Number of EM runs; the best (highest likelihood) is kept.
    max_iter : int, default=100
    tol : float, default=1e-3
    reg_covar : float, default=1e-6
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
    random_state : int, RandomState or None, default=0

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        Component means (same as ``means_``).
    means_, weights_, covariances_ : ndarray
        Fitted mixture parameters.
    mixture_ : GaussianMixture
        The fitted scikit-learn mixture (for ``bic``/``aic``/``score``).
    converged_ : bool
    n_iter_ : int
    n_clusters_ : int
        Number of segments that received at least one customer.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.r_[np.zeros((20, 2)), np.full((20, 2), 10.0)] + np.random.default_rng(0).normal(size=(40, 2))
    >>> gmm = GaussianMixtureClustering(n_clusters=2, random_state=0).fit(X)
    >>> np.allclose(gmm.predict_proba(X).sum(axis=1), 1.0)
    True
    """

    def __init__(
        self,
        n_clusters: int = DEFAULT_N_CLUSTERS,
        *,
        covariance_type: Literal["full", "tied", "diag", "spherical"] = "full",
        n_init: int = 1,
        max_iter: int = 100,
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        init_params: Literal["kmeans", "k-means++", "random", "random_from_data"] = "kmeans",
        random_state: int | np.random.RandomState | None = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.covariance_type = covariance_type
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.reg_covar = reg_covar
        self.init_params = init_params
        self.random_state = random_state

    def fit(self, X, y=None) -> GaussianMixtureClustering:
        """Fit the mixture on ``X`` (n_customers × n_features, numeric) and label every row."""
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        n_clusters = check_int("n_clusters", self.n_clusters, minimum=1)
        mixture = GaussianMixture(
            n_components=n_clusters,
            covariance_type=self.covariance_type,
            n_init=self.n_init,
            max_iter=self.max_iter,
            tol=self.tol,
            reg_covar=self.reg_covar,
            init_params=self.init_params,
            random_state=self.random_state,
        )
        if self.covariance_type == "full" and self.init_params == "kmeans" and X.dtype == np.float64 and len(X) >= 2:
            labels = _fit_full(mixture, X)
        else:
            # fit_predict ends with an E-step on the fitted parameters, so its labels are
            # predict(X)'s without a second pass over the rows.
            labels = mixture.fit_predict(X)
        self.mixture_ = mixture
        self.means_ = mixture.means_
        self.cluster_centers_ = mixture.means_
        self.weights_ = mixture.weights_
        self.covariances_ = mixture.covariances_
        self.converged_ = mixture.converged_
        self.n_iter_ = mixture.n_iter_
        self.labels_ = labels
        self.n_clusters_ = count_clusters(self.labels_)
        return self

    def predict(self, X) -> np.ndarray:
        """Most probable segment of each row of ``X``."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return self.mixture_.predict(X)

    def predict_proba(self, X) -> np.ndarray:
        """Membership probabilities, shape (n_samples, n_clusters); each row sums to 1."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return self.mixture_.predict_proba(X)


def _fit_full(mixture: GaussianMixture, X: np.ndarray) -> np.ndarray:
    """Fit ``mixture`` (full covariances, K-Means start) on float64 ``X`` by
    :func:`custseg.cluster._em.fit_full`; return the labels of the final E-step."""
    from custseg.cluster._em import fit_full

    mixture._validate_params()
    fitted = fit_full(X, mixture.n_components, tol=mixture.tol, reg_covar=mixture.reg_covar,
                      max_iter=mixture.max_iter, n_init=mixture.n_init, random_state=mixture.random_state)
    mixture.n_features_in_ = X.shape[1]
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_", "converged_",
                 "n_iter_", "lower_bound_", "lower_bounds_"):
        setattr(mixture, name, getattr(fitted, name))
    return fitted.labels
