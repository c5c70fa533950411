"""Clustering on Spark MLlib, for customer tables too large for one machine.

The customer table is a Spark DataFrame, one row per customer: a ``customer_id`` column and
the feature columns (numeric, or text for categories).  Everything that reads all customers
runs on Spark; only a seeded sample of at most ``sample`` rows (default 20,000) and small
aggregates come to the driver.  What comes out is the same as the local flow's: a
:class:`custseg.model.SegmentationModel` that ``save`` writes to ``model.skops`` and that
``assign``, :func:`custseg.scoring.compile_model`, the report and the service use unchanged.

API
---
``segment_on_spark(spark_df, feature_columns, *, algorithms=("kmeans",), k_values=range(2, 9),
seeds=3, sample=20_000, silhouette_sample=5_000, random_state=0, min_share=0.02,
algorithm=None, n_clusters=None)`` -> ``(model, leaderboard, labels)``

    - ``model``: :class:`~custseg.model.SegmentationModel` of the recommended (or the asked
      for) configuration, fitted on all rows; its ``preprocessor`` is a fitted scikit-learn
      ``ColumnTransformer`` (:mod:`custseg.preprocessing`'s) and its ``estimator`` a
      scikit-learn ``KMeans`` (``kmeans``, ``bisecting_kmeans``) whose ``cluster_centers_``
      are Spark's centroids, or a :class:`custseg.cluster.GaussianMixtureClustering` (``gmm``)
      holding the mixture fitted on Spark.  ``model.run["spark"]`` records the seeds, each
      seed's training cost and the seed kept.
    - ``leaderboard``: pandas DataFrame with :data:`custseg.selection.LEADERBOARD_COLUMNS`, one
      row per algorithm x k (``inertia``: the sum of squared distances to the nearest centre
      over all rows; ``silhouette`` on ``silhouette_sample`` rows of the sample,
      ``davies_bouldin`` and ``calinski_harabasz`` on the sample; ``bic``/``aic`` of a mixture
      from its log-likelihood over all rows; ``min_share`` from the segment sizes counted on
      Spark; ``stability`` as the local sweep measures it, on ``STABILITY_SAMPLE`` rows of the
      sample: the Spark fit's labels of them against scikit-learn refits of the same algorithm
      on seeded 80% subsamples (a refit per subsample on Spark would cost a Spark fit each);
      ``noise_share`` 0; ``on_sample`` False: every fit uses all rows).
    - ``labels``: Spark DataFrame ``customer_id, segment, segment_name`` (+ ``probability``
      for ``gmm``), ``reason``: what ``assign_on_spark(model, spark_df)`` gives.

``sweep_on_spark(...)`` (the same arguments) -> :class:`Swept`: the model and leaderboard with
the recommendation and its reasons, the sample's elbow and knee and the fitted preprocessing,
without assigning the customers (what ``custseg segment --engine spark`` records in a run).

``assign_on_spark(model, spark_df)`` -> Spark DataFrame ``customer_id, segment, segment_name``
(+ ``probability`` for a mixture), ``reason``, one row per row of ``spark_df``: the model's
preprocessing and its nearest-centre / most-probable-component rule written as Spark column
expressions (the model's numbers are literals of the plan, so every task has them), with
``assign``'s rules: an unknown category or a customer farther than ``outlier_distance`` from
every segment gets ``-1`` and a reason.  Any other model (e.g. DBSCAN trained locally) runs
``model.assign`` on each batch of rows.  The segments are those of ``model.assign``.

``means_by_segment(model, spark_df, columns)`` -> ``({label: {column: mean}}, {column: std})``:
what :func:`custseg.model.align` needs to keep a previous model's segment ids, on Spark.

``fit_preprocessing_on_spark(spark_df, feature_columns, sample_rows=...)`` -> the
:class:`~custseg.preprocessing.Preprocessor` of :func:`~custseg.preprocessing.build_preprocessor`
with its statistics computed on Spark; ``matrix_columns(transformer)`` -> its output names and
their Spark expressions.

Algorithms (the registry names of :mod:`custseg.cluster` where the algorithm is the same):
``kmeans`` (MLlib ``KMeans``, k-means||), ``bisecting_kmeans`` (MLlib ``BisectingKMeans``,
the algorithm of scikit-learn's ``BisectingKMeans`` behind the same name locally; MLlib's model
keeps its leaf centres, not its tree of splits, so its segments are the nearest leaf centres,
which is what the exported model assigns) and ``gmm`` (full covariances: EM on Spark from the K-Means segments, as
scikit-learn's ``init_params="kmeans"``; see :func:`_em_on_spark`).  Each K-Means is fitted
with ``seeds`` seeds derived from ``random_state`` and the lowest training cost is kept:
k-means|| with one seed can merge two well-separated segments.

Errors are one-line :class:`custseg.errors.CustsegError` naming the parameter: an unknown
algorithm (``algorithms``), a k not below the number of customers (``k_values``), a
feature column that is missing or neither numeric nor text (``feature_columns``).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from custseg.errors import ConfigError, DataError, SchemaError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

    from custseg.model import SegmentationModel
    from custseg.preprocessing import Preprocessor

__all__ = ["SPARK_ALGORITHMS", "segment_on_spark", "sweep_on_spark", "Swept", "assign_on_spark", "fit_preprocessing_on_spark",
           "matrix_columns", "means_by_segment"]

#: The algorithms this module runs on Spark.
SPARK_ALGORITHMS = ("kmeans", "bisecting_kmeans", "gmm")
_LABELS = {"kmeans": "K-Means", "bisecting_kmeans": "Bisecting K-Means", "gmm": "Gaussian Mixture"}

_ID = "customer_id"
_MAX_ITER = {"kmeans": 100, "bisecting_kmeans": 20, "gmm": 100}
_KMEANS_TOL = 1e-6  # largest centroid move (in scaled units) at convergence
_GMM_TOL = 1e-3  # change of the mean log-likelihood at convergence, as scikit-learn's default
_REG_COVAR = 1e-6  # added to the covariances' diagonal on export, as scikit-learn's fit does
_OUTLIER_QUANTILE = 0.999  # as custseg.model
_OUTLIER_FACTOR = 1.5
_QUANTILE_ACCURACY = 1_000_000  # percentile_approx: rank error at most n / this
_EPS = float(np.finfo(np.float64).eps)
_ELBOW_K_MAX = 15  # as custseg.selection
_ROWS_PER_PARTITION = 1_000_000  # the cached matrix is coalesced to about this many rows a partition


# --- inputs --------------------------------------------------------------------------------


def _spark() -> Any:
    from custseg._optional import require

    require("pyspark", feature="the Spark engine")
    from pyspark.sql import functions

    return functions


def _check_frame(spark_df: object, name: str = "spark_df") -> None:
    from pyspark.sql import DataFrame

    if not isinstance(spark_df, DataFrame):
        raise ConfigError(
            f"{{param}} must be a Spark DataFrame with one row per customer, got {type(spark_df).__name__}; "
            "use segment() for a pandas table", param=name,
        )


def _column_kinds(spark_df: DataFrame, feature_columns: Sequence[str]) -> dict[str, str]:
    """``{column: "numeric" | "categorical"}`` for ``feature_columns``; a ConfigError naming
    every column that is missing or neither numeric, boolean nor text."""
    from pyspark.sql import types as T

    if isinstance(feature_columns, str):
        feature_columns = [feature_columns]
    columns = list(dict.fromkeys(feature_columns))
    if not columns:
        raise ConfigError("{param} is empty; name at least one feature column, e.g. ['recency_days', 'frequency', "
                          "'monetary']", param="feature_columns")
    schema = {f.name: f.dataType for f in spark_df.schema.fields}
    problems, kinds = [], {}
    for column in columns:
        dtype = schema.get(column)
        if column == _ID:
            problems.append(f"'{column}' is the customer identifier, not a feature")
        elif dtype is None:
            problems.append(f"unknown column '{column}'")
        elif isinstance(dtype, (T.NumericType, T.BooleanType)):
            kinds[column] = "numeric"
        elif isinstance(dtype, T.StringType):
            kinds[column] = "categorical"
        else:
            problems.append(f"column '{column}' has type {dtype.simpleString()}, neither numeric nor text")
    if problems:
        kinds_ok = (T.NumericType, T.BooleanType, T.StringType)
        usable = [n for n, t in schema.items() if n != _ID and isinstance(t, kinds_ok)]
        raise ConfigError(f"{{param}}: {'; '.join(problems)}; use numeric or text columns, e.g. "
                          f"{', '.join(usable[:6]) or 'none'}", param="feature_columns")
    return kinds


def _check_algorithms(algorithms: Sequence[str] | str) -> list[str]:
    if isinstance(algorithms, str):
        algorithms = [algorithms]
    names = list(dict.fromkeys(algorithms))
    unknown = [n for n in names if n not in SPARK_ALGORITHMS]
    if not names or unknown:
        got = f"got {', '.join(map(repr, unknown))}" if unknown else "got none"
        raise ConfigError(f"{{param}} on Spark must be among {', '.join(SPARK_ALGORITHMS)}, {got}; the others run "
                          "locally (segment a table that fits in memory)", param="algorithms")
    return names


def _check_k_values(k_values: Iterable[int], n_rows: int) -> list[int]:
    try:
        values = list(k_values)
    except TypeError:
        raise ConfigError(f"{{param}} must be integers >= 2, got {k_values!r}; pass e.g. range(2, 9)",
                          param="k_values") from None
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 2]
    if bad or not values:
        raise ConfigError(f"{{param}} must be integers >= 2, got {bad[0] if bad else 'nothing'!r}; pass e.g. "
                          "range(2, 9)", param="k_values")
    ks = sorted({int(v) for v in values})
    if ks[-1] >= n_rows:
        raise DataError(f"{{param}} go up to {ks[-1]} but the table has only {n_rows} customers; k segments need "
                        f"more than k customers: lower {{param}}", param="k_values")
    return ks


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{{param}} must be an integer >= {minimum}, got {value!r}; pass e.g. {max(minimum, 3)}",
                          param=name)
    return int(value)


def _check_min_share(min_share: object) -> float:
    if isinstance(min_share, bool) or not isinstance(min_share, (int, float, np.floating)) or not 0 <= min_share < 1:
        raise ConfigError(f"{{param}} must be a fraction in [0, 1), got {min_share!r}; pass e.g. 0.02 for 2%",
                          param="min_share")
    return float(min_share)


def _seeds(random_state: object, seeds: int) -> list[int]:
    if isinstance(random_state, bool) or not isinstance(random_state, (int, np.integer)) or random_state < 0:
        raise ConfigError(f"{{param}} must be a non-negative integer, got {random_state!r}; pass e.g. 0",
                          param="random_state")
    return [int(s) for s in np.random.default_rng([int(random_state), 2]).integers(0, 2**31 - 1, seeds)]


@contextlib.contextmanager
def _quiet_pandas() -> Iterator[None]:
    """pyspark 4 warns on every conversion that it was not tested with pandas 3, and its Arrow
    conversion passes pandas 3 a deprecated ``copy`` keyword; the conversions here are checked
    by the tests, so those two warnings are not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
        warnings.filterwarnings("ignore", message="The copy keyword is deprecated")
        yield


