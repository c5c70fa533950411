"""Cleaning rules that count what they drop.

Transaction logs (DuckDB SQL, out of core).  Every source row gets at most one rule, the first
that applies, in this order:

==========================  ==================================================================
``missing_customer_id``     no customer id
``unparseable_date``        the order date cannot be read (only with ``bad_values="drop"``)
``non_numeric_value``       quantity/price/amount is not a number (only with ``bad_values="drop"``)
``duplicate_row``           an exact copy of an earlier row (every column equal)
``cancellation``            order id starting with "C", or a negative quantity (a negative amount
                            in logs without quantities) (``returns="drop"``)
``non_positive_price``      unit price ≤ 0
``missing_date``            no order date
==========================  ==================================================================

With ``returns="net"`` cancellations are kept: their negative quantities reduce the monetary
value, but they are not counted as orders.  The source is never modified; rejected rows can be
listed with their rule and row number (:meth:`CleanTransactions.rejects`).

Customer tables (one row per customer, pandas): :func:`clean_customers`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Literal

import duckdb

from custseg.engines import DUCKDB, Dialect
from custseg.errors import DataError, SchemaError, literal
from custseg.schema import ColumnMap, flag_text, normalise_name
from custseg.sources import Table

if TYPE_CHECKING:  # customer tables are cleaned in pandas, imported there: logs do not need it
    import pandas as pd

__all__ = [
    "RULES",
    "Policy",
    "RuleCount",
    "CleaningReport",
    "CleanTransactions",
    "clean_transactions",
    "clean_customers",
    "ColumnStats",
    "Treatment",
    "treat_column",
    "needs_distinct",
    "customers_as_of",
]

#: rule → what it means, in the order the rules apply.
RULES: dict[str, str] = {
    "missing_customer_id": "no customer id",
    "unparseable_date": "order date cannot be read",
    "non_numeric_value": "quantity, price or amount is not a number",
    "duplicate_row": "exact copy of an earlier row",
    "cancellation": "cancellation or return (order id starting with 'C', or quantity or amount < 0)",
    "non_positive_price": "unit price is zero or negative",
    "missing_date": "no order date",
    "duplicate_customer_id": "a later row for a customer id already seen",
}
# Rules that apply before duplicates are removed: every copy of such a row counts for them.
_BEFORE_DEDUP = ("missing_customer_id", "unparseable_date", "non_numeric_value")
_AFTER_DEDUP = ("cancellation", "non_positive_price", "missing_date")
_RULE_CODES = _BEFORE_DEDUP + _AFTER_DEDUP  # a rule's number in queries: its place here, from 1

_DATE_FORMATS = (
    "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d", "%Y/%m/%d",
    "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y", "%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y", "%d-%m-%Y %H:%M", "%d-%m-%Y", "%d.%m.%Y %H:%M", "%d.%m.%Y", "%Y%m%d",
)


@dataclass(frozen=True)
class Policy:
    """How to clean a transaction log.

    ``returns``: ``"drop"`` removes cancellations and returns, ``"net"`` keeps them so they
    reduce monetary value.  ``bad_values``: ``"error"`` stops at the first column with
    unparseable dates or non-numeric amounts, ``"drop"`` drops those rows and counts them.
    ``date_format``: a strptime format for text dates (default: detected).
    """

    returns: Literal["drop", "net"] = "drop"
    bad_values: Literal["error", "drop"] = "error"
    date_format: str | None = None


@dataclass(frozen=True)
class RuleCount:
    rule: str
    rows: int
    description: str


@dataclass(frozen=True)
class CleaningReport:
    """How many rows each rule dropped, and what else cleaning decided (``notes``)."""

    source: str
    rows_in: int
    rows_out: int
    dropped: tuple[RuleCount, ...]
    notes: tuple[str, ...] = ()

    @property
    def rows_dropped(self) -> int:
        return sum(r.rows for r in self.dropped)

    def to_frame(self) -> pd.DataFrame:
        """Columns ``rule, rows, description``: one row per rule, then ``kept``."""
        import pandas as pd

        rows = [(r.rule, r.rows, r.description) for r in self.dropped]
        rows.append(("kept", self.rows_out, "rows used for the customer features"))
        return pd.DataFrame(rows, columns=["rule", "rows", "description"])

    def __str__(self) -> str:
        lines = [f"{self.source}: {self.rows_in:,} rows in, {self.rows_out:,} kept"]
        lines += [f"  {r.rule:<24} {r.rows:>12,}  {r.description}" for r in self.dropped if r.rows]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


# --- transaction logs ----------------------------------------------------------------------

@dataclass
class CleanTransactions:
    """A cleaned transaction log held as DuckDB views in ``table.con``.

    ``kept``: one row per distinct kept source row, with canonical columns ``customer_id,
    order_id, ordered_at, product_id, quantity, unit_price, line_amount, is_return, country,
    channel`` (those the source has).  ``typed``: every source row, canonical columns.

    The exact-duplicate search is the costliest step, so it sees only rows that can matter:
    rows without a customer id (or, with ``bad_values="drop"``, with unreadable values) are
    only counted; of the other rows, those another rule drops are deduplicated apart, a small
    set, and the kept rows are deduplicated by the query that summarises them, all from one
    scan of the source (:meth:`ctes`; a log summarised in partitions counts the first rows in
    a scan of their own, :meth:`pre_counts`).  A rule depends only on a row's values, so every
    copy of a row meets the same rule, and the duplicates are exactly the rows no other count
    took.
    """

    table: Table
    column_map: ColumnMap
    policy: Policy
    roles: tuple[str, ...]
    _customer_id: str = field(repr=False)  # SQL expression of the customer id over ``source``
    _pre_case: str = field(repr=False)  # the rule a row meets before deduplication (rule_code), or NULL
    _post_case: str = field(repr=False)  # the rule a distinct row meets after it (rule_code), or NULL
    _kept_columns: str = field(repr=False)  # canonical columns, line_amount, is_return
    _rejects_sql: str = field(repr=False)
    _canonical: str = field(repr=False)  # every role's expression AS the role (the view ``typed``)
    dialect: Dialect = field(default=DUCKDB, repr=False)
    _report: CleaningReport | None = field(default=None, repr=False)
    _pre_counts: dict[str, int] | None = field(default=None, repr=False)

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        return self.table.con

    def pre_counts(self) -> dict[str, int]:
        """``rows_in`` and the rows each rule before deduplication drops: the columns named in
        :data:`COUNTED_BEFORE` (one scan of the columns those rules read)."""
        if self._pre_counts is None:
            rules = "".join(f", count(*) FILTER (WHERE __pre = {rule_code(rule)}) AS {rule}" for rule in _BEFORE_DEDUP)
            self._pre_counts = self._one_row(
                f"SELECT count(*) AS rows_in{rules} FROM (SELECT {self._pre_case} AS __pre FROM source)")
        return self._pre_counts

    def rows_to_deduplicate(self) -> int:
        """How many source rows no rule before deduplication drops."""
        counts = self.pre_counts()
        return counts["rows_in"] - sum(counts[rule] for rule in _BEFORE_DEDUP)

    def rows_to_deduplicate_at_most(self) -> int:
        """At least :meth:`rows_to_deduplicate`, without a scan where the source's metadata
        tells: a Parquet file's rows with a customer id (a NULL in the column is no id, the rule
        that comes first); else the count itself."""
        if self._pre_counts is None:
            bound = self.table.non_null_rows(self.column_map.column("customer_id"))
            if bound is not None:
                return bound
        return self.rows_to_deduplicate()

    def ctes(self, part: int = 0, parts: int = 1) -> str:
        """Common table expressions over one scan of the source: ``rows``, the distinct kept
        rows, and the one-row ``counts`` with the columns named in :data:`COUNTED`.

        With ``parts`` > 1 the scan reads customer partition ``part`` of the rows
        :meth:`pre_counts` does not drop, and ``counts`` has only the columns named in
        :data:`COUNTED_AFTER`: every copy of a row has the same customer id, so partitions by
        customer can be cleaned and summarised one at a time, each in a fraction of the memory,
        and their counts add up.  With one part the same scan counts the rows the rules before
        deduplication drop too, so a source is read once (a CSV read in place is parsed once).
        """
        original = ", ".join(self.dialect.quote(c) for c in self.table.columns)
        after = ", ".join(f"count(*) FILTER (WHERE __post = {rule_code(rule)}) AS {rule}" for rule in _AFTER_DEDUP)
        if parts > 1:
            where = f"{self._pre_case} IS NULL AND {self.dialect.bucket(self._customer_id, parts)} = {part}"
            src = f"SELECT *, {self._post_case} AS __post FROM source WHERE {where}"
            ruled, before = "", ""
        else:
            src = f"SELECT *, {self._post_case} AS __post FROM (SELECT *, {self._pre_case} AS __pre FROM source)"
            ruled = "__pre IS NULL AND "
            rules = "".join(f", count(*) FILTER (WHERE __pre = {rule_code(rule)}) AS {rule}" for rule in _BEFORE_DEDUP)
            before = f", (SELECT count(*) AS rows_in{rules} FROM src)"
        return (
            f"src AS ({src}), "
            f"rows AS (SELECT {self._kept_columns} FROM (SELECT DISTINCT {original} "
            f"FROM src WHERE {ruled}__post IS NULL)), "
            "counts AS (SELECT * FROM "
            f"(SELECT {after} FROM (SELECT DISTINCT {original}, __post FROM src WHERE {ruled}__post IS NOT NULL)), "
            f"(SELECT count(*) AS rows_out FROM rows){before})"
        )

    def report(self) -> CleaningReport:
        """Count rows per rule (one scan of the source)."""
        if self._report is None:
            counts = self._one_row(f"WITH {self.ctes()} SELECT * FROM counts")
            self._report = report_from_counts(self.table.label, counts)
        return self._report

    def _one_row(self, sql: str) -> dict[str, int]:
        """The one row of counts ``sql`` returns, by column name."""
        result = self.con.execute(sql)
        names = [column[0] for column in result.description]
        return {name: int(value) for name, value in zip(names, result.fetchall()[0])}

    def transactions(self) -> duckdb.DuckDBPyRelation:
        """The kept rows, canonical columns only."""
        columns = ", ".join(self.roles + ("line_amount", "is_return"))
        return self.con.sql(f"SELECT {columns} FROM kept")

    def rejects(self) -> duckdb.DuckDBPyRelation:
        """Every dropped source row, as it was, with ``row`` (1-based data row) and ``rejected_by``."""
        return self.con.sql(self._rejects_sql)


#: What :meth:`CleanTransactions.pre_counts` counts, once for the whole source.
COUNTED_BEFORE = ("rows_in", *_BEFORE_DEDUP)
#: The columns of ``counts`` in :meth:`CleanTransactions.ctes` per partition (of several).
COUNTED_AFTER = (*_AFTER_DEDUP, "rows_out")
COUNTED = COUNTED_BEFORE + COUNTED_AFTER


def report_from_counts(source: str, counts: Mapping[str, int], notes: tuple[str, ...] = ()) -> CleaningReport:
    """Build a report from the values named in :data:`COUNTED`.

    Every source row is counted once: the duplicates are the rows no other count took.
    """
    values = {name: int(counts[name]) for name in COUNTED}
    values["duplicate_row"] = values["rows_in"] - sum(v for k, v in values.items() if k != "rows_in")
    dropped = tuple(
        RuleCount(rule, values[rule], RULES[rule])
        for rule in (*_BEFORE_DEDUP, "duplicate_row", *_AFTER_DEDUP)
    )
    return CleaningReport(source, values["rows_in"], values["rows_out"], dropped, notes)


def clean_transactions(
    table: Table, column_map: ColumnMap, *, policy: Policy = Policy(), dialect: Dialect | None = None,
) -> CleanTransactions:
    """Classify every row of a transaction log; registers the views ``typed`` and ``kept``.

    ``typed`` holds every source row with canonical columns (for summaries of the whole source).
    Needs roles ``customer_id``, ``ordered_at`` and either ``quantity`` + ``unit_price`` or
    ``amount``.  Raises :class:`DataError` for unparseable dates or non-numeric values when
    ``policy.bad_values == "error"``.

    Two steps: :func:`read_columns` looks at the values (how dates and numbers are written,
    and whether some cannot be read), then :func:`plan` writes the SQL, without reading data.
    ``dialect`` defaults to the table's (that of the engine holding it).
    """
    dialect = dialect or table.dialect
    cmap = column_map
    for role in ("customer_id", "ordered_at"):
        cmap.column(role)
    if not (("quantity" in cmap and "unit_price" in cmap) or "amount" in cmap):
        raise SchemaError(
            f"{literal(table.label)}: needs quantity and unit price columns, or an amount column; "
            "name them with {param} quantity=COL {param} unit_price=COL or {param} amount=COL",
            param="mapping",
        )
    clean = plan(table, cmap, read_columns(table, cmap, policy, dialect), policy, dialect)
    con = table.con
    con.execute(dialect.create_view("typed", f"SELECT {clean._canonical} FROM source"))
    con.execute(dialect.create_view("kept", f"WITH {clean.ctes()} SELECT * FROM rows"))
    return clean


@dataclass(frozen=True)
class Reading:
    """How the values of one role's column are read: the SQL expression over ``source``
    that gives the canonical type, and the condition of a value that cannot be read (or None)."""

    expr: str
    failed: str | None = None


def read_columns(
    table: Table, cmap: ColumnMap, policy: Policy, dialect: Dialect = DUCKDB,
) -> dict[str, Reading]:
    """Decide how each role's column is read, from its type and, for text, its values.

    Text dates get the format that reads most of the first 200,000 values (a day/month order
    the values leave open is an error naming both formats); text numbers use a decimal comma
    when no value uses a decimal point.  With ``policy.bad_values == "error"`` a column with
    values that cannot be read is an error naming the first such row.
    """
    if table.in_place and any(_read_by_a_pass(role, dialect.kind(table.types[column]))
                              for role, column in cmap.roles.items()):
        table.stage()  # a text read in place would be parsed again by each pass over a column
    readings: dict[str, Reading] = {}
    for role, column in cmap.roles.items():
        kind = dialect.kind(table.types[column])
        col = dialect.quote(column)
        if role in ("customer_id", "order_id", "product_id", "country", "channel"):
            # Keys keep their source type through the aggregations (a conversion of every row
            # to text costs more than the deduplication itself); customer ids become text
            # at the end, once per customer (custseg.features).  A blank text id is no id.
            blank_is_none = role == "customer_id" and kind == "text"
            readings[role] = Reading(f"NULLIF(trim({col}), '')" if blank_is_none else col)
        elif role == "ordered_at":
            expr = _date_expression(table, column, kind, policy.date_format, dialect)
            if kind in ("timestamp", "date"):  # read as dates already: no value can fail (no pass to check)
                readings[role] = Reading(expr)
                continue
            failed = f"({col} IS NOT NULL AND trim(CAST({col} AS {dialect.text})) <> '' AND {expr} IS NULL)"
            _check_bad(table, column, failed, policy, "unparseable date",
                       "fix them, pass {param:date_format}, or drop them with {param:bad_values} drop", dialect)
            readings[role] = Reading(expr, failed)
        elif role in ("quantity", "unit_price", "amount"):
            if kind in ("integer", "float", "decimal"):
                as_is = table.types[column].upper() in ("DOUBLE", "BIGINT", "INTEGER")
                readings[role] = Reading(col if as_is else f"CAST({col} AS DOUBLE)")
                continue
            expr = _number_expression(table, column, dialect)
            failed = f"({col} IS NOT NULL AND trim(CAST({col} AS {dialect.text})) <> '' AND {expr} IS NULL)"
            _check_bad(table, column, failed, policy, "non-numeric value",
                       "fix them or drop them with {param} drop", dialect, param="bad_values")
            readings[role] = Reading(expr, failed)
    return readings


def _read_by_a_pass(role: str, kind: str) -> bool:
    """Whether :func:`read_columns` reads every value of the column of ``role`` (of ``kind``):
    numbers written as text, and dates the reader has not typed."""
    if role in ("quantity", "unit_price", "amount"):
        return kind not in ("integer", "float", "decimal")
    return role == "ordered_at" and kind not in ("timestamp", "date")


def plan(
    table: Table, cmap: ColumnMap, readings: Mapping[str, Reading], policy: Policy, dialect: Dialect = DUCKDB,
) -> CleanTransactions:
    """The rules as SQL over ``source``, from how each column is read (no data is read)."""
    exprs = {role: reading.expr for role, reading in readings.items()}
    bad: dict[str, list[str]] = {}  # several columns may be bad: one condition per rule
    if policy.bad_values == "drop":
        for role, reading in readings.items():
            if reading.failed is not None:
                rule = "unparseable_date" if role == "ordered_at" else "non_numeric_value"
                bad.setdefault(rule, []).append(reading.failed)
    roles = tuple(r for r in ("customer_id", "order_id", "ordered_at", "product_id", "quantity",
                              "unit_price", "amount", "country", "channel") if r in exprs)
    if "quantity" in exprs and "unit_price" in exprs:
        line_amount = f"(({exprs['quantity']}) * ({exprs['unit_price']}))"
    else:
        line_amount = f"({exprs['amount']})"
    return_parts = []
    if "order_id" in exprs and dialect.kind(table.types[cmap.column("order_id")]) == "text":
        order = exprs["order_id"]
        return_parts.append(f"coalesce({order} LIKE 'C%' OR {order} LIKE 'c%', false)")
    if "quantity" in exprs:
        return_parts.append(f"coalesce(({exprs['quantity']}) < 0, false)")
    elif "unit_price" not in exprs:
        return_parts.append(f"coalesce(({exprs['amount']}) < 0, false)")
    is_return = " OR ".join(return_parts) or "false"

    pre = [(f"({exprs['customer_id']}) IS NULL", "missing_customer_id")]
    pre += [(" OR ".join(conds), rule) for rule, conds in bad.items()]
    post = []
    if policy.returns == "drop":
        post.append((is_return, "cancellation"))
    if "unit_price" in exprs:
        post.append((f"({exprs['unit_price']}) <= 0", "non_positive_price"))
    post.append((f"({exprs['ordered_at']}) IS NULL", "missing_date"))
    # The queries that count carry a rule's number (a string per row costs them ~4%); the
    # rejects its name.
    pre_case, post_case = _case(pre, rule_code), _case(post, rule_code)
    pre_named, post_named = _case(pre, lambda rule: f"'{rule}'"), _case(post, lambda rule: f"'{rule}'")

    canon = ", ".join(f"{expr} AS {role}" for role, expr in exprs.items())
    kept_columns = f"{canon}, {line_amount} AS line_amount, ({is_return}) AS is_return"
    original = ", ".join(dialect.quote(c) for c in table.columns)
    rejects_sql = (
        f"WITH numbered AS (SELECT {dialect.source_row()} AS __row, * FROM source), "
        f"ruled AS (SELECT *, {pre_named} AS __pre, {post_named} AS __post, "
        f"row_number() OVER (PARTITION BY {original} ORDER BY __row) AS __copy FROM numbered) "
        f"SELECT __row AS row, CASE WHEN __pre IS NOT NULL THEN __pre "
        "WHEN __copy > 1 THEN 'duplicate_row' ELSE __post END AS rejected_by, "
        f"{original} FROM ruled WHERE __pre IS NOT NULL OR __copy > 1 OR __post IS NOT NULL "
        "ORDER BY __row"
    )
    return CleanTransactions(table, cmap, policy, roles, f"({exprs['customer_id']})", pre_case, post_case,
                             kept_columns, rejects_sql, canon, dialect)


def rule_code(rule: str) -> str:
    """The number that stands for ``rule`` in the counting queries (see :func:`plan`)."""
    return str(_RULE_CODES.index(rule) + 1)


def _case(arms: list[tuple[str, str]], value) -> str:
    """``CASE WHEN condition THEN value(rule) … END`` of (condition, rule) arms, in order."""
    return "CASE " + " ".join(f"WHEN {condition} THEN {value(rule)}" for condition, rule in arms) + " END"


def _date_expression(table: Table, column: str, kind: str, date_format: str | None, dialect: Dialect) -> str:
    col = dialect.quote(column)
    if kind in ("timestamp", "date"):
        return f"CAST({col} AS TIMESTAMP)"
    text = f"NULLIF(trim(CAST({col} AS {dialect.text})), '')"
    if date_format:
        return dialect.parse_time(text, date_format)
    candidates = [dialect.try_cast(text, "TIMESTAMP")] + [dialect.parse_time(text, fmt) for fmt in _DATE_FORMATS]
    counts = table.con.execute(
        "SELECT " + ", ".join(
            f"count(*) FILTER (WHERE {text} IS NOT NULL AND {c} IS NULL)" for c in candidates
        ) + " FROM (SELECT * FROM source LIMIT 200000)"
    ).fetchall()[0]
    best = min(range(len(candidates)), key=lambda i: (counts[i], i))
    if best > 0:
        fmt = _DATE_FORMATS[best - 1]
        swapped = _swap_day_month(fmt)
        if swapped in _DATE_FORMATS and counts[_DATE_FORMATS.index(swapped) + 1] == counts[best]:
            example = table.con.execute(
                f"SELECT {text} FROM source WHERE {text} IS NOT NULL LIMIT 1"
            ).fetchall()[0][0]
            raise DataError(
                f"{literal(table.label)}: column '{literal(column)}' has dates like '{literal(example)}' that read "
                f"both as day/month and month/day; pass {{param}} '{fmt}' or {{param}} '{swapped}'",
                param="date_format",
            )
    return candidates[best]


def _swap_day_month(fmt: str) -> str:
    return fmt.replace("%d", "\0").replace("%m", "%d").replace("\0", "%m")


def _number_expression(table: Table, column: str, dialect: Dialect) -> str:
    text = f"trim(CAST({dialect.quote(column)} AS {dialect.text}))"
    plain = dialect.try_cast(text, "DOUBLE")
    comma = dialect.try_cast(f"replace({text}, ',', '.')", "DOUBLE")
    # A decimal comma ("3,50") is read as such only when no value uses a decimal point.
    uses_comma, uses_point = table.con.execute(
        f"SELECT bool_or({dialect.matches(text, '-?[0-9]+,[0-9]+')}), bool_or({text} LIKE '%.%') FROM source"
    ).fetchall()[0]
    return comma if uses_comma and not uses_point else plain


def _check_bad(table: Table, column: str, failed: str, policy: Policy, what: str, fix: str, dialect: Dialect,
               *, param: str | None = None) -> None:
    """Stop at the first of the values ``failed`` finds (unless bad values are dropped); ``fix``
    (a message template) says what to do, ``param`` is the parameter it names, if one."""
    if policy.bad_values != "error":
        return
    # Counted first: numbering the rows is a pass of its own (one that Spark does on one core).
    if not table.con.execute(f"SELECT count(*) FROM source WHERE {failed}").fetchall()[0][0]:
        return
    first = dialect.arg_min(f"CAST({dialect.quote(column)} AS {dialect.text})", "__row")
    n, row, value = table.con.execute(
        f"SELECT count(*), min(__row), {first} FROM "
        f"(SELECT {dialect.source_row()} AS __row, * FROM source) WHERE {failed}"
    ).fetchall()[0]
    if n:
        raise DataError(
            f"{literal(table.label)}: column '{literal(column)}' has {n:,} {what}{'s' if n > 1 else ''}, "
            f"e.g. '{literal(value)}' on data row {row}; {fix}",
            param=param,
        )


# --- customer tables -----------------------------------------------------------------------

@dataclass(frozen=True)
class CleanCustomers:
    """A customer table made ready for features: one row per ``customer_id``.

    ``features`` holds ``customer_id`` plus usable columns: numbers, categories (text),
    durations in days from date columns (``tenure_days`` for the sign-up date) and ``age``
    from a birth year.  ``imputed`` lists ``column, missing, value`` for filled gaps.
    """

    features: pd.DataFrame
    report: CleaningReport
    dropped_columns: dict[str, str]
    imputed: pd.DataFrame
    as_of: datetime
    contacts: pd.DataFrame | None = None  # customer_id, email: for exports, never a feature


def clean_customers(
    table: Table,
    column_map: ColumnMap,
    *,
    as_of: date | datetime | None = None,
) -> CleanCustomers:
    """Clean a customer table (one row per customer) and turn dates into durations.

    Drops rows without a customer id, exact duplicate rows and later rows of a repeated id;
    drops single-valued columns and id-like columns; date columns become day counts up to
    ``as_of`` (default: the day after the latest date in the table); a birth year becomes
    ``age``; missing numbers get the median, missing categories the most frequent value.
    """
    import pandas as pd

    frame = table.con.execute("SELECT * FROM source").df()
    rows_in = len(frame)
    notes: list[str] = []
    if column_map.row_ids:
        # No id column: each row is a customer (equal rows are equal answers of two people).
        id_col = None
        missing_id = duplicated_rows = duplicated_ids = pd.Series(False, index=frame.index)
        out = pd.DataFrame({"customer_id": pd.array([str(i) for i in range(1, rows_in + 1)], dtype="string")})
    else:
        id_col = column_map.column("customer_id")
        ids = frame[id_col]
        missing_id = ids.isna() | (ids.astype("string").str.strip() == "")
        frame = frame.loc[~missing_id]
        duplicated_rows = frame.duplicated()
        frame = frame.loc[~duplicated_rows]
        duplicated_ids = frame[id_col].duplicated()
        frame = frame.loc[~duplicated_ids].reset_index(drop=True)
        out = pd.DataFrame({"customer_id": _id_strings(frame[id_col])})
    dropped_columns: dict[str, str] = {}
    outcomes = column_map.outcomes
    for column in frame.columns:
        if column == id_col or column in outcomes:
            continue
        numbers = _numbers_with_blanks(frame[column])
        if numbers is not None:
            frame[column] = numbers
            notes.append(_blank_numbers_note(column, int(numbers.isna().sum())))
        elif is_date_name(column, column_map) and (as_dates := _yyyymmdd(frame[column])) is not None:
            frame[column] = as_dates
            notes.append(_yyyymmdd_note(column))

    dates = {
        c: pd.to_datetime(frame[c]) for c in frame.columns
        if c != id_col and c not in outcomes and (pd.api.types.is_datetime64_any_dtype(frame[c]) or isinstance(frame[c].dropna().iloc[0] if frame[c].notna().any() else None, date))
    }
    as_of_ts = customers_as_of(table.label, {c: d.max() for c, d in dates.items() if d.notna().any()}, as_of)
    email = column_map.get("email")
    contacts = None
    if email is not None:
        contacts = pd.DataFrame({"customer_id": out["customer_id"], "email": frame[email].astype("string").str.strip()})
    for column in frame.columns:
        if column == id_col:
            continue
        values = frame[column]
        treatment = treat_column(column, _pandas_stats(values, is_date=column in dates), column_map,
                                 date_columns=len(dates))
        if treatment.action == "outcome":
            # 1 = the outcome happened, 0 = it did not; a missing value stays missing (rates
            # count the customers whose outcome is known), never imputed.
            positive = outcomes[column]
            flags = values.map(lambda v: float(flag_text(v) == positive), na_action="ignore")
            out[column] = flags.astype("Float64")
        elif treatment.action == "drop":
            dropped_columns[column] = treatment.why
        elif treatment.action == "duration":
            out[treatment.name] = ((as_of_ts - dates[column]).dt.total_seconds() // 86400).astype("Float64")
            notes.append(_duration_note(column, treatment.name, as_of_ts))
        elif treatment.action == "age":
            out["age"] = (as_of_ts.year - pd.to_numeric(values, errors="coerce")).astype("Float64")
            notes.append(_age_note(column, as_of_ts))
        elif treatment.action == "number":
            out[column] = values.astype("Int64" if pd.api.types.is_bool_dtype(values) else "Float64")
        else:
            out[column] = values.astype("string")
    imputed_rows = []
    for column in out.columns[1:]:
        if column in outcomes:
            continue
        n_missing = int(out[column].isna().sum())
        if not n_missing:
            continue
        if pd.api.types.is_numeric_dtype(out[column]):
            value = out[column].median()
            how = "median"
        else:
            value = out[column].mode(dropna=True).iloc[0]
            how = "most frequent"
        out[column] = out[column].fillna(value)
        imputed_rows.append((column, n_missing, how, value))
        notes.append(_imputed_note(column, n_missing, how, value))
    for column in out.columns[1:]:
        if pd.api.types.is_numeric_dtype(out[column]):
            out[column] = out[column].astype("float64")  # no gaps left: plain NumPy floats
    notes += [_dropped_note(column, why) for column, why in dropped_columns.items()]
    if out.empty:
        raise no_customer_left(table.label, rows_in, int(missing_id.sum()), id_col)
    if len(out.columns) == 1 + sum(c in out.columns for c in outcomes):
        raise nothing_describes(table.label, id_col, outcomes, dropped_columns)
    counts = {"missing_customer_id": missing_id.sum(), "duplicate_row": duplicated_rows.sum(),
              "duplicate_customer_id": duplicated_ids.sum()}
    report = customer_report(table.label, rows_in, len(out), counts, tuple(notes))
    imputed = pd.DataFrame(imputed_rows, columns=["column", "missing", "method", "value"])
    return CleanCustomers(out, report, dropped_columns, imputed, as_of_ts.to_pydatetime(), contacts)


# --- customer tables: the decisions both engines take ----------------------------------------

#: Whole numbers that :func:`clean_customers` reads as dates in a date-named column (``19970101``).
YYYYMMDD = r"(19|20)\d{6}"


@dataclass(frozen=True)
class ColumnStats:
    """What the customer-table rules read of one column, its values typed (numbers, booleans,
    dates or text), over the rows cleaning keeps; computed by pandas (:func:`clean_customers`)
    or by Spark (:mod:`custseg.engines.spark_customers`).

    ``distinct`` counts the different values present.  Only a text column and a column named
    like an id (:func:`needs_distinct`) need the exact number; for the others the rules only ask
    whether there is more than one, and an engine may give 2 for "two or more".
    """

    kind: Literal["number", "boolean", "date", "text"]
    rows: int
    missing: int
    distinct: int

    @property
    def unique(self) -> bool:
        """No two rows share a value, a missing value counting as one (pandas' ``is_unique``)."""
        return self.missing <= 1 and self.distinct + self.missing == self.rows


@dataclass(frozen=True)
class Treatment:
    """What becomes of one column of a customer table.

    ``action``: ``outcome`` (a 0/1 flag, missing stays missing), ``drop`` (``why`` says why),
    ``duration`` (whole days up to ``as_of``, as the column ``name``), ``age`` (years in the year
    of ``as_of``), ``number`` or ``category`` (text).
    """

    action: Literal["outcome", "drop", "duration", "age", "number", "category"]
    name: str
    why: str = ""


def treat_column(column: str, stats: ColumnStats, column_map: ColumnMap, *, date_columns: int) -> Treatment:
    """Decide what becomes of ``column`` (not the id column) of a customer table, from its
    ``stats`` and roles; ``date_columns`` is how many columns hold dates (with a single one and
    no ``joined_at`` role, it is the sign-up date: ``tenure_days``).

    >>> treat_column("Z_Revenue", ColumnStats("number", 3, 0, 1), ColumnMap({}), date_columns=0).why
    'has a single value'
    """
    if column in column_map.outcomes:
        return Treatment("outcome", column)
    if column == column_map.get("email"):
        return Treatment("drop", column, "a contact detail, kept for exports only")
    if stats.distinct <= 1:
        return Treatment("drop", column, "has a single value")
    if stats.kind == "date":
        joined = column_map.get("joined_at")
        sign_up = column == joined or (joined is None and date_columns == 1)
        return Treatment("duration", "tenure_days" if sign_up else f"days_since_{_snake(column)}")
    if column == column_map.get("birth_year"):
        return Treatment("age", "age")
    if _id_named(column) and stats.unique:
        return Treatment("drop", column, "an identifier, not a feature")
    present = stats.rows - stats.missing
    if stats.kind == "text" and stats.distinct > 50 and stats.distinct >= 0.9 * present:
        return Treatment("drop", column, "text that differs for almost every customer (names, notes), not a feature")
    return Treatment("number" if stats.kind in ("number", "boolean") else "category", column)


def needs_distinct(column: str, kind: str) -> bool:
    """Whether :func:`treat_column` reads the exact number of different values of ``column``
    (text, or a name like an id), not only whether it has more than one."""
    return kind == "text" or _id_named(column)


def customers_as_of(label: str, latest: Mapping[str, pd.Timestamp], as_of: date | datetime | None) -> pd.Timestamp:
    """The day a customer table's durations run up to: ``as_of``, else the day after the
    latest of ``latest`` (each date column's latest date), else today.  An ``as_of`` before a
    date of the table is a :class:`DataError` naming the column."""
    import pandas as pd

    last = max(latest.values(), default=None)
    if as_of is None:
        return (last.normalize() + timedelta(days=1)) if last is not None else pd.Timestamp.today().normalize()
    as_of_ts = pd.Timestamp(as_of)
    if last is not None and as_of_ts < last:
        column = next(c for c, d in latest.items() if d == last)
        raise DataError(
            f"{literal(label)}: {{param}} {as_of_ts.date()} is before the latest date in the table "
            f"({last.date()} in '{literal(column)}'), so some durations would be negative; a customer "
            "table is not a snapshot — give a date on or after it",
            param="as_of",
        )
    return as_of_ts


def no_customer_left(label: str, rows_in: int, missing_id: int, id_col: str | None) -> DataError:
    """The error of a customer table whose every row was dropped."""
    return DataError(
        f"{literal(label)}: no customer left after cleaning ({rows_in:,} rows in, "
        f"{missing_id:,} without a customer id in '{literal(id_col)}'); check that column or map "
        "another with {param} customer_id=COLUMN",
        param="mapping",
    )


def nothing_describes(label: str, id_col: str | None, outcomes: Mapping[str, str],
                      dropped_columns: Mapping[str, str]) -> DataError:
    """The error of a customer table left with no feature column (``dropped_columns``: why each went)."""
    why = "; ".join(f"'{c}' {reason}" for c, reason in dropped_columns.items())
    return DataError(
        f"{label}: no column describes the customers besides "
        + (f"the id '{id_col}'" if id_col else "the row number")
        + (f" and the outcome{'s' if len(outcomes) > 1 else ''} {', '.join(map(repr, outcomes))}" if outcomes else "")
        + (f" ({why})" if why else "")
        + "; a customer table needs columns such as income, age, spend or visits"
    )


def customer_report(label: str, rows_in: int, rows_out: int, counts: Mapping[str, int],
                    notes: tuple[str, ...]) -> CleaningReport:
    """The report of a customer table: ``counts`` has the rows dropped for a missing id, as an
    exact duplicate and as a later row of a repeated id."""
    dropped = tuple(RuleCount(rule, int(counts[rule]), RULES[rule])
                    for rule in ("missing_customer_id", "duplicate_row", "duplicate_customer_id"))
    return CleaningReport(label, rows_in, rows_out, dropped, notes)


# The notes both engines write, word for word.
def _blank_numbers_note(column: str, blanks: int) -> str:
    return f"'{column}': numbers with {blanks:,} blank cells, read as numbers with missing values"


def _yyyymmdd_note(column: str) -> str:
    return f"'{column}': whole numbers written yyyymmdd, read as dates"


def _duration_note(column: str, name: str, as_of: datetime) -> str:
    return f"'{column}' became {name} (whole days up to {as_of.date()})"


def _age_note(column: str, as_of: datetime) -> str:
    return f"'{column}' became age (years in {as_of.year})"


def _imputed_note(column: str, missing: int, how: str, value: object) -> str:
    return f"'{column}': {missing} missing filled with the {how} ({value})"


def _dropped_note(column: str, why: str) -> str:
    return f"column '{column}' dropped: {why}"


def _pandas_stats(values: pd.Series, *, is_date: bool) -> ColumnStats:
    import pandas as pd

    kind = ("date" if is_date else "boolean" if pd.api.types.is_bool_dtype(values)
            else "number" if pd.api.types.is_numeric_dtype(values) else "text")
    return ColumnStats(kind, len(values), int(values.isna().sum()), int(values.nunique(dropna=True)))


def _id_named(name: str) -> bool:
    norm = normalise_name(name)
    return norm == "id" or norm.endswith("id")


def _numbers_with_blanks(values: pd.Series) -> pd.Series | None:
    """A text column whose values are all numbers but for empty or whitespace-only cells, as
    numbers with missing values; None for anything else (real text, an all-blank column)."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values) \
            or pd.api.types.is_datetime64_any_dtype(values):
        return None
    present = values.dropna()
    if present.empty or not all(isinstance(v, str) for v in present):
        return None
    text = values.astype("string").str.strip()
    blank = text.isna() | (text == "")
    if blank.all():
        return None
    numbers = pd.to_numeric(text.where(~blank), errors="coerce")
    if numbers[~blank].isna().any():
        return None
    return numbers.astype("float64")


def is_date_name(column: str, column_map: ColumnMap) -> bool:
    """A column whose role or name says it holds dates (``Dt_Customer``, ``signup_date``)."""
    norm = normalise_name(column)
    return (column in (column_map.get("joined_at"), column_map.get("ordered_at"))
            or "date" in norm or norm.startswith("dt"))


def _yyyymmdd(values: pd.Series) -> pd.Series | None:
    """Whole numbers (or digit strings) written yyyymmdd (``19970101``) as dates; None unless
    every value is one."""
    import pandas as pd

    present = values.dropna()
    if present.empty:
        return None
    if pd.api.types.is_float_dtype(values):
        if not (present % 1 == 0).all():
            return None
        present = present.astype("int64")
    elif not (pd.api.types.is_integer_dtype(values) or all(isinstance(v, str) for v in present)):
        return None
    text = present.astype(str).str.strip()
    if not text.str.fullmatch(YYYYMMDD).all():
        return None
    parsed = pd.to_datetime(text, format="%Y%m%d", errors="coerce")
    if parsed.isna().any():
        return None
    return parsed.reindex(values.index)


def _id_strings(values: pd.Series) -> pd.Series:
    import pandas as pd

    if pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
        values = values.astype("Int64")
    return values.astype("string").str.strip()


def _snake(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")

