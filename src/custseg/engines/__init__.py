"""Engines: where the cleaning and feature SQL runs.

The SQL of :mod:`custseg.cleaning`, :mod:`custseg.features` and :mod:`custseg.cohorts` is
written once, in the subset of SQL that the engines read the same way (``CASE``, ``coalesce``,
``count(DISTINCT …)``, ``FILTER (WHERE …)``, ``LIKE``, CTEs, ``CAST``, explicit column and
``GROUP BY`` lists).  Every construct that an engine spells its own way — epoch microseconds,
``arg_min``, parsing a date with a format, ``TRY_CAST``, hashing a key, regular expressions,
identifier quoting, the names of types, temporary tables and views — is a method of one
:class:`Dialect`.  An engine is a dialect plus a runner: an object whose ``execute(sql)``
returns a cursor with ``fetchall()`` and ``description`` (a DuckDB connection is one).

:data:`DUCKDB` is the local engine's dialect.  :mod:`custseg.engines.spark` holds the Spark
engine's (``SPARK``, a subclass overriding what Spark spells its own way), its runner over
``spark.sql`` and its reader of sources; a source read there is a
:class:`custseg.sources.Table` whose ``dialect`` and ``con`` are Spark's, so the rules and
features run on it unchanged (``Settings(engine="spark")``, ``--engine spark``).  Another engine
adds its dialect and runner the same way.
"""

from custseg.engines.dialect import DUCKDB, Dialect, ValueKind

__all__ = ["DUCKDB", "Dialect", "ValueKind"]
