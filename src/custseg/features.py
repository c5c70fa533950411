"""Per-customer features from a cleaned transaction log (local engine: DuckDB SQL).

Output, one row per customer with at least one kept order:

=============================  =============================================================
``customer_id``                text
``recency_days``               whole days from the last order to ``as_of``
``frequency``                  distinct orders (cancellations are not orders)
``monetary``                   sum of quantity × unit price (or of amount); net of returns
                               when cancellations are kept (``returns="net"``)
``tenure_days``                whole days from the first order to ``as_of``
``avg_order_value``            monetary / frequency
``avg_days_between_orders``    (last − first order, in days) / (frequency − 1); empty for
                               one-order customers
``n_products``                 distinct products bought (when the source has products)
``first_order_at``             timestamp of the first order
``last_order_at``              timestamp of the last order
``country``, ``channel``       the most frequent value (when the source has them)
=============================  =============================================================

``as_of`` defaults to the day after the last kept transaction (midnight); when given, only
transactions before it count (a snapshot of what was known then).  "Whole days" are
elapsed 24-hour periods, not calendar-day boundaries: an order at 23:00 the evening before
``as_of`` is 0 days ago.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING

from custseg.cleaning import COUNTED, COUNTED_AFTER, CleanTransactions, CleaningReport, report_from_counts
from custseg.engines import Dialect
from custseg.errors import DataError, literal
from custseg.sources import memory_budget

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

__all__ = ["FEATURE_COLUMNS", "CustomerFeatures", "customer_features", "to_frame"]

FEATURE_COLUMNS = (
    "customer_id", "recency_days", "frequency", "monetary", "tenure_days", "avg_order_value",
    "avg_days_between_orders", "n_products", "first_order_at", "last_order_at", "country", "channel",
)
_DAY_US = 86_400_000_000  # microseconds in a day


@dataclass(frozen=True)
class CustomerFeatures:
    """The feature table, the reference date it was computed at, and the cleaning report.

    The table stays in the engine (``relation``, sorted by ``customer_id``): writing it to CSV
    or Parquet needs no copy in Python; :func:`to_frame` makes the DataFrame the later steps use.
    """

    relation: duckdb.DuckDBPyRelation
    as_of: datetime
    report: CleaningReport


def to_frame(relation: duckdb.DuckDBPyRelation) -> pd.DataFrame:
    """A customer table as a DataFrame; its text columns get the ``string`` dtype."""
    frame = relation.df()
    text = ("VARCHAR", "STRING")  # DuckDB's and Spark's names of text
    return frame.astype({c: "string" for c, kind in zip(relation.columns, relation.types) if str(kind).upper() in text})


def customer_features(clean: CleanTransactions, *, as_of: date | datetime | None = None) -> CustomerFeatures:
    """Compute one row per customer (see the module docstring) and the cleaning report.

    One query scans the source once, counts the rows each rule drops and summarises the distinct
    kept rows per customer (see :meth:`CleanTransactions.ctes`).  A log too large for the memory
    budget is done in partitions of the customers, one query each, after a scan that counts the
    rows without a customer id (and the other rules before deduplication;
    :meth:`CleanTransactions.pre_counts`), which no partition reads.  The days, averages and
    text ids are derived in the engine too, once per customer.
    """
    con, roles, d = clean.con, set(clean.roles), clean.dialect
    as_of = _timestamp(as_of) if as_of is not None else None
    # A snapshot at as_of sees only what happened before it.
    snapshot = f"ordered_at < {_literal(as_of, d)}" if as_of is not None else "true"
    # With returns="drop" no kept row is a return; with "net" returns count in monetary only.
    order = " FILTER (WHERE NOT is_return)" if clean.policy.returns == "net" else ""
    order_key = "order_id" if "order_id" in roles else "ordered_at"
    select = [
        "customer_id",
        f"CAST(count(DISTINCT {order_key}){order} AS BIGINT) AS frequency",
        "CAST(sum(line_amount) AS DOUBLE) AS monetary",
        f"min(ordered_at){order} AS first_order_at",
        f"max(ordered_at){order} AS last_order_at",
    ]
    if "product_id" in roles:
        select.append(f"CAST(count(DISTINCT product_id){order} AS BIGINT) AS n_products")
    # The most frequent country/channel of a customer's kept rows; ties go to the first in
    # alphabetical order, so that a rerun gives the same table (DuckDB's mode() breaks them
    # by arrival order, which varies with threads and partitions).
    modes = [extra for extra in ("country", "channel") if extra in roles]
    ctes = [f"per AS (SELECT {', '.join(select)} FROM rows WHERE {snapshot} GROUP BY customer_id)"] + [
        f"{extra} AS (SELECT customer_id, {d.arg_min(extra, d.row_key('-n', extra))} AS {extra} FROM "
        f"(SELECT customer_id, {extra}, count(*) AS n FROM rows WHERE {snapshot} AND {extra} IS NOT NULL "
        f"GROUP BY customer_id, {extra}) GROUP BY customer_id)"
        for extra in modes
    ]
    joined = "(SELECT * FROM per" + "".join(f" LEFT JOIN {extra} USING (customer_id)" for extra in modes) + ")"
    kept = ", ".join(["customer_id", "frequency", "monetary", "first_order_at", "last_order_at"]
                     + ["n_products"] * ("product_id" in roles) + modes)

    # A source read in place (a CSV parsed by each query) is not scanned for the partitions: one
    # pass does it all.  Nor is a Parquet file whose metadata shows that one partition does.
    parts = 1
    if d.splits_by_memory and not clean.table.in_place:
        width, budget = len(clean.table.columns), memory_budget(con)
        parts = partitions(clean.rows_to_deduplicate_at_most(), width, budget)
        if parts > 1:  # the bound may be loose: the count decides
            parts = partitions(clean.rows_to_deduplicate(), width, budget)
    totals = dict(clean.pre_counts()) if parts > 1 else {}
    counted = COUNTED_AFTER if parts > 1 else COUNTED
    # Tables of this computation only: two computations on one connection do not meet.
    part_table, per_table, name = (f"{stem}_{uuid.uuid4().hex[:12]}" for stem in ("part", "per", "customer_features"))
    for part in range(parts):
        con.execute(d.create_table(part_table, f"WITH {clean.ctes(part, parts)}, {', '.join(ctes)} "
                                               f"SELECT * FROM counts LEFT JOIN {joined} ON true"))
        values = con.execute(f"SELECT {', '.join(counted)} FROM {part_table} LIMIT 1").fetchall()[0]
        for key, value in zip(counted, values):
            totals[key] = totals.get(key, 0) + int(value)
        rows = f"SELECT {kept} FROM {part_table} WHERE customer_id IS NOT NULL AND frequency > 0"
        con.execute(d.create_table(per_table, rows) if part == 0 else d.insert(per_table, rows))
    con.execute(d.drop_table(part_table))
    report = report_from_counts(clean.table.label, totals)
    customers, latest = con.execute(f"SELECT count(*), max(last_order_at) FROM {per_table}").fetchall()[0]
    if not customers:
        con.execute(d.drop_table(per_table))
        when = f" before {{param}} {as_of.date()}" if as_of is not None else ""
        raise DataError(
            f"{literal(clean.table.label)}: no customer has a kept order{when} after cleaning "
            f"({report.rows_in:,} rows in); see the cleaning report with `custseg inspect`",
            param="as_of" if as_of is not None else None,
        )
    reference = as_of if as_of is not None else datetime.combine(latest.date() + timedelta(days=1), time())
    con.execute(d.create_table(name, f"{_derived(con, d, per_table, reference)} ORDER BY customer_id"))
    con.execute(d.drop_table(per_table))
    return CustomerFeatures(con.table(name), reference, report)


def _timestamp(value: date | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.combine(value, time())


def _literal(value: datetime, d: Dialect) -> str:
    return f"TIMESTAMP {d.literal(value.replace(tzinfo=None).isoformat(sep=' '))}"


def _derived(con: duckdb.DuckDBPyConnection, d: Dialect, per: str, as_of: datetime) -> str:
    """The SELECT over the per-customer table ``per`` that gives the columns of the module
    docstring, in order."""
    table = con.table(per)
    have = {column: str(kind) for column, kind in zip(table.columns, table.types)}
    ref = d.epoch_us(_literal(as_of, d))
    last, first = d.epoch_us("last_order_at"), d.epoch_us("first_order_at")
    columns = [
        f"{_id_text(con, d, per, have['customer_id'])} AS customer_id",
        f"CAST(floor(({ref} - {last}) / {_DAY_US}) AS BIGINT) AS recency_days",
        "frequency",
        "monetary",
        f"CAST(floor(({ref} - {first}) / {_DAY_US}) AS BIGINT) AS tenure_days",
        "monetary / frequency AS avg_order_value",
        f"CASE WHEN frequency > 1 THEN ({last} - {first}) "
        f"/ {_DAY_US} / (frequency - 1) END AS avg_days_between_orders",
    ]
    columns += ["n_products"] if "n_products" in have else []
    columns += ["first_order_at", "last_order_at"]
    columns += [f"CAST({extra} AS {d.text}) AS {extra}" for extra in ("country", "channel") if extra in have]
    return f"SELECT {', '.join(columns)} FROM {per}"


def _id_text(con: duckdb.DuckDBPyConnection, d: Dialect, per: str, kind: str) -> str:
    """Customer ids as text: 17850.0 (a float or decimal column) becomes '17850'."""
    if d.kind(kind) in ("float", "decimal"):
        fractional = con.execute(f"SELECT bool_or(customer_id <> floor(customer_id)) FROM {per}").fetchall()[0][0]
        if not fractional:
            return f"CAST(CAST(customer_id AS {d.wide_integer}) AS {d.text})"
    return f"CAST(customer_id AS {d.text})"


#: Bytes a deduplicated row takes in DuckDB's hash table, per source column (and a fixed part),
#: so that a partition holds about as many rows as ran fastest on logs of 7 columns within a
#: 1 GB budget: ~8M rows with an id (at 50M rows, 4-5 partitions took 40 s where one query
#: spilling to disk took 69 s and 2-3 partitions 47-48 s; at 10M rows 1 and 2 were even).
_ROW_BYTES_PER_COLUMN, _ROW_BYTES_FIXED = 12, 16


def partitions(rows: int, columns: int, budget: int) -> int:
    """How many customer partitions keep one pass's deduplication within ``budget`` bytes."""
    need = rows * (_ROW_BYTES_PER_COLUMN * columns + _ROW_BYTES_FIXED)
    return max(1, -(-need // max(budget, 1)))
