"""RFM scores, codes and named segments.

Scores follow the standard walkthrough: recency in five quantile bins labelled 5..1 (5 = most
recent), frequency ranked first (ties broken by order) then five bins 1..5, monetary five bins
1..5.  When a column has too few distinct values for five bins (ties, small customer counts)
it is ranked first too, so scoring never fails for lack of distinct values.

A segment map is data: an ordered list of ``(pattern, segment)`` where ``pattern`` is a regular
expression matched against the whole three-digit code "RFM"; the first match names the segment.
The default map reads recency and frequency only (the classic RF grid) and covers all 125 codes.

>>> import pandas as pd
>>> table = pd.DataFrame({"customer_id": list("abcdefghij"),
...                       "recency_days": [1, 2, 3, 5, 8, 13, 21, 34, 55, 89],
...                       "frequency": [9, 8, 7, 6, 5, 4, 3, 2, 1, 1],
...                       "monetary": [900, 800, 700, 600, 500, 400, 300, 200, 100, 50.0]})
>>> scored = score(table)
>>> list(scored["rfm_code"][:2]), list(scored["rfm_segment"][:2])
(['555', '555'], ['Champions', 'Champions'])
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from custseg.errors import ConfigError, DataError, literal

__all__ = [
    "DEFAULT_SEGMENT_MAP",
    "NEEDED",
    "SEGMENTS",
    "SegmentMap",
    "check_columns",
    "empty_values",
    "load_segment_map",
    "quintile_scores",
    "score",
    "summary",
    "summary_of_segments",
    "validate_segment_map",
]

SegmentMap = Sequence[tuple[str, str]]

#: The classic RF grid; "." leaves monetary free.  First match wins.
DEFAULT_SEGMENT_MAP: tuple[tuple[str, str], ...] = (
    ("11.", "Lost"),
    ("[1-2][1-2].", "Hibernating"),
    ("[1-2][3-4].", "At Risk"),
    ("[1-2]5.", "Can't Lose Them"),
    ("3[1-2].", "About to Sleep"),
    ("33.", "Need Attention"),
    ("[3-4][4-5].", "Loyal"),
    ("41.", "Promising"),
    ("51.", "New"),
    ("[4-5][2-3].", "Potential Loyalist"),
    ("5[4-5].", "Champions"),
)

#: Segment names of the default map, best first (used to order summaries).
SEGMENTS: tuple[str, ...] = (
    "Champions", "Loyal", "Potential Loyalist", "New", "Promising", "Need Attention",
    "About to Sleep", "At Risk", "Can't Lose Them", "Hibernating", "Lost",
)

_ALL_CODES = tuple(f"{r}{f}{m}" for r in range(1, 6) for f in range(1, 6) for m in range(1, 6))


def load_segment_map(path: str | Path) -> tuple[tuple[str, str], ...]:
    """Read a segment map from CSV (columns ``pattern,segment``) or JSON (list of pairs or objects).

    Every one of the 125 codes 111..555 must match some pattern.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{{param}} {literal(path)}: no such file", param="segment_map")
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(path.read_text(encoding="utf-8"))
            pairs = [
                (item["pattern"], item["segment"]) if isinstance(item, dict) else (item[0], item[1])
                for item in raw
            ]
        else:
            with path.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                if not reader.fieldnames or {"pattern", "segment"} - set(reader.fieldnames):
                    raise ConfigError(
                        f"{{param}} {literal(path)}: needs columns 'pattern,segment', got {literal(reader.fieldnames)}",
                        param="segment_map",
                    )
                pairs = [(row["pattern"].strip(), row["segment"].strip()) for row in reader]
    except ConfigError:  # already says what is wrong with the file
        raise
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ConfigError(f"{{param}} {literal(path)}: cannot be read ({literal(exc)}); see the default map in the docs",
                          param="segment_map") from None
    return validate_segment_map(pairs, source=literal(path))


def validate_segment_map(pairs: SegmentMap, *, source: str = "segment map") -> tuple[tuple[str, str], ...]:
    """The map as ``(pattern, segment)`` pairs of text, checked: every entry is such a pair,
    every pattern compiles, and every code 111..555 gets a segment (the one check of a map, for
    a file as :func:`load_segment_map` reads it and for a map given to :func:`score`).

    ``source`` starts each message, as a message template (a file's name through
    :func:`custseg.errors.literal`; ``"{param}"`` lets the edge name its parameter); every error is a :class:`ConfigError` with ``param="segment_map"``.
    """
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
        raise ConfigError(f"{source}: must be a list of (pattern, segment) pairs, got {type(pairs).__name__}; "
                          "see custseg.rfm.DEFAULT_SEGMENT_MAP", param="segment_map")
    checked = []
    for i, row in enumerate(pairs, start=1):
        if (isinstance(row, (str, bytes)) or not isinstance(row, Sequence) or len(row) != 2
                or not isinstance(row[0], str) or isinstance(row[1], bool) or not isinstance(row[1], (str, int))):
            raise ConfigError(f"{source}: entry {i} {literal(repr(row))} is not a (pattern, segment) pair of texts; "
                              "write it as ('5[4-5].', 'Champions')", param="segment_map")
        pattern, segment = row
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{source}: pattern {literal(repr(pattern))} on line {i} is not a regular expression "
                              f"({literal(exc)})",
                              param="segment_map") from None
        checked.append((str(pattern), str(segment)))
    if not checked:
        raise ConfigError(f"{source}: is empty; give at least one 'pattern,segment' line", param="segment_map")
    unmatched = [c for c in _ALL_CODES if _segment_of(c, checked) is None]
    if unmatched:
        raise ConfigError(
            f"{source}: codes {', '.join(unmatched[:5])}{' …' if len(unmatched) > 5 else ''} "
            "match no pattern; add a catch-all line such as '...,Other'",
            param="segment_map",
        )
    return tuple(checked)


