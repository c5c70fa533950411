"""Segmenting on Spark: a customer table too large to bring to this machine.

With the Spark engine, :func:`custseg.pipeline.run_segmentation` brings a customer table of at
most ``Settings.spark_local_max_customers`` customers here and clusters it as the local flow
does; a larger one stays on Spark (:func:`custseg.pipeline.prepare.customer_table` with
``local_max``: the features of a transaction log computed there, or a customer table cleaned
there by :func:`custseg.engines.spark_customers.clean_customers`) and :func:`segment_on_engine`
segments it there:

- the sweep, the final fit and the model are :func:`custseg.engines.spark_ml.sweep_on_spark`'s
  (K-Means, bisecting K-Means and Gaussian mixtures on every customer; the metrics that compare
  customers with each other, and the elbow, on a seeded sample);
- a seeded sample of at most :data:`SAMPLE` customers is brought here with their segments, and
  the describe step (:func:`custseg.pipeline.describe.describe`) profiles and names the segments
  from it, as for any run;
- segment sizes, shares and value shares are then counted on Spark over every customer, and
  ``assignments.csv`` and ``features.parquet`` are written from Spark, part by part, never as
  one table here (:meth:`SparkSegmentationResult.write_customer_files`, which
  :func:`custseg.runs.write_run` calls), with ``rfm.csv`` scored on Spark (:func:`rfm_on_spark`);
- with a previous model, the segments keep its ids as in a local run: the segment means and
  the columns' spread that the matching reads are computed on Spark over every customer.

The run folder has the files of a local run; ``run.json`` (``run.clustered_on``, ``run.sample``)
and the cleaning notes (shown by the report) say which numbers come from the sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from custseg.errors import ConfigError, CustsegError, DataError, literal
from custseg.pipeline.describe import SegmentationResult
from custseg.pipeline.prepare import CustomerTable, Loaded, Prepared, naming
from custseg.request import SegmentConfig

if TYPE_CHECKING:
    import pandas as pd

    from custseg.model import SegmentationModel
    from custseg.profiling import Profiles
    from custseg.rfm import SegmentMap

__all__ = ["SAMPLE", "SparkSegmentationResult", "segment_on_engine", "assign_on_engine", "write_on_engine",
           "rfm_on_engine", "rfm_on_spark", "write_from_spark"]

#: Customers brought here (a seeded sample) to profile and name the segments of a table
#: clustered on Spark.
SAMPLE = 20_000

_ID = "customer_id"
_ASSIGNMENT_COLUMNS = (_ID, "segment", "segment_name", "probability")
_ROWS_PER_CHUNK = 100_000  # rows brought here at a time when the executors cannot reach the run folder


@dataclass(frozen=True)
class SparkSegmentationResult(SegmentationResult):
    """A :class:`~custseg.pipeline.describe.SegmentationResult` of a table clustered on Spark.

    ``customers`` is the whole customer table, left on Spark (``customers.on_engine``);
    ``profiles`` were drawn from the sample, with the sizes, shares and value shares of every
    customer; ``labels``, ``assignments`` and ``matrix`` are those of the sample
    (``sample``, its features); ``assigned`` is every customer's assignment, a Spark DataFrame.
    """

    sample: pd.DataFrame | None = None
    assigned: Any = None  # Spark DataFrame: customer_id, segment, segment_name[, probability]
    scored: Any = None  # Spark DataFrame: every customer's RFM scores (rfm.score's columns), or None

    def write_customer_files(self, folder: Path) -> list[Path]:
        """``assignments.csv``, ``features.parquet`` (and ``rfm.csv``, and ``contacts.parquet``
        for a customer table with an email column) of every customer, written from Spark, with
        ``customer_id`` named as outputs name it (``row`` for customers numbered by row)."""
        folder = Path(folder)
        named = self._named
        written = [write_from_spark(named(self.assigned), folder / "assignments.csv"),
                   write_from_spark(named(self.customers.table.frame), folder / "features.parquet")]
        if self.scored is not None:
            written.append(write_from_spark(named(self.scored), folder / "rfm.csv"))
        contacts = getattr(self.customers.table, "contacts", None)  # a customer table cleaned on Spark
        if contacts is not None:
            written.append(write_from_spark(named(contacts), folder / "contacts.parquet"))
        return written

    def _named(self, frame: Any) -> Any:
        """``frame`` with ``customer_id`` named as the customer table's outputs name it."""
        name = self.customers.id_name
        return frame if name == _ID else frame.withColumnRenamed(_ID, name)


