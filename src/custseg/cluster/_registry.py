"""The algorithm registry: one name per algorithm, one way to build its estimator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.cluster import Birch, BisectingKMeans, KMeans, MiniBatchKMeans

from custseg.cluster._base import DEFAULT_MAX_FIT_SAMPLES, DEFAULT_N_CLUSTERS, check_int
from custseg.cluster._density import DBSCANClustering, HDBSCANClustering, MeanShiftClustering
from custseg.cluster._hierarchical import WardClustering
from custseg.cluster._kprototypes import KPrototypesClustering
from custseg.cluster._mixture import GaussianMixtureClustering
from custseg.cluster._rfm import RFMSegmenter
from custseg.cluster._specs import ALGORITHMS
from custseg.errors import ConfigError



# name -> (estimator class, builder(n_clusters, random_state, max_fit_samples, params))
_Builder = Callable[[int | None, Any, int, dict[str, Any]], BaseEstimator]
_BUILDERS: dict[str, tuple[type, _Builder]] = {
    "kmeans": (KMeans, lambda k, rs, m, p: KMeans(n_clusters=k, random_state=rs, **p)),
    "minibatch": (MiniBatchKMeans, lambda k, rs, m, p: MiniBatchKMeans(n_clusters=k, random_state=rs, **p)),
    "bisecting_kmeans": (
        BisectingKMeans,
        lambda k, rs, m, p: BisectingKMeans(n_clusters=k, random_state=rs, **p),
    ),
    "gmm": (GaussianMixtureClustering, lambda k, rs, m, p: GaussianMixtureClustering(k, random_state=rs, **p)),
    "agglomerative": (
        WardClustering,
        lambda k, rs, m, p: WardClustering(k, max_fit_samples=m, random_state=rs, **p),
    ),
    "dbscan": (DBSCANClustering, lambda k, rs, m, p: DBSCANClustering(max_fit_samples=m, random_state=rs, **p)),
    "hdbscan": (HDBSCANClustering, lambda k, rs, m, p: HDBSCANClustering(max_fit_samples=m, random_state=rs, **p)),
    "meanshift": (
        MeanShiftClustering,
        lambda k, rs, m, p: MeanShiftClustering(max_fit_samples=m, random_state=rs, **p),
    ),
    "birch": (Birch, lambda k, rs, m, p: Birch(n_clusters=k, **p)),
    "kprototypes": (
        KPrototypesClustering,
        lambda k, rs, m, p: KPrototypesClustering(k, max_fit_samples=m, random_state=rs, **p),
    ),
    "rfm": (RFMSegmenter, lambda k, rs, m, p: RFMSegmenter(**p)),
}

_MANAGED = {"n_clusters", "random_state", "max_fit_samples"}


def make_estimator(
    name: str,
    *,
    n_clusters: int | None = None,
    random_state: int | None = 0,
    max_fit_samples: int = DEFAULT_MAX_FIT_SAMPLES,
    **params: Any,
) -> BaseEstimator:
    """Build the unfitted estimator of algorithm ``name`` (a key of :data:`ALGORITHMS`).

    Every estimator returned has ``fit(X) -> self``, ``labels_`` and ``predict(X)``; noise
    is labelled ``-1``.  ``X`` is what ``ALGORITHMS[name].input`` says.

    Parameters
    ----------
    name : str
        One of ``ALGORITHMS``.
    n_clusters : int or None, default=None
        Number of segments, only for algorithms with ``takes_k``; None means
        :data:`custseg.cluster.DEFAULT_N_CLUSTERS` (4).  Passing it to an algorithm that
        finds the number itself is a ConfigError.
    random_state : int or None, default=0
        Seed of the algorithm and of the fit sample.  BIRCH and RFM are deterministic and
        ignore it.
    max_fit_samples : int, default=20_000
        For the non-scalable algorithms (agglomerative, dbscan, hdbscan, meanshift,
        kprototypes): fit on a seeded sample of at most this many rows, assign the rest
        with ``predict``.  Ward needs quadratic memory: 20,000 rows take ~3 GB and ~15 s.
    **params
        Further parameters of the estimator (e.g. ``eps=0.3`` for dbscan).

    Examples
    --------
    >>> make_estimator("kmeans", n_clusters=3)
    KMeans(n_clusters=3, random_state=0)
    >>> make_estimator("dbscan", eps=0.3)
    DBSCANClustering(eps=0.3)
    """
    if name not in ALGORITHMS:
        raise ConfigError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {name!r}")
    spec = ALGORITHMS[name]
    cls, build = _BUILDERS[name]
    if spec.takes_k:
        n_clusters = DEFAULT_N_CLUSTERS if n_clusters is None else check_int("n_clusters", n_clusters, minimum=1)
    elif n_clusters is not None:
        raise ConfigError(
            f"algorithm {name!r} finds the number of segments itself, got n_clusters={n_clusters!r}; "
            "leave n_clusters unset"
        )
    max_fit_samples = check_int("max_fit_samples", max_fit_samples, minimum=1)
    valid = sorted(set(cls().get_params()) - _MANAGED)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for algorithm {name!r}; "
            f"valid: {', '.join(valid)}"
        )
    return build(n_clusters, random_state, max_fit_samples, params)
