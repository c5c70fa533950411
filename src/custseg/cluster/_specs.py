"""What each clustering algorithm can do, by name: data only, no estimator imported (so the
names can be checked, e.g. in a request, before scikit-learn is loaded)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

__all__ = ["ALGORITHMS", "AlgorithmSpec"]


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
