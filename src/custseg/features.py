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

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import pandas as pd

from custseg.cleaning import COUNTED_AFTER, CleanTransactions, CleaningReport, report_from_counts
from custseg.errors import DataError
from custseg.sources import memory_budget

__all__ = ["FEATURE_COLUMNS", "CustomerFeatures", "customer_features"]

FEATURE_COLUMNS = (
    "customer_id", "recency_days", "frequency", "monetary", "tenure_days", "avg_order_value",
    "avg_days_between_orders", "n_products", "first_order_at", "last_order_at", "country", "channel",
)


@dataclass(frozen=True)
class CustomerFeatures:
    """The feature table, the reference date it was computed at, and the cleaning report."""

    table: pd.DataFrame
    as_of: datetime
    report: CleaningReport


def customer_features(clean: CleanTransactions, *, as_of: date | datetime | None = None) -> CustomerFeatures:
    """Compute one row per customer (see the module docstring) and the cleaning report.

    The rows without a customer id (and other rules before deduplication) are counted once
    (:meth:`CleanTransactions.pre_counts`); then one query per partition of the customers (one
    partition, unless the log is too large for the memory budget) scans the other rows once,
    counts those the later rules drop and summarises the distinct kept rows per customer (see
    :meth:`CleanTransactions.ctes`).
    """
    roles = set(clean.roles)
    # A snapshot at as_of sees only what happened before it.
    snapshot = (f"ordered_at < TIMESTAMP '{pd.Timestamp(as_of).isoformat(sep=' ')}'"
                if as_of is not None else "true")
    # With returns="drop" no kept row is a return; with "net" returns count in monetary only.
    order = " FILTER (WHERE NOT is_return)" if clean.policy.returns == "net" else ""
    order_key = "order_id" if "order_id" in roles else "ordered_at"
    select = [
        "customer_id",
        f"count(DISTINCT {order_key}){order}::BIGINT AS frequency",
        "sum(line_amount) AS monetary",
        f"min(ordered_at){order} AS first_order_at",
        f"max(ordered_at){order} AS last_order_at",
    ]
    if "product_id" in roles:
        select.append(f"count(DISTINCT product_id){order}::BIGINT AS n_products")
    # The most frequent country/channel of a customer's kept rows; ties go to the first in
    # alphabetical order, so that a rerun gives the same table (DuckDB's mode() breaks them
    # by arrival order, which varies with threads and partitions).
    modes = [extra for extra in ("country", "channel") if extra in roles]
    ctes = [f"per AS (SELECT {', '.join(select)} FROM rows WHERE {snapshot} GROUP BY customer_id)"] + [
        f"{extra} AS (SELECT customer_id, arg_min({extra}, (-n, {extra})) AS {extra} FROM "
        f"(SELECT customer_id, {extra}, count(*) AS n FROM rows WHERE {snapshot} AND {extra} IS NOT NULL "
        "GROUP BY ALL) GROUP BY customer_id)"
        for extra in modes
    ]
    joined = "(SELECT * FROM per" + "".join(f" LEFT JOIN {extra} USING (customer_id)" for extra in modes) + ")"

    parts = partitions(clean.rows_to_deduplicate(), len(clean.table.columns), memory_budget(clean.con))
    totals = dict(clean.pre_counts())
    found = []
    for part in range(parts):
        sql = f"WITH {clean.ctes(part, parts)}, {', '.join(ctes)} SELECT * FROM counts LEFT JOIN {joined} ON true"
        frame = clean.con.execute(sql).df()
        for name in COUNTED_AFTER:
            totals[name] = totals.get(name, 0) + int(frame[name].iloc[0])
        found.append(frame.loc[frame["customer_id"].notna() & (frame["frequency"].fillna(0) > 0),
                               [c for c in frame.columns if c not in COUNTED_AFTER]])
    report = report_from_counts(clean.table.label, totals)
    table = pd.concat([f for f in found if len(f)] or found[:1], ignore_index=True)
    if table.empty:
        when = f" before --as-of {pd.Timestamp(as_of).date()}" if as_of is not None else ""
        raise DataError(
            f"{clean.table.label}: no customer has a kept order{when} after cleaning "
            f"({report.rows_in:,} rows in); see the cleaning report with `custseg inspect`"
        )
    reference = _reference_date(table, as_of)
    table = _derive(table, reference)
    table = table.sort_values("customer_id", kind="stable").reset_index(drop=True)
    return CustomerFeatures(table, reference.to_pydatetime(), report)


#: Bytes a deduplicated row takes in DuckDB's hash table, per source column (and a fixed part),
#: so that a partition holds about as many rows as ran fastest on logs of 7 columns within a
#: 1 GB budget: ~8M rows with an id (at 50M rows, 4-5 partitions took 40 s where one query
#: spilling to disk took 69 s and 2-3 partitions 47-48 s; at 10M rows 1 and 2 were even).
_ROW_BYTES_PER_COLUMN, _ROW_BYTES_FIXED = 12, 16


def partitions(rows: int, columns: int, budget: int) -> int:
    """How many customer partitions keep one pass's deduplication within ``budget`` bytes."""
    need = rows * (_ROW_BYTES_PER_COLUMN * columns + _ROW_BYTES_FIXED)
    return max(1, -(-need // max(budget, 1)))


def _reference_date(table: pd.DataFrame, as_of: date | datetime | None) -> pd.Timestamp:
    if as_of is None:
        return pd.Timestamp(table["last_order_at"].max()).normalize() + timedelta(days=1)
    return pd.Timestamp(as_of)


def _id_text(ids: pd.Series) -> pd.Series:
    """Customer ids as text: 17850.0 (a float column with gaps) becomes '17850'."""
    if pd.api.types.is_float_dtype(ids) and (ids.dropna() % 1 == 0).all():
        ids = ids.astype("Int64")
    return ids.astype("string").str.strip()


def _derive(table: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    day = pd.Timedelta(days=1)
    frequency = table["frequency"].astype("int64")
    span_days = (table["last_order_at"] - table["first_order_at"]) / day
    derived = pd.DataFrame({
        "customer_id": _id_text(table["customer_id"]),
        "recency_days": ((as_of - table["last_order_at"]) // day).astype("int64"),
        "frequency": frequency,
        "monetary": table["monetary"].astype("float64"),
        "tenure_days": ((as_of - table["first_order_at"]) // day).astype("int64"),
        "avg_order_value": table["monetary"].astype("float64") / frequency,
        "avg_days_between_orders": (span_days / (frequency - 1)).where(frequency > 1),
    })
    if "n_products" in table:
        derived["n_products"] = table["n_products"].astype("int64")
    derived["first_order_at"] = table["first_order_at"]
    derived["last_order_at"] = table["last_order_at"]
    for extra in ("country", "channel"):
        if extra in table:
            derived[extra] = table[extra].astype("string")
    return derived