def segment_on_engine(
    loaded: Loaded,
    made: CustomerTable,
    *,
    config: SegmentConfig = SegmentConfig(),
    limit: int,
    previous: SegmentationModel | None = None,
    segment_map: SegmentMap | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    started: float,
    sample_size: int | None = None,
) -> SparkSegmentationResult:
    """Segment ``made`` (a customer table left on Spark, more than ``limit`` customers) there.

    Sweeps, fits and assigns on Spark; profiles, names and the run record come from the
    describe step run on a seeded sample of at most ``sample_size`` (default :data:`SAMPLE`)
    customers; the sizes are counted over all.  With ``previous``, segments keep the ids of the
    previous model's segments they match, as :func:`custseg.pipeline.fit.fit` keeps them
    (:func:`_keep_ids`).  An algorithm Spark does not have is a one-line
    :class:`~custseg.errors.ConfigError` naming the parameter and the way out.
    """
    from custseg import cluster
    from custseg.engines import spark_ml
    from custseg.pipeline.choose import Choice
    from custseg.pipeline.describe import describe
    from custseg.pipeline.fit import Fitted
    from custseg.selection import Recommendation, SelectionResult

    frame, n = made.table.frame, int(made.customers)
    sample_size = SAMPLE if sample_size is None else sample_size
    algorithms, algorithm = _algorithms(config, n, limit)
    if config.n_clusters is not None and config.n_clusters >= n:
        raise DataError(f"{literal(loaded.table.label)}: {{param}} {config.n_clusters} needs more than "
                        f"{config.n_clusters} customers, found {n}; lower {{param}}", param="n_clusters")
    sampled = _sample(made, n, sample_size, config.random_state)
    table = sampled.features
    from custseg import preprocessing

    if config.features:
        columns = list(config.features)
    else:  # outcomes are results, not traits: profiled, not clustered on
        with naming(loaded):
            columns = [c for c in preprocessing.default_feature_columns(table, kind=made.kind) if c not in made.outcomes]
    unknown = [c for c in columns if c not in frame.columns]
    if unknown:
        usable = [c for c in frame.columns if c != _ID]
        raise ConfigError(f"{literal(loaded.table.label)}: {{param}} {literal(', '.join(unknown))}: no such column "
                          f"among the customer features; choose among {literal(', '.join(usable))}", param="features")
    if progress:
        progress("comparing algorithms × k on Spark", 0, 1)
    with naming(loaded):
        try:
            swept = spark_ml.sweep_on_spark(
                frame.select(_ID, *columns), columns, algorithms=algorithms, k_values=_k_values(config, n),
                random_state=config.random_state, algorithm=algorithm, n_clusters=config.n_clusters,
                sample=sample_size,
            )
        except CustsegError as exc:  # in the terms of a run: the parameters of custseg segment
            param = {"feature_columns": "features", "k_values": "n_clusters"}.get(exc.param, exc.param)
            if param == exc.param:
                raise
            raise type(exc)(exc.template, param=param) from None
    if progress:
        progress("comparing algorithms × k on Spark", 1, 1)
    model, alignment = swept.model, None
    if previous is not None:  # the ids of the previous model's segments, as a local fit keeps them
        model, alignment = _keep_ids(model, frame, previous)
    k = len(model.segment_ids)
    # The run's own customers each get their nearest segment (or most probable component), as
    # a local fit labels them; the outlier rule is for customers the model has not seen.
    own = replace(model, outlier_distance=math.inf)
    used = swept.preprocessor.columns
    labels = own.assign(table)["segment"].to_numpy().astype("int64")
    matrix = model.preprocessor.transform(table[used])
    prepared = Prepared(loaded, sampled, used, swept.preprocessor, matrix, matrix.select_dtypes("number"),
                        cluster.ALGORITHMS.get(config.algorithm))
    found = swept.recommendation
    recommendation = Recommendation(found.algorithm, found.n_clusters, [*found.reasons, (
        f"clustered on Spark: every fit, segment size and inertia covers all {n:,} customers; silhouette, "
        f"Davies-Bouldin, Calinski-Harabasz and the elbow were measured on a seeded sample of "
        f"{min(sample_size, n):,}, stability on {min(sample_size, n, spark_ml.STABILITY_SAMPLE):,} of them (scikit-learn "
        "refits of the same algorithm on 80% subsamples against the Spark fit's labels)")], found.text)
    choice = Choice(SelectionResult(swept.leaderboard, swept.elbow, swept.knee, recommendation), model.algorithm, k)
    fitted = Fitted(cluster.ALGORITHMS[model.algorithm], model.estimator, labels,
                    dict(model.label_map) if alignment is not None else None, alignment)
    described = describe(prepared, choice, fitted, config=config, segment_map=segment_map, started=started)

    names = {**model.segment_names, **{p.segment: p.name for p in described.profiles.segments if p.segment != -1}}
    named = replace(own, segment_names={int(s): names[int(s)] for s in model.segment_ids})
    assigned = spark_ml.assign_on_spark(named, frame)
    assigned = assigned.select(*[c for c in _ASSIGNMENT_COLUMNS if c in assigned.columns])
    value = described.profiles.value_column
    profiles = _exact_sizes(described.profiles, assigned, frame if value in frame.columns else None, value, n, names)
    note = (f"clustered on Spark ({n:,} customers, more than spark_local_max_customers {limit:,}): profiles, names, "
            f"rules and the charts drawn from them (lifts, means, RFM mix) come from a seeded sample of "
            f"{len(table):,} customers; segment sizes, shares, value shares, assignments and features cover all "
            f"{n:,}")
    customers = replace(made, report=replace(made.report, notes=(*made.report.notes, note)))
    record = dict(described.model.run)
    record.update({
        "customers": n,
        "clustered_on": "spark",
        "spark_local_max_customers": limit,
        "sample": {"customers": len(table), "of": n, "random_state": config.random_state,
                   "from_sample": ["profiles", "names", "rules", "segment_means", "segment_lifts", "rfm_mix",
                                   "silhouette", "davies_bouldin", "calinski_harabasz", "elbow"],
                   "all_customers": ["segment sizes", "shares", "value shares", "assignments", "features",
                                     "inertia", "bic", "aic", "model"]},
        "fingerprint": f"{record.get('fingerprint', '')} of the sample",
        "spark": model.run.get("spark", {}),
        "versions": {**record.get("versions", {}), **{k_: v for k_, v in model.run.get("versions", {}).items()
                                                      if k_ == "pyspark"}},
    })
    final = replace(named, outlier_distance=model.outlier_distance, run=record)
    values = {f.name: getattr(described, f.name) for f in fields(SegmentationResult)}
    values.update(customers=customers, profiles=profiles, model=final, n_clusters=k, rfm=None,
                  selection=choice.selection)
    scored = rfm_on_spark(frame, segment_map, n) if described.rfm is not None else None
    return SparkSegmentationResult(**values, sample=table, assigned=assigned, scored=scored)


