"""Density-based clusterers (DBSCAN, HDBSCAN, Mean Shift) that can label new customers.

scikit-learn's DBSCAN and HDBSCAN have no ``predict``; these classes add one and fit on a
seeded sample when the data is large.  Noise customers get the label ``-1``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import DBSCAN, HDBSCAN, MeanShift, estimate_bandwidth
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.validation import check_is_fitted, validate_data

from custseg.cluster._base import (
    DEFAULT_MAX_FIT_SAMPLES,
    NOISE,
    SampledFitMixin,
    check_int,
    check_positive_real,
)
from custseg.errors import ConfigError

_FLOATS = [np.float64, np.float32]


def _index(reference: np.ndarray, n_neighbors: int = 1) -> NearestNeighbors:
    """Nearest-neighbour index over the rows of ``reference`` (kept for ``predict``)."""
    return NearestNeighbors(n_neighbors=min(n_neighbors, reference.shape[0])).fit(reference)


def _nearest(index: NearestNeighbors, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance to, and position of, the nearest indexed row for each row of ``X``."""
    distances, positions = index.kneighbors(X, n_neighbors=1)
    return distances[:, 0], positions[:, 0]


class _PredictMixin:
    def predict(self, X) -> np.ndarray:
        """Segment of each row of ``X`` under the fitted model; ``-1`` = noise."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=_FLOATS, reset=False)
        return self._assign(X)


class DBSCANClustering(_PredictMixin, SampledFitMixin, ClusterMixin, BaseEstimator):
    """DBSCAN (scikit-learn ``DBSCAN``, Euclidean) with ``predict`` for new customers.

    Takes a numeric matrix ``X`` (n_customers × n_features).  A new point joins the segment
    of its nearest core customer when that core customer is within ``eps``; otherwise it is
    noise (``-1``) - the rule DBSCAN itself uses for border points.

    Parameters
    ----------
    eps : float, default=0.5
        Neighbourhood radius in the (scaled) feature space.
    min_samples : int, default=5
        Neighbours (the point included) a core customer needs within ``eps``.
    max_fit_samples : int, default=20_000
        Largest number of rows DBSCAN is run on; the rest are labelled with ``predict``.
    random_state : int, RandomState or None, default=0
        Seed of the sample drawn when ``X`` has more than ``max_fit_samples`` rows.
    n_jobs : int or None, default=None

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
    components_ : ndarray of shape (n_core, n_features)
        Core customers of the fitted rows.
    core_labels_ : ndarray of shape (n_core,)
    sampled_, n_fit_samples_, fit_indices_, n_clusters_
        See :class:`custseg.cluster.WardClustering`; ``n_clusters_`` excludes noise.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.r_[np.zeros((6, 2)), [[9.0, 9.0]]]
    >>> DBSCANClustering(eps=0.5, min_samples=3).fit(X).labels_.tolist()
    [0, 0, 0, 0, 0, 0, -1]
    """

    def __init__(
        self,
        eps: float = 0.5,
        *,
        min_samples: int = 5,
        max_fit_samples: int = DEFAULT_MAX_FIT_SAMPLES,
        random_state: int | np.random.RandomState | None = 0,
        n_jobs: int | None = None,
    ) -> None:
        self.eps = eps
        self.min_samples = min_samples
        self.max_fit_samples = max_fit_samples
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X, y=None) -> DBSCANClustering:
        """Run DBSCAN on ``X`` (or a sample of it) and label every row."""
        X = validate_data(self, X, dtype=_FLOATS)
        check_positive_real("eps", self.eps)
        check_int("min_samples", self.min_samples, minimum=1)
        self._fit_sampled(X)
        return self

    def _fit_labels(self, X: np.ndarray) -> np.ndarray:
        model = DBSCAN(eps=self.eps, min_samples=self.min_samples, n_jobs=self.n_jobs).fit(X)
        self.components_ = X[model.core_sample_indices_]
        self.core_labels_ = model.labels_[model.core_sample_indices_]
        self._core_index = _index(self.components_) if self.components_.shape[0] else None
        return model.labels_

    def _assign(self, X: np.ndarray) -> np.ndarray:
        labels = np.full(X.shape[0], NOISE, dtype=np.intp)
        if self._core_index is None or X.shape[0] == 0:
            return labels
        distances, nearest = _nearest(self._core_index, X)
        inside = distances <= self.eps
        labels[inside] = self.core_labels_[nearest[inside]]
        return labels


class HDBSCANClustering(_PredictMixin, SampledFitMixin, ClusterMixin, BaseEstimator):
    """HDBSCAN (scikit-learn ``HDBSCAN``, Euclidean) with ``predict`` for new customers.

    Takes a numeric matrix ``X`` (n_customers × n_features).  A new point ``x`` takes the
    segment of its nearest clustered (non-noise) fitted customer ``p`` when their
    mutual-reachability distance ``max(core(x), core(p), d(x, p))`` is at most the largest
    core distance among that segment's members, i.e. when ``x`` is at least as densely
    surrounded as the segment's sparsest member; otherwise it is noise (``-1``).  The core
    distance is the distance to the ``min_samples``-th nearest fitted customer, as in
    HDBSCAN.

    Parameters
    ----------
    min_cluster_size : int, default=5
        Smallest group of customers that counts as a segment.
    min_samples : int or None, default=None
        Neighbours that define density; None means ``min_cluster_size``.
    cluster_selection_epsilon : float, default=0.0
    cluster_selection_method : {"eom", "leaf"}, default="eom"
    allow_single_cluster : bool, default=False
    max_fit_samples : int, default=20_000
    random_state : int, RandomState or None, default=0
        Seed of the sample drawn when ``X`` has more than ``max_fit_samples`` rows.
    n_jobs : int or None, default=None

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
    members_ : ndarray of shape (n_members, n_features)
        Fitted customers that belong to a segment.
    member_labels_ : ndarray of shape (n_members,)
    cluster_core_distances_ : ndarray of shape (n_clusters_,)
        Largest core distance among each segment's members.
    sampled_, n_fit_samples_, fit_indices_, n_clusters_
        See :class:`custseg.cluster.WardClustering`; ``n_clusters_`` excludes noise.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.r_[rng.normal(0, 0.1, (20, 2)), rng.normal(5, 0.1, (20, 2))]
    >>> HDBSCANClustering(min_cluster_size=5).fit(X).n_clusters_
    2
    """

    def __init__(
        self,
        min_cluster_size: int = 5,
        *,
        min_samples: int | None = None,
        cluster_selection_epsilon: float = 0.0,
        cluster_selection_method: Literal["eom", "leaf"] = "eom",
        allow_single_cluster: bool = False,
        max_fit_samples: int = DEFAULT_MAX_FIT_SAMPLES,
        random_state: int | np.random.RandomState | None = 0,
        n_jobs: int | None = None,
    ) -> None:
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.cluster_selection_epsilon = cluster_selection_epsilon
        self.cluster_selection_method = cluster_selection_method
        self.allow_single_cluster = allow_single_cluster
        self.max_fit_samples = max_fit_samples
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X, y=None) -> HDBSCANClustering:
        """Run HDBSCAN on ``X`` (or a sample of it) and label every row."""
        X = validate_data(self, X, dtype=_FLOATS)
        check_int("min_cluster_size", self.min_cluster_size, minimum=2)
        if self.min_samples is not None:
            check_int("min_samples", self.min_samples, minimum=1)
        self._fit_sampled(X)
        return self

    def _fit_labels(self, X: np.ndarray) -> np.ndarray:
        model = HDBSCAN(
            min_cluster_size=self.min_cluster_size,
            min_samples=self.min_samples,
            cluster_selection_epsilon=self.cluster_selection_epsilon,
            cluster_selection_method=self.cluster_selection_method,
            allow_single_cluster=self.allow_single_cluster,
            n_jobs=self.n_jobs,
            copy=True,
        ).fit(X)
        labels = model.labels_
        clustered = labels >= 0
        # HDBSCAN's core distance: distance to the k-th neighbour, the point itself counted.
        self._fit_index = _index(X, n_neighbors=self.min_samples or self.min_cluster_size)
        core = self._fit_index.kneighbors(X)[0][:, -1]
        self.members_ = X[clustered]
        self.member_labels_ = labels[clustered]
        self._member_index = _index(self.members_) if clustered.any() else None
        n_clusters = int(labels.max()) + 1 if clustered.any() else 0
        self.cluster_core_distances_ = np.array([core[labels == k].max() for k in range(n_clusters)])
        return labels

    def _assign(self, X: np.ndarray) -> np.ndarray:
        labels = np.full(X.shape[0], NOISE, dtype=np.intp)
        if self._member_index is None or X.shape[0] == 0:
            return labels
        core = self._fit_index.kneighbors(X)[0][:, -1]
        distances, nearest = _nearest(self._member_index, X)
        candidate = self.member_labels_[nearest]
        inside = np.maximum(core, distances) <= self.cluster_core_distances_[candidate]
        labels[inside] = candidate[inside]
        return labels


class MeanShiftClustering(_PredictMixin, SampledFitMixin, ClusterMixin, BaseEstimator):
    """Mean Shift (scikit-learn ``MeanShift``) on a sample, new points go to the nearest mode.

    Takes a numeric matrix ``X`` (n_customers × n_features).  Each segment is a density mode
    (``cluster_centers_``); a customer belongs to the nearest mode.  With
    ``cluster_all=False`` a customer farther than ``bandwidth`` from every mode is noise.

    Parameters
    ----------
    bandwidth : float or None, default=None
        Kernel radius; None estimates it on the fitted rows with
        ``sklearn.cluster.estimate_bandwidth(quantile=quantile)``.
    quantile : float, default=0.3
        Used only to estimate the bandwidth.
    bin_seeding : bool, default=True
        Start from one seed per occupied grid cell of size ``bandwidth`` instead of from
        every customer (much faster, same modes in practice).
    min_bin_freq : int, default=1
        Customers a grid cell needs to give a seed.
    cluster_all : bool, default=True
    max_iter : int, default=300
    max_fit_samples : int, default=20_000
    random_state : int, RandomState or None, default=0
        Seed of the fit sample and of the bandwidth estimate.
    n_jobs : int or None, default=None

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        The modes.
    bandwidth_ : float
        Bandwidth used.
    sampled_, n_fit_samples_, fit_indices_, n_clusters_
        See :class:`custseg.cluster.WardClustering`.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.r_[np.zeros((5, 2)), np.full((5, 2), 4.0)] + np.linspace(0, 0.1, 10)[:, None]
    >>> MeanShiftClustering(bandwidth=1.0).fit(X).n_clusters_
    2
    """

    def __init__(
        self,
        bandwidth: float | None = None,
        *,
        quantile: float = 0.3,
        bin_seeding: bool = True,
        min_bin_freq: int = 1,
        cluster_all: bool = True,
        max_iter: int = 300,
        max_fit_samples: int = DEFAULT_MAX_FIT_SAMPLES,
        random_state: int | np.random.RandomState | None = 0,
        n_jobs: int | None = None,
    ) -> None:
        self.bandwidth = bandwidth
        self.quantile = quantile
        self.bin_seeding = bin_seeding
        self.min_bin_freq = min_bin_freq
        self.cluster_all = cluster_all
        self.max_iter = max_iter
        self.max_fit_samples = max_fit_samples
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X, y=None) -> MeanShiftClustering:
        """Find the density modes of ``X`` (or a sample of it) and label every row."""
        X = validate_data(self, X, dtype=_FLOATS)
        if self.bandwidth is not None:
            check_positive_real("bandwidth", self.bandwidth)
        if not 0 < self.quantile <= 1:
            raise ConfigError(f"quantile must be in (0, 1], got {self.quantile!r}; pass e.g. quantile=0.3")
        check_int("min_bin_freq", self.min_bin_freq, minimum=1)
        self._fit_sampled(X)
        return self

    def _fit_labels(self, X: np.ndarray) -> np.ndarray:
        bandwidth = self.bandwidth
        if bandwidth is None:
            # Duplicated customers (common: many one-order customers look alike) can make
            # the estimate 0; estimate on distinct rows, and one distinct row is one segment.
            distinct = np.unique(X, axis=0)
            bandwidth = 1.0
            if distinct.shape[0] > 1:
                bandwidth = estimate_bandwidth(
                    distinct,
                    quantile=self.quantile,
                    n_samples=min(distinct.shape[0], 2_000),
                    random_state=self.random_state,
                )
                if not bandwidth > 0:  # quantile below one neighbour on tiny data
                    bandwidth = float(np.median(_index(distinct, 2).kneighbors(distinct)[0][:, 1]))
        seeds = X
        if self.bin_seeding:
            # One seed per occupied grid cell, vectorised; like sklearn.cluster.get_bin_seeds
            # but without its warning when binning does not reduce the number of seeds.
            cells, counts = np.unique(np.round(X / bandwidth), axis=0, return_counts=True)
            seeds = cells[counts >= self.min_bin_freq] * bandwidth
            if seeds.shape[0] == 0:
                raise ConfigError(
                    f"min_bin_freq={self.min_bin_freq} leaves no Mean Shift seeds "
                    f"(bandwidth {bandwidth:.3g}); lower min_bin_freq or set bin_seeding=False"
                )
        model = MeanShift(
            bandwidth=bandwidth,
            seeds=seeds,
            cluster_all=self.cluster_all,
            max_iter=self.max_iter,
            n_jobs=self.n_jobs,
        ).fit(X)
        self.cluster_centers_ = model.cluster_centers_
        self._center_index = _index(model.cluster_centers_)
        self.bandwidth_ = float(bandwidth)
        self.n_iter_ = model.n_iter_
        return self._assign(X)

    def _assign(self, X: np.ndarray) -> np.ndarray:
        if X.shape[0] == 0:
            return np.empty(0, dtype=np.intp)
        distances, nearest = _nearest(self._center_index, X)
        labels = nearest.astype(np.intp)
        if not self.cluster_all:
            labels[distances > self.bandwidth_] = NOISE
        return labels
