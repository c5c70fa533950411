"""Choose: sweep algorithms × k on the matrix and decide what to fit, with the evidence.

An algorithm of the numeric matrix is swept on it; K-Prototypes, which clusters numbers and
categories together, is swept itself on that mixed table (:func:`custseg.selection.compare_mixed`),
so its k is chosen on what it clusters, not on the numbers alone.
"""

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
    # Customers are told apart by what the sweep compares: the categories too, for K-Prototypes.
    compared = prepared.matrix if prepared.spec is not None and prepared.spec.input == "mixed" else prepared.numeric
    most = min(len(compared) - 1, len(compared.drop_duplicates()))
    k_values = tuple(k for k in config.k_values if k <= most) or config.k_values[:1]
    if config.n_clusters:  # the algorithms are compared at the k asked for, too
        k_values = tuple(sorted({*k_values, config.n_clusters}))
    return k_values


def choose(
    prepared: Prepared,
    *,
    config: SegmentConfig = SegmentConfig(),
    progress: Callable[[str, int, int], None] | None = None,
    busy_cores: int = 0,
) -> Choice:
    """Sweep and recommend; an algorithm or k the caller fixed is kept.  ``busy_cores``: cores
    the caller's work beside the sweep keeps busy (see :func:`custseg.selection.compare`)."""
    from custseg import selection

    spec = prepared.spec
    if spec is not None and spec.input == "rfm":
        return _rules(prepared)
    with naming(prepared.loaded):  # e.g. every customer alike
        if spec is not None and spec.input == "mixed":
            _check_mixed(prepared, config)
            result = selection.compare_mixed(
                prepared.matrix, k_values=k_values_for(prepared, config), random_state=config.random_state,
                progress=progress,
            )
        else:
            result = selection.compare(
                prepared.numeric, algorithms=config.candidates if spec is None else (config.algorithm,),
                k_values=k_values_for(prepared, config), random_state=config.random_state, progress=progress,
                meanwhile=_import_model_writer, busy_cores=busy_cores,
                # Without a forced k only the rows that can be recommended need their stability.
                stability_for="deciding" if config.n_clusters is None else "all",
            )
    if config.algorithm == "auto" or config.n_clusters is None:
        recommended = selection.recommend(
            result.leaderboard, knee=result.knee,
            algorithm=None if config.algorithm == "auto" else config.algorithm,
            n_clusters=config.n_clusters,
        )
        algorithm = recommended.algorithm if config.algorithm == "auto" else config.algorithm
        return Choice(result, algorithm, recommended.n_clusters)
    return Choice(result, config.algorithm, config.n_clusters)


def _import_model_writer() -> None:
    """Import what saving the model needs, beside the sweep's workers: skops lists every
    scikit-learn estimator when imported (1.2 s of CPU, else spent after the fit)."""
    import skops.io  # noqa: F401


def _check_mixed(prepared: Prepared, config: SegmentConfig) -> None:
    """K-Prototypes needs a number beside its categories (a table of categories only is
    clustered one-hot encoded by the other algorithms)."""
    import pandas as pd

    from custseg.errors import ConfigError, literal

    if prepared.numeric.shape[1]:
        return
    table = prepared.features
    numbers = [c for c in table.columns[1:] if c not in prepared.columns and pd.api.types.is_numeric_dtype(table[c])
               and not pd.api.types.is_bool_dtype(table[c])]
    raise ConfigError(
        f"{{param}} {literal(config.algorithm)} mixes numbers and categories, but the features "
        f"{literal(', '.join(prepared.columns))} are all categories; "
        + (f"add a number with {{param:features}} {literal(','.join([*prepared.columns, numbers[0]]))}" if numbers
           else "the table has no number")
        + ", or choose kmeans",
        param="algorithm",
    )


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