def _keep_ids(model: SegmentationModel, frame: Any, previous: SegmentationModel
              ) -> tuple[SegmentationModel, Any]:
    """``model`` (fitted on Spark, its ids its estimator's labels) with the ids of ``previous``'s
    segments it matches, and the :class:`~custseg.model.Alignment`.

    The match is the local fit's (:func:`custseg.pipeline.fit.fit`): the mean of every numeric
    customer column the previous model has reference means for, per segment, and each column's
    standard deviation as the unit, here computed on Spark over every customer
    (:func:`custseg.engines.spark_ml.means_by_segment`); :func:`custseg.model.align` matches them."""
    import numpy as np
    from pyspark.sql import types as T

    from custseg.engines import spark_ml
    from custseg.model import align

    known = {c for means in previous.reference_means.values() for c in means}
    shared = [f.name for f in frame.schema.fields if f.name != _ID and f.name in known
              and isinstance(f.dataType, (T.NumericType, T.BooleanType))]
    means, spread = spark_ml.means_by_segment(model, frame, shared)
    new_means = {s: means[s] for s in sorted(means) if s != -1}
    # In standard deviations of this table: the previous model keeps its means, not their spread.
    alignment = align(new_means, previous.reference_means, scale={c: spread[c] or 1.0 for c in shared})
    mapping = {int(s): int(t) for s, t in alignment.mapping.items()}
    fresh = max([*mapping.values(), *previous.segment_ids, -1]) + 1
    for s in model.segment_ids:  # a segment no customer is nearest to now (counted in the same pass): a new id
        if s not in mapping:
            mapping[s], fresh = fresh, fresh + 1
    order = sorted(model.segment_ids, key=lambda s: mapping[s])
    rows = [model.segment_ids.index(s) for s in order]
    kept = replace(
        model, segment_ids=[mapping[s] for s in order], centers=np.asarray(model.centers)[rows],
        segment_names={mapping[s]: name for s, name in model.segment_names.items()},
        reference_means={mapping[s]: values for s, values in model.reference_means.items()},
        label_map=mapping,
    )
    return kept, alignment


