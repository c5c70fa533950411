"""The one orchestrator: source → roles → cleaning → customer features → RFM / cohorts.

The CLI (and later the web app) only parse arguments, call these functions and format what
they return.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

import pandas as pd

from custseg import cleaning, cohorts, features, rfm, schema, sources
from custseg.errors import SchemaError

__all__ = ["SourceSpec", "Loaded", "CustomerTable", "load", "customer_table", "inspect"]

Kind = Literal["transactions", "customers"]


@dataclass(frozen=True)
class SourceSpec:
    """Where the data is and how to read it (the reading options of every command)."""

    source: str
    sheet: str | None = None
    table: str | None = None
    query: str | None = None
    encoding: str | None = None
    delimiter: str | None = None
    mapping: Mapping[str, str] = field(default_factory=dict)
    kind: Kind | None = None


@dataclass(frozen=True)
class Loaded:
    table: sources.Table
    column_map: schema.ColumnMap

    @property
    def kind(self) -> Kind:
        return self.column_map.kind


@dataclass(frozen=True)
class CustomerTable:
    """One row per customer, whatever the source was, with how it was made."""

    features: pd.DataFrame
    report: cleaning.CleaningReport
    as_of: datetime
    kind: Kind
    clean: cleaning.CleanTransactions | None = None


def load(spec: SourceSpec) -> Loaded:
    """Read the source and decide column roles and kind (transaction log or customer table)."""
    table = sources.read(
        spec.source, sheet=spec.sheet, table=spec.table, query=spec.query,
        encoding=spec.encoding, delimiter=spec.delimiter,
    )
    cmap = schema.detect_roles(table.columns, overrides=spec.mapping, source=table.label)
    if "customer_id" not in cmap:
        raise SchemaError(
            f"{table.label}: no customer id column found among {', '.join(table.columns)}; "
            "name it with --map customer_id=COLUMN"
        )
    kind = spec.kind or _decide_kind(table, cmap)
    return Loaded(table, cmap.with_kind(kind))


def _decide_kind(table: sources.Table, cmap: schema.ColumnMap) -> Kind:
    """A transaction log has an order id, or order dates with amounts and repeated customers."""
    if "order_id" in cmap:
        return "transactions"
    has_money = ("quantity" in cmap and "unit_price" in cmap) or "amount" in cmap
    if "ordered_at" in cmap and has_money:
        column = schema_q(cmap.column("customer_id"))
        distinct, rows = table.con.execute(
            f"SELECT count(DISTINCT {column}), count({column}) FROM source"
        ).fetchall()[0]
        return "transactions" if distinct < rows else "customers"
    return "customers"


def schema_q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def clean(loaded: Loaded, *, policy: cleaning.Policy = cleaning.Policy()) -> cleaning.CleanTransactions:
    """Clean a transaction log (customer tables are cleaned by :func:`customer_table`)."""
    if loaded.kind != "transactions":
        raise SchemaError(
            f"{loaded.table.label}: is a customer table (one row per customer); this step needs a "
            "transaction log — or pass --kind transactions and map order_id/ordered_at with --map"
        )
    return cleaning.clean_transactions(loaded.table, loaded.column_map, policy=policy)


def customer_table(
    loaded: Loaded,
    *,
    policy: cleaning.Policy = cleaning.Policy(),
    as_of: date | datetime | None = None,
) -> CustomerTable:
    """Customer features from either kind of source."""
    if loaded.kind == "customers":
        made = cleaning.clean_customers(loaded.table, loaded.column_map, as_of=as_of)
        return CustomerTable(made.features, made.report, made.as_of, "customers")
    cleaned = clean(loaded, policy=policy)
    computed = features.customer_features(cleaned, as_of=as_of)
    return CustomerTable(computed.table, computed.report, computed.as_of, "transactions", cleaned)


def rfm_table(
    loaded: Loaded,
    *,
    policy: cleaning.Policy = cleaning.Policy(),
    as_of: date | datetime | None = None,
    segment_map: rfm.SegmentMap = rfm.DEFAULT_SEGMENT_MAP,
) -> tuple[pd.DataFrame, CustomerTable]:
    """RFM scores and segments, with the customer table they came from."""
    made = customer_table(loaded, policy=policy, as_of=as_of)
    return rfm.score(made.features, segment_map=segment_map), made


def cohort_table(
    loaded: Loaded,
    *,
    policy: cleaning.Policy = cleaning.Policy(),
    by: Literal["country"] | None = None,
) -> cohorts.Cohorts:
    return cohorts.retention(clean(loaded, policy=policy), by=by)


@dataclass(frozen=True)
class Inspection:
    """What ``custseg inspect`` shows: columns, roles, types and data quality."""

    label: str
    format: str
    kind: Kind
    rows: int
    columns: pd.DataFrame  # column, role, type, nulls, distinct
    quality: dict[str, object]
    report: cleaning.CleaningReport | None


def inspect(loaded: Loaded, *, policy: cleaning.Policy = cleaning.Policy()) -> Inspection:
    """Describe the source and what cleaning would do to it (nothing is written)."""
    table, cmap = loaded.table, loaded.column_map
    role_of = {column: role for role, column in cmap.roles.items()}
    stats = table.con.execute(
        "SELECT " + ", ".join(
            f"count(*) - count({schema_q(c)}), count(DISTINCT {schema_q(c)})" for c in table.columns
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
    everything = ", ".join(schema_q(c) for c in table.columns)
    distinct_rows = table.con.execute(
        f"SELECT count(*) FROM (SELECT DISTINCT {everything} FROM source)"
    ).fetchall()[0][0]
    quality: dict[str, object] = {"duplicate rows": rows - int(distinct_rows)}
    report = None
    if loaded.kind == "transactions":
        if "quantity" in cmap:
            quality["negative quantities"] = table.con.execute(
                f"SELECT count(*) FROM source WHERE TRY_CAST({schema_q(cmap.column('quantity'))} AS DOUBLE) < 0"
            ).fetchall()[0][0]
        cleaned = cleaning.clean_transactions(table, cmap, policy=policy)
        low, high = table.con.execute(
            "SELECT min(ordered_at), max(ordered_at) FROM classified"
        ).fetchall()[0]
        quality["date range"] = f"{low} to {high}"
        quality["customers"] = table.con.execute(
            "SELECT count(DISTINCT customer_id) FROM classified"
        ).fetchall()[0][0]
        report = cleaned.report()
    return Inspection(table.label, table.format, loaded.kind, rows, columns, quality, report)