def _sample_rows(spark_df: DataFrame, columns: list[str], n_rows: int, sample: int, seed: int) -> pd.DataFrame:
    """A seeded random sample of at most ``sample`` rows (``customer_id`` + ``columns``) as pandas.

    Spark draws each row with a probability a little above ``sample / n_rows`` (Bernoulli, so
    every partition is sampled alike); the driver then keeps ``sample`` of them at random.
    """
    wanted = [c for c in [_ID, *columns] if c in spark_df.columns]
    frame = spark_df.select(*wanted)
    if n_rows > sample:
        fraction = min(1.0, 1.1 * sample / n_rows + 100 / n_rows)
        frame = frame.sample(withReplacement=False, fraction=fraction, seed=seed)
    with _quiet_pandas():
        local = frame.toPandas()
    if len(local) > sample:
        rows = np.sort(np.random.default_rng([seed, 3]).choice(len(local), size=sample, replace=False))
        local = local.iloc[rows].reset_index(drop=True)
    return local


# --- preprocessing on Spark ----------------------------------------------------------------


def _as_double(F: Any, column: str) -> Column:
    """A numeric column as double, NaN as null (pandas and scikit-learn read both as missing)."""
    value = F.col(column).cast("double")
    return F.when(F.isnan(value), F.lit(None).cast("double")).otherwise(value)


def _function_name(step: Any) -> str:
    func = getattr(step, "func", None)
    return f"{getattr(func, '__module__', '')}.{getattr(func, '__name__', '')}"


def _yeo_johnson(F: Any, x: Column, lmbda: float) -> Column:
    """scikit-learn's (scipy's) Yeo-Johnson transform of ``x`` with ``lmbda``, as a Spark expression."""
    if abs(lmbda) < _EPS:
        positive = F.log1p(x)
    else:
        positive = F.expm1(F.lit(lmbda) * F.log1p(x)) / F.lit(lmbda)
    if abs(lmbda - 2) > _EPS:
        negative = -F.expm1(F.lit(2 - lmbda) * F.log1p(-x)) / F.lit(2 - lmbda)
    else:
        negative = -F.log1p(-x)
    return F.when(x >= 0, positive).otherwise(negative)


def _steps(pipeline: Any) -> list[Any]:
    from sklearn.pipeline import Pipeline

    return [step for _, step in pipeline.steps] if isinstance(pipeline, Pipeline) else [pipeline]


def _apply_step(F: Any, step: Any, values: list[Column], columns: list[str]) -> list[Column]:
    """One fitted step of a custseg preprocessing pipeline on Spark columns ``values``."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import (
        FunctionTransformer, OneHotEncoder, PowerTransformer, RobustScaler, StandardScaler,
    )

    if isinstance(step, FunctionTransformer):
        name = _function_name(step)
        if name == "custseg.preprocessing._to_float":
            return [_as_double(F, c) for c in columns]
        if name == "custseg.preprocessing._to_text":
            return [F.col(c).cast("string") for c in columns]
        if name == "numpy.log1p":
            return [F.log1p(v) for v in values]
    elif isinstance(step, SimpleImputer):
        return [F.coalesce(v, F.lit(s.item() if isinstance(s, np.generic) else s))
                for v, s in zip(values, step.statistics_)]
    elif isinstance(step, PowerTransformer) and step.method == "yeo-johnson":
        out = [_yeo_johnson(F, v, float(lm)) for v, lm in zip(values, step.lambdas_)]
        if step.standardize:
            out = _apply_step(F, step._scaler, out, columns)
        return out
    elif isinstance(step, StandardScaler):
        mean = step.mean_ if step.with_mean else np.zeros(len(values))
        scale = step.scale_ if step.with_std else np.ones(len(values))
        return [(v - F.lit(float(m))) / F.lit(float(s)) for v, m, s in zip(values, mean, scale)]
    elif isinstance(step, RobustScaler):
        center = step.center_ if step.with_centering else np.zeros(len(values))
        scale = step.scale_ if step.with_scaling else np.ones(len(values))
        return [(v - F.lit(float(c))) / F.lit(float(s)) for v, c, s in zip(values, center, scale)]
    elif (isinstance(step, OneHotEncoder) and step.drop_idx_ is None
          and not getattr(step, "_infrequent_enabled", False)):
        return [F.when(v == F.lit(str(category)), F.lit(1.0)).otherwise(F.lit(0.0))
                for v, categories in zip(values, step.categories_) for category in categories]
    raise ConfigError(f"the model's preprocessing step {type(step).__name__} has no Spark form; assign its "
                      "customers locally with model.assign", param="model")


def matrix_columns(transformer: Any) -> tuple[list[str], Any]:
    """``(output names, build)`` where ``build(F)`` returns the Spark expressions of the fitted
    ``ColumnTransformer``'s output columns, in its order."""
    names = [str(n) for n in transformer.get_feature_names_out()]

    def build(F: Any) -> list[Column]:
        out: list[Column] = []
        for _, pipeline, columns in transformer.transformers_:
            if isinstance(pipeline, str):  # "drop" / "passthrough" remainder
                if pipeline == "drop":
                    continue
                raise ConfigError("the model's preprocessing passes columns through; assign locally", param="model")
            columns = list(columns)
            values = [F.col(c) for c in columns]
            for step in _steps(pipeline):
                values = _apply_step(F, step, values, columns)
            out.extend(values)
        if len(out) != len(names):
            raise ConfigError("the model's preprocessing has no Spark form; assign locally", param="model")
        return [v.cast("double") for v in out]

    return names, build