def rfm_on_engine(made: CustomerTable, segment_map: SegmentMap | None) -> tuple[Any, pd.DataFrame]:
    """:func:`custseg.rfm.score` and :func:`custseg.rfm.summary` of a customer table left on
    Spark (``made.on_engine``): the scores as a Spark DataFrame (:func:`rfm_on_spark`, the id
    named as outputs name it) and the summary, counted there (exact medians, as pandas'), with
    the checks and errors of the local scoring."""
    import pandas as pd
    from pyspark.sql import functions as F

    from custseg import rfm

    if segment_map is not None and segment_map is not rfm.DEFAULT_SEGMENT_MAP:
        segment_map = rfm.validate_segment_map(segment_map, source="{param}")
    frame = made.table.frame
    rfm.check_columns(frame.columns)
    values = rfm.NEEDED[1:]
    empty = frame.agg(*[F.sum(F.col(c).isNull().cast("long")).alias(c) for c in values]).first()
    for column in values:
        if empty[column]:
            raise rfm.empty_values(column, int(empty[column]),
                                   frame.where(F.col(column).isNull()).select(_ID).first()[0])
    scored = rfm_on_spark(frame, segment_map, int(made.customers)).persist()
    rows = scored.groupBy("rfm_segment").agg(
        F.count("*").alias("customers"), F.sum(F.col("monetary").cast("double")).alias("revenue"),
        *[F.percentile(F.col(c).cast("double"), 0.5).alias(f"median_{c}")
          for c in ("recency_days", "frequency", "monetary")]).collect()
    table = pd.DataFrame([row.asDict() for row in rows]).astype({"customers": "int64"})
    summary = rfm.summary_of_segments(table)
    name = made.id_name
    return (scored if name == _ID else scored.withColumnRenamed(_ID, name)), summary