def _segment_of(code: str, pairs: SegmentMap) -> str | None:
    for pattern, segment in pairs:
        if re.fullmatch(pattern, code):
            return segment
    return None


def quintile_scores(values: pd.Series, *, ascending: bool = True, rank_first: bool = False) -> pd.Series:
    """Scores 1..5 by quintile; ``ascending=False`` gives 5 to the smallest values.

    Ties that make quintile edges collide are broken by rank (order of appearance).
    A single customer gets the middle score, 3.
    """
    values = pd.Series(values)
    labels = list(range(1, 6)) if ascending else list(range(5, 0, -1))
    if len(values) == 1:
        return pd.Series([3], index=values.index, dtype="int64")
    data = values.rank(method="first") if rank_first else values
    try:
        binned = pd.qcut(data, 5, labels=labels)
    except ValueError:  # duplicate edges: too few distinct values for five bins
        binned = pd.qcut(values.rank(method="first"), 5, labels=labels)
    return binned.astype("int64")


#: The columns RFM scores are computed from.
NEEDED = ("customer_id", "recency_days", "frequency", "monetary")


def check_columns(columns) -> None:
    """Stop with the one-line error for a customer table without the :data:`NEEDED` columns."""
    missing = [c for c in NEEDED if c not in columns]
    if missing:
        raise DataError(
            f"RFM needs columns {', '.join(NEEDED)}; missing {', '.join(missing)} — "
            "give a transaction log (or a table with those columns)"
        )


def empty_values(column: str, n: int, example: object) -> DataError:
    """The error for ``n`` customers (``example`` one of them) without a value of ``column``."""
    return DataError(f"RFM: column '{column}' is empty for {n} customers, e.g. customer '{example}'; fill or drop them")


def score(features: pd.DataFrame, *, segment_map: SegmentMap = DEFAULT_SEGMENT_MAP) -> pd.DataFrame:
    """Add ``r_score, f_score, m_score, rfm_code, rfm_segment`` to a customer feature table.

    ``features`` needs ``customer_id, recency_days, frequency, monetary`` (one row per
    customer); the result has those columns and the five new ones, in the caller's row order.
    ``segment_map`` is checked first (:func:`validate_segment_map`): a map that leaves codes
    without a segment is a :class:`ConfigError` naming them, never a customer without one.
    """
    if segment_map is not DEFAULT_SEGMENT_MAP:
        segment_map = validate_segment_map(segment_map, source="{param}")
    needed = list(NEEDED)
    check_columns(features.columns)
    if features.empty:
        raise DataError("RFM needs at least one customer; the feature table is empty")
    for column in needed[1:]:
        bad = features[column].isna()
        if bad.any():
            raise empty_values(column, int(bad.sum()), features.loc[bad, "customer_id"].iloc[0])
    out = features[needed].copy()
    out["r_score"] = quintile_scores(out["recency_days"], ascending=False)
    out["f_score"] = quintile_scores(out["frequency"], rank_first=True)
    out["m_score"] = quintile_scores(out["monetary"])
    out["rfm_code"] = (
        out["r_score"].astype(str) + out["f_score"].astype(str) + out["m_score"].astype(str)
    )
    lookup = {code: _segment_of(code, segment_map) for code in _ALL_CODES}
    out["rfm_segment"] = out["rfm_code"].map(lookup).astype("string")
    return out


def summary(scored: pd.DataFrame, *, order: Sequence[str] = SEGMENTS) -> pd.DataFrame:
    """Columns ``rfm_segment, customers, share, revenue_share, median_recency_days,
    median_frequency, median_monetary``; shares sum to 1; ordered best segment first."""
    grouped = scored.groupby("rfm_segment", observed=True)
    table = pd.DataFrame({
        "customers": grouped.size(),
        "revenue": grouped["monetary"].sum(),
        "median_recency_days": grouped["recency_days"].median(),
        "median_frequency": grouped["frequency"].median(),
        "median_monetary": grouped["monetary"].median(),
    })
    return summary_of_segments(table.reset_index(), order=order)


def summary_of_segments(table: pd.DataFrame, *, order: Sequence[str] = SEGMENTS) -> pd.DataFrame:
    """:func:`summary` from its per-segment aggregates (``rfm_segment, customers, revenue`` and
    the three medians, one row per segment, however they were computed): the shares added,
    the segments ordered best first."""
    table = table.copy()
    total_revenue = table["revenue"].sum()
    table["share"] = table["customers"] / table["customers"].sum()
    table["revenue_share"] = table["revenue"] / total_revenue if total_revenue else np.nan
    rank = {name: i for i, name in enumerate(order)}
    table["_order"] = table["rfm_segment"].map(lambda s: rank.get(s, len(rank)))
    table = table.sort_values(["_order", "rfm_segment"]).drop(columns=["_order", "revenue"])
    return table[["rfm_segment", "customers", "share", "revenue_share", "median_recency_days",
                  "median_frequency", "median_monetary"]].reset_index(drop=True)
