"""The Spark engine: the shared cleaning and feature SQL, run by Spark SQL.

:data:`SPARK` is the dialect (the constructs Spark spells its own way); :class:`SparkRunner`
is the runner (``execute(sql)`` → a cursor with ``fetchall()`` and ``description``, over
``spark.sql``).  :func:`read` registers a source as the temporary view ``source`` of a session
and describes it as a :class:`custseg.sources.Table` whose ``con`` is the runner, so that
:mod:`custseg.cleaning` and :mod:`custseg.features` run unchanged.

Sources: Parquet, CSV and JSON paths (local, ``file://``, or any Hadoop file system the
session has: ``hdfs://``, ``s3a://``, ``abfss://`` …; a folder of part files is one source),
a table of the session's catalog (``spark:db.table``), a Spark SQL query (``spark:`` with
``query``) and a JDBC database (``jdbc:…`` with ``table`` or ``query``).

Guards: the session's time zone is set to UTC (timestamps without a zone, such as DuckDB's
Parquet timestamps, read as ``timestamp_ntz``; UTC makes their epoch the wall-clock one, as in
DuckDB); every conversion that may fail is a ``try_`` function (Spark 4 runs in ANSI mode).

>>> SPARK.parse_time("d", "%d/%m/%Y %H:%M")
"try_to_timestamp(d, 'd/M/yyyy H:m')"
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from custseg.engines.dialect import Dialect, ValueKind
from custseg.errors import ConfigError, InputError, literal

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

    from custseg.settings import Settings
    from custseg.sources import Table

__all__ = ["SPARK", "SparkDialect", "SparkRunner", "SparkRelation", "session", "runner", "read", "to_local", "java_pattern",
           "DEFAULT_MASTER"]

#: The master a session gets unless one is given (or spark-submit set one).
DEFAULT_MASTER = "local[*]"

_SPARK_KINDS: dict[str, ValueKind] = {
    **dict.fromkeys(("tinyint", "smallint", "int", "bigint", "byte", "short", "integer", "long"), "integer"),
    **dict.fromkeys(("float", "double", "real"), "float"),
    "string": "text",
    "date": "date",
}

# strptime directive → Java pattern letters.  A field followed by a separator is read with
# the shortest width (1 or 2 digits, as DuckDB's strptime reads "1/2/2011 8:05"); a field
# next to another field, with no separator between them, needs its fixed width.
_DIRECTIVES = {"Y": ("yyyy", "yyyy"), "m": ("M", "MM"), "d": ("d", "dd"), "H": ("H", "HH"),
               "M": ("m", "mm"), "S": ("s", "ss"), "y": ("yy", "yy"), "I": ("h", "hh"), "p": ("a", "a"),
               "b": ("MMM", "MMM"), "B": ("MMMM", "MMMM"), "f": ("SSSSSS", "SSSSSS")}


def java_pattern(fmt: str) -> str:
    """The Java date-time pattern (Spark's) of a strptime format.

    >>> java_pattern("%Y-%m-%dT%H:%M:%S")
    "yyyy-M-d'T'H:m:s"
    >>> java_pattern("%Y%m%d")
    'yyyyMMdd'
    """
    tokens = re.findall(r"%.|[^%]", fmt)
    out = []
    for i, token in enumerate(tokens):
        if token.startswith("%"):
            if token[1] not in _DIRECTIVES:
                raise ConfigError(f"{{param}} {literal(fmt)}: the Spark engine does not read the directive "
                                  f"{literal(token)}; use %Y %m %d %H %M %S %y %I %p %b %B %f", param="date_format")
            short, fixed = _DIRECTIVES[token[1]]
            adjacent = any(0 <= j < len(tokens) and tokens[j].startswith("%") for j in (i - 1, i + 1))
            out.append(fixed if adjacent else short)
        elif token.isalpha():
            out.append("'" + token + "'")
        elif token == "'":
            out.append("''")
        else:
            out.append(token)
    return "".join(out).replace("''''", "")


@dataclass(frozen=True)
class SparkDialect(Dialect):
    """How Spark SQL (4.x, ANSI mode) spells the constructs of :class:`Dialect`."""

    name: str = "spark"
    text: str = "STRING"
    wide_integer: str = "DECIMAL(38,0)"
    splits_by_memory: bool = False  # Spark's shuffle spreads the work: one pass, no partitions

    def kind(self, type_name: str) -> ValueKind:
        lower = type_name.lower()
        if lower.startswith("decimal"):
            return "decimal"
        if lower.startswith("timestamp"):
            return "timestamp"
        return _SPARK_KINDS.get(lower, "other")

    def quote(self, name: str) -> str:
        return "`" + name.replace("`", "``") + "`"

    @staticmethod
    def literal(text: str) -> str:
        # Spark reads backslash escapes inside string literals.
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    def try_cast(self, expr: str, type_name: str) -> str:
        return f"try_cast({expr} AS {type_name})"

    def parse_time(self, text: str, fmt: str) -> str:
        return f"try_to_timestamp({text}, {self.literal(java_pattern(fmt))})"

    def epoch_us(self, expr: str) -> str:
        return f"unix_micros(CAST({expr} AS TIMESTAMP))"

    def matches(self, text: str, pattern: str) -> str:
        return f"({text} RLIKE {self.literal('^(?:' + pattern + ')$')})"

    def bucket(self, expr: str, buckets: int) -> str:
        return f"pmod(hash({expr}), {buckets})"

    def arg_min(self, value: str, key: str) -> str:
        return f"min_by({value}, {key})"

    def row_key(self, *exprs: str) -> str:
        return "struct(" + ", ".join(exprs) + ")"

    def mode(self, expr: str) -> str:
        return f"mode({expr}, true)"  # ties: the smallest value

    def month_start(self, expr: str) -> str:
        return f"date_trunc('MONTH', {expr})"

    def months_between(self, start: str, end: str) -> str:
        return f"((year({end}) - year({start})) * 12 + month({end}) - month({start}))"

    def source_row(self) -> str:
        # The files' order: ids grow with the partition (a file's split) and the row within it.
        return "row_number() OVER (ORDER BY monotonically_increasing_id())"

    def create_view(self, name: str, select: str) -> str:
        return f"CREATE OR REPLACE TEMPORARY VIEW {name} AS {select}"

    def create_table(self, name: str, select: str) -> str:
        """A temporary view of rows computed once, as a table would be (see :class:`Materialise`)."""
        return Materialise(f"CACHE TABLE {name} AS {select}", name, select)

    def insert(self, name: str, select: str) -> str:
        raise NotImplementedError("the Spark engine computes the customer features in one pass (no partitions)")

    def drop_table(self, name: str) -> str:
        return f"DROP VIEW IF EXISTS {name}"  # a dropped temporary view leaves the cache


#: The Spark engine's dialect.
SPARK = SparkDialect()


class Materialise(str):
    """The statement of a temporary table: ``CACHE TABLE name AS select`` as text, with its
    parts.  :class:`SparkRunner` computes the rows once and keeps them apart from the tables
    they came from (a local checkpoint), so that dropping those does not drop these — a view
    made by SQL is kept as its text and resolved again on every use."""

    name: str
    select: str

    def __new__(cls, text: str, name: str, select: str) -> Materialise:
        made = super().__new__(cls, text)
        made.name, made.select = name, select
        return made


# --- the runner ---------------------------------------------------------------------------

@contextmanager
def _quiet_pandas() -> Iterator[None]:
    """pyspark 4.3 warns that it does not yet fully support pandas 3, and its Arrow conversion
    passes pandas 3 a deprecated ``copy`` keyword (where warnings are errors, that makes it give
    up Arrow); the conversions here are checked by the parity tests, so those two are not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
        warnings.filterwarnings("ignore", message="The copy keyword is deprecated")
        yield


class SparkCursor:
    """The answer of one statement: ``fetchall()`` (tuples), ``description`` (name, type, …)."""

    def __init__(self, frame: DataFrame) -> None:
        self._frame = frame

    @property
    def description(self) -> list[tuple[Any, ...]]:
        return [(f.name, f.dataType.simpleString(), None, None, None, None, None) for f in self._frame.schema.fields]

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._frame.collect()]

    def df(self) -> pd.DataFrame:
        return SparkRelation(self._frame).df()


