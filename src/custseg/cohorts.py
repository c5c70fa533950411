"""Monthly acquisition cohorts and retention (local engine: DuckDB SQL).

A customer's cohort is the calendar month of their first kept order; they are *active* in a
month when they place at least one order (cancellations are not orders) in it.  Month ``p``
of a cohort is ``p`` calendar months after the cohort month, so month 0 is always 100 %.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd

from custseg.cleaning import CleanTransactions
from custseg.errors import SchemaError, literal

__all__ = ["Cohorts", "retention"]


@dataclass(frozen=True)
class Cohorts:
    """``counts``: long table ``cohort, [country,] period, active``;
    ``matrix``: one row per cohort (and country) with ``cohort, [country,] customers,
    month_0 … month_N`` holding the share of the cohort active in that month (empty where the
    month lies after the data ends)."""

    counts: pd.DataFrame
    matrix: pd.DataFrame


def retention(clean: CleanTransactions, *, by: Literal["country"] | None = None) -> Cohorts:
    """Retention of monthly acquisition cohorts, optionally per customer country.

    A customer's country is the one on most of their kept rows.
    """
    if by is not None and by not in clean.roles:
        raise SchemaError(
            f"cohorts by {by}: {literal(clean.table.label)} has no {by} column; name it with {{param}} {by}=COLUMN",
            param="mapping",
        )
    d = clean.dialect
    keys = "cohort" + (f", {by}" if by else "")
    group = "customer_id" + (f", {d.mode(by)} AS {by}" if by else "")
    sql = f"""
        WITH orders AS (
            SELECT customer_id, {d.month_start('ordered_at')} AS month{', ' + by if by else ''}
            FROM kept WHERE NOT is_return
        ),
        customers AS (
            SELECT {group}, min(month) AS cohort FROM orders GROUP BY customer_id
        ),
        active AS (
            SELECT DISTINCT o.customer_id, {', '.join('c.' + k.strip() for k in keys.split(','))},
                   {d.months_between('c.cohort', 'o.month')} AS period
            FROM orders o JOIN customers c USING (customer_id)
        )
        SELECT {keys}, period, count(*) AS active FROM active GROUP BY {keys}, period ORDER BY {keys}, period
    """
    counts = clean.con.execute(sql).df()
    counts["cohort"] = pd.to_datetime(counts["cohort"]).dt.strftime("%Y-%m")
    counts["period"] = counts["period"].astype("int64")
    counts["active"] = counts["active"].astype("int64")
    index = ["cohort"] + ([by] if by else [])
    wide = counts.pivot_table(index=index, columns="period", values="active", aggfunc="sum")
    sizes = wide[0]
    shares = wide.div(sizes, axis=0)
    # Months that cannot have happened yet stay empty; months with no activity are 0.
    months = pd.PeriodIndex(counts["cohort"], freq="M") + counts["period"].to_numpy()
    last = months.max()
    for cohort_key in shares.index:
        cohort = pd.Period(cohort_key[0] if isinstance(cohort_key, tuple) else cohort_key, freq="M")
        horizon = (last - cohort).n
        row = shares.loc[cohort_key]
        shares.loc[cohort_key] = row.where(row.index > horizon, row.fillna(0.0))
    shares.columns = [f"month_{p}" for p in shares.columns]
    matrix = shares.reset_index()
    matrix.insert(len(index), "customers", sizes.astype("int64").to_numpy())
    return Cohorts(counts, matrix)