def _mode_and_values(spark_df: DataFrame, value: Column) -> tuple[Any, list[Any]]:
    """The most frequent non-missing value (ties: the smallest, as scikit-learn's imputer) and
    every distinct non-missing value, sorted."""
    F = _spark()
    counts = spark_df.select(value.alias("v")).where(F.col("v").isNotNull()).groupBy("v").count().collect()
    if not counts:
        return None, []
    top = max(r["count"] for r in counts)
    return min(r["v"] for r in counts if r["count"] == top), sorted(r["v"] for r in counts)


def fit_preprocessing_on_spark(
    spark_df: DataFrame,
    feature_columns: Sequence[str],
    *,
    sample_rows: pd.DataFrame,
    **options: Any,
) -> Preprocessor:
    """The preprocessing of :func:`custseg.preprocessing.build_preprocessor`, fitted on Spark.

    The decisions (which columns, which transform) are taken on ``sample_rows`` (a sample of
    ``spark_df``'s rows as pandas, with ``feature_columns``) by ``build_preprocessor`` itself,
    with ``options``; every statistic the transform then applies is computed on all rows of
    ``spark_df``: the medians (exact), the most frequent values, the categories, the means and
    standard deviations (or medians and quartiles) of the transformed columns.  Only the
    Yeo-Johnson lambdas, a likelihood maximised per column, are fitted on the sample.  Returns
    a :class:`~custseg.preprocessing.Preprocessor` whose fitted ``transformer`` holds them.
    """
    from sklearn.base import clone
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, PowerTransformer, RobustScaler, StandardScaler

    from custseg.preprocessing import build_preprocessor

    F = _spark()
    columns = list(feature_columns)
    decided = build_preprocessor(sample_rows[columns], columns=columns, **options)
    decided.fit(sample_rows[decided.columns])  # the lambdas and the shape of every fitted step
    structure = decided.transformer

    # Categories and most frequent values of the text columns and 0/1 flags, on all rows.
    modes: dict[str, Any] = {}
    categories: dict[str, list[str]] = {}
    for group, _, group_columns in structure.transformers_:
        if group == "categorical":
            for c in group_columns:
                modes[c], categories[c] = _mode_and_values(spark_df, F.col(c).cast("string"))
        elif group == "flag":
            for c in group_columns:
                modes[c] = _mode_and_values(spark_df, _as_double(F, c))[0]

    # The final transformer, fitted on the sample plus a row for each category the sample
    # lacks (so that the encoder knows them all); its statistics are then replaced.
    frame = sample_rows[decided.columns]
    extra = [(c, v) for c, values in categories.items()
             for v in values if v not in set(frame[c].dropna().astype(str))]
    if extra:
        rows = frame.iloc[[0] * len(extra)].copy().astype({c: object for c in categories})
        for i, (c, v) in enumerate(extra):
            rows.iloc[i, rows.columns.get_loc(c)] = v
        frame = pd.concat([frame.astype({c: object for c in categories}), rows], ignore_index=True)
    transformer = clone(structure)
    transformer.set_output(transform="pandas")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformer.fit(frame)

    numeric_groups = [(p, list(cs)) for g, p, cs in transformer.transformers_
                      if g in ("log1p", "yeo_johnson", "numeric")]
    medians_wanted = [c for _, cs in numeric_groups for c in cs]
    medians: dict[str, float] = {}
    if medians_wanted:
        row = spark_df.agg(*[F.percentile(_as_double(F, c), F.lit(0.5)).alias(f"_q{i}")
                             for i, c in enumerate(medians_wanted)]).first()
        medians = {c: row[f"_q{i}"] for i, c in enumerate(medians_wanted)}
    # The imputed values found on Spark; the Yeo-Johnson lambdas of the sample.
    for group, pipeline, group_columns in transformer.transformers_:
        if isinstance(pipeline, str):
            continue
        steps = _steps(pipeline)
        imputer = next(s for s in steps if isinstance(s, SimpleImputer))
        if group == "categorical":
            imputer.statistics_ = np.array([modes[c] for c in group_columns], dtype=object)
            encoder = next((s for s in steps if isinstance(s, OneHotEncoder)), None)
            known = [list(map(str, cs)) for cs in encoder.categories_] if encoder is not None else None
            if known is not None and known != [categories[c] for c in group_columns]:
                raise DataError("the categories found on Spark do not match the encoder's; report this",
                                param="spark_df")
        elif group == "flag":
            imputer.statistics_ = np.array([float(modes[c]) if modes[c] is not None else 0.0 for c in group_columns])
        else:
            imputer.statistics_ = np.array([float(medians[c]) if medians[c] is not None else 0.0
                                            for c in group_columns])
            old = dict(structure.named_transformers_)[group]
            for step, fitted in zip(steps, _steps(old)):
                if isinstance(step, PowerTransformer):
                    step.lambdas_ = np.array(fitted.lambdas_, dtype="float64")
    # Scaling statistics of the transformed columns, on all rows.
    aggregates, plan = [], []
    for pipeline, group_columns in numeric_groups:
        steps = _steps(pipeline)
        scaler = steps[-1]
        values = [F.col(c) for c in group_columns]
        for step in steps[:-1]:
            values = _apply_step(F, step, values, group_columns)
        for c, v in zip(group_columns, values):
            i = len(plan)
            if isinstance(scaler, StandardScaler):
                aggregates += [F.avg(v).alias(f"_m{i}"), F.var_pop(v).alias(f"_v{i}"), F.count(v).alias(f"_n{i}")]
            elif isinstance(scaler, RobustScaler):
                lo, hi = scaler.quantile_range
                aggregates.append(F.percentile(v, F.array(*[F.lit(q / 100) for q in (lo, 50.0, hi)])).alias(f"_p{i}"))
            plan.append((scaler, group_columns.index(c)))
    if aggregates:
        row = spark_df.agg(*aggregates).first()
        for i, (scaler, j) in enumerate(plan):
            if isinstance(scaler, StandardScaler):
                mean, var, n = float(row[f"_m{i}"]), float(row[f"_v{i}"]), int(row[f"_n{i}"])
                scaler.mean_[j], scaler.var_[j] = mean, var
                constant = var <= n * _EPS * var + (n * mean * _EPS) ** 2  # scikit-learn's test
                scaler.scale_[j] = 1.0 if constant else math.sqrt(var)
                scaler.n_samples_seen_ = n
            else:
                low, centre, high = row[f"_p{i}"]
                scaler.center_[j] = centre
                scale = high - low
                scaler.scale_[j] = 1.0 if scale < 10 * _EPS else scale
    decided.transformer = transformer
    return decided


# --- the rules of an exported estimator, as Spark expressions -----------------------------


def _sum(terms: list[Column]) -> Column:
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _squared_distances(F: Any, m: list[Column], centers: np.ndarray) -> list[Column]:
    out = []
    for centre in np.asarray(centers, dtype="float64"):
        out.append(_sum([(x - F.lit(float(c))) * (x - F.lit(float(c))) for x, c in zip(m, centre)]))
    return out


def _argmin(F: Any, values: list[Column]) -> Column:
    """Index of the smallest of ``values`` (the first on ties, as numpy's argmin)."""
    if len(values) == 1:
        return F.lit(0)
    return F.least(*[F.struct(v.alias("v"), F.lit(j).alias("j")) for j, v in enumerate(values)]).getField("j")


