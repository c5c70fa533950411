"""The algorithm registry: one name per algorithm, one way to build its estimator."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from sklearn.base import BaseEstimator
from sklearn.cluster import Birch, BisectingKMeans, KMeans, MiniBatchKMeans

from custseg.cluster._base import DEFAULT_MAX_FIT_SAMPLES, DEFAULT_N_CLUSTERS, check_int
from custseg.cluster._density import DBSCANClustering, HDBSCANClustering, MeanShiftClustering
from custseg.cluster._hierarchical import WardClustering
from custseg.cluster._kprototypes import KPrototypesClustering
from custseg.cluster._mixture import GaussianMixtureClustering
from custseg.cluster._rfm import RFMSegmenter
from custseg.errors import ConfigError


@dataclass(frozen=True)
class AlgorithmSpec:
    """What one clustering algorithm can do.

    Attributes
    ----------
    name : str
        Registry key, used by the library, CLI flags and API fields (e.g. ``"kmeans"``).
    label : str
        Human name for reports (e.g. ``"K-Means"``).
    takes_k : bool
        Whether it takes ``n_clusters``; the others find the number of segments themselves.
    scalable : bool
        Whether it fits millions of rows directly; the others fit a sample of at most
        ``max_fit_samples`` rows and assign the rest with ``predict``.
    has_proba : bool
        Whether the estimator has ``predict_proba`` (membership probabilities).
    has_inertia : bool
        Whether the fitted estimator has ``inertia_`` (for an elbow curve).
    needs_categorical : bool
        Whether it takes raw categorical columns (K-Prototypes) instead of a one-hot matrix.
    input : {"matrix", "mixed", "rfm"}
        What ``X`` is: the preprocessed numeric matrix; scaled numerics plus raw
        categoricals; or the raw feature table with ``recency_days, frequency, monetary``.
    description : str
        One sentence for help texts and reports.
    """

    name: str
    label: str
    takes_k: bool
    scalable: bool
    has_proba: bool
    has_inertia: bool
    needs_categorical: bool
    input: Literal["matrix", "mixed", "rfm"]
    description: str


_SPECS = (
    AlgorithmSpec("kmeans", "K-Means", True, True, False, True, False, "matrix",
                  "Round segments of similar size around k centroids."),
    AlgorithmSpec("minibatch", "Mini-Batch K-Means", True, True, False, True, False, "matrix",
                  "K-Means updated on small batches; an approximation for very large tables."),
    AlgorithmSpec("bisecting_kmeans", "Bisecting K-Means", True, True, False, True, False, "matrix",
                  "Two-way K-Means splits of the most spread-out segment until there are k; new customers go down the tree of splits."),
    AlgorithmSpec("gmm", "Gaussian Mixture", True, True, True, False, False, "matrix",
                  "Elliptical segments with a membership probability for every customer."),
    AlgorithmSpec("agglomerative", "Agglomerative (Ward)", True, False, False, False, False, "matrix",
                  "A tree of merges (dendrogram) cut into k compact segments."),
    AlgorithmSpec("dbscan", "DBSCAN", False, False, False, False, False, "matrix",
                  "Dense groups of any shape; customers in sparse regions are noise (-1)."),
    AlgorithmSpec("hdbscan", "HDBSCAN", False, False, False, False, False, "matrix",
                  "Dense groups of varying density; customers in sparse regions are noise (-1)."),
    AlgorithmSpec("meanshift", "Mean Shift", False, False, False, False, False, "matrix",
                  "Segments around the density peaks; the number of peaks is found from the data."),
    AlgorithmSpec("birch", "BIRCH", True, True, False, False, False, "matrix",
                  "A compact summary tree of the customers, grouped into k segments."),
    AlgorithmSpec("kprototypes", "K-Prototypes", True, False, False, False, True, "mixed",
                  "K-Means for mixed tables: numeric means plus categorical modes."),
    AlgorithmSpec("rfm", "RFM segments", False, True, False, False, False, "rfm",
                  "Named rule-based segments (Champions, At Risk, ...) from recency and frequency quintiles."),
)

#: Every algorithm custseg offers, by name (read-only).
ALGORITHMS: Mapping[str, AlgorithmSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})

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
