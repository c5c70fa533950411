"""Shared pieces of the custseg clustering estimators: parameter checks and sampled fitting."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.utils import check_random_state

from custseg.errors import ConfigError

#: Number of segments used when an algorithm that takes ``n_clusters`` is given none.
#: A handful of segments is what a marketing team can act on; ``custseg.selection``
#: chooses the number with evidence.
DEFAULT_N_CLUSTERS = 4

#: Largest number of rows the non-scalable algorithms (Ward, DBSCAN, HDBSCAN, Mean Shift,
#: K-Prototypes) are fitted on; the other rows are assigned with ``predict``.  Ward's tree
#: needs memory and time quadratic in the rows: on a 2-core machine 10,000 rows take about
#: 2 s and 1 GB, 20,000 rows about 11-18 s and 3.2 GB.  DBSCAN, HDBSCAN and Mean Shift fit
#: 20,000 rows in about 1 s, K-Prototypes (pure Python) in about 2 s per initialisation.
DEFAULT_MAX_FIT_SAMPLES = 20_000

#: Label of customers that belong to no segment (density noise).
NOISE = -1


def check_int(name: str, value: object, *, minimum: int) -> int:
    """Return ``value`` as an int, or raise ConfigError if it is not an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}; pass e.g. {name}={max(minimum, 2)}")
    return int(value)


def check_positive_real(name: str, value: object) -> float:
    """Return ``value`` as a float, or raise ConfigError if it is not a number > 0."""
    if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a number > 0, got {value!r}; pass a positive number")
    return float(value)


def count_clusters(labels: np.ndarray) -> int:
    """Number of distinct segment labels, not counting noise (-1)."""
    return int(np.unique(labels[labels != NOISE]).size)


class SampledFitMixin:
    """Fit on a seeded random sample of at most ``max_fit_samples`` rows.

    A subclass implements ``_fit_labels(X) -> labels`` (fit on the rows given, return their
    labels) and ``_assign(X) -> labels`` (label new rows with the fitted model).  Rows in the
    sample keep the label the fit gave them; the other rows get ``_assign``.  Sets
    ``labels_``, ``sampled_``, ``n_fit_samples_`` and ``fit_indices_`` (sorted row indices
    the model was fitted on).
    """

    def _fit_sampled(self, X: np.ndarray) -> None:
        max_fit_samples = check_int("max_fit_samples", self.max_fit_samples, minimum=1)
        n_samples = X.shape[0]
        if n_samples > max_fit_samples:
            rng = check_random_state(self.random_state)
            fit_indices = np.sort(rng.choice(n_samples, size=max_fit_samples, replace=False))
            rest = np.ones(n_samples, dtype=bool)
            rest[fit_indices] = False
            labels = np.empty(n_samples, dtype=np.intp)
            labels[fit_indices] = self._fit_labels(X[fit_indices])
            labels[rest] = self._assign(X[rest])
            self.sampled_ = True
        else:
            fit_indices = np.arange(n_samples)
            labels = np.asarray(self._fit_labels(X), dtype=np.intp)
            self.sampled_ = False
        self.fit_indices_ = fit_indices
        self.n_fit_samples_ = int(fit_indices.size)
        self.labels_ = labels
        self.n_clusters_ = count_clusters(labels)
