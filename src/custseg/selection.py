"""Choose the clustering algorithm and the number of segments with evidence.

:func:`compare` sweeps algorithms x number of segments ``k`` on a preprocessed numeric matrix
``X`` (one row per customer), measures every fit, draws the K-Means elbow curve, finds its
knee and recommends one configuration with plain-language reasons.  :func:`recommend`
re-applies the rule to a leaderboard, optionally with the user's own algorithm and/or ``k``.

The recommendation rule
-----------------------
1. Candidates are the rows with at least two segments and a defined silhouette.
2. Keep the rows where every segment holds at least ``min_share`` of the customers and the
   stability (mean adjusted Rand index over resamples) is at least 0.6.  When no row passes
   both, keep those passing the segment-size test, else those passing the stability test,
   else all candidates -- and say so in the reasons.
3. Prefer the knee of the K-Means elbow when a row at that ``k`` (of an algorithm that takes
   ``k``) has a silhouette within 0.02 of the best kept silhouette, or of at least 0.25 (the
   lower bound of a "weak but real" structure in Kaufman & Rousseeuw's reading of the
   silhouette; a two-segment split nearly always has the best silhouette yet rarely serves a
   marketer better than the knee); otherwise take the best silhouette.  Silhouettes are compared as printed (two decimals); ties go to the more
   stable row (also as printed), then to fewer segments, then to the earlier algorithm.

Mixed tables
------------
K-Prototypes clusters scaled numbers and raw categories together, so its k is chosen on that
table, not on the numbers alone: :func:`compare_mixed` sweeps K-Prototypes itself over k and
measures each fit in the geometry its cost defines -- a customer's numbers next to its
categories one-hot encoded and weighted by ``sqrt(gamma / 2)``, where squared Euclidean
distance is exactly the K-Prototypes cost (squared numeric distance plus ``gamma`` per
mismatched category).  Silhouette, Davies-Bouldin and Calinski-Harabasz are computed there,
the elbow is the K-Prototypes cost against k, and the same rule recommends.

Large data
----------
When ``X`` has more rows than ``sample_size``, every fit and metric of the sweep uses one
seeded random sample of ``sample_size`` rows (the ``on_sample`` column is then ``True``): an
elbow sweep fitted on a sample tracks the full-data curve within 1-3%, and the chosen model
is fitted on all rows afterwards by the caller.  Silhouette, which costs O(n^2), is further
computed on at most ``silhouette_sample`` of those rows.

>>> import numpy as np
>>> from sklearn.preprocessing import StandardScaler
>>> from custseg.datasets import make_customers
>>> customers, _ = make_customers(600, random_state=0)
>>> X = StandardScaler().fit_transform(np.log1p(customers.drop(columns="customer_id")))
>>> result = compare(X, algorithms=("kmeans",), k_values=range(2, 7), n_bootstrap=2)
>>> result.recommendation.n_clusters
4
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    adjusted_rand_score,
    pairwise_distances,
    silhouette_score,
)
from sklearn.utils import check_random_state
from threadpoolctl import threadpool_limits

from custseg._fork import can_fork, cores
from custseg.cluster import ALGORITHMS, make_estimator
from custseg.errors import ConfigError, DataError, SchemaError

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = [
    "LEADERBOARD_COLUMNS",
    "Recommendation",
    "SelectionResult",
    "compare",
    "compare_mixed",
    "recommend",
    "stability",
]

#: Columns of :attr:`SelectionResult.leaderboard`, in order.
LEADERBOARD_COLUMNS: tuple[str, ...] = (
    "algorithm",
    "n_clusters",
    "inertia",
    "silhouette",
    "davies_bouldin",
    "calinski_harabasz",
    "bic",
    "aic",
    "stability",
    "min_share",
    "noise_share",
    "fit_seconds",
    "on_sample",
)

_MIN_STABILITY = 0.6  # mean ARI below this: segments change when the data is resampled
# Stability resampling stops after this many resamples when each agreed at _CLEARLY_STABLE or
# more (see _settled): on Online Retail most two- to five-segment fits agree at 0.98-1.0.
_CLEAR_AFTER = 3
_CLEARLY_STABLE = 0.9
_SILHOUETTE_TOLERANCE = 0.02  # the knee wins when its silhouette is this close to the best
# A knee with at least this silhouette is taken even when k = 2 scores higher (see rule 3).
_STRUCTURE_SILHOUETTE = 0.25
_ELBOW_K_MAX = 15
# The sweep's silhouettes share one distance matrix of at most this many rows (8 bytes a cell:
# 200 MB at 5,000 rows); above it each silhouette computes its own, in chunks.
_SHARED_DISTANCES_MAX_ROWS = 5_000
# Stability refits use 80% of the rows drawn without replacement: a with-replacement
# bootstrap duplicates rows, which inflates density and distorts DBSCAN/HDBSCAN/MeanShift.
_RESAMPLE_FRACTION = 0.8
# Up to this many rows the sweep's fits run on one BLAS/OpenMP thread: they are many and small,
# and threads that spin-wait for each other (or for a core another process holds) cost more
# than they share.  Measured on 2 cores, 16 features, two fits (k = 4, 8), one thread vs two:
# K-Means 0.04 s vs 0.8-1.3 s at 10k rows and 0.6 s vs 2.0-2.2 s at 200k with another process
# busy, equal at 50k on an idle machine; Gaussian mixture 0.3 s vs 2.5 s (10k), 2-3 s vs 7-8 s
# (50k), 13-14 s vs 112-146 s (200k).
_ONE_THREAD_MAX_ROWS = 200_000
# K-Prototypes (kmodes) assigns customers in a Python loop: a fit of 1,000 rows takes about
# 0.5 s with one initialisation on 2 cores, so the mixed sweep measures one seeded sample of at
# most this many rows (enough for 15 segments of ~60 customers), one initialisation per fit
# and this many resamples for the stability.
_MIXED_SAMPLE_SIZE = 500
# A record's silhouette still to be computed with its algorithm's other labelings (see _measure);
# a string, which a worker process sends back as it is.
_SHARED = "shared"
_MIXED_BOOTSTRAP = 2

Progress = Callable[[str, int, int], Any]


@dataclass(frozen=True)
class Recommendation:
    """The recommended algorithm and number of segments, with the evidence in words.

    ``reasons`` lists every measured fact behind the choice (numbers as measured, rounded
    for print); ``text`` is one plain-language sentence built from the main reasons.
    """

    algorithm: str
    n_clusters: int
    reasons: list[str]
    text: str


@dataclass(frozen=True, eq=False)
class SelectionResult:
    """What :func:`compare` measured.

    ``leaderboard`` has one row per algorithm x k with :data:`LEADERBOARD_COLUMNS`;
    ``elbow`` has columns ``k`` (1, 2, ...) and ``inertia`` (K-Means within-cluster sum of
    squares on the rows fitted); ``knee`` is the elbow's knee k, or ``None`` when the curve
    has none; ``recommendation`` applies the rule of :func:`recommend`.
    """

    leaderboard: pd.DataFrame
    elbow: pd.DataFrame
    knee: int | None
    recommendation: Recommendation


# ---------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------


def compare(
    X: pd.DataFrame | np.ndarray,
    *,
    algorithms: Sequence[str] = ("kmeans", "gmm"),
    k_values: Iterable[int] = range(2, 16),
    random_state: int | None = 0,
    sample_size: int | None = 10_000,
    silhouette_sample: int = 5_000,
    n_bootstrap: int = 5,
    min_share: float = 0.02,
    progress: Progress | None = None,
    n_jobs: int | None = None,
    meanwhile: Callable[[], Any] | None = None,
    stability_for: str = "all",
    busy_cores: int = 0,
) -> SelectionResult:
    """Sweep algorithms x k on ``X`` and recommend one configuration.

    ``X`` is the preprocessed numeric matrix, one row per customer (DataFrame or 2-D array,
    already transformed and scaled, no missing values); it is not modified.  Returns a
    :class:`SelectionResult` whose ``leaderboard`` has one row per algorithm x k.

    For each algorithm that takes ``k`` and each ``k`` in ``k_values`` one fit records:
    ``inertia`` (where the estimator has one), ``silhouette`` (on at most
    ``silhouette_sample`` seeded rows), ``davies_bouldin``, ``calinski_harabasz``, ``bic`` and
    ``aic`` (Gaussian mixtures), ``min_share`` (smallest segment's share of customers; an
    empty segment counts as 0), ``stability`` (mean adjusted Rand index between this fit and
    ``n_bootstrap`` refits on seeded 80% subsamples, compared on the rows they share; the
    refits stop early once their answer is clear: after three that each agreed at 0.9 or more,
    or once even perfect agreement on the rest could not lift the mean to 0.6) and
    ``fit_seconds``.  A configuration with a segment below ``min_share`` is not refitted when
    another of its algorithm passes that test: the rule never recommends it then, whatever its
    stability, which is NaN.  Algorithms that find ``k`` themselves (dbscan, hdbscan, meanshift) are
    fitted once, ``n_clusters`` being the number of segments found and ``noise_share`` the
    share labelled -1; noise rows are left out of the silhouette, Davies-Bouldin and
    Calinski-Harabasz scores.  Scores that are undefined (fewer than two segments) are NaN.

    If ``X`` has more rows than ``sample_size`` everything is measured on one seeded sample
    of ``sample_size`` rows and ``on_sample`` is ``True``; ``sample_size=None`` uses all rows.
    The elbow is K-Means inertia for k = 1..15 (fewer if ``X`` has fewer distinct rows); its
    knee is found with the Kneedle method.  ``progress(step, done, total)`` is called once
    with ``("start", 0, total)`` and then after each configuration or elbow fit (e.g.
    ``("kmeans k=4", 3, 20)``), ending with ``done == total``.  The same ``random_state`` gives
    the same leaderboard, apart from ``fit_seconds``, however many workers run it.

    ``n_jobs`` is the number of worker processes the fits and refits are shared among (each fit
    is seeded on its own, so the leaderboard does not depend on them).  ``None`` uses every core
    this process may run on once the sweep is worth it (at least ``_PARALLEL_MIN_ROWS`` rows),
    less ``busy_cores``, those the caller's other work keeps busy meanwhile (a run's report
    draws its map in a process of its own during the sweep: on two cores the sweep then runs
    here, on the core the map leaves); ``1`` fits everything here, one after the other.  Workers are forked, so only where fork is
    safe and cheap (Linux, and not from inside a daemonic process); elsewhere the sweep runs
    here.  Every fit runs on one BLAS/OpenMP thread up to ``_ONE_THREAD_MAX_ROWS`` rows; above
    that the fits use the threads themselves and the sweep runs here.  ``meanwhile()``, when
    given, is the caller's own work that can run beside the workers (e.g. an import it needs
    next): it is called in a thread of this process once the workers are started, and finished
    before compare returns; its errors are left for the caller to meet again.  Without workers it
    is not called.

    ``stability_for="deciding"`` refits only the configurations whose stability can change the
    automatic recommendation (:func:`recommend` without a forced ``n_clusters``), per algorithm:
    the rows at the elbow's knee and, best silhouette first (as printed), every row down to and
    with the first stable one's silhouette; any other row has a lower silhouette than a stable
    row and is not at the knee, so it cannot be recommended whatever its stability, which is then
    NaN.  The recommendation is the one ``"all"`` gives, and its reasons say how many rows were
    refitted.  (A forced ``n_clusters`` compares every row at that k: use ``"all"`` then.)

    Raises :class:`~custseg.errors.DataError` when ``X`` cannot be segmented (not numeric,
    missing values, fewer rows or distinct rows than ``k``, all rows identical) and
    :class:`~custseg.errors.ConfigError` for invalid options.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(c, 0.3, (100, 2)) for c in (0, 4, 8)])
    >>> result = compare(X, algorithms=("kmeans",), k_values=range(2, 6), n_bootstrap=2)
    >>> result.recommendation.n_clusters, result.knee
    (3, 3)
    """
    names = _check_algorithms(algorithms)
    ks = _check_k_values(k_values) if any(ALGORITHMS[n].takes_k for n in names) else []
    sample_size = _check_sample_size(sample_size)
    silhouette_sample = _check_count("silhouette_sample", silhouette_sample, 2)
    n_bootstrap = _check_count("n_bootstrap", n_bootstrap, 0)
    min_share = _check_min_share(min_share)
    if n_jobs is not None:
        n_jobs = _check_count("n_jobs", n_jobs, 1)
    busy_cores = _check_count("busy_cores", busy_cores, 0)
    if stability_for not in ("all", "deciding"):
        raise ConfigError(f"stability_for must be 'all' or 'deciding', got {stability_for!r}")
    deciding = stability_for == "deciding"
    if progress is not None and not callable(progress):
        raise ConfigError(
            f"progress must be a callable(step, done, total), got {type(progress).__name__}; "
            "pass a function or None"
        )

    data = _as_matrix(X)
    base_seed = _base_seed(random_state)
    n_rows = data.shape[0]
    on_sample = sample_size is not None and n_rows > sample_size
    if on_sample:
        rng = np.random.default_rng([base_seed, 0])
        rows = np.sort(rng.choice(n_rows, size=sample_size, replace=False))
        data = data[rows]
    n_fit = data.shape[0]
    n_distinct = int(np.unique(data, axis=0).shape[0])
    if ks:
        _check_k_fits(max(ks), n_fit, n_distinct, on_sample=on_sample)

    resamples = _resamples(n_fit, n_bootstrap, base_seed)
    elbow_ks = list(range(2, min(_ELBOW_K_MAX, n_distinct) + 1))
    kmeans_swept = set(ks) if "kmeans" in names else set()
    configs: list[tuple[str, int | None]] = [
        (name, k) for name in names for k in (ks if ALGORITHMS[name].takes_k else [None])
    ]
    total = len(configs) + sum(k not in kmeans_swept for k in elbow_ks)
    done = 0
    if progress is not None:
        progress("start", done, total)

    records: list[dict[str, Any]] = []
    silhouette = _SharedSilhouette(data, silhouette_sample, base_seed)
    sweep = _Sweep(data, seed=base_seed, silhouette=silhouette, resamples=resamples, n_distinct=n_distinct)
    elbow_extra = [k for k in elbow_ks if k not in kmeans_swept]
    workers = _workers(n_jobs, n_fit, len(configs) + len(elbow_extra), busy_cores=busy_cores)
    # The caller's work beside the sweep starts once the workers are forked (no thread of it is
    # copied into them) and is finished before the workers are.
    with (_fit_threads(n_fit), _Runner(sweep, workers) as runner,
          _Beside(meanwhile if runner.parallel else None)):
        # Every fit is submitted at once, the costliest first (for the workers to share them
        # out); an algorithm's refits follow as soon as all its fits are measured.  Run here
        # (one worker) each task runs when its result is asked for: the order is then
        # algorithm by algorithm, fits before refits, as progress reports them.
        measuring = {config: runner.submit(_measure_task, *config) for config in _costliest_first(configs)}
        elbow_fits = {k: runner.submit(_elbow_task, k) for k in elbow_extra}
        stabilities: dict[tuple[str, int | None], Any] = {}
        measured: dict[str, list[tuple[int | None, dict[str, Any], np.ndarray]]] = {}

        if runner.parallel and any(ALGORITHMS[name].takes_k for name in names):
            silhouette.prepare()  # the distances the silhouettes share, while the workers fit

        def start(name: str) -> None:
            """Collect one algorithm's fits and start the refits its size test leaves no doubt about."""
            rows = [(k, *measuring[(name, k)].get()) for k in (ks if ALGORITHMS[name].takes_k else [None])]
            # A configuration passing the size test is refitted whatever the others show (see
            # _ruled_out_by_size): its refits start before the silhouettes are computed.
            passing = [(k, record, labels) for k, record, labels in rows
                       if _passes_size(record, min_share) and not deciding]
            for k, record, labels in sorted(passing, key=lambda row: -row[1]["fit_seconds"]):
                stabilities[(name, k)] = runner.submit(_stability_task, name, k, labels)
            measured[name] = rows

        def score(name: str) -> None:
            """One algorithm's silhouettes, and the refits of the rest it needs."""
            rows = measured[name]
            # The silhouettes of every labeling of all rows, from one product with the distances.
            shared = [(record, labels) for _, record, labels in rows if record["silhouette"] == _SHARED]
            for (record, _), value in zip(shared, silhouette.many([labels for _, labels in shared])):
                record["silhouette"] = value
            if not deciding:
                ruled_out = _ruled_out_by_size([record for _, record, _ in rows], min_share)
                for (k, record, labels), skip in zip(rows, ruled_out):
                    if not skip and (name, k) not in stabilities:
                        stabilities[(name, k)] = runner.submit(_stability_task, name, k, labels)

        def collect(name: str) -> None:
            nonlocal done
            for k, record, _ in measured[name]:
                future = stabilities.get((name, k))
                record["stability"] = math.nan if future is None else future.get()
                record["on_sample"] = on_sample
                records.append(record)
                done += 1
                if progress is not None:
                    progress(name if k is None else f"{name} k={k}", done, total)

        for position, name in enumerate(names):
            if name not in measured:
                start(name)
            for later in names[position + 1:]:  # fits done already: their refits can start now
                if later not in measured and all(
                    measuring[(later, k)].ready() for k in (ks if ALGORITHMS[later].takes_k else [None])
                ):
                    start(later)
            score(name)
            if not deciding:
                collect(name)

        def elbow_curve() -> pd.DataFrame:
            swept = {k: record["inertia"] for k, record, _ in measured.get("kmeans", []) if k is not None}
            inertia = [float(((data - data.mean(axis=0)) ** 2).sum())]
            inertia += [swept[k] if k in swept else elbow_fits[k].get() for k in elbow_ks]
            return pd.DataFrame({"k": np.arange(1, len(inertia) + 1, dtype=np.int64), "inertia": inertia})

        elbow = elbow_curve()
        knee = elbow_knee(elbow)
        refitted = None
        if deciding:
            refitted = _refit_deciding(measured, names, knee, min_share, stabilities,
                                       lambda name, k, labels: runner.submit(_stability_task, name, k, labels))
            for name in names:
                collect(name)
        for k in elbow_extra:
            done += 1
            if progress is not None:
                progress(f"elbow k={k}", done, total)

    leaderboard = pd.DataFrame.from_records(records, columns=list(LEADERBOARD_COLUMNS))
    leaderboard = leaderboard.astype(
        {"algorithm": str, "n_clusters": np.int64, "on_sample": bool}
        | {c: float for c in LEADERBOARD_COLUMNS[2:-1]}
    )
    recommendation = recommend(leaderboard, knee=knee, min_share=min_share)
    if refitted is not None and refitted < len(leaderboard):
        recommendation = Recommendation(
            recommendation.algorithm, recommendation.n_clusters,
            [*recommendation.reasons,
             f"stability measured for the {refitted} of {len(leaderboard)} configurations that could be "
             "recommended (at the elbow's knee, or with a silhouette down to the best stable one of their "
             "algorithm); the others could not be, whatever their stability"],
            recommendation.text,
        )
    return SelectionResult(
        leaderboard=leaderboard, elbow=elbow, knee=knee, recommendation=recommendation
    )