def _weighted_log_prob(F: Any, m: list[Column], mixture: Any) -> list[Column]:
    """scikit-learn's ``_estimate_weighted_log_prob`` of a full-covariance mixture, per component."""
    means = np.asarray(mixture.means_, dtype="float64")
    chol = np.asarray(mixture.precisions_cholesky_, dtype="float64")
    weights = np.asarray(mixture.weights_, dtype="float64")
    k, p = means.shape
    constant = p * math.log(2 * math.pi)
    out = []
    for j in range(k):
        log_det = float(np.sum(np.log(np.diag(chol[j]))))
        offset = means[j] @ chol[j]
        squares = []
        for i in range(p):
            y = _sum([m[l] * F.lit(float(chol[j][l, i])) for l in range(p) if chol[j][l, i] != 0.0] or [F.lit(0.0)])
            y = y - F.lit(float(offset[i]))
            squares.append(y * y)
        out.append(F.lit(-0.5) * (F.lit(constant) + _sum(squares)) + F.lit(log_det + float(np.log(weights[j]))))
    return out


def _mixture_of(estimator: Any) -> Any | None:
    from sklearn.mixture import GaussianMixture

    from custseg.cluster import GaussianMixtureClustering

    mixture = estimator.mixture_ if isinstance(estimator, GaussianMixtureClustering) else estimator
    if isinstance(mixture, GaussianMixture) and mixture.covariance_type == "full":
        return mixture
    return None


def _centres_of(estimator: Any) -> np.ndarray | None:
    from sklearn.cluster import KMeans, MiniBatchKMeans

    from custseg.cluster import WardClustering

    if isinstance(estimator, (KMeans, MiniBatchKMeans, WardClustering)):
        return np.asarray(estimator.cluster_centers_, dtype="float64")
    return None


def _rule(F: Any, m: list[Column], estimator: Any) -> tuple[Column, Column | None, Column | None] | None:
    """``(label, probability, score)`` of ``estimator`` on the matrix columns ``m``: nearest centre
    (score: the squared distance to it) or most probable component (probability: its posterior;
    score: the row's log-likelihood); None when the estimator has no Spark form here."""
    centres = _centres_of(estimator)
    if centres is not None:
        d2 = _squared_distances(F, m, centres)
        return _argmin(F, d2), None, (F.least(*d2) if len(d2) > 1 else d2[0])
    mixture = _mixture_of(estimator)
    if mixture is not None:
        lp = _weighted_log_prob(F, m, mixture)
        best = (F.greatest(*[F.struct(v.alias("v"), F.lit(-j).alias("j")) for j, v in enumerate(lp)])
                if len(lp) > 1 else F.struct(lp[0].alias("v"), F.lit(0).alias("j")))
        top = best.getField("v")
        total = _sum([F.exp(v - top) for v in lp])
        return -best.getField("j"), F.lit(1.0) / total, top + F.log(total)
    return None


# --- assignment on Spark -------------------------------------------------------------------


def assign_on_spark(model: SegmentationModel, spark_df: DataFrame) -> DataFrame:
    """Assign every customer of ``spark_df`` to a segment of ``model``, on Spark.

    ``spark_df`` has the model's ``feature_columns`` (and ``customer_id``); the result has
    ``customer_id, segment, segment_name`` (+ ``probability`` for a Gaussian mixture) and
    ``reason``, one row per input row: the segments :meth:`SegmentationModel.assign` gives
    (unknown category or far from every segment: ``-1`` with the reason).  K-Means-like and
    full-covariance mixture models run as Spark column expressions with the model's numbers
    inlined; any other model runs ``model.assign`` on each batch of rows (``mapInPandas``).
    """
    from custseg.errors import ModelError

    F = _spark()
    _check_frame(spark_df)
    missing = [c for c in model.feature_columns if c not in spark_df.columns]
    if missing:
        raise ModelError(
            f"the data lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)} that the model was trained "
            f"on; give a table with {', '.join(model.feature_columns)}", param="spark_df")
    has_id = _ID in spark_df.columns
    try:
        names, build = matrix_columns(model.preprocessor)
        expressions = build(F)
    except (ConfigError, AttributeError):
        expressions = None
    rule = None
    if expressions is not None and model.algorithm != "rfm":
        m_names = [f"_m{i}" for i in range(len(expressions))]
        rule = _rule(F, [F.col(c) for c in m_names], model.estimator)
    if rule is None:
        return _assign_in_batches(model, spark_df)

    keep = ([F.col(_ID)] if has_id else []) + [F.col(c) for c in model.categories]
    staged = spark_df.select(*keep, *[e.alias(n) for e, n in zip(expressions, m_names)])
    label, probability, _ = rule
    segment = label.cast("long")
    if model.label_map:
        mapped = None
        for raw, stable in sorted(model.label_map.items()):
            mapped = (F.when(segment == raw, F.lit(stable)) if mapped is None
                      else mapped.when(segment == raw, F.lit(stable)))
        segment = mapped.otherwise(segment)
    flagged = F.lit(False)
    reason = F.lit("")
    # The last unknown column's reason wins, as in SegmentationModel.assign.
    unknown_reasons = []
    for column, known in model.categories.items():
        value = F.col(column).cast("string")
        unknown = value.isNotNull() & ~value.isin(list(known)) if known else value.isNotNull()
        unknown_reasons.append((unknown, F.concat(F.lit(f"unknown {column} '"), value, F.lit("'"))))
        flagged = flagged | unknown
    m = [F.col(c) for c in m_names]
    far = F.lit(False)
    distance = None
    if len(model.centers):
        d2 = _squared_distances(F, m, model.centers)
        distance = F.sqrt(F.greatest(F.least(*d2) if len(d2) > 1 else d2[0], F.lit(0.0)))
        far = distance > F.lit(float(model.outlier_distance))
    columns = {
        "segment": segment, "flagged": flagged, "far": far,
        "_distance": distance if distance is not None else F.lit(0.0),
    }
    if probability is not None:
        columns["_probability"] = probability
    staged = staged.select(*keep, *[F.col(c) for c in m_names], *[v.alias(k) for k, v in columns.items()])
    far = F.col("far") & ~F.col("flagged")
    noise = (F.col("segment") == -1) & ~F.col("flagged") & ~far
    cases = None
    for unknown, text in reversed(unknown_reasons):
        cases = F.when(unknown, text) if cases is None else cases.when(unknown, text)
    far_text = F.format_string(f"far from every segment (distance %.2f > {model.outlier_distance:.2f})",
                               F.col("_distance"))
    cases = F.when(far, far_text) if cases is None else cases.when(far, far_text)
    cases = cases.when(noise, F.lit("in no dense region (noise)"))
    reason = cases.otherwise(F.lit(""))
    final = F.when(F.col("flagged") | far, F.lit(-1).cast("long")).otherwise(F.col("segment"))
    name = None
    for sid, text in sorted(model.segment_names.items()):
        name = F.when(final == sid, F.lit(text)) if name is None else name.when(final == sid, F.lit(text))
    name = F.lit("Unassigned") if name is None else name.otherwise(F.lit("Unassigned"))
    out = [F.col(_ID) if has_id else F.monotonically_increasing_id().alias(_ID), final.alias("segment"),
           name.alias("segment_name")]
    if probability is not None:
        out.append(F.when(final == -1, F.lit(float("nan"))).otherwise(F.col("_probability")).alias("probability"))
    out.append(reason.alias("reason"))
    return staged.select(*out)