class SparkRelation:
    """A Spark DataFrame with the part of a DuckDB relation's interface the steps use
    (``columns``, ``types``, ``df()``, ``fetchall()``, ``frame`` for Spark itself)."""

    def __init__(self, frame: DataFrame) -> None:
        self.frame = frame

    @property
    def columns(self) -> list[str]:
        return list(self.frame.columns)

    @property
    def types(self) -> list[str]:
        return [f.dataType.simpleString() for f in self.frame.schema.fields]

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.frame.collect()]

    def df(self) -> pd.DataFrame:
        """The rows as a DataFrame (through Arrow); timestamps are the session's (UTC) wall clock."""
        with _quiet_pandas():
            return self.frame.toPandas()

    def aggregate(self, expr: str) -> SparkCursor:
        return SparkCursor(self.frame.selectExpr(expr))


class SparkRunner:
    """Runs SQL on a Spark session: ``execute(sql)`` → :class:`SparkCursor` (statements such as
    ``CACHE TABLE`` and ``CREATE VIEW`` run at once, queries when fetched).

    The runner works in a session of its own on the same cluster (``newSession``): its views
    (``source``, ``typed``, ``kept`` …) and settings meet no other runner's, as two DuckDB
    connections do not; the catalog's tables and global temporary views are shared.  (Spark
    Connect has no such sessions: there the runner uses the session it is given.)
    """

    dialect = SPARK

    def __init__(self, spark: SparkSession) -> None:
        try:
            spark = spark.newSession()
        except Exception:  # noqa: BLE001 - Spark Connect: one session per client
            pass
        self.spark = spark
        # DuckDB reads timestamps without a zone as wall-clock times; so does Spark in UTC.
        spark.conf.set("spark.sql.session.timeZone", "UTC")
        spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")

    def close(self) -> None:
        """Drop this runner's temporary views (and with them the rows they hold)."""
        for table in self.spark.catalog.listTables():
            if table.isTemporary and not table.namespace:  # not the global ones
                self.spark.catalog.dropTempView(table.name)

    def execute(self, sql: str) -> SparkCursor:
        if isinstance(sql, Materialise):
            frame = self.spark.sql(sql.select).localCheckpoint(eager=True)
            frame.createOrReplaceTempView(sql.name)
            return SparkCursor(frame.limit(0))
        return SparkCursor(self.spark.sql(sql))

    def sql(self, sql: str) -> SparkRelation:
        return SparkRelation(self.spark.sql(sql))

    def table(self, name: str) -> SparkRelation:
        return SparkRelation(self.spark.table(name))