def compare_mixed(
    X: pd.DataFrame,
    *,
    k_values: Iterable[int] = range(2, 16),
    random_state: int | None = 0,
    sample_size: int | None = _MIXED_SAMPLE_SIZE,
    silhouette_sample: int = 5_000,
    n_bootstrap: int = _MIXED_BOOTSTRAP,
    min_share: float = 0.02,
    progress: Progress | None = None,
) -> SelectionResult:
    """Sweep K-Prototypes over k on a mixed table and recommend k (see "Mixed tables" above).

    ``X`` is what K-Prototypes takes: scaled numeric columns and raw categorical ones (text,
    category or boolean dtype), no missing values, e.g. a preprocessor's output with
    ``one_hot=False``.  The leaderboard has one ``kprototypes`` row per k with the columns of
    :func:`compare` (``inertia`` is the K-Prototypes cost; ``bic``, ``aic`` are NaN and
    ``noise_share`` is 0); ``elbow`` is the cost for k = 1 and every k swept; the fits use
    ``gamma`` as K-Prototypes sets it on the rows measured (half the mean standard deviation
    of the numeric columns) and one initialisation each.  With more rows than ``sample_size``
    (default 1,000, since K-Prototypes is pure Python) every fit and metric uses one seeded
    sample of them.  ``progress`` is called as in :func:`compare`.

    Two levels of spend times two plans make four segments; the numbers alone show two:

    >>> rng = np.random.default_rng(0)
    >>> group = np.arange(120) % 4
    >>> X = pd.DataFrame({"spend": np.where(group % 2, 1.0, -1.0) + rng.normal(0, 0.15, 120),
    ...                   "plan": np.array(["basic", "pro"])[group // 2],
    ...                   "channel": np.array(["web", "store"])[group // 2]})
    >>> compare_mixed(X, k_values=range(2, 11)).recommendation.n_clusters
    4
    >>> compare(X[["spend"]], algorithms=("kmeans",), k_values=range(2, 11)).recommendation.n_clusters
    2
    """
    from custseg.cluster import KPrototypesClustering

    if not isinstance(X, pd.DataFrame):
        raise ConfigError(f"compare_mixed takes a DataFrame of numbers and categories, got {type(X).__name__}; "
                          "pass the preprocessed table (one_hot=False)")
    ks = _check_k_values(k_values)
    sample_size = _check_sample_size(sample_size)
    silhouette_sample = _check_count("silhouette_sample", silhouette_sample, 2)
    n_bootstrap = _check_count("n_bootstrap", n_bootstrap, 0)
    min_share = _check_min_share(min_share)
    categorical = KPrototypesClustering._detect_categorical(X)
    names = [str(c) for c in X.columns]
    numeric = [j for j in range(X.shape[1]) if j not in set(categorical)]
    if not categorical or not numeric:
        kind, other = ("categorical", "numbers") if not categorical else ("numeric", "categories")
        raise ConfigError(
            f"K-Prototypes needs numeric and categorical columns; the columns {', '.join(names)} have no "
            f"{kind} one; compare the {other} with compare() (one-hot encoded) instead"
        )
    if X.shape[0] < 3:
        raise DataError(f"X has {X.shape[0]} row(s); comparing segmentations needs at least 3 customers")
    base_seed = _base_seed(random_state)
    frame = X.reset_index(drop=True)
    n_rows = len(frame)
    on_sample = sample_size is not None and n_rows > sample_size
    if on_sample:
        rng = np.random.default_rng([base_seed, 0])
        frame = frame.iloc[np.sort(rng.choice(n_rows, size=sample_size, replace=False))].reset_index(drop=True)
    numbers = _as_matrix(frame.iloc[:, numeric])
    if frame.iloc[:, categorical].isna().any().any():
        raise DataError("K-Prototypes got missing categorical values; impute them first "
                        "(custseg.preprocessing.build_preprocessor does)")
    texts = frame.iloc[:, categorical].astype(str).to_numpy()
    n_fit = len(frame)
    n_distinct = len(frame.drop_duplicates())
    _check_k_fits(max(ks), n_fit, n_distinct, on_sample=on_sample)
    gamma = float(0.5 * np.mean(numbers.std(axis=0))) or 1.0  # kmodes' rule, fixed for every fit
    dummies = pd.get_dummies(pd.DataFrame(texts), dtype="float64").to_numpy()
    space = np.hstack([numbers, math.sqrt(gamma / 2) * dummies])  # squared distance = K-Prototypes cost

    def fitted(k: int, seed: int, rows: pd.DataFrame) -> np.ndarray | None:
        """Labels of one fit, or None when kmodes cannot start k prototypes on these rows
        (its initialisation leaves a segment empty: too few distinct customers for k)."""
        estimator = make_estimator("kprototypes", n_clusters=k, random_state=seed, max_fit_samples=n_fit,
                                   gamma=gamma, n_init=1)
        try:
            estimator.fit(rows)
        except ValueError as exc:
            if "could not initialize" not in str(exc):
                raise
            return None
        costs.append(estimator.cost_)
        return np.asarray(estimator.labels_)

    resamples = _resamples(n_fit, n_bootstrap, base_seed)
    total = len(ks)
    if progress is not None:
        progress("start", 0, total)
    records: list[dict[str, Any]] = []
    with _fit_threads(n_fit):
        for done, k in enumerate(ks, start=1):
            costs: list[float] = []
            started = time.perf_counter()
            labels = fitted(k, base_seed, frame)
            fit_seconds = time.perf_counter() - started
            agreements = []
            if labels is None:  # measured as nothing: the rule passes it by
                record = {"min_share": math.nan, "silhouette": math.nan, "davies_bouldin": math.nan,
                          "calinski_harabasz": math.nan}
            else:
                record = _scores(space, labels, k, seed=base_seed, silhouette_sample=silhouette_sample)
                for rows, refit_seed in resamples:
                    if rows.size <= k or len(frame.iloc[rows].drop_duplicates()) < k:
                        continue
                    refit = fitted(k, refit_seed, frame.iloc[rows])
                    if refit is not None:
                        agreements.append(adjusted_rand_score(labels[rows], refit))
            record.update(algorithm="kprototypes", n_clusters=k, inertia=float(costs[0]) if costs else math.nan,
                          bic=math.nan, aic=math.nan, stability=float(np.mean(agreements)) if agreements else math.nan,
                          noise_share=0.0, fit_seconds=fit_seconds, on_sample=on_sample)
            records.append(record)
            if progress is not None:
                progress(f"kprototypes k={k}", done, total)
    modes = frame.iloc[:, categorical].astype(str).mode().iloc[0].to_numpy()
    one = float(((numbers - numbers.mean(axis=0)) ** 2).sum() + gamma * (texts != modes).sum())  # k = 1
    fitted_ks = [r for r in records if np.isfinite(r["inertia"])]
    elbow = pd.DataFrame({"k": np.array([1, *(r["n_clusters"] for r in fitted_ks)], dtype=np.int64),
                          "inertia": [one, *(r["inertia"] for r in fitted_ks)]})
    knee = elbow_knee(elbow)
    leaderboard = pd.DataFrame.from_records(records, columns=list(LEADERBOARD_COLUMNS))
    leaderboard = leaderboard.astype(
        {"algorithm": str, "n_clusters": np.int64, "on_sample": bool}
        | {c: float for c in LEADERBOARD_COLUMNS[2:-1]}
    )
    return SelectionResult(leaderboard=leaderboard, elbow=elbow, knee=knee,
                           recommendation=recommend(leaderboard, knee=knee, min_share=min_share))


