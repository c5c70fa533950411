"""Customer tables cleaned on Spark: :func:`custseg.cleaning.clean_customers`'s rules, for a
table (one row per customer) too large to bring to this machine.

:func:`clean_customers` takes the view ``source`` of a :class:`~custseg.engines.spark.SparkRunner`
and gives the feature table as a Spark DataFrame, kept in Spark's memory, with the report the
local cleaning writes.  The steps, each a pass of Spark over the rows:

1. rows: those without a customer id are dropped, then exact copies of a row (every column
   equal), then every row of a repeated id but its first in the source's order (the order of
   the files' rows, as :meth:`custseg.engines.spark.SparkDialect.source_row` numbers them);
2. values: how each column is read — a CSV read by Spark is text throughout, so a text column
   whose values are all numbers (blank cells aside) is read as numbers, one of true/false as
   booleans, one whose values are all dates of one format (Spark's own reading, then
   :data:`custseg.cleaning._DATE_FORMATS`) as dates, and a date-named column of whole numbers
   written yyyymmdd as dates, as DuckDB's reading and the local rules read the same file;
3. statistics of every column (:class:`custseg.cleaning.ColumnStats`), from which
   :func:`custseg.cleaning.treat_column` decides what becomes of it, and the latest date, from
   which :func:`custseg.cleaning.customers_as_of` decides the day durations run up to: the
   decisions are the local path's own functions, not a copy of them;
4. gaps: a missing number gets the column's median, a missing category its most frequent value
   (ties: the smallest).  The median is Spark's ``percentile_approx`` with accuracy
   :data:`MEDIAN_ACCURACY`: a value of the column whose rank is within ``n / MEDIAN_ACCURACY``
   of the middle.  For a column of at most that many values it is the lower of the two middle
   values, where pandas' median is their mean: the two differ by at most half the gap between
   the middle values (on the Customer Personality table's Income, 51,381.5 locally and
   51,373.0 here, of 2,216 values).  Everything else — the rows kept, the counts of the
   report, the columns kept and dropped and why, durations, ages and flags — is exact.

The errors are the local path's (:func:`custseg.cleaning.no_customer_left`,
:func:`custseg.cleaning.nothing_describes`, an ``as_of`` before the latest date).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from custseg import cleaning
from custseg.engines.spark import SPARK, SparkRelation
from custseg.schema import ColumnMap

if TYPE_CHECKING:
    import pandas as pd

    from custseg.sources import Table

__all__ = ["MEDIAN_ACCURACY", "SparkCustomers", "CustomerRelation", "clean_customers"]

#: ``percentile_approx``'s accuracy for the medians that fill gaps: rank error at most n / this.
MEDIAN_ACCURACY = 1_000_000

_ROW = "__row"  # the source's order
_ID = "customer_id"


class CustomerRelation(SparkRelation):
    """The feature table of a customer table cleaned on Spark, with its ``contacts``
    (``customer_id, email``, a Spark DataFrame, or None), kept apart from the features."""

    def __init__(self, frame: Any, contacts: Any = None) -> None:
        super().__init__(frame)
        self.contacts = contacts


@dataclass(frozen=True)
class SparkCustomers:
    """A customer table cleaned on Spark (what :class:`custseg.cleaning.CleanCustomers` is locally).

    ``features``: a persisted Spark DataFrame, one row per customer: ``customer_id`` (text) and
    the columns kept (doubles for numbers, durations, ages and outcome flags; text for
    categories), in the source's order; ``customers`` its rows, counted.  ``imputed`` lists
    ``column, missing, method, value`` for the filled gaps.
    """

    features: Any
    customers: int
    report: cleaning.CleaningReport
    dropped_columns: dict[str, str]
    imputed: pd.DataFrame
    as_of: datetime
    contacts: Any = None  # Spark DataFrame customer_id, email: for exports, never a feature


@dataclass(frozen=True)
class _Reading:
    """How one column is read: its kind, its Spark SQL expression over the kept rows, and the
    note reading it earns (or None)."""

    kind: str
    expr: str
    note: str | None = None


def clean_customers(table: Table, column_map: ColumnMap, *, as_of: date | datetime | None = None) -> SparkCustomers:
    """Clean the customer table ``table`` (read by Spark: ``table.con`` a
    :class:`~custseg.engines.spark.SparkRunner`) on Spark, as :func:`custseg.cleaning.clean_customers`
    cleans it locally (see the module docstring), and keep the features in Spark's memory."""
    import pandas as pd
    from pyspark.sql import functions as F

    spark = table.con.spark
    id_col = None if column_map.row_ids else column_map.column("customer_id")
    rows, rows_in, counts = _kept_rows(spark.table("source"), table.columns, id_col)
    outcomes = column_map.outcomes
    email = column_map.get("email")
    columns = [c for c in table.columns if c != id_col]
    readings = _read_values(rows, table, [c for c in columns if c not in outcomes], column_map)
    notes = [r.note for c, r in readings.items() if r.note]
    typed = rows.selectExpr(f"{_id_expression(table, id_col)} AS {_ID}",
                            *[f"{readings[c].expr} AS {_q(c)}" if c in readings else _q(c) for c in columns], _ROW)
    stats, latest = _column_stats(typed, readings)
    as_of_ts = cleaning.customers_as_of(table.label, {c: pd.Timestamp(us, unit="us") for c, us in latest.items()},
                                        as_of)
    dates = sum(r.kind == "date" for r in readings.values())
    unread = cleaning.ColumnStats("text", counts["rows"], 0, 2)  # outcomes: decided by their role alone
    selected, numeric, dropped_columns = [_ID], set(), {}
    for column in columns:
        treatment = cleaning.treat_column(column, stats.get(column, unread), column_map, date_columns=dates)
        if treatment.action == "drop":
            dropped_columns[column] = treatment.why
            continue
        kind = readings[column].kind if column in readings else "text"
        selected.append(_feature(column, treatment, kind, table.types[column], outcomes.get(column), as_of_ts))
        if treatment.action in ("duration", "age", "number"):
            numeric.add(treatment.name)
        if treatment.action == "duration":
            notes.append(cleaning._duration_note(column, treatment.name, as_of_ts))
        elif treatment.action == "age":
            notes.append(cleaning._age_note(column, as_of_ts))
    if not counts["kept"]:
        raise cleaning.no_customer_left(table.label, rows_in, counts["missing_customer_id"], id_col)
    if len(selected) == 1 + len(outcomes):
        raise cleaning.nothing_describes(table.label, id_col, outcomes, dropped_columns)
    features = typed.selectExpr(*selected, _ROW)
    features, imputed_rows = _fill_gaps(features, [c for c in features.columns[1:-1] if c not in outcomes], numeric)
    notes += [cleaning._imputed_note(*row) for row in imputed_rows]
    notes += [cleaning._dropped_note(column, why) for column, why in dropped_columns.items()]
    # In the source's order, as the local cleaning gives them (and writes them).
    features = features.orderBy(_ROW).drop(_ROW).persist()
    customers = int(features.count())
    rows.unpersist()
    contacts = None
    if email is not None:
        contacts = typed.orderBy(_ROW).select(_ID, F.trim(F.col(_q(email)).cast("string")).alias("email"))
    report = cleaning.customer_report(table.label, rows_in, customers, counts, tuple(notes))
    imputed = pd.DataFrame(imputed_rows, columns=["column", "missing", "method", "value"])
    return SparkCustomers(features, customers, report, dropped_columns, imputed, as_of_ts.to_pydatetime(),
                          contacts)