def rfm_on_spark(frame: Any, segment_map: SegmentMap | None, n: int) -> Any:
    """:func:`custseg.rfm.score` of every customer of ``frame``, on Spark: the same quintile
    edges (exact percentiles, linear as pandas'), bins and segment map; ties that
    :func:`custseg.rfm.quintile_scores` breaks by order of appearance (frequency always, and a
    column whose quintile edges collide) are broken by the order of the Spark table."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from custseg import rfm

    segment_map = rfm.DEFAULT_SEGMENT_MAP if segment_map is None else segment_map
    base = frame.select(_ID, "recency_days", "frequency", "monetary")
    edges = base.agg(*[F.percentile(F.col(c).cast("double"), F.array(*[F.lit(q / 5) for q in range(6)])).alias(c)
                       for c in ("recency_days", "monetary")]).first()
    columns = {}
    ranked = []
    for column, ascending, rank_first in (("recency_days", False, False), ("frequency", True, True),
                                          ("monetary", True, False)):
        cuts = [float(e) for e in edges[column]] if not rank_first else None
        if cuts is None or len(set(cuts)) < len(cuts):  # ranks (1..n) instead, ties by order
            ranked.append(column)
            value = F.col(f"_rank_{column}").cast("double")
            cuts = [1 + (n - 1) * q / 5 for q in range(6)]
        else:
            value = F.col(column).cast("double")
        # pandas.qcut's bins: (e0, e1] (the lowest value included), (e1, e2], ...
        bin_ = _sum_columns([F.when(value > F.lit(cut), 1).otherwise(0) for cut in cuts[1:5]]) + F.lit(1)
        score = bin_ if ascending else F.lit(6) - bin_
        columns[column[0] + "_score"] = F.lit(3) if n == 1 else score
    staged = base
    if ranked:
        staged = staged.withColumn("_order", F.monotonically_increasing_id())
        for column in ranked:
            staged = staged.withColumn(f"_rank_{column}",
                                       F.row_number().over(Window.orderBy(F.col(column), F.col("_order"))))
    scores = [columns[c].cast("long").alias(c) for c in ("r_score", "f_score", "m_score")]
    staged = staged.select(_ID, "recency_days", "frequency", "monetary", *scores)
    code = F.concat(*[F.col(c).cast("string") for c in ("r_score", "f_score", "m_score")])
    lookup = F.create_map(*[x for c in rfm._ALL_CODES for x in (F.lit(c), F.lit(rfm._segment_of(c, segment_map)))])
    return staged.select("*", code.alias("rfm_code")).select("*", lookup[F.col("rfm_code")].alias("rfm_segment"))


def _sum_columns(terms: list) -> Any:
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _algorithms(config: SegmentConfig, n: int, limit: int) -> tuple[tuple[str, ...], str | None]:
    """The algorithms swept on Spark and the one asked for (None for auto)."""
    from custseg.engines.spark_ml import SPARK_ALGORITHMS

    here = ", ".join(SPARK_ALGORITHMS[:-1]) + " or " + SPARK_ALGORITHMS[-1]
    if config.algorithm == "auto":
        missing = [c for c in config.candidates if c not in SPARK_ALGORITHMS]
        if missing:
            raise ConfigError(
                f"{{param}} {literal(', '.join(missing))}: cluster on this machine only, and the customer table has "
                f"{n:,} customers (more than {{param:spark_local_max_customers}} {limit:,}); compare among "
                f"{', '.join(SPARK_ALGORITHMS)}, or raise {{param:spark_local_max_customers}} to {n} to segment it "
                "here", param="candidates")
        return tuple(dict.fromkeys(config.candidates)), None
    if config.algorithm not in SPARK_ALGORITHMS:
        raise ConfigError(
            f"{{param}} {literal(config.algorithm)} clusters on this machine only, and the customer table has {n:,} "
            f"customers (more than {{param:spark_local_max_customers}} {limit:,}); choose {here} (clustered on "
            f"Spark), or raise {{param:spark_local_max_customers}} to {n} to segment it here", param="algorithm")
    return (config.algorithm,), config.algorithm


def _k_values(config: SegmentConfig, n: int) -> tuple[int, ...]:
    """As :func:`custseg.pipeline.choose.k_values_for`: the k asked for with a named algorithm,
    else the configured range cut to the table (plus an asked k)."""
    if config.n_clusters and config.algorithm != "auto":
        return (config.n_clusters,)
    k_values = tuple(k for k in config.k_values if k < n) or config.k_values[:1]
    if config.n_clusters:
        k_values = tuple(sorted({*k_values, config.n_clusters}))
    return k_values


def _sample(made: CustomerTable, n: int, size: int, seed: int) -> CustomerTable:
    """A seeded random sample of at most ``size`` customers of ``made``, brought here as a local
    customer table (the local flow's types: :func:`custseg.engines.spark.to_local`)."""
    import duckdb
    import numpy as np

    from custseg import features
    from custseg.engines import spark

    frame = made.table.frame
    fraction = min(1.0, 1.1 * size / n + 100 / n)
    drawn = features.to_frame(spark.to_local(spark.SparkRelation(frame.sample(withReplacement=False,
                                                                              fraction=fraction, seed=seed))))
    if len(drawn) > size:
        rows = np.sort(np.random.default_rng([seed, 5]).choice(len(drawn), size=size, replace=False))
        drawn = drawn.iloc[rows].reset_index(drop=True)
    if len(drawn) < 3:
        raise DataError(f"{len(drawn)} customer(s) in the sample of {n:,}; segments need at least 3")
    return CustomerTable(duckdb.connect().from_df(drawn), made.report, made.as_of, made.kind,
                         outcomes=made.outcomes, id_name=made.id_name)


def _exact_sizes(profiles: Profiles, assigned: Any, frame: Any, value: str | None, n: int,
                 names: dict[int, str]) -> Profiles:
    """``profiles`` with every segment's customers, share, value share and mean value counted on
    Spark over all customers (a segment the sample missed gets a row of its own)."""
    import numpy as np
    import pandas as pd
    from pyspark.sql import functions as F

    from custseg.profiling import SegmentProfile

    if frame is not None:
        valued = assigned.select(_ID, "segment").join(
            frame.select(_ID, F.col(value).cast("double").alias("_value")), _ID)
        rows = valued.groupBy("segment").agg(F.count(F.lit(1)).alias("_n"), F.sum("_value").alias("_v")).collect()
    else:
        rows = assigned.groupBy("segment").agg(F.count(F.lit(1)).alias("_n")).collect()
    counts = {int(r["segment"]): int(r["_n"]) for r in rows}
    sums = {int(r["segment"]): float(r["_v"] or 0.0) for r in rows} if frame is not None else None
    total = sum(sums.values()) if sums else 0.0
    known = {p.segment for p in profiles.segments}
    missed = [SegmentProfile(s, names.get(s, f"Segment {s}"), "too few customers in the sample to profile", 0, 0.0,
                             None, None, "", math.nan, math.nan, ()) for s in sorted(set(counts) - known)]
    segments = []
    for p in sorted((*profiles.segments, *missed), key=lambda p: p.segment):
        count = counts.get(p.segment, 0)
        value_share, mean_value = p.value_share, p.mean_value
        if sums is not None:
            value_share = sums.get(p.segment, 0.0) / total if total else None
            mean_value = sums.get(p.segment, 0.0) / count if count else None
        segments.append(replace(p, customers=count, share=count / n, value_share=value_share, mean_value=mean_value))
    table = profiles.table.set_index("segment")
    extra = [p for p in segments if p.segment not in table.index]
    if extra:
        table = pd.concat([table, pd.DataFrame([{"name": p.name, "description": p.description, "rule": p.rule}
                                                 for p in extra], index=[p.segment for p in extra])])
    for column, values in (("customers", [p.customers for p in segments]), ("share", [p.share for p in segments]),
                           ("value_share", [p.value_share for p in segments]),
                           ("mean_value", [p.mean_value for p in segments])):
        table[column] = pd.Series(np.asarray([np.nan if v is None else v for v in values], dtype="float64"),
                                  index=[p.segment for p in segments]).reindex(table.index)
    table = table.loc[[p.segment for p in segments]].rename_axis("segment").reset_index()
    table["customers"] = table["customers"].astype("int64")
    ranked = [p for p in segments if p.segment != -1 and p.mean_value is not None and p.customers]
    best = max(ranked, key=lambda p: p.mean_value).segment if ranked else None
    worst = min(ranked, key=lambda p: p.mean_value).segment if ranked else None
    return replace(profiles, segments=tuple(segments), table=table, best=best, worst=worst)


# --- writing from Spark ---------------------------------------------------------------------

def assign_on_engine(loaded: Loaded, made: CustomerTable, saved: Any, out: Path) -> pd.Series:
    """The customers of a table left on Spark (``made.on_engine``) in the segments of ``saved``
    (a :class:`custseg.model.SegmentationModel`), assigned there
    (:func:`custseg.engines.spark_ml.assign_on_spark`: the model's rule as Spark expressions)
    and written to ``out`` (.csv or .parquet) from there, part by part, all or nothing; returns
    the customers per segment name, most first, counted there."""
    import pandas as pd

    from custseg.engines import spark_ml

    with naming(loaded):  # e.g. a table without the columns the model was trained on
        assigned = spark_ml.assign_on_spark(saved, made.table.frame)
    if made.id_name != "customer_id":
        assigned = assigned.withColumnRenamed("customer_id", made.id_name)
    assigned = assigned.persist()
    try:
        write_on_engine([(assigned, out, "out")])
        counts = {row[0]: int(row[1]) for row in assigned.groupBy("segment_name").count().collect()}
    finally:
        assigned.unpersist()
    return pd.Series(counts, name="count", dtype="int64").sort_values(ascending=False, kind="stable")


def write_on_engine(files: list[tuple[Any, Path, str]]) -> list[Path]:
    """Write Spark DataFrames, ``(frame, path, param)`` each (.csv or .parquet), all or none
    (:func:`custseg.outputs.write_together`, each file written from Spark by
    :func:`write_from_spark`)."""
    from custseg import outputs

    for _, path, param in files:
        if Path(path).suffix.lower() not in (".csv", ".parquet"):
            raise ConfigError(f"{{param}} {literal(path)}: a table left on Spark is written as .csv or .parquet; "
                              "give one of those", param=param)

    def from_spark(sheets: dict[str, Any], tmp: str, path: Path, option: str) -> None:
        write_from_spark(sheets["data"], Path(tmp))

    return outputs.write_together([({"data": frame}, path, param) for frame, path, param in files], write=from_spark)


def write_from_spark(frame: Any, path: Path, *, through_driver: bool | None = None) -> Path:
    """Write a Spark DataFrame to ``path`` (.csv or .parquet) as :func:`custseg.outputs.write_table`
    writes a table (CSV text neutralised for spreadsheets; timestamps in microseconds, without
    a zone, as DuckDB writes them), one partition at a time: the rows never gather here.

    ``through_driver`` (default: unless the master is local) brings the rows here a chunk at a
    time instead of having the executors write them beside ``path``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from custseg import outputs

    path = Path(path)
    csv = path.suffix.lower() == ".csv"
    writer = None
    try:
        with open(path, "w", newline="", encoding="utf-8") if csv else _nothing() as fh:
            first = True
            for part in _parts(frame, path.parent, through_driver):
                chunk = _text_as_strings(_local_types(part).to_pandas())  # pandas' types, as a local run's
                if csv:
                    outputs.neutralise(chunk).to_csv(fh, header=first, index=False)
                else:
                    part = pa.Table.from_pandas(chunk, preserve_index=False)
                    if writer is None:
                        writer = pq.ParquetWriter(path, part.schema)
                    writer.write_table(part.cast(writer.schema))
                first = False
        if not csv and writer is None:
            raise DataError("Spark gave no rows to write; run again", param="out")
    except OSError as exc:
        raise outputs.cannot_write(path, exc, option="out") from None
    finally:
        if writer is not None:
            writer.close()
    return path


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _parts(frame: Any, near: Path, through_driver: bool | None = None):
    """``frame``'s rows as Arrow tables, one Spark partition each: written by the executors to a
    temporary folder beside ``near`` when they share this machine's disk (a local master),
    else (or with ``through_driver``) brought here :data:`_ROWS_PER_CHUNK` rows at a time."""
    import shutil
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    session = frame.sparkSession
    if through_driver is None:
        try:
            through_driver = not session.sparkContext.master.startswith("local")
        except Exception:  # noqa: BLE001 - Spark Connect: no context here, the executors are elsewhere
            through_driver = True
    if not through_driver:
        folder = Path(tempfile.mkdtemp(prefix=".spark-", dir=near))
        try:
            session.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
            frame.write.mode("overwrite").parquet((folder / "parts").resolve().as_uri())
            for part in sorted((folder / "parts").glob("part-*")):
                yield pq.read_table(part)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    import pandas as pd

    rows: list = []
    for row in frame.toLocalIterator():
        rows.append(tuple(row))
        if len(rows) >= _ROWS_PER_CHUNK:
            yield pa.Table.from_pandas(pd.DataFrame.from_records(rows, columns=frame.columns), preserve_index=False)
            rows = []
    if rows:
        yield pa.Table.from_pandas(pd.DataFrame.from_records(rows, columns=frame.columns), preserve_index=False)


def _local_types(table: Any) -> Any:
    """Timestamps as DuckDB writes them (microseconds, no zone: the session's UTC wall clock)."""
    import pyarrow as pa

    schema = pa.schema([pa.field(f.name, pa.timestamp("us")) if pa.types.is_timestamp(f.type) else
                        pa.field(f.name, pa.string()) if pa.types.is_large_string(f.type) else f for f in table.schema])
    return table.cast(schema) if schema != table.schema else table


def _text_as_strings(frame: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    text = [c for c in frame.columns if frame[c].dtype == object or pd.api.types.is_string_dtype(frame[c])]
    return frame.astype({c: "string" for c in text}) if text else frame
