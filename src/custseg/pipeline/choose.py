"""Choose: sweep algorithms × k on the matrix and decide what to fit, with the evidence."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from custseg.pipeline.prepare import Prepared, naming
from custseg.request import SegmentConfig

if TYPE_CHECKING:
    from custseg.selection import SelectionResult

__all__ = ["Choice", "choose", "k_values_for"]


@dataclass(frozen=True)
class Choice:
    """The sweep's evidence and what is fitted: ``algorithm`` with ``n_clusters`` segments
    (None for algorithms that find their number)."""

    selection: SelectionResult
    algorithm: str
    n_clusters: int | None


def k_values_for(prepared: Prepared, config: SegmentConfig) -> tuple[int, ...]:
    """The k compared: the one asked for with a named algorithm; else the configured range cut to
    what the table allows (more customers, and distinct ones, than segments), plus an asked k."""
    if config.n_clusters and config.algorithm != "auto":
        return (config.n_clusters,)
    numeric = prepared.numeric
    most = min(len(numeric) - 1, len(numeric.drop_duplicates()))
    k_values = tuple(k for k in config.k_values if k <= most) or config.k_values[:1]
    if config.n_clusters:  # the algorithms are compared at the k asked for, too
        k_values = tuple(sorted({*k_values, config.n_clusters}))
    return k_values


def choose(
    prepared: Prepared,
    *,
    config: SegmentConfig = SegmentConfig(),
    progress: Callable[[str, int, int], None] | None = None,
) -> Choice:
    """Sweep and recommend; an algorithm or k the caller fixed is kept."""
    from custseg import selection

    spec = prepared.spec
    if spec is not None and spec.input == "rfm":
        return _rules(prepared)
    if config.algorithm == "auto":
        algorithms = config.candidates
    else:
        algorithms = (config.algorithm,) if spec.input == "matrix" else ("kmeans",)
    with naming(prepared.loaded):  # e.g. every customer alike
        result = selection.compare(
            prepared.numeric, algorithms=algorithms, k_values=k_values_for(prepared, config),
            random_state=config.random_state, progress=progress,
        )
    if config.algorithm == "auto" or config.n_clusters is None:
        recommended = selection.recommend(
            result.leaderboard, knee=result.knee,
            algorithm=None if config.algorithm == "auto" else (config.algorithm if spec.input == "matrix" else None),
            n_clusters=config.n_clusters,
        )
        algorithm = recommended.algorithm if config.algorithm == "auto" else config.algorithm
        return Choice(result, algorithm, recommended.n_clusters)
    return Choice(result, config.algorithm, config.n_clusters)


def _rules(prepared: Prepared) -> Choice:
    """RFM rules fix the segments themselves: no sweep is run, and the evidence says so."""
    import pandas as pd

    from custseg import cluster, selection

    found = cluster.make_estimator("rfm").fit(prepared.features[prepared.columns])
    n = len(set(found.labels_.tolist()))
    text = (f"RFM rules with {n} segments (as asked): each customer is named by the RFM segment map from "
            "their recency, frequency and monetary scores; the rules fix the segments, so no algorithm "
            "or k was compared")
    reasons = [f"{n} of the map's segments occur among the customers", "no sweep: the rules need no k"]
    result = selection.SelectionResult(
        leaderboard=pd.DataFrame(columns=list(selection.LEADERBOARD_COLUMNS)),
        elbow=pd.DataFrame({"k": pd.Series(dtype="int64"), "inertia": pd.Series(dtype="float64")}),
        knee=None,
        recommendation=selection.Recommendation("rfm", n, reasons, text),
    )
    return Choice(result, "rfm", None)