def _q(name: str) -> str:
    return SPARK.quote(name)


def _feature(column: str, treatment: cleaning.Treatment, kind: str, type_name: str, positive: str | None,
             as_of: pd.Timestamp) -> str:
    """The Spark SQL expression (``… AS name``) of the feature ``treatment`` makes of ``column``
    (read as ``kind``; ``type_name`` its type in the source, ``positive`` an outcome's "yes"):
    as :func:`custseg.cleaning.clean_customers` computes it."""
    col, name = _q(column), _q(treatment.name)
    if treatment.action == "outcome":  # 1 = it happened, 0 = it did not, missing stays missing
        yes = f"{_flag_text(col, type_name)} = {SPARK.literal(positive)}"
        return f"CASE WHEN {col} IS NULL THEN NULL WHEN {yes} THEN 1.0D ELSE 0.0D END AS {name}"
    if treatment.action == "duration":  # whole days, floored, up to as_of (wall-clock microseconds)
        as_of_us = int(as_of.value // 1_000)
        return f"CAST(floor(({as_of_us} - unix_micros({col})) / 86400000000D) AS DOUBLE) AS {name}"
    if treatment.action == "age":
        return f"CAST({as_of.year} - try_cast({col} AS DOUBLE) AS DOUBLE) AS {name}"
    if treatment.action == "number":
        return f"CAST({f'CAST({col} AS INT)' if kind == 'boolean' else col} AS DOUBLE) AS {name}"
    return f"CAST({col} AS STRING) AS {name}"


def _kept_rows(source: Any, columns: list[str], id_col: str | None) -> tuple[Any, int, dict[str, int]]:
    """The rows cleaning keeps (persisted; ``__row`` their place in the source), the source's
    rows and the counts of the report (``missing_customer_id``, ``duplicate_row``,
    ``duplicate_customer_id``; ``rows`` and ``kept``: the rows kept).

    Without an id column every row is a customer (equal rows are equal answers of two people)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    numbered = source.withColumn(_ROW, F.monotonically_increasing_id())
    if id_col is None:
        rows = numbered.persist()
        rows_in = int(rows.count())
        return rows, rows_in, {"missing_customer_id": 0, "duplicate_row": 0, "duplicate_customer_id": 0,
                               "rows": rows_in, "kept": rows_in}
    ident = _q(id_col)
    missing = f"{ident} IS NULL OR trim(CAST({ident} AS STRING)) = ''"
    first = numbered.selectExpr("count(*) AS n", f"count_if({missing}) AS missing").first()
    rows_in, missing_id = int(first["n"]), int(first["missing"])
    # Copies of a row are one row, at the place of the first; then each id's first row.
    distinct = (numbered.where(f"NOT ({missing})").groupBy(*[F.col(_q(c)) for c in columns])
                .agg(F.min(_ROW).alias(_ROW)).persist())
    n_distinct = int(distinct.count())
    first_of_id = F.row_number().over(Window.partitionBy(F.col(ident)).orderBy(_ROW))
    rows = distinct.withColumn("__nth", first_of_id).where("__nth = 1").drop("__nth").persist()
    kept = int(rows.count())
    distinct.unpersist()
    counts = {"missing_customer_id": missing_id, "duplicate_row": rows_in - missing_id - n_distinct,
              "duplicate_customer_id": n_distinct - kept, "rows": kept, "kept": kept}
    return rows, rows_in, counts


def _id_expression(table: Table, id_col: str | None) -> str:
    """Customer ids as text, as :func:`custseg.cleaning._id_strings` writes them (whole numbers
    without a decimal part, text trimmed); without an id column, the row's number (1-based)."""
    if id_col is None:
        return f"CAST(row_number() OVER (ORDER BY {_ROW}) AS STRING)"
    col = _q(id_col)
    kind = SPARK.kind(table.types[id_col])
    if kind in ("float", "decimal"):
        return f"CASE WHEN {col} % 1 = 0 THEN CAST(CAST({col} AS BIGINT) AS STRING) ELSE CAST({col} AS STRING) END"
    return f"trim(CAST({col} AS STRING))"


def _flag_text(col: str, type_name: str) -> str:
    """:func:`custseg.schema.flag_text` of a column's values, in Spark SQL."""
    kind = SPARK.kind(type_name)
    if type_name.lower() == "boolean":
        return f"CASE WHEN {col} THEN 'true' ELSE 'false' END"
    if kind in ("float", "decimal"):
        whole = f"CAST(CAST({col} AS BIGINT) AS STRING)"
        return f"CASE WHEN {col} % 1 = 0 THEN {whole} ELSE lower(CAST({col} AS STRING)) END"
    return f"lower(trim(CAST({col} AS STRING)))"


def _read_values(rows: Any, table: Table, columns: list[str], column_map: ColumnMap) -> dict[str, _Reading]:
    """How each of ``columns`` is read (see step 2 of the module docstring): one pass over the
    kept rows for numbers and yyyymmdd dates, one more for the date formats of what is left."""
    kinds = {c: _kind(table.types[c]) for c in columns}
    probes, checks = [], {}
    for column in columns:
        col, kind = _q(column), kinds[column]
        named = cleaning.is_date_name(column, column_map)
        if kind == "text":
            text = f"trim({col})"
            checks[column] = ("text", named)
            probes += [f"count_if({col} IS NULL OR {text} = '')", f"count_if({col} IS NOT NULL AND {text} = '')",
                       f"count_if({text} <> '' AND try_cast({text} AS DOUBLE) IS NULL)",
                       f"count_if({text} <> '' AND NOT {_yyyymmdd_ok(text)})" if named else "1",
                       f"count_if({text} <> '' AND lower({text}) NOT IN ('true', 'false'))"]
        elif kind == "number" and named:
            checks[column] = ("number", True)
            whole = f"CAST(CAST({col} AS BIGINT) AS STRING)"
            probes += [f"count_if({col} IS NULL)", "0", "0",
                       f"count_if({col} IS NOT NULL AND NOT ({col} % 1 = 0 AND {_yyyymmdd_ok(whole)}))", "1"]
    answers = list(rows.selectExpr(*probes, "count(*)").first())
    n = int(answers[-1])
    readings: dict[str, _Reading] = {}
    undecided = []
    for i, column in enumerate(checks):
        empty, blank, not_numbers, not_ymd, not_flags = (int(v) for v in answers[5 * i: 5 * i + 5])
        source_kind, named = checks[column]
        col = _q(column)
        text = f"trim(CAST({col} AS STRING))" if source_kind == "text" else f"CAST(CAST({col} AS BIGINT) AS STRING)"
        if empty == n:  # nothing but blanks: text, as the local reading leaves it
            continue
        if named and not not_ymd:
            readings[column] = _Reading("date", f"try_to_timestamp(NULLIF({text}, ''), 'yyyyMMdd')",
                                        cleaning._yyyymmdd_note(column))
        elif source_kind == "text" and not not_numbers:
            note = cleaning._blank_numbers_note(column, empty) if blank else None
            readings[column] = _Reading("number", f"try_cast(NULLIF({text}, '') AS DOUBLE)", note)
        elif source_kind == "text" and not not_flags:
            flag = f"CASE lower({text}) WHEN 'true' THEN true WHEN 'false' THEN false END"
            readings[column] = _Reading("boolean", flag)
        elif source_kind == "text":
            undecided.append(column)
    readings.update(_read_dates(rows, undecided))
    for column in columns:
        if column not in readings:
            kind = kinds[column]
            expr = f"CAST({_q(column)} AS TIMESTAMP)" if kind == "date" else _q(column)
            readings[column] = _Reading(kind, expr)
    return {c: readings[c] for c in columns}


#: How many kept rows the date formats are first tried on: a format that fails there fails on
#: the whole table, so only the formats (and columns) that read all of them are tried on every row.
_DATE_PROBE_ROWS = 10_000


def _read_dates(rows: Any, columns: list[str]) -> dict[str, _Reading]:
    """The text columns of ``columns`` whose every value is a date of one format (the first
    of Spark's own reading and :data:`custseg.cleaning._DATE_FORMATS` that reads them all).

    The formats are tried on the first :data:`_DATE_PROBE_ROWS` rows, then only those that read
    all of them on every row (usually none: a column of names or categories costs no full pass).
    """
    if not columns:
        return {}
    candidates = {}
    for column in columns:
        text = f"NULLIF(trim({_q(column)}), '')"
        candidates[column] = ([SPARK.try_cast(text, "TIMESTAMP")]
                              + [SPARK.parse_time(text, fmt) for fmt in cleaning._DATE_FORMATS])
    for probe in (rows.limit(_DATE_PROBE_ROWS), rows):
        candidates = _reading_all(probe, candidates)
        if not candidates:
            return {}
    return {column: _Reading("date", cs[0]) for column, cs in candidates.items()}


def _reading_all(rows: Any, candidates: dict[str, list[str]]) -> dict[str, list[str]]:
    """Of each column's candidate readings, those that read every non-blank value of ``rows``
    (in their order; a column left without any is left out), in one pass."""
    exprs = [f"count_if(NULLIF(trim({_q(column)}), '') IS NOT NULL AND {c} IS NULL)"
             for column, cs in candidates.items() for c in cs]
    failures, i, kept = rows.selectExpr(*exprs).first(), 0, {}
    for column, cs in candidates.items():
        reading = [c for c, failed in zip(cs, failures[i: i + len(cs)]) if int(failed) == 0]
        i += len(cs)
        if reading:
            kept[column] = reading
    return kept


def _yyyymmdd_ok(text: str) -> str:
    pattern = SPARK.literal("^" + cleaning.YYYYMMDD + "$")
    return f"({text} RLIKE {pattern} AND try_to_timestamp({text}, 'yyyyMMdd') IS NOT NULL)"


def _kind(type_name: str) -> str:
    """A Spark type as a :class:`custseg.cleaning.ColumnStats` kind."""
    if type_name.lower() == "boolean":
        return "boolean"
    kind = SPARK.kind(type_name)
    return {"integer": "number", "float": "number", "decimal": "number", "date": "date",
            "timestamp": "date"}.get(kind, "text")


def _column_stats(typed: Any, readings: dict[str, _Reading]) -> tuple[dict[str, cleaning.ColumnStats], dict[str, int]]:
    """Every read column's :class:`~custseg.cleaning.ColumnStats` over ``typed`` and each date
    column's latest date (wall-clock microseconds), in one pass: the exact number of different
    values only where :func:`custseg.cleaning.needs_distinct` says the rules read it, else
    whether there is more than one (the least and greatest values differ)."""
    exprs = ["count(*) AS __n"]
    for i, (column, reading) in enumerate(readings.items()):
        col = _q(column)
        exprs.append(f"count({col}) AS c{i}")
        if cleaning.needs_distinct(column, reading.kind):
            exprs.append(f"count(DISTINCT {col}) AS d{i}")
        else:
            exprs.append(f"CASE WHEN count({col}) = 0 THEN 0 WHEN min({col}) = max({col}) THEN 1 ELSE 2 END AS d{i}")
        if reading.kind == "date":
            exprs.append(f"max(unix_micros({col})) AS m{i}")
    row = typed.selectExpr(*exprs).first().asDict()
    n = int(row["__n"])
    stats, latest = {}, {}
    for i, (column, reading) in enumerate(readings.items()):
        stats[column] = cleaning.ColumnStats(reading.kind, n, n - int(row[f"c{i}"]), int(row[f"d{i}"]))
        if reading.kind == "date" and row[f"m{i}"] is not None:
            latest[column] = int(row[f"m{i}"])
    return stats, latest


def _fill_gaps(features: Any, columns: list[str], numeric: set[str]) -> tuple[Any, list[tuple]]:
    """``features`` with the gaps of ``columns`` filled (numbers: the median; text: the most
    frequent value, ties to the smallest) and the rows of ``imputed`` (column, missing, method,
    value): one pass to count the gaps, one for the values of the columns that have some."""
    from pyspark.sql import functions as F

    if not columns:
        return features, []
    missing = features.selectExpr(*[f"count_if({_q(c)} IS NULL)" for c in columns]).first()
    gaps = {c: int(m) for c, m in zip(columns, missing) if m}
    if not gaps:
        return features, []
    values = features.selectExpr(*[
        f"percentile_approx({_q(c)}, 0.5, {MEDIAN_ACCURACY})" if c in numeric else SPARK.mode(_q(c)) for c in gaps
    ]).first()
    rows = []
    filled = {}
    for (column, n), value in zip(gaps.items(), values):
        how = "median" if column in numeric else "most frequent"
        rows.append((column, n, how, float(value) if column in numeric else value))
        filled[column] = F.coalesce(F.col(_q(column)), F.lit(rows[-1][3])).alias(column)
    return features.select(*[filled.get(c, F.col(_q(c))) for c in features.columns]), rows
