"""Rule-based RFM segments as an estimator: quintile edges learned once, applied to anyone."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from custseg.cluster._base import NOISE, count_clusters
from custseg.errors import ConfigError, SchemaError
from custseg.rfm import DEFAULT_SEGMENT_MAP, quintile_scores

#: Columns the RFM segmenter reads, in this order when ``X`` is an array.
RFM_COLUMNS = ("recency_days", "frequency", "monetary")

def _quintile_bins(values: np.ndarray, *, by_rank: bool) -> np.ndarray:
    """Quintile (1..5, ascending values) of each value: :func:`custseg.rfm.quintile_scores`."""
    return quintile_scores(pd.Series(values), rank_first=by_rank).to_numpy().astype(np.intp)


def _upper_edges(values: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """Largest value in bins 1..b for b = 1..4: a value above edge b is in a bin above b."""
    edges = np.array([values[bins <= b].max() if (bins <= b).any() else -np.inf for b in range(1, 5)])
    return np.maximum.accumulate(edges)


def _bins_from_edges(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.searchsorted(edges, values, side="left").astype(np.intp) + 1


class RFMSegmenter(ClusterMixin, BaseEstimator):
    """Named RFM segments (Champions, Loyal, At Risk, ...) with a fit/predict interface.

    Takes the customer feature table: a DataFrame with columns ``recency_days``,
    ``frequency`` and ``monetary`` (other columns are ignored), or an array with exactly
    those three columns in that order.  ``fit`` scores every customer 1..5 on each:
    recency quintiles labelled 5..1 (5 = bought most recently), frequency ranked (ties
    broken by row order) then cut in quintiles 1..5, monetary quintiles 1..5 (falling back
    to ranks when ties make edges coincide).  The named segment comes from the "RF" string
    (or the "RFM" code) and ``segment_map``; the first matching pattern wins.  The bin
    edges are learned at fit time, so ``predict`` scores new customers against the
    training population; a value tied across a quintile boundary gets the lowest quintile
    it occupied in training.

    Parameters
    ----------
    segment_map : sequence of (pattern, name) or mapping pattern -> name, default=DEFAULT_SEGMENT_MAP
        Regular expressions matched against the whole two-digit "RF" string, e.g.
        ``("5[4-5]", "Champions")``, or against the three-digit "RFM" code, e.g.
        ``("5[4-5].", "Champions")`` (so maps written for RFM codes work too).  The first
        matching pattern wins; customers no pattern matches get label ``-1``.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
        Segment code of each customer (key of ``segment_names_``).
    segment_names_ : dict[int, str]
        Code → segment name, codes numbered in ``segment_map`` order.
    segment_codes_ : ndarray of shape (5, 5, 5)
        Segment code for scores ``r, f, m`` at ``[r - 1, f - 1, m - 1]``.
    recency_edges_, frequency_edges_, monetary_edges_ : ndarray of shape (4,)
        Upper value of quintiles 1..4 (ascending values).
    n_clusters_ : int
        Number of segments that received at least one customer.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"recency_days": [1, 2, 300, 400, 30],
    ...                       "frequency": [20, 15, 1, 2, 3],
    ...                       "monetary": [900.0, 800.0, 10.0, 20.0, 50.0]})
    >>> rfm = RFMSegmenter().fit(table)
    >>> [rfm.segment_names_[code] for code in rfm.labels_]
    ['Champions', 'Loyal', 'Hibernating', 'Hibernating', 'Need Attention']
    """

    def __init__(
        self, *, segment_map: Sequence[tuple[str, str]] | Mapping[str, str] = DEFAULT_SEGMENT_MAP
    ) -> None:
        self.segment_map = segment_map

    def _values(self, X, *, reset: bool) -> np.ndarray:
        if isinstance(X, pd.DataFrame):
            missing = [column for column in RFM_COLUMNS if column not in X.columns]
            if missing:
                raise SchemaError(
                    f"RFM segments need columns {', '.join(RFM_COLUMNS)}; missing {', '.join(map(repr, missing))}; "
                    "compute the customer features first"
                )
            X = X.loc[:, list(RFM_COLUMNS)]
        values = validate_data(self, X, dtype=np.float64, reset=reset)
        if values.shape[1] != len(RFM_COLUMNS):
            raise SchemaError(
                f"RFM segments need 3 columns ({', '.join(RFM_COLUMNS)}), got an array with "
                f"{values.shape[1]}; pass a DataFrame with those columns"
            )
        return values

    def _compile_map(self) -> tuple[dict[int, str], np.ndarray]:
        pairs = self.segment_map.items() if isinstance(self.segment_map, Mapping) else self.segment_map
        names: list[str] = []
        patterns = []
        try:
            for pattern, name in pairs:
                patterns.append((re.compile(pattern), str(name)))
                if str(name) not in names:
                    names.append(str(name))
        except (TypeError, ValueError, re.error) as exc:
            raise ConfigError(
                f"segment_map must be a sequence of (regex, name) pairs, got an invalid entry ({exc}); "
                "see custseg.cluster.DEFAULT_SEGMENT_MAP"
            ) from None
        codes = np.full((5, 5, 5), NOISE, dtype=np.intp)
        for r, f, m in itertools.product(range(1, 6), repeat=3):
            for pattern, name in patterns:
                if pattern.fullmatch(f"{r}{f}") or pattern.fullmatch(f"{r}{f}{m}"):
                    codes[r - 1, f - 1, m - 1] = names.index(name)
                    break
        return dict(enumerate(names)), codes

    def fit(self, X, y=None) -> RFMSegmenter:
        """Learn the quintile edges on ``X`` and label its customers by named segment."""
        segment_names, segment_codes = self._compile_map()
        values = self._values(X, reset=True)
        recency, frequency, monetary = values.T
        bins_r = _quintile_bins(recency, by_rank=False)
        bins_f = _quintile_bins(frequency, by_rank=True)
        bins_m = _quintile_bins(monetary, by_rank=False)
        self.recency_edges_ = _upper_edges(recency, bins_r)
        self.frequency_edges_ = _upper_edges(frequency, bins_f)
        self.monetary_edges_ = _upper_edges(monetary, bins_m)
        self.segment_names_ = segment_names
        self.segment_codes_ = segment_codes
        self.labels_ = segment_codes[(6 - bins_r) - 1, bins_f - 1, bins_m - 1]
        self.n_clusters_ = count_clusters(self.labels_)
        return self

    def _scores(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        recency, frequency, monetary = values.T
        return (
            6 - _bins_from_edges(recency, self.recency_edges_),
            _bins_from_edges(frequency, self.frequency_edges_),
            _bins_from_edges(monetary, self.monetary_edges_),
        )

    def predict(self, X) -> np.ndarray:
        """Segment code of each customer in ``X``, scored against the learned edges."""
        check_is_fitted(self)
        r_score, f_score, m_score = self._scores(self._values(X, reset=False))
        return self.segment_codes_[r_score - 1, f_score - 1, m_score - 1]

    def rfm_scores(self, X) -> pd.DataFrame:
        """Scores 1..5 of each customer against the learned edges: ``r_score, f_score, m_score``.

        The index is ``X``'s index when ``X`` is a DataFrame.  On the training table a
        value tied across a quintile boundary (typically frequency 1) scores the lowest
        quintile it occupied, whereas ``fit`` split such ties by row order.
        """
        check_is_fitted(self)
        r_score, f_score, m_score = self._scores(self._values(X, reset=False))
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame({"r_score": r_score, "f_score": f_score, "m_score": m_score}, index=index)
