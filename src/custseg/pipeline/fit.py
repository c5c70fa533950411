"""Fit: the chosen algorithm on the whole matrix; segment ids kept from a previous model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from custseg.pipeline.choose import Choice
from custseg.pipeline.prepare import Prepared
from custseg.request import SegmentConfig

if TYPE_CHECKING:
    import numpy as np

    from custseg.cluster import AlgorithmSpec
    from custseg.model import Alignment, SegmentationModel

__all__ = ["Fitted", "fit"]


@dataclass(frozen=True)
class Fitted:
    """The fitted estimator and one label per customer (``-1`` = noise), after ``label_map``
    renamed them to the previous model's ids (``alignment`` says how)."""

    spec: AlgorithmSpec
    estimator: Any  # a scikit-learn compatible clusterer of custseg.cluster
    labels: np.ndarray
    label_map: dict[int, int] | None
    alignment: Alignment | None


def _fit_threads(n_rows: int):
    """One BLAS/OpenMP thread for a fit of at most ``selection._ONE_THREAD_MAX_ROWS`` rows, as the
    sweep's fits run: threads that spin-wait on each other cost more than they share there (a
    K-Means fit of Online Retail's 4,338 customers: 0.01 s on one thread, up to 0.4 s on two of
    a busy machine), and the final fit then repeats the sweep's fit of the same rows exactly."""
    from custseg.selection import _fit_threads as sweep_threads

    return sweep_threads(n_rows)


def fit(
    prepared: Prepared,
    choice: Choice,
    *,
    config: SegmentConfig = SegmentConfig(),
    previous: SegmentationModel | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Fitted:
    """Fit ``choice`` on ``prepared``; with ``previous``, segments keep the ids of the previous
    model's segments they match (see :func:`custseg.model.align`)."""
    import numpy as np
    import pandas as pd

    from custseg import cluster

    spec = cluster.ALGORITHMS[choice.algorithm]
    if progress:
        progress("final fit", 0, 1)
    estimator = cluster.make_estimator(
        choice.algorithm, n_clusters=choice.n_clusters if spec.takes_k else None, random_state=config.random_state,
    )
    features = prepared.features
    with _fit_threads(len(features)):
        estimator.fit(features[prepared.columns] if spec.input == "rfm" else prepared.matrix)
    labels = np.asarray(estimator.labels_).astype("int64")
    if progress:
        progress("final fit", 1, 1)
    label_map, alignment = None, None
    if previous is not None:
        from custseg.model import align

        shared = [c for c in features.columns if any(c in m for m in previous.reference_means.values())
                  and pd.api.types.is_numeric_dtype(features[c])]
        new_means = {int(s): {c: float(features.loc[labels == s, c].mean()) for c in shared}
                     for s in sorted(set(labels.tolist())) if s != -1}
        # In standard deviations of this table: the previous model keeps its means, not their
        # spread (see custseg.model.align).
        alignment = align(new_means, previous.reference_means,
                          scale={c: float(features[c].std()) or 1.0 for c in shared})
        label_map = dict(alignment.mapping)
        labels = np.array([label_map.get(int(s), int(s)) for s in labels], dtype="int64")
    return Fitted(spec, estimator, labels, label_map, alignment)
