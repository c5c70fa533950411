"""K-Prototypes (kmodes) for customer tables with numeric and categorical columns."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real
from typing import Literal

import numpy as np
import pandas as pd
from kmodes.kprototypes import KPrototypes
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils import assert_all_finite
from sklearn.utils.validation import check_is_fitted, validate_data

from custseg.cluster._base import (
    DEFAULT_MAX_FIT_SAMPLES,
    DEFAULT_N_CLUSTERS,
    SampledFitMixin,
    check_int,
    check_positive_real,
)
from custseg.errors import ConfigError, DataError

# Rows per block when assigning customers to prototypes (bounds the temporary arrays).
_ASSIGN_BLOCK = 8_192


def _is_categorical_dtype(dtype) -> bool:
    return not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


class KPrototypesClustering(SampledFitMixin, ClusterMixin, BaseEstimator):
    """K-Prototypes (``kmodes.kprototypes.KPrototypes``) on mixed numeric + categorical data.

    Takes a table ``X`` (n_customers × n_features) whose numeric columns are already scaled
    (e.g. by :func:`custseg.preprocessing.build_preprocessor` with ``one_hot=False``) and
    whose categorical columns are raw values (strings, categories, booleans), not one-hot
    encoded.  It is the only custseg estimator that takes unencoded categoricals.  A
    customer's cost to a prototype is the squared Euclidean distance on the numeric columns
    plus ``gamma`` times the number of categorical columns that differ from the prototype's
    mode.  The algorithm is pure Python, so at most ``max_fit_samples`` rows (a seeded
    sample) are used to fit; all rows are then assigned to the cheapest prototype.

    Parameters
    ----------
    n_clusters : int, default=4
    categorical : list of str or int, or None, default=None
        Categorical columns, by name (DataFrame input) or position.  None detects them:
        non-numeric and boolean dtypes of a DataFrame, or columns of an object array that
        hold values other than numbers.
    gamma : float or None, default=None
        Weight of one categorical mismatch; None uses half the mean standard deviation of
        the numeric columns (kmodes' rule).
    init : {"Cao", "Huang", "random"}, default="Cao"
    n_init : int, default=3
        Number of initialisations; each costs about 2 s at 20,000 rows.
    max_iter : int, default=100
    max_fit_samples : int, default=20_000
    random_state : int, RandomState or None, default=0

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
    cluster_centroids_ : ndarray of object, shape (n_clusters, n_features)
        Prototype of each segment (mean of numeric columns, mode of categorical ones), in
        the column order of ``X``.
    categorical_ : list of int
        Positions of the categorical columns.
    gamma_ : float
    cost_ : float
        Total cost of the fitted rows.
    n_iter_ : int
    sampled_, n_fit_samples_, fit_indices_, n_clusters_
        See :class:`custseg.cluster.WardClustering`.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"monetary": [0.0, 0.1, 0.2, 5.0, 5.1, 5.2],
    ...                   "channel": ["web", "web", "web", "store", "store", "store"]})
    >>> model = KPrototypesClustering(n_clusters=2).fit(X)
    >>> labels = model.labels_.tolist()
    >>> labels[0] == labels[1] == labels[2] != labels[3] == labels[4] == labels[5]
    True
    """

    def __init__(
        self,
        n_clusters: int = DEFAULT_N_CLUSTERS,
        *,
        categorical: Sequence[str] | Sequence[int] | None = None,
        gamma: float | None = None,
        init: Literal["Cao", "Huang", "random"] = "Cao",
        n_init: int = 3,
        max_iter: int = 100,
        max_fit_samples: int = DEFAULT_MAX_FIT_SAMPLES,
        random_state: int | np.random.RandomState | None = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.categorical = categorical
        self.gamma = gamma
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.max_fit_samples = max_fit_samples
        self.random_state = random_state

    # -- input handling -------------------------------------------------------------------

    @staticmethod
    def _detect_categorical(X) -> list[int]:
        """Positions of the columns of ``X`` that look categorical (see ``categorical``)."""
        if isinstance(X, pd.DataFrame):
            return [j for j, dtype in enumerate(X.dtypes) if _is_categorical_dtype(dtype)]
        values = np.asarray(X)
        if values.dtype != object or values.ndim != 2:
            return []
        return [j for j in range(values.shape[1]) if not all(_is_number(v) for v in values[:, j])]

    def _resolve_categorical(self, n_features: int) -> list[int]:
        """Positions of the columns named in ``categorical`` (names or positions)."""
        names = list(getattr(self, "feature_names_in_", []))
        indices = []
        items = [self.categorical] if isinstance(self.categorical, (str, Integral)) else self.categorical
        for item in items:
            if isinstance(item, Integral) and not isinstance(item, bool):
                if not 0 <= item < n_features:
                    raise ConfigError(
                        f"categorical position {item} is out of range for {n_features} columns; "
                        f"use 0..{n_features - 1} or column names"
                    )
                indices.append(int(item))
            elif item in names:
                indices.append(names.index(item))
            else:
                available = ", ".join(map(str, names)) if names else "positions only (X has no column names)"
                raise ConfigError(f"categorical column {item!r} is not in X; available: {available}")
        return sorted(set(indices))

    def _split(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Numeric block (float64) and categorical block (str) of a validated array."""
        categorical = self.categorical_
        numeric = [j for j in range(X.shape[1]) if j not in set(categorical)]
        try:
            Xnum = X[:, numeric].astype(np.float64)
        except (TypeError, ValueError):
            names = list(getattr(self, "feature_names_in_", range(X.shape[1])))
            for j in numeric:
                try:
                    X[:, j].astype(np.float64)
                except (TypeError, ValueError) as exc:
                    raise DataError(
                        f"K-Prototypes column {names[j]!r} is treated as numeric but holds text ({exc}); "
                        "list it in categorical=[...]"
                    ) from None
            raise
        assert_all_finite(Xnum, input_name="X")
        Xcat = X[:, categorical]
        if pd.isna(Xcat).any():
            raise DataError(
                "K-Prototypes got missing categorical values; impute them first "
                "(custseg.preprocessing.build_preprocessor does)"
            )
        return Xnum, Xcat.astype(str)

    # -- estimator API --------------------------------------------------------------------

    def fit(self, X, y=None) -> KPrototypesClustering:
        """Fit prototypes on ``X`` (or a sample of it) and label every row."""
        n_clusters = check_int("n_clusters", self.n_clusters, minimum=1)
        check_int("n_init", self.n_init, minimum=1)
        check_int("max_iter", self.max_iter, minimum=1)
        if self.gamma is not None:
            check_positive_real("gamma", self.gamma)
        if self.init not in ("Cao", "Huang", "random"):
            raise ConfigError(f"init must be one of 'Cao', 'Huang', 'random', got {self.init!r}")
        detected = self._detect_categorical(X) if self.categorical is None else None
        values = validate_data(self, X, dtype=None, ensure_all_finite=False)
        categorical = detected if detected is not None else self._resolve_categorical(values.shape[1])
        if not categorical:
            raise ConfigError(
                "K-Prototypes found no categorical columns; pass categorical=[...] "
                "or use an algorithm for numeric data such as 'kmeans'"
            )
        if len(categorical) == values.shape[1]:
            raise ConfigError(
                "K-Prototypes needs at least one numeric column, got only categorical ones; "
                "add a numeric feature or drop categorical=[...] entries"
            )
        max_fit_samples = check_int("max_fit_samples", self.max_fit_samples, minimum=1)
        if min(values.shape[0], max_fit_samples) < n_clusters:
            raise ValueError(
                f"n_samples={min(values.shape[0], max_fit_samples)} (rows fitted) should be >= n_clusters={n_clusters}."
            )
        self.categorical_ = categorical
        self._numeric = [j for j in range(values.shape[1]) if j not in set(categorical)]
        Xnum, Xcat = self._split(values)
        combined = np.empty(values.shape, dtype=object)
        combined[:, : Xnum.shape[1]] = Xnum
        combined[:, Xnum.shape[1] :] = Xcat
        self._fit_sampled(combined)
        return self

    def _fit_labels(self, combined: np.ndarray) -> np.ndarray:
        n_numeric = len(self._numeric)
        model = KPrototypes(
            n_clusters=self.n_clusters,
            gamma=self.gamma,
            init=self.init,
            n_init=self.n_init,
            max_iter=self.max_iter,
            random_state=self.random_state,
            n_jobs=1,
        ).fit(combined, categorical=list(range(n_numeric, combined.shape[1])))
        centroids = model.cluster_centroids_  # numeric columns first, as text
        self._centroids_num = centroids[:, :n_numeric].astype(np.float64)
        self._centroids_cat = centroids[:, n_numeric:].astype(str)
        ordered = np.empty((centroids.shape[0], combined.shape[1]), dtype=object)
        ordered[:, self._numeric] = self._centroids_num
        ordered[:, self.categorical_] = self._centroids_cat
        self.cluster_centroids_ = ordered
        self.gamma_ = float(model.gamma)
        self.cost_ = float(model.cost_)
        self.n_iter_ = int(model.n_iter_ or 0)
        if model.labels_ is None:  # kmodes skips iterating when rows are fewer than clusters
            return self._assign(combined)
        return np.asarray(model.labels_, dtype=np.intp)

    def _assign(self, combined: np.ndarray) -> np.ndarray:
        n_numeric = len(self._numeric)
        return self._assign_split(
            combined[:, :n_numeric].astype(np.float64), combined[:, n_numeric:].astype(str)
        )

    def _assign_split(self, Xnum: np.ndarray, Xcat: np.ndarray) -> np.ndarray:
        # Same cost and tie-breaking as kmodes' own predict, vectorised by blocks: kmodes
        # loops over customers in Python, which is ~100x slower at a million rows.
        labels = np.empty(Xnum.shape[0], dtype=np.intp)
        for start in range(0, Xnum.shape[0], _ASSIGN_BLOCK):
            block = slice(start, start + _ASSIGN_BLOCK)
            numeric_cost = ((Xnum[block, None, :] - self._centroids_num[None, :, :]) ** 2).sum(axis=2)
            mismatches = (Xcat[block, None, :] != self._centroids_cat[None, :, :]).sum(axis=2)
            labels[block] = np.argmin(numeric_cost + self.gamma_ * mismatches, axis=1)
        return labels

    def predict(self, X) -> np.ndarray:
        """Segment of each row of ``X``: the prototype with the lowest cost."""
        check_is_fitted(self)
        values = validate_data(self, X, dtype=None, ensure_all_finite=False, reset=False)
        Xnum, Xcat = self._split(values)
        return self._assign_split(Xnum, Xcat)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.categorical = True
        tags.input_tags.string = True
        return tags