def _information_criteria(model: Any, data: np.ndarray) -> tuple[float, float]:
    """BIC and AIC of a fitted likelihood model on ``data``: a scikit-learn mixture's formulas
    from one pass over the rows (``bic`` and ``aic`` each make their own), else its methods."""
    if callable(getattr(model, "score", None)) and callable(getattr(model, "_n_parameters", None)):
        n, deviance, parameters = data.shape[0], -2 * model.score(data) * data.shape[0], model._n_parameters()
        return float(deviance + parameters * np.log(n)), float(deviance + 2 * parameters)
    return float(model.bic(data)), float(model.aic(data))


def _spread_scores(points: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Davies-Bouldin and Calinski-Harabasz scores of ``labels`` (2 to n - 1 segments), as
    scikit-learn's ``davies_bouldin_score`` and ``calinski_harabasz_score`` define them, from
    one pass over the rows: each segment's centroid, the distance of every row to its own and
    the spreads, without a loop over segments (12 ms a labeling in scikit-learn on 4,338 rows,
    about 1 ms here)."""
    codes, counts = np.unique(labels, return_inverse=True, return_counts=True)[1:]
    k, n = counts.size, codes.size
    one_hot = np.zeros((k, n))
    one_hot[codes, np.arange(n)] = 1.0
    centroids = (one_hot @ points) / counts[:, np.newaxis]
    offsets = points - centroids[codes]
    squared = np.einsum("ij,ij->i", offsets, offsets)  # each row's squared distance to its centroid
    within = np.bincount(codes, weights=squared, minlength=k)
    between = counts @ ((centroids - points.mean(axis=0)) ** 2).sum(axis=1)
    total_within = within.sum()
    calinski = 1.0 if total_within == 0.0 else between * (n - k) / (total_within * (k - 1.0))
    spread = np.bincount(codes, weights=np.sqrt(squared), minlength=k) / counts
    gaps = np.sqrt(np.maximum(((centroids[:, np.newaxis, :] - centroids[np.newaxis, :, :]) ** 2).sum(axis=2), 0.0))
    if np.allclose(spread, 0) or np.allclose(gaps, 0):
        return 0.0, float(calinski)
    gaps[gaps == 0] = np.inf
    davies = float(np.mean(np.max((spread[:, np.newaxis] + spread) / gaps, axis=1)))
    return davies, float(calinski)


def _scores(points: np.ndarray, labels: np.ndarray, k: int, *, seed: int, silhouette_sample: int) -> dict[str, float]:
    """Silhouette, Davies-Bouldin, Calinski-Harabasz and the smallest segment's share of one fit
    of k segments (NaN where undefined)."""
    counts = np.bincount(labels, minlength=k)
    out = {"min_share": float(counts.min() / labels.size), "silhouette": math.nan,
           "davies_bouldin": math.nan, "calinski_harabasz": math.nan}
    if 2 <= np.unique(labels).size <= labels.size - 1:
        out["davies_bouldin"], out["calinski_harabasz"] = _spread_scores(points, labels)
        try:
            out["silhouette"] = float(silhouette_score(
                points, labels, sample_size=silhouette_sample if labels.size > silhouette_sample else None,
                random_state=seed,
            ))
        except ValueError:  # the silhouette sample happened to hold a single segment
            pass
    return out


def _measure(
    name: str, k: int | None, data: np.ndarray, *, seed: int, silhouette: _SharedSilhouette
) -> tuple[dict[str, Any], np.ndarray]:
    """Fit one configuration on ``data`` and measure it (all but its stability); return the
    leaderboard record and the labels.  A silhouette of all rows is left as ``_SHARED``, for
    :meth:`_SharedSilhouette.many`."""
    spec = ALGORITHMS[name]
    started = time.perf_counter()
    estimator = make_estimator(name, n_clusters=k, random_state=seed).fit(data)
    fit_seconds = time.perf_counter() - started
    labels = np.asarray(estimator.labels_)
    n = labels.size

    assigned = labels >= 0
    found = np.unique(labels[assigned])
    n_found = found.size
    if k is not None:
        counts = np.bincount(labels[assigned], minlength=k)
        n_clusters = k
    else:
        counts = np.unique(labels[assigned], return_counts=True)[1]
        n_clusters = n_found
    min_share = float(counts.min() / n) if counts.size else math.nan

    score = davies_bouldin = calinski_harabasz = math.nan
    n_assigned = int(assigned.sum())
    if 2 <= n_found <= n_assigned - 1:
        points, kept = data[assigned], labels[assigned]
        davies_bouldin, calinski_harabasz = _spread_scores(points, kept)
        # Left for compare to compute with the algorithm's other labelings of all rows.
        score = _SHARED if n_assigned == n else silhouette.of_subset(points, kept)

    inertia = math.nan
    if spec.has_inertia and getattr(estimator, "inertia_", None) is not None:
        inertia = float(estimator.inertia_)
    bic = aic = math.nan
    # Likelihood-based models expose bic/aic, either themselves or on the wrapped mixture.
    for model in (estimator, getattr(estimator, "mixture_", None)):
        if callable(getattr(model, "bic", None)) and callable(getattr(model, "aic", None)):
            bic, aic = _information_criteria(model, data)
            break

    record = {
        "algorithm": name,
        "n_clusters": n_clusters,
        "inertia": inertia,
        "silhouette": score,
        "davies_bouldin": davies_bouldin,
        "calinski_harabasz": calinski_harabasz,
        "bic": bic,
        "aic": aic,
        "min_share": min_share,
        "noise_share": float((~assigned).mean()),
        "fit_seconds": fit_seconds,
    }
    return record, labels


def _stability(
    name: str,
    k: int | None,
    data: np.ndarray,
    labels: np.ndarray,
    *,
    resamples: list[tuple[np.ndarray, int]],
    n_distinct: int,
) -> float:
    """Mean adjusted Rand index between ``labels`` and refits on the resamples (NaN without any),
    stopping early when the answer is clear (see :func:`_settled`)."""
    n = labels.size
    agreements: list[float] = []
    for done, (rows, refit_seed) in enumerate(resamples):
        if _settled(agreements, len(resamples) - done):
            break
        # A subsample must keep more than k rows and at least k distinct ones; dropping m rows
        # removes at most m distinct rows, so the costly count runs only when it might fail.
        if k is not None and rows.size <= k:
            continue
        if k is not None and n_distinct - (n - rows.size) < k:
            if np.unique(data[rows], axis=0).shape[0] < k:
                continue
        refit = make_estimator(name, n_clusters=k, random_state=refit_seed).fit(data[rows])
        agreements.append(adjusted_rand_score(labels[rows], np.asarray(refit.labels_)))
    return float(np.mean(agreements)) if agreements else math.nan


def stability(name: str, k: int, data: np.ndarray, labels: np.ndarray, *, n_bootstrap: int = 5,
              random_state: int = 0) -> float:
    """The leaderboard's ``stability`` of one labelling of ``data`` (see :func:`compare`): the
    mean adjusted Rand index between ``labels`` and refits of ``name`` at ``k`` on
    ``n_bootstrap`` seeded 80% subsamples, compared on the rows each subsample keeps, stopping
    early once the answer is clear; NaN when no subsample can be refitted.  One BLAS thread (the
    fits are many and small)."""
    data = np.asarray(data, dtype="float64")
    labels = np.asarray(labels)
    n_bootstrap = _check_count("n_bootstrap", n_bootstrap, 1)
    with threadpool_limits(limits=1):
        return _stability(name, k, data, labels, resamples=_resamples(len(data), n_bootstrap, int(random_state)),
                          n_distinct=int(np.unique(data, axis=0).shape[0]))


def _refit_deciding(
    measured: dict[str, list[tuple[int | None, dict[str, Any], np.ndarray]]],
    names: Sequence[str],
    knee: int | None,
    min_share: float,
    stabilities: dict[tuple[str, int | None], Any],
    refit: Callable[[str, int | None, np.ndarray], Any],
) -> int:
    """Start (and wait for) the refits whose stability can change the recommendation (see
    ``stability_for`` in :func:`compare`); return how many configurations were refitted.

    Per algorithm, among its candidates (two segments or more, a silhouette, every segment of at
    least ``min_share``): the rows at the knee, then the rows of the best printed silhouette, then
    of the next, until a group holds a row the rule counts as stable (ARI >= 0.6, or NaN).  Every
    group of every algorithm is started before any is awaited, so the workers share them.  An
    algorithm without such candidates, or without k, is refitted as without the shortcut.
    """
    def start(name: str, k: int | None, labels: np.ndarray) -> None:
        if (name, k) not in stabilities:
            stabilities[(name, k)] = refit(name, k, labels)

    plans: dict[str, Any] = {}
    for name in names:
        rows = measured[name]
        candidates = [
            (k, record, labels) for k, record, labels in rows
            if ALGORITHMS[name].takes_k and _passes_size(record, min_share) and record["n_clusters"] >= 2
            and not math.isnan(record["silhouette"])
        ]
        if not candidates:
            for (k, _, labels), skip in zip(rows, _ruled_out_by_size([r for _, r, _ in rows], min_share)):
                if not skip:
                    start(name, k, labels)
            continue
        for k, record, labels in candidates:
            if knee is not None and record["n_clusters"] == knee:
                start(name, k, labels)
        printed = [float(np.round(record["silhouette"], 2)) for _, record, _ in candidates]
        plans[name] = iter([[row for row, p in zip(candidates, printed) if p == level]
                            for level in sorted(set(printed), reverse=True)])
    while plans:
        waves = {}
        for name, groups in list(plans.items()):
            group = next(groups, None)
            if group is None:
                del plans[name]
                continue
            for k, _, labels in group:
                start(name, k, labels)
            waves[name] = group
        for name, group in waves.items():
            values = [stabilities[(name, k)].get() for k, _, _ in group]
            if any(math.isnan(v) or v >= _MIN_STABILITY for v in values):
                plans.pop(name, None)
    return len(stabilities)


def _settled(agreements: list[float], remaining: int) -> bool:
    """Whether more resamples cannot change what the stability decides.

    Stops when even perfect agreement (ARI 1) on every remaining resample would leave the mean
    below ``_MIN_STABILITY`` (the configuration is unstable whatever they give), or, after
    ``_CLEAR_AFTER`` resamples, when every one so far agreed at ``_CLEARLY_STABLE`` or more (the
    rest would need a mean below 0.15 for five resamples to fall under 0.6).  The stability is
    then the mean of the resamples made.
    """
    if not agreements or remaining <= 0:
        return False
    total = len(agreements) + remaining
    if (sum(agreements) + remaining) / total < _MIN_STABILITY:
        return True
    return len(agreements) >= _CLEAR_AFTER and min(agreements) >= _CLEARLY_STABLE


def _passes_size(record: dict[str, Any], min_share: float) -> bool:
    """Whether every segment of a configuration holds at least ``min_share`` of the customers."""
    return not math.isnan(record["min_share"]) and record["min_share"] >= min_share - 1e-12


def _ruled_out_by_size(records: list[dict[str, Any]], min_share: float) -> list[bool]:
    """Which of one algorithm's configurations need no stability: those with a segment below
    ``min_share`` when another of them, a candidate, has none.

    The rule keeps the rows passing the size test whenever any does (with or without a stable
    one among them), so such a row is never recommended, whatever its stability; its refits
    (most of a sweep's cost: large k fit slowest) are skipped and its stability is NaN.  Per
    algorithm, so that a recommendation within one algorithm (``recommend(algorithm=...)``)
    has the same evidence.
    """
    passes = [_passes_size(r, min_share) for r in records]
    any_candidate = any(
        ok and r["n_clusters"] >= 2 and not math.isnan(r["silhouette"]) for ok, r in zip(passes, records)
    )
    return [any_candidate and not ok for ok in passes]


def _silhouette_from_distances(distances: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of ``labels`` from the rows' pairwise ``distances`` (NaN unless there are
    2 to n - 1 segments), as scikit-learn's ``silhouette_score`` defines it.

    Each row's distance sums to every segment come from one matrix product with the one-hot
    labels, instead of scikit-learn's chunked per-row ``bincount`` (3x faster at 4,338 rows).
    """
    return _silhouettes_from_distances(distances, [labels])[0]


def _silhouettes_from_distances(distances: np.ndarray, labelings: Sequence[np.ndarray]) -> list[float]:
    """:func:`_silhouette_from_distances` of several labelings of the same rows, from one
    product of the distances with all their one-hot labels side by side: the distance matrix is
    read once, not once per labeling (28 labelings of 4,338 rows: 0.9 s instead of 1.9 s)."""
    n = distances.shape[0]
    coded = []
    for labels in labelings:
        codes = np.unique(labels, return_inverse=True)[1]
        coded.append((codes, np.bincount(codes)))
    used = [(codes, counts) for codes, counts in coded if 2 <= counts.size <= n - 1]
    if not used:
        return [math.nan] * len(coded)
    all_sums = distances @ np.hstack([np.eye(counts.size)[codes] for codes, counts in used])
    start, found = 0, []
    for codes, counts in used:
        found.append(_silhouette_from_sums(all_sums[:, start:start + counts.size], codes, counts))
        start += counts.size
    scores = iter(found)
    return [next(scores) if 2 <= counts.size <= n - 1 else math.nan for _, counts in coded]


def _silhouette_from_sums(sums: np.ndarray, codes: np.ndarray, counts: np.ndarray) -> float:
    """Mean silhouette from each row's distance sums to every segment (rows × segments)."""
    n = codes.size
    rows, own = np.arange(n), counts[codes]
    within = sums[rows, codes] / np.maximum(own - 1, 1)
    means = sums / counts
    means[rows, codes] = np.inf
    nearest = means.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = (nearest - within) / np.maximum(within, nearest)
    scores[own == 1] = 0.0  # a segment of one: silhouette 0 by definition
    return float(np.mean(np.nan_to_num(scores)))


class _SharedSilhouette:
    """The silhouette of many labelings of the same rows, from one distance matrix.

    ``silhouette_score(data, labels, sample_size=s, random_state=seed)`` draws the same rows
    for every labeling of ``data`` (its sample depends only on the number of rows and the
    seed), so their pairwise distances are computed once, up to ``_SHARED_DISTANCES_MAX_ROWS``
    rows, and each labeling is scored on them: the same numbers as scoring each labeling alone
    (to rounding).  Measured on 4,338 customers × 5 features, one thread, per labeling: 0.17 s
    alone, 0.06-0.09 s with ``silhouette_score(..., metric="precomputed")`` on the shared
    matrix (computed once in 0.13 s), 0.02-0.04 s with :func:`_silhouette_from_distances`.
    """

    def __init__(self, data: np.ndarray, sample: int, seed: int) -> None:
        n = data.shape[0]
        self.data, self.sample, self.seed = data, sample, seed
        self.rows = check_random_state(seed).permutation(n)[:sample] if n > sample else None
        shown = n if self.rows is None else self.rows.size
        self._distances: np.ndarray | None = None
        self._fits = shown <= _SHARED_DISTANCES_MAX_ROWS

    def prepare(self) -> None:
        """Compute the shared distances now (else when a silhouette first needs them)."""
        if self._fits and self._distances is None:
            points = self.data if self.rows is None else self.data[self.rows]
            self._distances = pairwise_distances(points)

    def __call__(self, labels: np.ndarray) -> float:
        """Silhouette of ``labels`` (one per row of ``data``), NaN when its rows hold one segment."""
        if not self._fits:
            return self.of_subset(self.data, labels)
        self.prepare()
        drawn = labels if self.rows is None else labels[self.rows]
        return _silhouette_from_distances(self._distances, drawn)

    def many(self, labelings: Sequence[np.ndarray]) -> list[float]:
        """The silhouette of each labeling, as :meth:`__call__` gives it, in one pass over the
        distances."""
        if not self._fits or not labelings:
            return [self(labels) for labels in labelings]
        self.prepare()
        drawn = [labels if self.rows is None else labels[self.rows] for labels in labelings]
        return _silhouettes_from_distances(self._distances, drawn)

    def of_subset(self, points: np.ndarray, labels: np.ndarray) -> float:
        """Silhouette of some rows (e.g. without the noise), sampled as scikit-learn samples them."""
        try:
            return float(silhouette_score(
                points, labels, sample_size=self.sample if labels.size > self.sample else None,
                random_state=self.seed,
            ))
        except ValueError:  # the silhouette sample happened to hold a single segment
            return math.nan


# ---------------------------------------------------------------------------------------------
# workers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Sweep:
    """What every fit and refit of one sweep reads (a worker process inherits it when forked)."""

    data: np.ndarray
    seed: int
    silhouette: _SharedSilhouette
    resamples: list[tuple[np.ndarray, int]]
    n_distinct: int


def _measure_task(sweep: _Sweep, name: str, k: int | None) -> tuple[dict[str, Any], np.ndarray]:
    return _measure(name, k, sweep.data, seed=sweep.seed, silhouette=sweep.silhouette)


def _stability_task(sweep: _Sweep, name: str, k: int | None, labels: np.ndarray) -> float:
    return _stability(name, k, sweep.data, labels, resamples=sweep.resamples, n_distinct=sweep.n_distinct)


def _elbow_task(sweep: _Sweep, k: int) -> float:
    return float(make_estimator("kmeans", n_clusters=k, random_state=sweep.seed).fit(sweep.data).inertia_)


# Relative cost of one fit per segment, to submit the costliest first (the order in which the
# workers take them; it changes no result): a Gaussian mixture's EM costs ten K-Means fits or
# more on Online Retail (0.05-0.55 s against 0.005-0.02 s at k = 2..15).
_FIT_COST = {"kmeans": 1, "minibatch": 1, "birch": 2}
_OTHER_FIT_COST = 10
# Below this many rows the sweep runs in this process when n_jobs is None: forking workers
# and sending them the tasks costs more than sharing so few fits saves.
_PARALLEL_MIN_ROWS = 2_000

_worker_sweep: _Sweep | None = None
_worker_threads: Any = None


def _costliest_first(configs: list[tuple[str, int | None]]) -> list[tuple[str, int | None]]:
    return sorted(configs, key=lambda c: -_FIT_COST.get(c[0], _OTHER_FIT_COST) * (c[1] or 8))


def _workers(n_jobs: int | None, n_rows: int, n_tasks: int, *, busy_cores: int = 0) -> int:
    """How many worker processes share the sweep (1: it runs in this process)."""
    if n_jobs == 1 or n_tasks < 2 or n_rows > _ONE_THREAD_MAX_ROWS or not can_fork():
        return 1
    if n_jobs is None:
        if n_rows < _PARALLEL_MIN_ROWS:
            return 1
        n_jobs = cores() - busy_cores
    return max(1, min(n_jobs, n_tasks))


def _start_worker(sweep: _Sweep) -> None:
    """A forked worker's start: the sweep it inherited, and one BLAS/OpenMP thread."""
    global _worker_sweep, _worker_threads
    _worker_sweep = sweep
    _worker_threads = threadpool_limits(limits=1)


def _in_worker(task: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    assert _worker_sweep is not None, "a sweep task ran outside a sweep worker"
    return task(_worker_sweep, *args)


class _Beside:
    """``work()`` in a thread while the block runs; awaited at its end.  Its errors are dropped:
    it is only work done ahead (the caller meets them again when it does the work itself)."""

    def __init__(self, work: Callable[[], Any] | None) -> None:
        self.work, self.thread = work, None

    def _run(self) -> None:
        with contextlib.suppress(Exception):
            self.work()

    def __enter__(self) -> _Beside:
        if self.work is not None:
            import threading

            self.thread = threading.Thread(target=self._run, name="custseg-beside-sweep", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        if self.thread is not None:
            self.thread.join()
            self.thread = None


class _Later:
    """A task run in this process when its result is first asked for."""

    def __init__(self, task: Callable[..., Any], sweep: _Sweep, args: tuple[Any, ...]) -> None:
        self._call: Callable[[], Any] | None = lambda: task(sweep, *args)
        self._value: Any = None

    def ready(self) -> bool:
        return self._call is None

    def get(self) -> Any:
        if self._call is not None:
            self._value, self._call = self._call(), None
        return self._value


class _Runner:
    """Runs a sweep's tasks: in this process, each when its result is asked for, or in
    ``workers`` forked processes, which take the tasks in the order they were submitted."""

    def __init__(self, sweep: _Sweep, workers: int) -> None:
        self.sweep, self.workers, self.pool = sweep, workers, None

    def __enter__(self) -> _Runner:
        if self.workers > 1:
            import multiprocessing

            context = multiprocessing.get_context("fork")
            self.pool = context.Pool(self.workers, initializer=_start_worker, initargs=(self.sweep,))
        return self

    @property
    def parallel(self) -> bool:
        return self.pool is not None

    def submit(self, task: Callable[..., Any], *args: Any) -> Any:
        """A handle with ``ready()`` and ``get()`` (which re-raises the task's error)."""
        if self.pool is None:
            return _Later(task, self.sweep, args)
        return self.pool.apply_async(_in_worker, (task, args))

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        if self.pool is None:
            return
        if kind is None:
            self.pool.close()
        else:  # an error or a cancel: the tasks still queued are not wanted
            self.pool.terminate()
        self.pool.join()
        self.pool = None


def _fit_threads(n_rows: int) -> contextlib.AbstractContextManager[Any]:
    """One BLAS/OpenMP thread for the sweep's fits when they are small (see _ONE_THREAD_MAX_ROWS)."""
    if n_rows > _ONE_THREAD_MAX_ROWS:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def _resamples(n: int, n_bootstrap: int, seed: int) -> list[tuple[np.ndarray, int]]:
    """Seeded subsamples (row indices, refit seed), shared by every configuration so that
    stabilities are comparable across algorithms and k."""
    rng = np.random.default_rng([seed, 1])
    size = max(2, int(round(_RESAMPLE_FRACTION * n)))
    out = []
    for _ in range(n_bootstrap):
        rows = np.sort(rng.choice(n, size=size, replace=False))
        out.append((rows, int(rng.integers(0, 2**31 - 1))))
    return out


def elbow_knee(elbow: pd.DataFrame) -> int | None:
    """Kneedle knee of an elbow (columns ``k``, ``inertia``: a decreasing convex curve), or None
    (fewer than 3 points, a value not finite, a curve that does not fall)."""
    inertia = elbow["inertia"].to_numpy()
    if len(inertia) < 3 or not np.all(np.isfinite(inertia)) or inertia[0] <= inertia[-1]:
        return None
    knee = kneedle(elbow["k"].to_numpy(), inertia)
    return None if knee is None else int(knee)


def kneedle(x: ArrayLike, y: ArrayLike, *, sensitivity: float = 1.0) -> float | None:
    """The knee of a decreasing convex curve ``y(x)`` (``x`` increasing) by the Kneedle method
    (Satopää, Albrecht, Irwin and Raghavan, 2011), offline: the first knee found; None when the
    curve has none.

    Both axes are scaled to [0, 1] and the curve is turned into a rising one (1 - y); its
    distance above the diagonal, ``d``, has local maxima (an end counts when its one neighbour
    is not higher) and local minima likewise.  Walking from the first maximum, the latest
    maximum sets a threshold, its ``d`` less ``sensitivity`` times the mean step of ``x``; a
    minimum sets it to 0 and stops the search until the next maximum.  The knee is the maximum
    whose threshold the next point falls below.  (The same answers as kneed's ``KneeLocator``
    with ``curve="convex", direction="decreasing"``, the test suite checks, without importing
    SciPy's signal package for it.)
    """
    x, y = np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64")
    n = len(x)
    if n < 2:
        return None
    x_scaled = (x - x.min()) / (x.max() - x.min())
    y_scaled = (y - y.min()) / (y.max() - y.min())
    d = (y_scaled.max() - y_scaled) - x_scaled
    before, after = d[np.r_[0, : n - 1]], d[np.r_[1 : n, n - 1]]
    is_max, is_min = (d >= before) & (d >= after), (d <= before) & (d <= after)
    if not is_max.any():
        return None
    thresholds = d - sensitivity * np.abs(np.diff(x_scaled).mean())
    threshold, at, searching = 0.0, 0, True
    for i in range(int(np.flatnonzero(is_max)[0]), n - 1):
        if is_max[i]:
            threshold, at, searching = thresholds[i], i, True
        if is_min[i]:
            threshold, searching = 0.0, False
        if searching and d[i + 1] < threshold:
            return x[at]
    return None


# ---------------------------------------------------------------------------------------------
# recommend
# ---------------------------------------------------------------------------------------------


def recommend(
    leaderboard: pd.DataFrame,
    *,
    knee: int | None,
    algorithm: str | None = None,
    n_clusters: int | None = None,
    min_share: float = 0.02,
) -> Recommendation:
    """Pick an algorithm and k from a leaderboard, or explain the user's own pick.

    ``leaderboard`` is :attr:`SelectionResult.leaderboard` (columns
    :data:`LEADERBOARD_COLUMNS`) and ``knee`` the elbow's knee (``None`` if there is none).
    Without ``algorithm``/``n_clusters`` it applies the rule in this module's docstring.
    With ``algorithm`` only, it applies the rule to that algorithm's rows; with
    ``n_clusters`` only, it takes the best silhouette at that k; with both, it takes that row
    as is.  A forced choice is said to be the user's in the reasons, with its metrics and the
    automatic pick for comparison.

    Raises :class:`~custseg.errors.ConfigError` when the forced choice is not in the
    leaderboard and :class:`~custseg.errors.DataError` when no row has two or more segments
    with a defined silhouette.

    Example
    -------
    >>> board = pd.DataFrame({"algorithm": ["kmeans", "kmeans"], "n_clusters": [3, 4],
    ...     "silhouette": [0.52, 0.40], "stability": [0.95, 0.71], "min_share": [0.2, 0.1],
    ...     "noise_share": [0.0, 0.0], "on_sample": [False, False]})
    >>> recommend(board, knee=3).text
    'K-Means with 3 segments: knee of the elbow at 3, silhouette 0.52 (best among stable k with every segment ≥ 2% of customers), stable across resamples (ARI 0.95)'
    """
    missing = [
        c
        for c in ("algorithm", "n_clusters", "silhouette", "stability", "min_share")
        if c not in leaderboard.columns
    ]
    if missing:
        raise SchemaError(
            f"leaderboard lacks column(s) {', '.join(map(repr, missing))}; "
            "pass SelectionResult.leaderboard from compare()"
        )
    min_share = _check_min_share(min_share)
    if knee is not None and (isinstance(knee, bool) or not isinstance(knee, (int, np.integer))):
        raise ConfigError(f"knee must be an integer or None, got {knee!r}; pass result.knee")
    board = leaderboard.reset_index(drop=True)
    candidates = board[(board["n_clusters"] >= 2) & board["silhouette"].notna()]

    if algorithm is None and n_clusters is None:
        if candidates.empty:
            raise DataError(
                f"no configuration among {len(board)} leaderboard row(s) found 2 or more "
                "segments with a defined silhouette; try other algorithms or parameters"
            )
        index, headline, extra = _auto_choice(candidates, knee, min_share)
        return _build(board.loc[index], headline, extra, min_share)

    if algorithm is not None and algorithm not in set(board["algorithm"]):
        raise ConfigError(
            f"algorithm {algorithm!r} is not in the leaderboard, which has "
            f"{_names(board['algorithm'].unique())}; choose one of them or rerun compare "
            f"with algorithms including {algorithm!r}"
        )
    if n_clusters is not None:
        if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)):
            raise ConfigError(
                f"n_clusters must be an integer, got {n_clusters!r}; pass e.g. n_clusters=4"
            )
        pool = board if algorithm is None else board[board["algorithm"] == algorithm]
        if not (pool["n_clusters"] == n_clusters).any():
            where = "" if algorithm is None else f" for {algorithm!r}"
            available = ", ".join(str(k) for k in sorted(set(pool["n_clusters"])))
            raise ConfigError(
                f"n_clusters={n_clusters} is not in the leaderboard{where}, which has k "
                f"{available}; choose one of them or rerun compare with k_values including "
                f"{n_clusters}"
            )

    if algorithm is not None and n_clusters is not None:
        rows = board[(board["algorithm"] == algorithm) & (board["n_clusters"] == n_clusters)]
        index = rows.index[0]
        headline = ["algorithm and number of segments chosen by the user"]
        headline += _metric_reasons(board.loc[index], min_share)
    else:
        if algorithm is not None:
            pool = candidates[candidates["algorithm"] == algorithm]
            said, forced = "algorithm chosen by the user", f"algorithm {algorithm!r}"
        else:
            pool = candidates[candidates["n_clusters"] == n_clusters]
            said, forced = "number of segments chosen by the user", f"n_clusters={n_clusters}"
        if pool.empty:
            raise DataError(
                f"no leaderboard row for {forced} has 2 or more segments with a defined "
                "silhouette; force both algorithm and n_clusters, or choose another"
            )
        if algorithm is not None:
            index, rule_headline, _ = _auto_choice(pool, knee, min_share)
        else:
            index = _ranked(pool).index[0]
            rule_headline = _metric_reasons(pool.loc[index], min_share)
        headline = [said, *rule_headline]

    extra = []
    if not candidates.empty:
        auto_index, _, _ = _auto_choice(candidates, knee, min_share)
        auto = board.loc[auto_index]
        if auto_index != index:
            extra.append(
                f"the automatic rule would pick {_label(auto['algorithm'])} with "
                f"{int(auto['n_clusters'])} segments (silhouette {auto['silhouette']:.2f})"
            )
    return _build(board.loc[index], headline, extra, min_share)


def _auto_choice(
    rows: pd.DataFrame, knee: int | None, min_share: float
) -> tuple[Any, list[str], list[str]]:
    """Apply the documented rule; return (row index, headline reasons, further reasons)."""
    share_ok = rows["min_share"] >= min_share - 1e-12
    stable_ok = rows["stability"].isna() | (rows["stability"] >= _MIN_STABILITY)
    extra: list[str] = []
    share_text = f"with every segment ≥ {_pct(min_share)} of customers"
    stable_text = f"stability (ARI) ≥ {_MIN_STABILITY:g}"
    if (share_ok & stable_ok).any():
        kept, among = rows[share_ok & stable_ok], "stable {} " + share_text
    elif share_ok.any():
        kept, among = rows[share_ok], "{} " + share_text
        extra.append(f"no configuration {share_text} reached {stable_text}")
    elif stable_ok.any():
        kept, among = rows[stable_ok], "stable {}"
        extra.append(f"no configuration had every segment ≥ {_pct(min_share)} of customers")
    else:
        kept, among = rows, "all {}"
        extra.append(
            f"no configuration had every segment ≥ {_pct(min_share)} of customers "
            f"and {stable_text}"
        )
    among = among.format("k" if kept["algorithm"].nunique() == 1 else "configurations")

    ranked = _ranked(kept)
    best = ranked.index[0]
    best_sil = float(kept.loc[best, "silhouette"])
    chosen = best
    headline: list[str] = []
    if knee is not None:
        at_knee = ranked[(ranked["n_clusters"] == knee) & ranked["algorithm"].map(_takes_k)]
        if not at_knee.empty:
            knee_index = at_knee.index[0]
            knee_sil = float(kept.loc[knee_index, "silhouette"])
            if knee_sil >= best_sil - _SILHOUETTE_TOLERANCE or knee_sil >= _STRUCTURE_SILHOUETTE:
                chosen = knee_index
                headline.append(f"knee of the elbow at {knee}")
            else:
                extra.append(
                    f"the elbow's knee at {knee} was not chosen: its silhouette "
                    f"{knee_sil:.2f} is more than {_SILHOUETTE_TOLERANCE:g} below the best "
                    f"{best_sil:.2f} and below {_STRUCTURE_SILHOUETTE:g}"
                )
        else:
            extra.append(f"no configuration at the elbow's knee ({knee}) passed the checks")
    else:
        extra.append("the elbow curve has no clear knee")

    row = kept.loc[chosen]
    sil = float(row["silhouette"])
    if round(sil, 2) == round(best_sil, 2):
        headline.append(f"silhouette {sil:.2f} (best among {among})")
    elif sil < best_sil - _SILHOUETTE_TOLERANCE:
        best_row = kept.loc[best]
        headline.append(
            f"silhouette {sil:.2f} (≥ {_STRUCTURE_SILHOUETTE:g}, a real structure; the best, "
            f"{best_sil:.2f}, splits into only {int(best_row['n_clusters'])} segments)"
            if int(best_row["n_clusters"]) < int(row["n_clusters"]) else
            f"silhouette {sil:.2f} (≥ {_STRUCTURE_SILHOUETTE:g}, a real structure; best {best_sil:.2f} with "
            f"{_label(best_row['algorithm'])}, {int(best_row['n_clusters'])} segments)"
        )
    else:
        best_row = kept.loc[best]
        headline.append(
            f"silhouette {sil:.2f}, within {_SILHOUETTE_TOLERANCE:g} of the best {best_sil:.2f} "
            f"({_label(best_row['algorithm'])}, {int(best_row['n_clusters'])} segments)"
        )
    headline.append(_stability_reason(row["stability"]))
    return chosen, headline, extra


def _ranked(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows best first: silhouette, then stability (both as printed, two decimals), then
    fewer segments, then leaderboard order."""
    key = pd.DataFrame(
        {
            "sil": rows["silhouette"].round(2),
            "stab": rows["stability"].round(2).fillna(-np.inf),
            "k": rows["n_clusters"],
        },
        index=rows.index,
    )
    order = key.sort_values(["sil", "stab", "k"], ascending=[False, False, True], kind="stable")
    return rows.loc[order.index]


def _metric_reasons(row: pd.Series, min_share: float) -> list[str]:
    sil = row["silhouette"]
    reasons = [
        f"silhouette {sil:.2f}" if pd.notna(sil) else "silhouette not defined (fewer than 2 segments)",
        _stability_reason(row["stability"]),
    ]
    share = _share_reason(row, min_share)
    if share is not None and "below" in share:
        reasons.append(share)
    return reasons


def _share_reason(row: pd.Series, min_share: float) -> str | None:
    share = row["min_share"]
    if pd.isna(share):
        return None
    if share < min_share - 1e-12:
        return f"smallest segment {_pct(share)} of customers, below the {_pct(min_share)} minimum"
    return f"smallest segment {_pct(share)} of customers"


def _context_reasons(row: pd.Series, min_share: float, said: list[str]) -> list[str]:
    reasons = []
    if not _takes_k(row["algorithm"]):
        reasons.append(f"number of segments found by {_label(row['algorithm'])}")
    share = _share_reason(row, min_share)
    if share is not None and share not in said:
        reasons.append(share)
    if "noise_share" in row.index and pd.notna(row["noise_share"]) and row["noise_share"] > 0:
        reasons.append(f"{_pct(row['noise_share'])} of customers left unassigned as noise")
    if "on_sample" in row.index and bool(row["on_sample"]):
        reasons.append("metrics measured on a seeded random sample of the customers")
    return reasons


def _build(row: pd.Series, headline: list[str], extra: list[str], min_share: float) -> Recommendation:
    name, k = str(row["algorithm"]), int(row["n_clusters"])
    reasons = [*headline, *_context_reasons(row, min_share, headline), *extra]
    text = f"{_label(name)} with {k} segments: {', '.join(headline)}"
    return Recommendation(algorithm=name, n_clusters=k, reasons=reasons, text=text)


def _stability_reason(stability: float) -> str:
    if pd.isna(stability):
        return "stability not measured"
    if stability >= _MIN_STABILITY:
        return f"stable across resamples (ARI {stability:.2f})"
    return f"unstable across resamples (ARI {stability:.2f})"


def _label(name: str) -> str:
    spec = ALGORITHMS.get(name)
    return spec.label if spec is not None else str(name)


def _takes_k(name: str) -> bool:
    spec = ALGORITHMS.get(name)
    return True if spec is None else bool(spec.takes_k)


def _pct(share: float) -> str:
    text = f"{share * 100:.1f}".rstrip("0").rstrip(".")
    return f"{text}%"


def _names(values: Iterable[object]) -> str:
    return ", ".join(repr(str(v)) for v in values)


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def _as_matrix(X: pd.DataFrame | np.ndarray) -> np.ndarray:
    """Return ``X`` as a new float64 matrix, or raise DataError saying what is wrong."""
    if isinstance(X, pd.DataFrame):
        bad = [str(c) for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
        if bad:
            raise DataError(
                f"X has non-numeric column(s) {', '.join(map(repr, bad))}; encode or drop "
                "them (custseg.preprocessing) before compare"
            )
        columns = [str(c) for c in X.columns]
        data = X.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    else:
        array = np.asarray(X)
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise DataError(
                f"X must be numeric, got an array of dtype {array.dtype}; encode it "
                "(custseg.preprocessing) before compare"
            )
        columns = [str(i) for i in range(array.shape[1])] if array.ndim == 2 else []
        data = np.array(array, dtype=np.float64, copy=True)
    if data.ndim != 2:
        raise DataError(
            f"X must be 2-D (customers x features), got shape {data.shape}; "
            "reshape a single feature with X.reshape(-1, 1)"
        )
    n_rows, n_columns = data.shape
    if n_columns == 0:
        raise DataError(f"X has {n_rows} rows but no columns; pass at least one feature")
    if n_rows < 3:
        raise DataError(
            f"X has {n_rows} row(s); comparing segmentations needs at least 3 customers"
        )
    bad_cells = ~np.isfinite(data)
    if bad_cells.any():
        row, column = np.argwhere(bad_cells)[0]
        raise DataError(
            f"X has {int(bad_cells.sum())} missing or infinite value(s), first in column "
            f"{columns[column]!r} row {row}; impute or drop them before compare"
        )
    if np.all(np.ptp(data, axis=0) == 0):
        raise DataError(
            f"all {n_rows} rows of X are identical, so there is nothing to segment; "
            "check that preprocessing kept the columns that differ between customers"
        )
    return data


def _check_k_fits(k_max: int, n_fit: int, n_distinct: int, *, on_sample: bool) -> None:
    """Every k must leave more than k rows and at least k distinct rows to cluster."""
    where = f"the sample of {n_fit} rows (sample_size={n_fit}) of X" if on_sample else "X"
    if on_sample:
        fix = "raise sample_size or lower k_values"
    else:
        top = max(3, min(n_fit, n_distinct + 1))
        fix = f"lower k_values (e.g. range(2, {top})) or pass more customers"
    if k_max > n_fit - 1:
        raise DataError(
            f"k_values go up to {k_max} but {where} has only {n_fit} rows; k segments need "
            f"more than k customers: {fix}"
        )
    if k_max > n_distinct:
        raise DataError(
            f"k_values go up to {k_max} but {where} has only {n_distinct} distinct rows; "
            f"{fix}"
        )


def _check_algorithms(algorithms: Sequence[str]) -> list[str]:
    if isinstance(algorithms, str):
        algorithms = (algorithms,)
    names = list(dict.fromkeys(algorithms))
    if not names:
        raise ConfigError(
            f"algorithms is empty; pass at least one of {_names(ALGORITHMS)}"
        )
    unknown = [n for n in names if n not in ALGORITHMS]
    if unknown:
        raise ConfigError(
            f"unknown algorithm(s) {_names(unknown)}; choose from {_names(ALGORITHMS)}"
        )
    # K-Prototypes wants raw categoricals and RFM rules the raw feature table: neither runs on
    # the preprocessed matrix the sweep measures.
    not_matrix = [
        n
        for n in names
        if ALGORITHMS[n].needs_categorical or ALGORITHMS[n].input != "matrix"
    ]
    if not_matrix:
        raise ConfigError(
            f"algorithm(s) {_names(not_matrix)} do not take the preprocessed numeric matrix "
            "and cannot be compared here; drop them from algorithms"
        )
    return names


def _check_k_values(k_values: Iterable[int]) -> list[int]:
    try:
        values = list(k_values)
    except TypeError:
        raise ConfigError(
            f"k_values must be an iterable of integers, got {k_values!r}; pass e.g. range(2, 11)"
        ) from None
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 2]
    if bad or not values:
        got = f"{bad[0]!r}" if bad else "nothing"
        raise ConfigError(
            f"k_values must be integers >= 2, got {got}; pass e.g. range(2, 11)"
        )
    return sorted({int(v) for v in values})


def _check_sample_size(sample_size: int | None) -> int | None:
    if sample_size is None:
        return None
    return _check_count("sample_size", sample_size, 3)


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}; pass e.g. {max(minimum, 5)}")
    return int(value)


def _check_min_share(min_share: float) -> float:
    if (
        isinstance(min_share, bool)
        or not isinstance(min_share, (int, float, np.floating))
        or not 0 <= min_share < 1
    ):
        raise ConfigError(
            f"min_share must be a fraction in [0, 1), got {min_share!r}; pass e.g. 0.02 for 2%"
        )
    return float(min_share)


def _base_seed(random_state: int | np.random.RandomState | None) -> int:
    """One integer seed from which every random draw of the sweep derives."""
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ConfigError(
                f"random_state must be a non-negative integer or None, got {random_state}; "
                "pass e.g. 0"
            )
        return int(random_state)
    try:
        return int(check_random_state(random_state).randint(0, 2**31 - 1))
    except ValueError:
        raise ConfigError(
            f"random_state must be a non-negative integer or None, got {random_state!r}; "
            "pass e.g. 0"
        ) from None
