"""Ward agglomerative clustering that can label new customers and draw a dendrogram."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import pairwise_distances_argmin
from sklearn.utils.validation import check_is_fitted, validate_data

from custseg.cluster._base import DEFAULT_MAX_FIT_SAMPLES, DEFAULT_N_CLUSTERS, SampledFitMixin, check_int


def linkage_matrix(children: np.ndarray, distances: np.ndarray, n_samples: int) -> np.ndarray:
    """Turn scikit-learn's ``children_``/``distances_`` into a SciPy linkage matrix.

    Row ``i`` is ``[left, right, distance, size]`` for the merge creating node
    ``n_samples + i``, the format ``scipy.cluster.hierarchy.dendrogram`` reads.
    """
    sizes = np.zeros(children.shape[0], dtype=np.float64)
    for i, (left, right) in enumerate(children):
        sizes[i] = sum(1.0 if child < n_samples else sizes[child - n_samples] for child in (left, right))
    return np.column_stack([children.astype(np.float64), distances.astype(np.float64), sizes])


class WardClustering(SampledFitMixin, ClusterMixin, BaseEstimator):
    """Agglomerative clustering with Ward linkage (scikit-learn ``AgglomerativeClustering``).

    Takes a numeric matrix ``X`` (n_customers × n_features).  Ward's tree costs memory and
    time quadratic in the rows, so at most ``max_fit_samples`` rows (a seeded random sample)
    build the tree; every other row, and any new customer passed to ``predict``, goes to the
    segment whose centroid (mean of its fitted members) is nearest.

    Parameters
    ----------
    n_clusters : int, default=4
    max_fit_samples : int, default=20_000
        Largest number of rows the tree is built on; see
        :data:`custseg.cluster.DEFAULT_MAX_FIT_SAMPLES` for the measured cost.
    random_state : int, RandomState or None, default=0
        Seed of the sample drawn when ``X`` has more than ``max_fit_samples`` rows.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        Mean of each segment's fitted members; ``predict`` uses the nearest one.
    linkage_ : ndarray of shape (n_fit_samples_ - 1, 4)
        SciPy linkage matrix of the fitted rows (``scipy.cluster.hierarchy.dendrogram``).
    sampled_ : bool
        True when the tree was built on a sample.
    n_fit_samples_ : int
    fit_indices_ : ndarray
        Row indices of ``X`` the tree was built on.
    n_clusters_ : int

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    >>> ward = WardClustering(n_clusters=2).fit(X)
    >>> bool(ward.predict([[4.9, 5.2]])[0] == ward.labels_[2])
    True
    """

    def __init__(
        self,
        n_clusters: int = DEFAULT_N_CLUSTERS,
        *,
        max_fit_samples: int = DEFAULT_MAX_FIT_SAMPLES,
        random_state: int | np.random.RandomState | None = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.max_fit_samples = max_fit_samples
        self.random_state = random_state

    def fit(self, X, y=None) -> WardClustering:
        """Build the Ward tree on ``X`` (or a sample of it), cut it, label every row."""
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        check_int("n_clusters", self.n_clusters, minimum=1)
        self._fit_sampled(X)
        return self

    def _fit_labels(self, X: np.ndarray) -> np.ndarray:
        model = AgglomerativeClustering(
            n_clusters=self.n_clusters, linkage="ward", compute_full_tree=True, compute_distances=True
        ).fit(X)
        labels = model.labels_
        self.cluster_centers_ = np.vstack([X[labels == k].mean(axis=0) for k in range(self.n_clusters)])
        self.linkage_ = linkage_matrix(model.children_, model.distances_, X.shape[0])
        return labels

    def _assign(self, X: np.ndarray) -> np.ndarray:
        return pairwise_distances_argmin(X, self.cluster_centers_)

    def predict(self, X) -> np.ndarray:
        """Segment of each row of ``X``: the one whose centroid is nearest (Euclidean)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return self._assign(X)
