"""The engine-specific SQL constructs, in one place (see :mod:`custseg.engines`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Dialect", "DUCKDB", "ValueKind"]

#: What a source column's type holds, as far as the cleaning rules care.
ValueKind = Literal["text", "integer", "float", "decimal", "timestamp", "date", "other"]

_DUCKDB_KINDS: dict[str, ValueKind] = {
    **dict.fromkeys(("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
                     "UINTEGER", "UBIGINT"), "integer"),
    **dict.fromkeys(("FLOAT", "DOUBLE", "REAL"), "float"),
    "VARCHAR": "text",
    "DATE": "date",
}


@dataclass(frozen=True)
class Dialect:
    """How one engine spells the constructs the shared SQL needs.

    Each method returns a SQL fragment (or a whole statement, for tables and views).  The
    DuckDB spelling is the default; an engine that spells a construct differently overrides
    that method in a subclass.
    """

    name: str = "duckdb"
    #: the type that text is cast to
    text: str = "VARCHAR"
    #: a whole-number type wide enough for any id held in a float or decimal column
    wide_integer: str = "HUGEINT"
    #: whether a log too large for the memory budget is summarised one customer partition at a
    #: time (:func:`custseg.features.partitions`); an engine that spreads the work itself does not
    splits_by_memory: bool = True

    # --- types ------------------------------------------------------------------------------

    def kind(self, type_name: str) -> ValueKind:
        """What a column of the source type ``type_name`` (as the reader reports it) holds."""
        upper = type_name.upper()
        if upper.startswith("DECIMAL"):
            return "decimal"
        if upper.startswith("TIMESTAMP"):
            return "timestamp"
        return _DUCKDB_KINDS.get(upper, "other")

    def quote(self, name: str) -> str:
        """A column name as a quoted identifier."""
        return '"' + name.replace('"', '""') + '"'

    @staticmethod
    def literal(text: str) -> str:
        """A string as a quoted literal."""
        return "'" + text.replace("'", "''") + "'"

    # --- values -----------------------------------------------------------------------------

    def try_cast(self, expr: str, type_name: str) -> str:
        """``expr`` as ``type_name``, or NULL where it does not convert."""
        return f"TRY_CAST({expr} AS {type_name})"

    def parse_time(self, text: str, fmt: str) -> str:
        """The timestamp ``text`` holds in the strptime format ``fmt``, or NULL."""
        return f"try_strptime({text}, {self.literal(fmt)})"

    def epoch_us(self, expr: str) -> str:
        """Microseconds since 1970-01-01 of a timestamp."""
        return f"epoch_us({expr})"

    def matches(self, text: str, pattern: str) -> str:
        """Whether all of ``text`` matches the regular expression ``pattern``."""
        return f"({text} SIMILAR TO {self.literal(pattern)})"

    def bucket(self, expr: str, buckets: int) -> str:
        """A whole number in ``[0, buckets)`` that equal values of ``expr`` share."""
        return f"(hash({expr}) % {buckets})"

    # --- aggregates -------------------------------------------------------------------------

    def arg_min(self, value: str, key: str) -> str:
        """``value`` of the row with the smallest ``key``."""
        return f"arg_min({value}, {key})"

    def row_key(self, *exprs: str) -> str:
        """A value that orders rows by ``exprs`` in turn (for :meth:`arg_min`)."""
        return "(" + ", ".join(exprs) + ")"

    def mode(self, expr: str) -> str:
        """The most frequent value of ``expr`` in a group (ties: as the engine breaks them)."""
        return f"mode({expr})"

    def month_start(self, expr: str) -> str:
        """The first instant of the month of a timestamp."""
        return f"date_trunc('month', {expr})"

    def months_between(self, start: str, end: str) -> str:
        """Whole months from one month start to another."""
        return f"date_diff('month', {start}, {end})"

    def source_row(self) -> str:
        """The 1-based position of a row in the source, in the order the source holds them."""
        return "row_number() OVER ()"

    # --- statements -------------------------------------------------------------------------

    def create_view(self, name: str, select: str) -> str:
        return f"CREATE OR REPLACE VIEW {name} AS {select}"

    def create_table(self, name: str, select: str) -> str:
        """A temporary table of the connection (replacing one of the same name)."""
        return f"CREATE OR REPLACE TEMP TABLE {name} AS {select}"

    def insert(self, name: str, select: str) -> str:
        return f"INSERT INTO {name} {select}"

    def drop_table(self, name: str) -> str:
        return f"DROP TABLE {name}"


#: The local engine's dialect.
DUCKDB = Dialect()