def means_by_segment(model: SegmentationModel, spark_df: DataFrame, columns: Sequence[str]
                     ) -> tuple[dict[int, dict[str, float]], dict[str, float]]:
    """The mean of each of ``columns`` (numeric) per segment of ``model`` over the rows of
    ``spark_df``, and each column's standard deviation over all rows (the sample one, as
    pandas' ``std``); missing values are left out, as pandas leaves them out.

    A row's segment is the estimator's label (nearest centre, or most probable component)
    without ``label_map`` and without the outlier rule: the labels a local fit gives its own
    customers.  What :func:`custseg.model.align` takes to keep the ids of a previous model."""
    F = _spark()
    _check_frame(spark_df)
    names, build = matrix_columns(model.preprocessor)
    m_names = [f"_m{i}" for i in range(len(names))]
    rule = _rule(F, [F.col(c) for c in m_names], model.estimator)
    if rule is None:
        raise ConfigError(f"{{param}}: a {type(model.estimator).__name__} model has no segments on Spark here",
                          param="model")
    a_names = [f"_a{i}" for i in range(len(columns))]
    staged = spark_df.select(*[e.alias(n) for e, n in zip(build(F), m_names)],
                             *[_as_double(F, c).alias(n) for c, n in zip(columns, a_names)])
    staged = staged.select(rule[0].cast("long").alias("_label"), *a_names)
    rows = staged.groupBy("_label").agg(*[F.avg(n).alias(n) for n in a_names]).collect()
    means = {int(r["_label"]): {c: (math.nan if r[n] is None else float(r[n])) for c, n in zip(columns, a_names)}
             for r in rows}
    spread = {}
    if a_names:
        row = staged.agg(*[F.stddev_samp(n).alias(n) for n in a_names]).first()
        spread = {c: (math.nan if row[n] is None else float(row[n])) for c, n in zip(columns, a_names)}
    return means, spread


def _assign_in_batches(model: SegmentationModel, spark_df: DataFrame) -> DataFrame:
    """``model.assign`` on each batch of rows (for models without a Spark form)."""
    from pyspark.sql import types as T

    from custseg.cluster import ALGORITHMS

    id_type = spark_df.schema[_ID].dataType if _ID in spark_df.columns else T.LongType()
    fields = [T.StructField(_ID, id_type), T.StructField("segment", T.LongType()),
              T.StructField("segment_name", T.StringType())]
    spec = ALGORITHMS.get(model.algorithm)
    if hasattr(model.estimator, "predict_proba") and not (spec is not None and spec.input == "rfm"):
        fields.append(T.StructField("probability", T.DoubleType()))
    fields.append(T.StructField("reason", T.StringType()))
    schema = T.StructType(fields)
    wanted = [c for c in [_ID, *model.feature_columns] if c in spark_df.columns]

    def run(batches):
        for batch in batches:
            out = model.assign(batch)
            yield out[[f.name for f in fields]]

    return spark_df.select(*wanted).mapInPandas(run, schema)


# --- fitting on Spark ----------------------------------------------------------------------


@dataclass
class _Fit:
    """One configuration fitted on Spark: the kept seed's parameters, and every seed's cost."""

    algorithm: str
    k: int
    estimator: Any  # the exported scikit-learn estimator
    costs: list[float]  # training cost per seed (k-means) or minus the log-likelihood (gmm)
    seeds: list[int]
    seed: int
    seconds: float
    n_iter: int
    extra: dict[str, Any] = field(default_factory=dict)