# --- sessions -----------------------------------------------------------------------------

def _pyspark():
    from custseg._optional import require

    return require("pyspark.sql", feature="the Spark engine")


def session(master: str | None = None, *, settings: Settings | None = None) -> SparkSession:
    """The Spark session of this process: the one running (spark-submit's, a notebook's) or a
    new one on ``master`` (default: ``settings.spark_master``, else the master spark-submit set,
    else :data:`DEFAULT_MASTER`).  A ``sc://host:15002`` master is a Spark Connect server."""
    sql = _pyspark()
    master = master or (settings.spark_master if settings is not None else None)
    if master is not None and master.startswith("sc://"):
        try:
            return sql.SparkSession.builder.remote(master).getOrCreate()
        except Exception as exc:  # noqa: BLE001 - the client raises many kinds; one line for the user
            first = (str(exc).strip().splitlines() or [""])[0]
            raise ConfigError(f"{{param}} {literal(master)}: cannot reach the Spark Connect server ({literal(first)}); "
                              "check the URL and that the server runs", param="spark_master") from None
    active = sql.SparkSession.getActiveSession()
    if active is not None and master is None:
        return active
    from pyspark import SparkConf

    builder = sql.SparkSession.builder.appName("custseg")
    if master is not None or not SparkConf().contains("spark.master"):
        builder = builder.master(master or DEFAULT_MASTER)
    builder = (builder.config("spark.sql.session.timeZone", "UTC").config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true"))
    try:
        with _quiet_pandas():
            return builder.getOrCreate()
    except Exception as exc:  # noqa: BLE001 - a bad master URL or a missing JVM: one line
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(f"cannot start Spark on {{param}} {literal(master or DEFAULT_MASTER)}: {literal(first)}; "
                          "check the master URL and that Java 17 or newer is installed", param="spark_master") from None


# --- sources ------------------------------------------------------------------------------

_FILE_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv", ".txt": "csv",
                 ".tab": "csv", ".json": "json", ".jsonl": "json", ".ndjson": "json"}


def _format_of(source: str) -> str | None:
    name = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*", "", source).rstrip("/")
    suffixes = [s.lower() for s in Path(name).suffixes]
    for suffix in reversed(suffixes):
        if suffix in _FILE_FORMATS:
            return _FILE_FORMATS[suffix]
    return None


