"""Clustering algorithms behind one registry and one estimator interface.

``ALGORITHMS`` says what each algorithm can do; ``make_estimator(name, ...)`` builds it.
Every estimator follows the scikit-learn contract: ``fit(X)`` returns the estimator,
``labels_`` holds one segment label per row, ``predict(X)`` labels new customers, and
``-1`` means noise / unassigned.  Where scikit-learn's own class lacks a piece (labels for
a mixture, ``predict`` for DBSCAN/HDBSCAN/Ward, sampling for large tables) a thin custseg
class adds it; K-Means, Mini-Batch K-Means, Bisecting K-Means and BIRCH are scikit-learn's
classes as is.

>>> import numpy as np
>>> X = np.r_[np.zeros((5, 2)), np.ones((5, 2)) * 10]
>>> make_estimator("kmeans", n_clusters=2).fit(X).predict([[9.0, 9.0]]).shape
(1,)
"""

from typing import TYPE_CHECKING, Any

from custseg.cluster._specs import ALGORITHMS, AlgorithmSpec

if TYPE_CHECKING:
    from custseg.cluster._base import DEFAULT_MAX_FIT_SAMPLES, DEFAULT_N_CLUSTERS, NOISE
    from custseg.cluster._density import DBSCANClustering, HDBSCANClustering, MeanShiftClustering
    from custseg.cluster._hierarchical import WardClustering, linkage_matrix
    from custseg.cluster._kprototypes import KPrototypesClustering
    from custseg.cluster._mixture import GaussianMixtureClustering
    from custseg.cluster._registry import make_estimator
    from custseg.cluster._rfm import DEFAULT_SEGMENT_MAP, RFM_COLUMNS, RFMSegmenter

# The estimators import scikit-learn (about a second): loaded when first asked for, so the
# algorithm names can be read without them.
_LAZY = {
    "DEFAULT_MAX_FIT_SAMPLES": "_base", "DEFAULT_N_CLUSTERS": "_base", "NOISE": "_base",
    "DBSCANClustering": "_density", "HDBSCANClustering": "_density", "MeanShiftClustering": "_density",
    "WardClustering": "_hierarchical", "linkage_matrix": "_hierarchical",
    "KPrototypesClustering": "_kprototypes", "GaussianMixtureClustering": "_mixture",
    "make_estimator": "_registry",
    "DEFAULT_SEGMENT_MAP": "_rfm", "RFM_COLUMNS": "_rfm", "RFMSegmenter": "_rfm",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'custseg.cluster' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"custseg.cluster.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ALGORITHMS",
    "AlgorithmSpec",
    "make_estimator",
    "DEFAULT_N_CLUSTERS",
    "DEFAULT_MAX_FIT_SAMPLES",
    "NOISE",
    "GaussianMixtureClustering",
    "WardClustering",
    "DBSCANClustering",
    "HDBSCANClustering",
    "MeanShiftClustering",
    "KPrototypesClustering",
    "RFMSegmenter",
    "DEFAULT_SEGMENT_MAP",
    "RFM_COLUMNS",
    "linkage_matrix",
]
