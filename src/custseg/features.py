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

from custseg.cleaning import CleanTransactions, CleaningReport, _COUNTED, report_from_counts, rule_count_sql
from custseg.errors import DataError

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
    """Compute one row per customer (see the module docstring) in a single pass over the source.

    The deduplicated, classified rows are computed once (a materialized CTE); the features
    aggregate the kept rows and the cleaning report counts every rule, both from it.
    """
    roles = set(clean.roles)
    kept = "rejected_by IS NULL"
    if as_of is not None:
        # A snapshot at as_of sees only what happened before it.
        kept += f" AND ordered_at < TIMESTAMP '{pd.Timestamp(as_of).isoformat(sep=' ')}'"
    order = "NOT is_return"
    order_key = "order_id" if "order_id" in roles else "ordered_at"
    select = [
        "customer_id",
        f"count(DISTINCT {order_key}) FILTER (WHERE {order})::BIGINT AS frequency",
        "sum(line_amount) AS monetary",
        f"min(ordered_at) FILTER (WHERE {order}) AS first_order_at",
        f"max(ordered_at) FILTER (WHERE {order}) AS last_order_at",
    ]
    if "product_id" in roles:
        select.append(f"count(DISTINCT product_id) FILTER (WHERE {order})::BIGINT AS n_products")
    for extra in ("country", "channel"):
        if extra in roles:
            select.append(f"mode({extra}) AS {extra}")
    sql = (
        "WITH rows AS MATERIALIZED (SELECT * FROM classified), "
        f"per AS (SELECT {', '.join(select)} FROM rows WHERE {kept} GROUP BY customer_id), "
        f"counts AS (SELECT {rule_count_sql(prefix='_')} FROM rows) "
        "SELECT * FROM counts LEFT JOIN per ON true"
    )
    per_customer = clean.con.execute(sql).df()

    counts = [per_customer[f"_{name}"].iloc[0] for name in _COUNTED]
    report = report_from_counts(clean.table.label, counts)
    table = per_customer.loc[
        per_customer["customer_id"].notna() & (per_customer["frequency"].fillna(0) > 0),
        [c for c in per_customer.columns if not c.startswith("_")],
    ].reset_index(drop=True)
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