def read(
    source: str,
    runner: SparkRunner,
    *,
    table: str | None = None,
    query: str | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    sheet: str | None = None,
) -> Table:
    """Register ``source`` as the temporary view ``source`` of the runner's session and
    describe it (see the module docstring for the kinds of source).

    CSV is read with a header and every column as text (the cleaning rules read dates and
    numbers from text, as with DuckDB); ``delimiter`` defaults to a comma (a tab for ``.tsv``).
    """
    from custseg.sources import Table, _safe_url

    spark = runner.spark
    text = str(source)
    if sheet is not None:
        raise InputError(f"{literal(text)}: {{param}} goes with an Excel workbook, which the Spark engine does not "
                         "read; convert it to Parquet or CSV, or use {param:engine} duckdb", param="sheet")
    analysis = _analysis_error()
    label = text
    try:
        if text.startswith("spark:"):
            name = text.removeprefix("spark:").strip() or table
            if query:
                frame, fmt = spark.sql(query), "sql"
            elif name:
                frame, fmt = spark.table(name), "sql"
            else:
                raise InputError(f"{literal(text)}: name a table of the Spark catalog (spark:db.table) or give "
                                 "{param:query}", param="table")
        elif text.startswith("jdbc:"):
            if not (table or query):
                raise InputError(f"{literal(_safe_url(text))}: a JDBC source needs {{param:table}} or {{param:query}}",
                                 param="table")
            label = _safe_url(text)
            reader = spark.read.format("jdbc").option("url", text)
            frame = (reader.option("query", query) if query else reader.option("dbtable", table)).load()
            fmt = "sql"
        else:
            if table or query:
                raise InputError(f"{{param:table}}/{{param:query}} go with a spark: or jdbc: source, but "
                                 f"'{literal(text)}' is a path", param="table" if table else "query")
            fmt = _format_of(text)
            if fmt is None:
                raise InputError(f"{literal(text)}: the Spark engine reads .parquet, .csv/.tsv and .json/.jsonl "
                                 "paths (or folders of them); rename it, or use {param:engine} duckdb")
            if fmt == "parquet":
                frame = spark.read.parquet(text)
            elif fmt == "json":
                frame = spark.read.json(text)
            else:
                sep = delimiter or ("\t" if re.search(r"\.(tsv|tab)(\.gz)?/?$", text.lower()) else ",")
                frame = (spark.read.option("header", "true").option("inferSchema", "false")
                         .option("sep", sep).option("encoding", encoding or "UTF-8").option("mode", "PERMISSIVE")
                         .csv(text))
        frame.createOrReplaceTempView("source")
        fields = frame.schema.fields
        rows = frame.limit(1).count()
    except analysis as exc:
        message = str(exc)
        if "PATH_NOT_FOUND" in message or "Path does not exist" in message:
            raise InputError(f"{literal(label)}: no such file or folder; check the path") from None
        if "TABLE_OR_VIEW_NOT_FOUND" in message:
            raise InputError(f"{literal(label)}: no such table in the Spark catalog; check its name",
                             param="table") from None
        first = (message.strip().splitlines() or [""])[0]
        raise InputError(f"{literal(label)}: Spark cannot read it: {literal(first)}") from None
    if not rows:
        raise InputError(f"{literal(label)}: has no data rows; export the data again")
    columns = [f.name for f in fields]
    types = {f.name: f.dataType.simpleString() for f in fields}
    return Table(runner, label, fmt, columns, types, encoding if fmt == "csv" else None,  # type: ignore[arg-type]
                 delimiter if fmt == "csv" else None, (), dialect=SPARK)


def _analysis_error() -> tuple[type[BaseException], ...]:
    """The exceptions Spark raises for a source it cannot read (classic and Connect)."""
    from pyspark.errors import AnalysisException, PySparkException

    kinds: list[type[BaseException]] = [AnalysisException, PySparkException]
    try:
        from py4j.protocol import Py4JJavaError

        kinds.append(Py4JJavaError)
    except ImportError:  # Spark Connect only
        pass
    return tuple(kinds)


def to_local(relation: SparkRelation, columns: Sequence[str] | None = None):
    """A Spark table brought to a DuckDB relation of a new local connection (through pandas and
    Arrow), with DuckDB's types for timestamps (microseconds) and text."""
    import duckdb

    frame = relation.df()
    con = duckdb.connect()
    names = list(columns or frame.columns)
    kinds = dict(zip(relation.columns, relation.types))
    select = []
    for name in names:
        kind = kinds.get(name, "")
        quoted = '"' + name.replace('"', '""') + '"'
        if kind.startswith("timestamp"):
            select.append(f"CAST({quoted} AS TIMESTAMP) AS {quoted}")
        elif kind == "string":
            select.append(f"CAST({quoted} AS VARCHAR) AS {quoted}")
        else:
            select.append(quoted)
    return con.from_df(frame).select(", ".join(select))


def runner(settings: Settings | None = None) -> SparkRunner:
    """A runner on the session of :func:`session`."""
    return SparkRunner(session(settings=settings))
