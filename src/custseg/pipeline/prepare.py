"""Prepare: source → roles → cleaning → customer table (and the RFM, cohort, inspect and assign
views of it) → the matrix a segmentation clusters.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import TYPE_CHECKING, Literal

import duckdb

from custseg import cleaning, features, schema, sources
from custseg.errors import ConfigError, CustsegError, DataError, SchemaError, literal
from custseg.request import SegmentConfig, SourceSpec
from custseg.settings import Settings

if TYPE_CHECKING:  # pandas and the steps that need it load when a step runs: start-up stays short
    import pandas as pd

    from custseg import cohorts, rfm
    from custseg.cluster import AlgorithmSpec
    from custseg.preprocessing import Preprocessor

Kind = Literal["transactions", "customers"]


@dataclass(frozen=True)
class Loaded:
    """A source read, with its column roles and kind, and what was decided on the way
    (``notes``: one line each, shown by ``inspect`` and kept in the run)."""

    table: sources.Table
    column_map: schema.ColumnMap
    notes: tuple[str, ...] = ()

    @property
    def kind(self) -> Kind:
        return self.column_map.kind


@dataclass(frozen=True)
class CustomerTable:
    """One row per customer, whatever the source was, with how it was made.

    ``table`` is the feature table in the engine (a DuckDB relation), whichever kind the source
    was: a transaction log's features are computed there, a customer table (cleaned in pandas)
    is registered there; ``features`` is it as a DataFrame.  A table too large to bring here
    (:func:`customer_table` with ``local_max``) stays in its engine: ``table`` is then that
    engine's relation (``on_engine``; e.g. a :class:`custseg.engines.spark.SparkRelation`) and
    ``customers`` its number of rows, counted there.  ``outcomes`` are the columns of it
    that record a result (0/1), not a trait; ``id_name`` is what outputs call ``customer_id``
    (:data:`custseg.schema.ROW_ID` when the customers are numbered by row).
    """

    table: duckdb.DuckDBPyRelation
    report: cleaning.CleaningReport
    as_of: datetime
    kind: Kind
    clean: cleaning.CleanTransactions | None = None
    contacts: pd.DataFrame | None = None  # customer_id, email (customer tables with an email column)
    outcomes: tuple[str, ...] = ()
    id_name: str = "customer_id"
    customers: int | None = None  # counted in the engine, for a table left there

    @property
    def on_engine(self) -> bool:
        """Whether the table stayed in another engine (too large to bring here)."""
        return not isinstance(self.table, duckdb.DuckDBPyRelation)

    @functools.cached_property
    def features(self) -> pd.DataFrame:
        if self.on_engine:
            raise DataError(f"the customer table has {self.customers:,} customers, more than this step brings to "
                            "this machine; raise {param} to bring it here", param="spark_local_max_customers")
        return features.to_frame(self.table)

    @functools.cached_property
    def shape(self) -> tuple[int, int]:
        """(customers, columns), without making a DataFrame of the table."""
        if self.on_engine:
            return int(self.customers), len(self.table.columns)
        return int(self.table.aggregate("count(*)").fetchall()[0][0]), len(self.table.columns)

    def output_table(self) -> duckdb.DuckDBPyRelation:
        """The feature table with ``customer_id`` named as outputs name it (a table left in
        another engine: that engine's relation)."""
        if self.id_name == "customer_id":
            return self.table
        if self.on_engine:
            from custseg.engines import spark

            return spark.SparkRelation(self.table.frame.withColumnRenamed("customer_id", self.id_name))
        q = sources.quote_name
        return self.table.select(", ".join(f"customer_id AS {q(self.id_name)}" if c == "customer_id" else q(c)
                                           for c in self.table.columns))

    def for_output(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A frame of these customers (scores, assignments) with ``customer_id`` named as outputs
        name it."""
        return frame if self.id_name == "customer_id" else frame.rename(columns={"customer_id": self.id_name})


_GENERATED_NAME = r"column_\d+"


def load(spec: SourceSpec, *, settings: Settings | None = None, one_pass: bool = False) -> Loaded:
    """Read the source and decide column roles and kind (transaction log or customer table).

    A table without a header (columns named ``column_1`` …) gets its roles from the values;
    a customer table without an id column numbers its customers by row; columns named like an
    outcome whose values are yes/no are outcomes (:func:`custseg.schema.outcome_positive`).
    ``one_pass``: the caller only computes the customer table (:func:`customer_table`), which
    reads a transaction log once, so a CSV may be read in place (:func:`custseg.sources.read`).
    """
    if settings is not None and settings.engine == "spark":
        from custseg.engines import spark

        table = spark.read(spec.source, spark.runner(settings), sheet=spec.sheet, table=spec.table,
                           query=spec.query, encoding=spec.encoding, delimiter=spec.delimiter)
    else:
        table = sources.read(
            spec.source, sheet=spec.sheet, table=spec.table, query=spec.query,
            encoding=spec.encoding, delimiter=spec.delimiter, con=sources.connect(settings=settings),
            in_place=one_pass,
        )
    if spec.label:
        table.label = spec.label
    return table.staged_on_error(lambda: _roles_and_kind(spec, table))


def _roles_and_kind(spec: SourceSpec, table: sources.Table) -> Loaded:
    """The rest of :func:`load`, on the table read."""
    import re

    notes = list(table.notes)
    cmap = schema.detect_roles(table.columns, overrides=spec.mapping, source=table.label)
    if table.dialect.name == "duckdb" and all(re.fullmatch(_GENERATED_NAME, c) for c in table.columns):
        table.stage()  # the roles are read from the values: several passes over the columns
        guessed = _roles_from_values(table, spec.mapping)
        if guessed:
            cmap = schema.detect_roles(table.columns, overrides={**guessed, **spec.mapping}, source=table.label)
            cmap = replace(cmap, overridden=tuple(spec.mapping))
            notes.append("no header: roles read from the values: "
                         + ", ".join(f"{role}={column}" for role, column in guessed.items())
                         + "; change them with --map ROLE=COLUMN")
    if "customer_id" not in cmap:
        has_money = ("quantity" in cmap and "unit_price" in cmap) or "amount" in cmap
        looks_like_a_log = "order_id" in cmap or ("ordered_at" in cmap and has_money and spec.kind != "customers")
        if looks_like_a_log or spec.kind == "transactions":
            other_sheet = ", or read another sheet with {param:sheet} NAME" if table.format == "xlsx" else ""
            raise SchemaError(
                f"{literal(table.label)}: no customer id column found among {literal(', '.join(table.columns))}; "
                f"name it with {{param}} customer_id=COLUMN{other_sheet}",
                param="mapping",
            )
        cmap = replace(cmap, row_ids=True)
        notes.append(f"no id column: customers are numbered by row (1-based, '{_row_id_name(table)}' in "
                     "outputs); name an id with --map customer_id=COLUMN")
    kind = spec.kind or _decide_kind(table, cmap)
    cmap = cmap.with_kind(kind)
    outcomes: dict[str, str] = {}
    if kind == "customers":
        for column in cmap.outcomes:
            distinct = [row[0] for row in table.con.execute(
                f"SELECT DISTINCT {table.dialect.quote(column)} FROM source "
                f"WHERE {table.dialect.quote(column)} IS NOT NULL LIMIT 3"
            ).fetchall()]
            positive = schema.outcome_positive(distinct)
            if positive is None and column in spec.mapping.values():
                raise SchemaError(
                    f"{{param}} outcome={literal(column)}: '{literal(column)}' in {literal(table.label)} is not a yes/no "
                    f"column (values such as {literal(', '.join(repr(v) for v in distinct[:3]))}); an outcome has two "
                    "values such as 0/1, yes/no or true/false",
                    param="mapping",
                )
            if positive is not None:
                outcomes[column] = positive
        if outcomes:
            notes.append(
                "outcome column" + ("s " if len(outcomes) > 1 else " ") + ", ".join(f"'{c}'" for c in outcomes)
                + ": a result, not a trait — profiled per segment, left out of the features "
                "(name it in --features to cluster on it)"
            )
    cmap = replace(cmap, outcomes=outcomes)
    return Loaded(table, cmap, tuple(notes))


def _row_id_name(table: sources.Table) -> str:
    """:data:`custseg.schema.ROW_ID`, or ``row_number`` when the source has a column ``row``."""
    taken = {c.casefold() for c in table.columns}
    return schema.ROW_ID if schema.ROW_ID not in taken else "row_number"


def _roles_from_values(table: sources.Table, mapping: Mapping[str, str]) -> dict[str, str]:
    """Roles of a table without a header, read from its values (``--map`` still wins).

    A date column (dates, or whole numbers written yyyymmdd) with a column of repeated ids to
    its left makes a transaction log: the id is the leftmost whole-number or text column whose
    values repeat; the first column with fractions is the amount, the first other whole-number
    column the quantity.  Anything else is a customer table without an id (roles: none).
    """
    con, q = table.con, sources.quote_name
    types = {c: table.types[c].upper() for c in table.columns}
    integer = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")
    stats = {}
    for column in table.columns:
        col = q(column)
        text = f"trim(CAST({col} AS VARCHAR))"
        stats[column] = con.execute(
            f"SELECT count({col}), count(DISTINCT {col}), "
            f"count(*) FILTER (WHERE {col} IS NOT NULL AND try_strptime({text}, '%Y%m%d') IS NULL) "
            f"FROM (SELECT * FROM source LIMIT 200000)"
        ).fetchall()[0]
    date = next((c for c in table.columns
                 if types[c] in ("DATE", "TIMESTAMP")
                 or (types[c] in integer + ("VARCHAR",) and stats[c][0] and stats[c][2] == 0
                     and table.con.execute(f"SELECT min(length(trim(CAST({q(c)} AS VARCHAR)))) = 8 AND "
                                           f"max(length(trim(CAST({q(c)} AS VARCHAR)))) = 8 FROM source").fetchall()[0][0])),
                None)
    if date is None:
        return {}
    left = table.columns[: table.columns.index(date)]
    customer = next((c for c in left if (types[c] in integer or types[c] == "VARCHAR")
                     and 0 < stats[c][1] < stats[c][0]), None)
    if customer is None:
        return {}
    roles = {"customer_id": customer, "ordered_at": date}
    rest = [c for c in table.columns if c not in roles.values()]
    amount = next((c for c in rest if types[c] in ("DOUBLE", "FLOAT", "REAL") or types[c].startswith("DECIMAL")), None)
    if amount is not None:
        roles["amount"] = amount
        quantity = next((c for c in rest if c != amount and types[c] in integer), None)
        if quantity is not None:
            roles["quantity"] = quantity
    taken = set(mapping.values())
    return {role: column for role, column in roles.items() if role not in mapping and column not in taken}


def _decide_kind(table: sources.Table, cmap: schema.ColumnMap) -> Kind:
    """A transaction log has an order id, or order dates with amounts and repeated customers."""
    if "order_id" in cmap:
        return "transactions"
    if cmap.row_ids:
        return "customers"
    has_money = ("quantity" in cmap and "unit_price" in cmap) or "amount" in cmap
    if "ordered_at" in cmap and has_money:
        column = table.dialect.quote(cmap.column("customer_id"))
        distinct, rows = table.con.execute(
            f"SELECT count(DISTINCT {column}), count({column}) FROM source"
        ).fetchall()[0]
        return "transactions" if distinct < rows else "customers"
    return "customers"


def clean(loaded: Loaded, *, policy: cleaning.Policy = cleaning.Policy()) -> cleaning.CleanTransactions:
    """Clean a transaction log (customer tables are cleaned by :func:`customer_table`)."""
    if loaded.kind != "transactions":
        raise SchemaError(
            f"{literal(loaded.table.label)}: is a customer table (one row per customer); this step needs a "
            "transaction log — or pass {param} transactions and map order_id/ordered_at with {param:mapping}",
            param="kind",
        )
    return cleaning.clean_transactions(loaded.table, loaded.column_map, policy=policy)


def customer_table(
    loaded: Loaded,
    *,
    policy: cleaning.Policy = cleaning.Policy(),
    as_of: date | datetime | None = None,
    local_max: int | None = None,
) -> CustomerTable:
    """Customer features from either kind of source.

    Features computed by another engine (Spark) are brought here, unless ``local_max`` is
    given and the table has more customers than that: then it stays there (``on_engine``,
    kept in the engine's memory) for a step that works there (:mod:`custseg.pipeline.on_spark`).
    A customer table read by Spark is cleaned there
    (:func:`custseg.engines.spark_customers.clean_customers`, which reads its text columns as
    DuckDB reads the file), whatever its size, so that a file gives the same customers above and
    below ``local_max``; at most ``local_max`` of them (any number without ``local_max``) are
    brought here.
    """
    if isinstance(as_of, datetime) and as_of.tzinfo is not None:
        # Dates in the data are compared in this machine's time zone (DuckDB's, too).
        as_of = as_of.astimezone().replace(tzinfo=None)
    if loaded.kind == "customers":
        loaded.table.stage()  # a customer table is read by several queries
        id_name = _row_id_name(loaded.table) if loaded.column_map.row_ids else "customer_id"
        if loaded.table.dialect.name == "spark":  # one cleaning on Spark whatever the size: the same answers
            return _customers_on_spark(loaded, as_of=as_of, local_max=local_max, id_name=id_name)
        made = cleaning.clean_customers(loaded.table, loaded.column_map, as_of=as_of)
        con = loaded.table.con if isinstance(loaded.table.con, duckdb.DuckDBPyConnection) else duckdb.connect()
        table = con.from_df(made.features)
        return CustomerTable(table, _with_notes(made.report, loaded.notes), made.as_of, "customers",
                             contacts=made.contacts, outcomes=tuple(loaded.column_map.outcomes), id_name=id_name)

    def compute() -> tuple[cleaning.CleanTransactions, features.CustomerFeatures]:
        cleaned = clean(loaded, policy=policy)
        return cleaned, features.customer_features(cleaned, as_of=as_of)

    cleaned, computed = loaded.table.staged_on_error(compute)
    relation = computed.relation
    customers = None
    if not isinstance(relation, duckdb.DuckDBPyRelation):  # another engine's table: brought here
        from custseg.engines import spark

        if local_max is None:
            relation = spark.to_local(relation)
        else:  # counted there first: a large table stays there, computed once
            kept = spark.SparkRelation(relation.frame.persist())
            customers = int(kept.frame.count())
            if customers <= local_max:
                relation = spark.to_local(kept)
                kept.frame.unpersist()
                customers = None
            else:
                relation = kept
    return CustomerTable(relation, _with_notes(computed.report, loaded.notes), computed.as_of,
                         "transactions", cleaned, customers=customers)


def _customers_on_spark(loaded: Loaded, *, as_of: date | datetime | None, local_max: int | None, id_name: str
                        ) -> CustomerTable:
    """A customer table read by Spark, cleaned there (:func:`custseg.engines.spark_customers.clean_customers`,
    the local rules) and kept there when cleaning leaves more than ``local_max`` customers, else
    (and always without ``local_max``) brought here."""
    from custseg.engines import spark, spark_customers

    made = spark_customers.clean_customers(loaded.table, loaded.column_map, as_of=as_of)
    report = _with_notes(made.report, loaded.notes)
    outcomes = tuple(loaded.column_map.outcomes)
    if local_max is not None and made.customers > local_max:
        return CustomerTable(spark_customers.CustomerRelation(made.features, made.contacts), report, made.as_of,
                             "customers", outcomes=outcomes, id_name=id_name, customers=made.customers)
    table = spark.to_local(spark.SparkRelation(made.features))
    made.features.unpersist()
    contacts = None if made.contacts is None else features.to_frame(spark.to_local(spark.SparkRelation(made.contacts)))
    return CustomerTable(table, report, made.as_of, "customers", contacts=contacts, outcomes=outcomes, id_name=id_name)


def _with_notes(report: cleaning.CleaningReport, notes: tuple[str, ...]) -> cleaning.CleaningReport:
    """The cleaning report with what reading the source decided first."""
    return replace(report, notes=(*notes, *report.notes)) if notes else report


def rfm_table(
    loaded: Loaded,
    *,
    policy: cleaning.Policy = cleaning.Policy(),
    as_of: date | datetime | None = None,
    segment_map: rfm.SegmentMap | None = None,
    customers: CustomerTable | None = None,
) -> tuple[pd.DataFrame, CustomerTable]:
    """RFM scores and segments (``segment_map``: default :data:`custseg.rfm.DEFAULT_SEGMENT_MAP`),
    with the customer table they came from (``customers``: that table, when already made)."""
    from custseg import rfm

    segment_map = rfm.DEFAULT_SEGMENT_MAP if segment_map is None else segment_map
    made = customers if customers is not None else customer_table(loaded, policy=policy, as_of=as_of)
    with naming(loaded):  # e.g. a customer table without RFM columns
        return rfm.score(made.features, segment_map=segment_map), made


def assign_segments(
    loaded: Loaded,
    saved,
    *,
    policy: cleaning.Policy = cleaning.Policy(),
    as_of: date | datetime | None = None,
    customers: CustomerTable | None = None,
) -> pd.DataFrame:
    """The customers of ``loaded`` in the segments of ``saved`` (a
    :class:`custseg.model.SegmentationModel`): ``customer_id, segment, segment_name, ...``
    (``customers``: their table, when already made)."""
    made = customers if customers is not None else customer_table(loaded, policy=policy, as_of=as_of)
    with naming(loaded):  # e.g. a table without the columns the model was trained on
        return made.for_output(saved.assign(made.features))


@contextmanager
def naming(loaded: Loaded) -> Iterator[None]:
    """Errors of the steps inside name the source: the engine's messages do not know it."""
    try:
        yield
    except CustsegError as exc:
        if exc.template.startswith(literal(loaded.table.label)):
            raise
        raise exc.with_prefix(f"{loaded.table.label}: ") from None


def cohort_table(
    loaded: Loaded,
    *,
    policy: cleaning.Policy = cleaning.Policy(),
    by: Literal["country"] | None = None,
) -> cohorts.Cohorts:
    from custseg import cohorts

    return cohorts.retention(clean(loaded, policy=policy), by=by)


@dataclass(frozen=True)
class Inspection:
    """What ``custseg inspect`` shows: columns, roles, types and data quality.

    ``quality["cleaning"]``, when cleaning cannot run, is the error that stops it (a
    :class:`~custseg.errors.CustsegError`: each edge renders the parameters it names).
    """

    label: str
    format: str
    kind: Kind
    rows: int
    columns: pd.DataFrame  # column, role, type, nulls, distinct
    quality: dict[str, object]
    report: cleaning.CleaningReport | None


def inspect(loaded: Loaded, *, policy: cleaning.Policy = cleaning.Policy()) -> Inspection:
    """Describe the source and what cleaning would do to it (nothing is written)."""
    import pandas as pd

    table, cmap = loaded.table, loaded.column_map
    role_of = {column: cmap.role_of(column) for column in table.columns}
    stats = table.con.execute(
        "SELECT " + ", ".join(
            f"count(*) - count({sources.quote_name(c)}), count(DISTINCT {sources.quote_name(c)})" for c in table.columns
        ) + ", count(*) FROM source"
    ).fetchall()[0]
    rows = int(stats[-1])
    columns = pd.DataFrame({
        "column": table.columns,
        "role": [role_of.get(c, "") for c in table.columns],
        "type": [table.types[c] for c in table.columns],
        "nulls": [int(stats[2 * i]) for i in range(len(table.columns))],
        "distinct": [int(stats[2 * i + 1]) for i in range(len(table.columns))],
    })
    everything = ", ".join(sources.quote_name(c) for c in table.columns)
    distinct_rows = table.con.execute(
        f"SELECT count(*) FROM (SELECT DISTINCT {everything} FROM source)"
    ).fetchall()[0][0]
    quality: dict[str, object] = {"duplicate rows": rows - int(distinct_rows)}
    report = None
    if loaded.kind == "transactions":
        if "quantity" in cmap:
            quality["negative quantities"] = table.con.execute(
                f"SELECT count(*) FROM source WHERE TRY_CAST({sources.quote_name(cmap.column('quantity'))} AS DOUBLE) < 0"
            ).fetchall()[0][0]
        try:
            cleaned = cleaning.clean_transactions(table, cmap, policy=policy)
        except (SchemaError, DataError) as exc:  # what was found is still worth showing
            why = exc.named_template.removeprefix(f"{literal(table.label)}: ")
            quality["cleaning"] = type(exc)("not possible as it stands: " + why, param=exc.param)
            return Inspection(table.label, table.format, loaded.kind, rows, columns, quality, None)
        low, high = table.con.execute(
            "SELECT min(ordered_at), max(ordered_at) FROM typed"
        ).fetchall()[0]
        quality["date range"] = f"{low} to {high}"
        quality["customers"] = table.con.execute(
            "SELECT count(DISTINCT customer_id) FROM typed"
        ).fetchall()[0][0]
        report = cleaned.report()
    return Inspection(table.label, table.format, loaded.kind, rows, columns, quality, report)


# --- the matrix ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Prepared:
    """A customer table made ready to cluster: the columns used, the fitted preprocessing and
    the matrix (``numeric`` is its numeric part, what the sweep compares)."""

    loaded: Loaded
    customers: CustomerTable
    columns: list[str]
    preprocessor: Preprocessor
    matrix: pd.DataFrame
    numeric: pd.DataFrame
    spec: AlgorithmSpec | None  # the algorithm asked for (None for auto)

    @property
    def features(self) -> pd.DataFrame:
        return self.customers.features


def prepare(
    loaded: Loaded,
    *,
    config: SegmentConfig = SegmentConfig(),
    policy: cleaning.Policy = cleaning.Policy(),
    as_of: date | datetime | None = None,
    customers: CustomerTable | None = None,
) -> Prepared:
    """The customer table of ``loaded`` (or ``customers``, made already) and its preprocessed
    matrix, with the checks that need the data (too few customers, a k as large as the table,
    k-prototypes without a category)."""
    import pandas as pd

    from custseg import cluster, preprocessing

    made = customers if customers is not None else customer_table(loaded, policy=policy, as_of=as_of)
    table = made.features
    if len(table) < 3:
        raise DataError(
            f"{loaded.table.label}: {len(table)} customer(s) after cleaning; segments need at least 3"
        )
    if config.features:
        columns = list(config.features)
    else:  # outcomes are results, not traits: profiled, not clustered on
        columns = [c for c in preprocessing.default_feature_columns(table, kind=made.kind) if c not in made.outcomes]
    spec = cluster.ALGORITHMS.get(config.algorithm)
    if spec is not None and spec.input == "rfm":
        columns = ["recency_days", "frequency", "monetary"]
    with naming(loaded):  # e.g. an unknown or unusable column in --features, no usable column
        prep = preprocessing.build_preprocessor(table, columns=columns, one_hot=not (spec and spec.needs_categorical))
        used = prep.columns
        matrix = prep.fit_transform(table[used])
    numeric = matrix.select_dtypes("number")
    if spec is not None and spec.needs_categorical and numeric.shape[1] == matrix.shape[1]:
        text = [c for c in table.columns[1:] if not pd.api.types.is_numeric_dtype(table[c])
                and not pd.api.types.is_datetime64_any_dtype(table[c])]
        raise ConfigError(
            f"{literal(loaded.table.label)}: {{param}} {literal(config.algorithm)} mixes numbers and categories, "
            f"but the features {literal(', '.join(used))} are all numbers; "
            + (f"add a category with {{param:features}} {literal(','.join([*used, text[0]]))}" if text
               else "the table has no category")
            + ", or choose kmeans",
            param="algorithm",
        )
    if config.n_clusters is not None and config.n_clusters >= len(numeric):
        raise DataError(
            f"{literal(loaded.table.label)}: {{param}} {config.n_clusters} needs more than {config.n_clusters} "
            f"customers, found {len(numeric)}; lower {{param}}",
            param="n_clusters",
        )
    return Prepared(loaded, made, used, prep, matrix, numeric, spec)