def _kmeans_estimator(centres: np.ndarray, names: list[str], cost: float, n_iter: int) -> Any:
    """A fitted scikit-learn ``KMeans`` whose ``cluster_centers_`` are ``centres``.

    It is fitted for one step on the centres themselves (each centre its own segment, whose
    mean is the centre exactly) so that every fitted attribute is scikit-learn's own; the
    centres are then set again, as given.
    """
    from sklearn.cluster import KMeans

    centres = np.asarray(centres, dtype="float64")
    estimator = KMeans(n_clusters=len(centres), init=centres, n_init=1, max_iter=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate centres: fewer distinct clusters than k
        estimator.fit(pd.DataFrame(centres, columns=names))
    estimator.cluster_centers_ = centres.copy()
    estimator.labels_ = np.arange(len(centres), dtype=np.int32)
    estimator.inertia_ = float(cost)
    estimator.n_iter_ = int(n_iter)
    return estimator


def _gmm_estimator(weights: np.ndarray, means: np.ndarray, covariances: np.ndarray, names: list[str],
                   n_iter: int) -> Any:
    """A fitted :class:`custseg.cluster.GaussianMixtureClustering` with these parameters (full
    covariances, ``reg_covar`` added to the diagonal as scikit-learn's fit adds it)."""
    from scipy import linalg
    from sklearn.mixture import GaussianMixture

    from custseg.cluster import GaussianMixtureClustering

    means = np.asarray(means, dtype="float64")
    k, p = means.shape
    covariances = np.asarray(covariances, dtype="float64") + _REG_COVAR * np.eye(p)[None, :, :]
    chol = np.empty_like(covariances)
    for j in range(k):
        try:
            lower = linalg.cholesky(covariances[j], lower=True)
        except linalg.LinAlgError:
            raise DataError(f"gmm with k={k}: component {j}'s covariance is singular (too few customers in it); "
                            "lower {param} or use kmeans", param="k_values") from None
        chol[j] = linalg.solve_triangular(lower, np.eye(p), lower=True).T
    weights = np.asarray(weights, dtype="float64")
    mixture = GaussianMixture(n_components=k, covariance_type="full", reg_covar=_REG_COVAR, random_state=0)
    mixture.weights_ = weights / weights.sum()
    mixture.means_ = means
    mixture.covariances_ = covariances
    mixture.precisions_cholesky_ = chol
    mixture.precisions_ = np.stack([c @ c.T for c in chol])
    mixture.converged_ = True
    mixture.n_iter_ = int(n_iter)
    mixture.lower_bound_ = float("nan")
    mixture.n_features_in_ = p
    estimator = GaussianMixtureClustering(k, covariance_type="full", random_state=0)
    estimator.mixture_ = mixture
    estimator.means_ = mixture.means_
    estimator.cluster_centers_ = mixture.means_
    estimator.weights_ = mixture.weights_
    estimator.covariances_ = mixture.covariances_
    estimator.converged_ = True
    estimator.n_iter_ = int(n_iter)
    estimator.labels_ = np.empty(0, dtype=np.int64)  # the customers' labels stay on Spark
    estimator.n_clusters_ = k
    estimator.n_features_in_ = p
    estimator.feature_names_in_ = np.asarray(names, dtype=object)
    return estimator


def _shifted_vectors(matrix: DataFrame, m_names: list[str]) -> tuple[DataFrame, np.ndarray]:
    """The matrix's rows as vectors moved so that their mean is (1, ..., 1), and the shift.

    MLlib's ``BisectingKMeans`` starts each split from the segment's centre plus and minus a
    random vector times 1e-4 |centre|: a standardized matrix has its centre at the origin, both
    starts are then the same point and the first split never happens (one segment of
    everyone, whatever k).  Distances do not change with the shift; the centres found are
    moved back by it."""
    from pyspark.ml.feature import VectorAssembler

    F = _spark()
    row = matrix.agg(*[F.avg(c).alias(c) for c in m_names]).first()
    shift = np.array([1.0 - float(row[c] or 0.0) for c in m_names], dtype="float64")
    moved = matrix.select(*[(F.col(c) + F.lit(float(v))).alias(c) for c, v in zip(m_names, shift)])
    vectors = VectorAssembler(inputCols=m_names, outputCol="features").transform(moved).select("features")
    return vectors.persist(), shift


def _fit_one(name: str, k: int, vectors: DataFrame, seeds: list[int], names: list[str], n_rows: int,
             matrix: DataFrame | None = None, m_names: list[str] | None = None,
             shifted: tuple[DataFrame, np.ndarray] | None = None) -> _Fit:
    """Fit ``name`` with ``k`` segments on Spark once per seed and keep the lowest training cost.

    ``gmm`` starts, as scikit-learn's ``init_params="kmeans"`` does, from the K-Means segments
    (the best of the seeds) and runs EM on Spark (:func:`_em_on_spark`, on ``matrix``'s columns
    ``m_names``); its ``costs`` are those of the K-Means starts.  ``bisecting_kmeans`` is fitted
    on ``shifted`` (:func:`_shifted_vectors`; made here when not given).
    """
    from pyspark.ml.clustering import BisectingKMeans, KMeans

    started = time.perf_counter()
    shift = None
    if name == "bisecting_kmeans":
        if shifted is None:
            if matrix is None or m_names is None:
                raise ValueError("bisecting_kmeans needs the matrix columns")
            shifted = _shifted_vectors(matrix, m_names)
        vectors, shift = shifted
    best, costs = None, []
    for seed in seeds:
        if name in ("kmeans", "gmm"):
            fitted = KMeans(k=k, seed=seed, maxIter=_MAX_ITER["kmeans"], tol=_KMEANS_TOL).fit(vectors)
        else:
            fitted = BisectingKMeans(k=k, seed=seed, maxIter=_MAX_ITER[name]).fit(vectors)
        cost = float(fitted.summary.trainingCost)
        costs.append(cost)
        if best is None or cost < best[0]:
            best = (cost, seed, fitted)
    cost, seed, fitted = best
    n_iter = int(getattr(fitted.summary, "numIter", 0) or 0)
    centres = np.array([c for c in fitted.clusterCenters()], dtype="float64")
    if shift is not None:
        centres = centres - shift
    extra: dict[str, Any] = {}
    if name == "gmm":
        if matrix is None or m_names is None:
            raise ValueError("gmm needs the matrix columns")
        estimator, n_iter, extra = _em_on_spark(matrix, m_names, centres, names, n_rows)
    else:
        estimator = _kmeans_estimator(centres, names, cost, n_iter)
    return _Fit(name, k, estimator, costs, list(seeds), seed, time.perf_counter() - started, n_iter, extra)


def _moments(frame: DataFrame, m: list[Column], resp: list[Column], score: Column | None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """One pass over all rows: per component j the sums of ``resp[j]``, ``resp[j] * x`` and
    ``resp[j] * x x^T`` (and the sum of ``score``)."""
    F = _spark()
    k, p = len(resp), len(m)
    pairs = [(i, l) for i in range(p) for l in range(i, p)]
    r_names = [f"_r{j}" for j in range(k)]
    staged = frame.select(*[c.alias(f"_x{i}") for i, c in enumerate(m)], *[r.alias(n) for r, n in zip(resp, r_names)],
                          *([score.alias("_score")] if score is not None else []))
    x = [F.col(f"_x{i}") for i in range(p)]
    aggregates = []
    for j, r in enumerate(F.col(n) for n in r_names):
        aggregates.append(F.sum(r).alias(f"_n{j}"))
        aggregates += [F.sum(r * x[i]).alias(f"_s{j}_{i}") for i in range(p)]
        aggregates += [F.sum(r * x[i] * x[l]).alias(f"_q{j}_{i}_{l}") for i, l in pairs]
    if score is not None:
        aggregates.append(F.sum("_score").alias("_score"))
    row = staged.agg(*aggregates).first()
    counts = np.array([row[f"_n{j}"] for j in range(k)], dtype="float64")
    firsts = np.array([[row[f"_s{j}_{i}"] for i in range(p)] for j in range(k)], dtype="float64")
    seconds = np.zeros((k, p, p))
    for j in range(k):
        for i, l in pairs:
            seconds[j, i, l] = seconds[j, l, i] = row[f"_q{j}_{i}_{l}"]
    return counts, firsts, seconds, float(row["_score"]) if score is not None else math.nan


def _m_step(counts: np.ndarray, firsts: np.ndarray, seconds: np.ndarray, n_rows: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's M-step of a full-covariance mixture from the sums of :func:`_moments`
    (``reg_covar`` is added by :func:`_gmm_estimator`)."""
    nk = counts + 10 * _EPS
    means = firsts / nk[:, None]
    covariances = seconds / nk[:, None, None] - means[:, :, None] * means[:, None, :]
    weights = nk / n_rows
    return weights / weights.sum(), means, covariances


def _em_on_spark(matrix: DataFrame, m_names: list[str], centres: np.ndarray, names: list[str], n_rows: int
                 ) -> tuple[Any, int, dict[str, Any]]:
    """EM for a full-covariance Gaussian mixture on Spark, as scikit-learn's ``GaussianMixture``
    runs it: the first M-step from the K-Means segments around ``centres``, then E- and M-steps
    (one pass over all rows each) until the mean log-likelihood changes by less than 1e-3, at
    most 100 times.

    Hand-written because MLlib's ``GaussianMixture`` cannot start from given segments: from its
    random start it reached another optimum than scikit-learn's on planted segments (ARI 0.58
    between the two at 10,000 customers, 4 segments), while both K-Means agree.
    """
    F = _spark()
    m = [F.col(c) for c in m_names]
    k = len(centres)
    label = _argmin(F, _squared_distances(F, m, centres))
    counts, firsts, seconds, _ = _moments(matrix, m, [F.when(label == j, 1.0).otherwise(0.0) for j in range(k)], None)
    weights, means, covariances = _m_step(counts, firsts, seconds, n_rows)
    previous, converged, n_iter, lower = -math.inf, False, 0, math.nan
    for n_iter in range(1, _MAX_ITER["gmm"] + 1):
        estimator = _gmm_estimator(weights, means, covariances, names, n_iter)
        lp = _weighted_log_prob(F, m, estimator.mixture_)
        staged = matrix.select(*m, *[v.alias(f"_lp{j}") for j, v in enumerate(lp)])
        lp_cols = [F.col(f"_lp{j}") for j in range(k)]
        top = F.greatest(*lp_cols) if k > 1 else lp_cols[0]
        lse = top + F.log(_sum([F.exp(v - top) for v in lp_cols]))
        staged = staged.select(*m, *lp_cols, lse.alias("_lse"))
        resp = [F.exp(F.col(f"_lp{j}") - F.col("_lse")) for j in range(k)]
        counts, firsts, seconds, total = _moments(staged, m, resp, F.col("_lse"))
        lower = total / n_rows
        weights, means, covariances = _m_step(counts, firsts, seconds, n_rows)
        if abs(lower - previous) < _GMM_TOL:
            converged = True
            break
        previous = lower
    estimator = _gmm_estimator(weights, means, covariances, names, n_iter)
    estimator.converged_ = estimator.mixture_.converged_ = converged
    estimator.mixture_.lower_bound_ = lower
    return estimator, n_iter, {"log_likelihood_per_customer": lower, "converged": converged}


# --- the sweep -----------------------------------------------------------------------------


def _knee(X: np.ndarray, seed: int, n_init: int) -> int | None:
    """Kneedle knee of the K-Means elbow of ``X`` (the sample's matrix) for k = 1..15, or None
    (:func:`_elbow` with the curve itself).

    As the local flow draws it (:func:`custseg.selection.compare`: on its sample, k = 1..15
    whatever ``k_values`` are): an elbow fitted on a sample tracks the full-data curve within
    1-3%, and a knee read from ``k_values`` alone moved with them (k = 2..5 at 1M customers gave
    3 where the local flow's elbow gave 4).  Each k keeps the best of ``n_init`` starts, as the
    sweep does on Spark: with one start the sample's elbow at 1M customers had its knee at 5
    where the local flow's had 4.
    """
    return _elbow(X, seed, n_init)[0]


def _elbow(X: np.ndarray, seed: int, n_init: int) -> tuple[int | None, pd.DataFrame]:
    """``(knee, elbow)``: the knee of :func:`_knee` and the curve it was read from (columns
    ``k``, ``inertia``, as :attr:`custseg.selection.SelectionResult.elbow`)."""
    from threadpoolctl import threadpool_limits

    from custseg.cluster import make_estimator
    from custseg.selection import elbow_knee

    n_distinct = int(np.unique(X, axis=0).shape[0])
    x = [1, *range(2, min(_ELBOW_K_MAX, n_distinct) + 1)]
    y = [float(((X - X.mean(axis=0)) ** 2).sum())]
    with threadpool_limits(limits=1):  # many small fits: one thread each, as custseg.selection
        y += [float(make_estimator("kmeans", n_clusters=k, random_state=seed, n_init=n_init).fit(X).inertia_)
              for k in x[1:]]
    elbow = pd.DataFrame({"k": np.asarray(x, dtype="int64"), "inertia": np.asarray(y, dtype="float64")})
    return elbow_knee(elbow), elbow


def _sample_scores(X: np.ndarray, labels: np.ndarray, distances: np.ndarray, rows: np.ndarray) -> dict[str, float]:
    """Silhouette (on the rows ``rows`` of the sample, from their distances), Davies-Bouldin and
    Calinski-Harabasz (on the whole sample) of one labelling; NaN where undefined."""
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    out = {"silhouette": math.nan, "davies_bouldin": math.nan, "calinski_harabasz": math.nan}
    if 2 <= np.unique(labels).size <= labels.size - 1:
        out["davies_bouldin"] = float(davies_bouldin_score(X, labels))
        out["calinski_harabasz"] = float(calinski_harabasz_score(X, labels))
        drawn = labels[rows]
        if 2 <= np.unique(drawn).size <= drawn.size - 1:
            out["silhouette"] = float(silhouette_score(distances, drawn, metric="precomputed"))
    return out


#: How many rows of the sample the stability of each configuration is measured on (the size of
#: the local sweep's sample).
STABILITY_SAMPLE = 10_000


def _sample_stability(fit: _Fit, X: np.ndarray, labels: np.ndarray, rows: np.ndarray, seed: int) -> float:
    """``stability`` of a fit made on Spark: its labels of ``rows`` of the sample against
    scikit-learn refits of the same algorithm and k on seeded 80% subsamples of those rows
    (:func:`custseg.selection.stability`), as the local sweep measures it.  A refit per
    subsample on Spark would cost a Spark fit each; these cost a fraction of a second."""
    from custseg.selection import stability

    return stability(fit.algorithm, fit.k, X[rows], labels[rows], random_state=seed)


def _gmm_parameters(k: int, p: int) -> int:
    return k * p * (p + 1) // 2 + k * p + k - 1


def segment_on_spark(
    spark_df: DataFrame,
    feature_columns: Sequence[str],
    *,
    algorithms: Sequence[str] = ("kmeans",),
    k_values: Iterable[int] = range(2, 9),
    seeds: int = 3,
    sample: int = 20_000,
    silhouette_sample: int = 5_000,
    random_state: int = 0,
    min_share: float = 0.02,
    algorithm: str | None = None,
    n_clusters: int | None = None,
) -> tuple[SegmentationModel, pd.DataFrame, DataFrame]:
    """Sweep ``algorithms`` x ``k_values`` on Spark and return the recommended model.

    ``spark_df`` is a customer table (Spark DataFrame, one row per ``customer_id``) with
    ``feature_columns`` (numeric or text); it is not modified.  Returns ``(model, leaderboard,
    labels)`` as the module docstring says.  The preprocessing is
    :func:`fit_preprocessing_on_spark`'s; each configuration is fitted on all rows with
    ``seeds`` seeds (the best kept); the metrics that need distances between customers are
    computed on a seeded sample of at most ``sample`` rows (the silhouette on at most
    ``silhouette_sample`` of them), the segment sizes, inertia and log-likelihood on all rows.
    The recommendation is :func:`custseg.selection.recommend`'s rule with the knee of the K-Means
    elbow of the sample (k = 1..15, as the local flow's); ``algorithm`` and/or ``n_clusters``
    force a choice as there.

    >>> from custseg.datasets import make_customers                       # doctest: +SKIP
    >>> table, _ = make_customers(20_000)                                  # doctest: +SKIP
    >>> model, board, labels = segment_on_spark(spark.createDataFrame(table),  # doctest: +SKIP
    ...     ["recency_days", "frequency", "monetary"], k_values=range(2, 7))
    >>> model.save("model.skops")                                          # doctest: +SKIP
    """
    swept = sweep_on_spark(spark_df, feature_columns, algorithms=algorithms, k_values=k_values, seeds=seeds,
                           sample=sample, silhouette_sample=silhouette_sample, random_state=random_state,
                           min_share=min_share, algorithm=algorithm, n_clusters=n_clusters)
    return swept.model, swept.leaderboard, assign_on_spark(swept.model, spark_df)


@dataclass(frozen=True)
class Swept:
    """What :func:`sweep_on_spark` found: the model and leaderboard of :func:`segment_on_spark`,
    with the evidence behind them (the :class:`custseg.selection.Recommendation` with its
    reasons, the sample's K-Means ``elbow`` and its ``knee``, the fitted
    :class:`~custseg.preprocessing.Preprocessor` with its decisions) and ``customers``, the
    number of rows segmented."""

    model: SegmentationModel
    leaderboard: pd.DataFrame
    recommendation: Any
    elbow: pd.DataFrame
    knee: int | None
    preprocessor: Preprocessor
    customers: int


def sweep_on_spark(
    spark_df: DataFrame,
    feature_columns: Sequence[str],
    *,
    algorithms: Sequence[str] = ("kmeans",),
    k_values: Iterable[int] = range(2, 9),
    seeds: int = 3,
    sample: int = 20_000,
    silhouette_sample: int = 5_000,
    random_state: int = 0,
    min_share: float = 0.02,
    algorithm: str | None = None,
    n_clusters: int | None = None,
) -> Swept:
    """The sweep of :func:`segment_on_spark` (the same arguments and checks), without assigning
    the customers: a :class:`Swept` with the evidence a run folder records."""
    from pyspark.ml.feature import VectorAssembler
    from sklearn.metrics import pairwise_distances

    from custseg.selection import LEADERBOARD_COLUMNS, recommend

    F = _spark()
    _check_frame(spark_df)
    kinds = _column_kinds(spark_df, feature_columns)
    names = _check_algorithms(algorithms)
    seeds = _check_count("seeds", seeds, 1)
    sample = _check_count("sample", sample, 10)
    silhouette_sample = _check_count("silhouette_sample", silhouette_sample, 10)
    min_share = _check_min_share(min_share)
    seed_list = _seeds(random_state, seeds)
    if algorithm is not None and algorithm not in names:
        raise ConfigError(f"{{param}} {algorithm!r} is not among the algorithms swept ({', '.join(names)}); add it "
                          "to algorithms", param="algorithm")
    if _ID not in spark_df.columns:
        raise SchemaError("{param} has no customer_id column; name the customer identifier customer_id",
                          param="spark_df")
    columns = list(kinds)
    n_rows = spark_df.count()
    ks = _check_k_values(k_values, n_rows)
    if n_clusters is not None and n_clusters not in ks:
        raise ConfigError(f"{{param}}={n_clusters!r} is not among k_values ({', '.join(map(str, ks))}); add it to "
                          "k_values", param="n_clusters")

    # The sample, with each numeric column's smallest value on Spark so that the log1p decision
    # (all values >= 0) holds for every row.
    local = _sample_rows(spark_df, columns, n_rows, sample, seed_list[0])
    numeric = [c for c in columns if kinds[c] == "numeric"]
    deciding = local
    if numeric:
        lows = spark_df.agg(*[F.min(_as_double(F, c)).alias(f"_{i}") for i, c in enumerate(numeric)]).first()
        low_rows = []
        for i, c in enumerate(numeric):
            low = lows[f"_{i}"]
            if low is not None and (local[c].isna().all() or low < local[c].min()):
                row = local.iloc[[0]].copy()
                row[c] = low
                low_rows.append(row)
        if low_rows:
            deciding = pd.concat([local, *low_rows], ignore_index=True)
    preprocessor = fit_preprocessing_on_spark(spark_df, columns, sample_rows=deciding)
    transformer = preprocessor.transformer
    used, raw = preprocessor.columns, preprocessor.numeric  # as the local flow: the columns kept
    out_names, build = matrix_columns(transformer)
    m_names = [f"_m{i}" for i in range(len(out_names))]
    matrix = spark_df.select(
        F.col(_ID), *[_as_double(F, c).alias(f"_r{i}") for i, c in enumerate(raw)],
        *[e.alias(n) for e, n in zip(build(F), m_names)],
    )
    # Every K-Means iteration and EM step is a job over all partitions: a table made from pandas
    # comes in one partition per Arrow batch (100 at 1M rows), each a task per iteration.
    try:
        cores = spark_df.sparkSession.sparkContext.defaultParallelism
        target = max(2 * cores, math.ceil(n_rows / _ROWS_PER_PARTITION))
        if matrix.rdd.getNumPartitions() > target:
            matrix = matrix.coalesce(target)
    except Exception:  # noqa: BLE001 - a Spark Connect session has no RDDs: leave the partitions as they are
        pass
    matrix = matrix.persist()
    vectors = VectorAssembler(inputCols=m_names, outputCol="features").transform(matrix).select("features").persist()
    shifted = None
    try:
        if "bisecting_kmeans" in names:
            shifted = _shifted_vectors(matrix, m_names)
        fits = [_fit_one(name, k, vectors, seed_list, out_names, n_rows, matrix, m_names, shifted)
                for name in names for k in ks]

        # One pass over all rows: every configuration's segment sizes and inertia / log-likelihood.
        m = [F.col(c) for c in m_names]
        labelled, aggregates = [], []
        for i, fit in enumerate(fits):
            label, _, score = _rule(F, m, fit.estimator)
            labelled += [label.alias(f"_l{i}"), score.alias(f"_s{i}")]
            aggregates += [F.sum(F.when(F.col(f"_l{i}") == j, 1).otherwise(0)).alias(f"_c{i}_{j}")
                           for j in range(fit.k)]
            aggregates.append(F.sum(F.col(f"_s{i}")).alias(f"_t{i}"))
        totals = matrix.select(*m, *labelled).agg(*aggregates).first()

        X_sample = np.asarray(transformer.transform(local[used]), dtype="float64")
        rng = np.random.default_rng([seed_list[0], 4])
        sil_rows = (np.sort(rng.choice(len(X_sample), size=silhouette_sample, replace=False))
                    if len(X_sample) > silhouette_sample else np.arange(len(X_sample)))
        distances = pairwise_distances(X_sample[sil_rows])
        frame = pd.DataFrame(X_sample, columns=out_names)
        stability_rows = (np.sort(rng.choice(len(X_sample), size=STABILITY_SAMPLE, replace=False))
                          if len(X_sample) > STABILITY_SAMPLE else np.arange(len(X_sample)))
        records, sample_labels = [], {}
        for i, fit in enumerate(fits):
            counts = np.array([totals[f"_c{i}_{j}"] for j in range(fit.k)], dtype="float64")
            labels = np.asarray(fit.estimator.predict(frame)).astype("int64")
            sample_labels[(fit.algorithm, fit.k)] = labels
            score = float(totals[f"_t{i}"])
            bic = aic = math.nan
            if fit.algorithm == "gmm":
                n_params = _gmm_parameters(fit.k, len(out_names))
                bic = -2 * score + n_params * math.log(n_rows)
                aic = -2 * score + 2 * n_params
            records.append({
                "algorithm": fit.algorithm, "n_clusters": fit.k,
                "inertia": score if fit.algorithm != "gmm" else math.nan,
                **_sample_scores(X_sample, labels, distances, sil_rows),
                "bic": bic, "aic": aic, "stability": _sample_stability(fit, X_sample, labels, stability_rows, seed_list[0]),
                "min_share": float(counts.min() / n_rows), "noise_share": 0.0,
                "fit_seconds": fit.seconds, "on_sample": False,
            })
        leaderboard = pd.DataFrame.from_records(records, columns=list(LEADERBOARD_COLUMNS)).astype(
            {"algorithm": str, "n_clusters": np.int64, "on_sample": bool}
            | {c: float for c in LEADERBOARD_COLUMNS[2:-1]})
        knee, elbow = _elbow(X_sample, int(random_state), seeds)
        choice = recommend(leaderboard, knee=knee, algorithm=algorithm, n_clusters=n_clusters, min_share=min_share)
        chosen = next(f for f in fits if f.algorithm == choice.algorithm and f.k == choice.n_clusters)
        model = _export(chosen, matrix, m_names, raw, transformer, used, local,
                        sample_labels[(chosen.algorithm, chosen.k)], n_rows=n_rows, random_state=random_state,
                        recommendation=choice, knee=knee)
    finally:
        vectors.unpersist()
        if shifted is not None:
            shifted[0].unpersist()
        matrix.unpersist()
    return Swept(model, leaderboard, choice, elbow, knee, preprocessor, int(n_rows))


def _export(fit: _Fit, matrix: DataFrame, m_names: list[str], raw: list[str], transformer: Any,
            columns: list[str], local: pd.DataFrame, sample_labels: np.ndarray, *,
            n_rows: int, random_state: int, recommendation: Any, knee: int | None) -> SegmentationModel:
    """The :class:`SegmentationModel` of one fit: the member means of each segment (its
    ``centers``), the mean raw features (``reference_means``) and the outlier distance computed
    on Spark over all rows; names from the profiles of the sample."""
    import platform

    import pyspark
    import sklearn

    from custseg import profiling
    from custseg.model import SegmentationModel

    F = _spark()
    m = [F.col(c) for c in m_names]
    label, _, _ = _rule(F, m, fit.estimator)
    grouped = (matrix.select(*m, *[F.col(f"_r{i}") for i in range(len(raw))], label.alias("_label"))
               .groupBy("_label").agg(F.count(F.lit(1)).alias("_n"), *[F.avg(c).alias(c) for c in m_names],
                                      *[F.avg(f"_r{i}").alias(f"_r{i}") for i in range(len(raw))])
               .collect())
    grouped = sorted(grouped, key=lambda r: r["_label"])
    ids = [int(r["_label"]) for r in grouped]
    centers = np.array([[r[c] for c in m_names] for r in grouped], dtype="float64")
    reference = {int(r["_label"]): {c: (float(r[f"_r{i}"]) if r[f"_r{i}"] is not None else math.nan)
                                    for i, c in enumerate(raw)} for r in grouped}
    d2 = _squared_distances(F, m, centers)
    distance = F.sqrt(F.greatest(F.least(*d2) if len(d2) > 1 else d2[0], F.lit(0.0)))
    quantile = matrix.select(distance.alias("_d")).agg(
        F.percentile_approx("_d", _OUTLIER_QUANTILE, _QUANTILE_ACCURACY).alias("_q")).first()["_q"]
    threshold = float(quantile) * _OUTLIER_FACTOR
    profiles = profiling.profile(local, sample_labels, random_state=random_state)
    names = {int(p.segment): p.name for p in profiles.segments}
    segment_names = {s: names.get(s, f"Segment {s}") for s in ids}
    categories = {}
    for group, pipeline, group_columns in transformer.transformers_:
        if group == "categorical":
            imputer_free = [s for _, s in pipeline.steps if hasattr(s, "categories_")]
            for j, c in enumerate(group_columns):
                categories[c] = [str(v) for v in imputer_free[0].categories_[j]] if imputer_free else []
    run = {
        "source": "spark",
        "kind": "customers",
        "customers": int(n_rows),
        "config": {"algorithm": fit.algorithm, "n_clusters": fit.k, "features": columns,
                   "random_state": random_state},
        "recommendation": recommendation.text,
        "knee": knee,
        "spark": {"seeds": fit.seeds, "costs": fit.costs, "kept_seed": fit.seed, "n_iter": fit.n_iter,
                  "sample_rows": int(len(local)), **fit.extra},
        "versions": {"scikit-learn": sklearn.__version__, "numpy": np.__version__, "pandas": pd.__version__,
                     "pyspark": pyspark.__version__, "python": platform.python_version()},
    }
    return SegmentationModel(
        preprocessor=transformer, estimator=fit.estimator, algorithm=fit.algorithm, feature_columns=columns,
        categories=categories, segment_ids=ids, segment_names=segment_names, centers=centers,
        outlier_distance=threshold, reference_means=reference, run=run, label_map={},
    )
