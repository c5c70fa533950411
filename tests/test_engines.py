"""The engine seam: the cleaning, feature and cohort SQL spells every engine-specific construct
through one Dialect, so that another engine adds a dialect, not a second copy of the rules."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, replace

import pandas as pd
import pytest

from custseg import cleaning, cohorts, features, pipeline
from custseg.engines import DUCKDB, Dialect
from custseg.pipeline import SourceSpec

START, END = "/*dialect*/", "/*end*/"
_HOLE = "\x00{}\x00"


class MarkedDialect(Dialect):
    """DuckDB's dialect with every fragment it writes marked, so that the SQL it did not write
    can be checked for constructs only DuckDB reads."""


def _marked(method):
    def wrapper(self, *args):
        holes = [_HOLE.format(i) for i in range(len(args))]
        text = method(DUCKDB, *holes)
        if any(text[:text.find(hole)].count("'") % 2 for hole in holes if hole in text):
            # an argument inside a literal (a pattern, a format): the whole fragment is the dialect's
            for hole, arg in zip(holes, args):
                text = text.replace(hole, str(arg))
            return START + text + END
        pieces = re.split("(\x00\\d+\x00)", text)
        out = []
        for piece in pieces:
            if re.fullmatch("\x00\\d+\x00", piece):
                out.append(str(args[int(piece.strip("\x00"))]))
            elif piece:
                out.append(START + piece + END)
        return "".join(out)
    return wrapper


for _name, _method in inspect.getmembers(Dialect, inspect.isfunction):
    if not _name.startswith("_") and _name != "kind":
        setattr(MarkedDialect, _name, _marked(_method))
# A quoted name or literal is marked whole (its inside is data, not SQL); so is a date format.
MarkedDialect.quote = lambda self, name: START + DUCKDB.quote(name) + END
MarkedDialect.literal = staticmethod(lambda text: START + DUCKDB.literal(text) + END)


def marked() -> MarkedDialect:
    return MarkedDialect(name="marked", text=START + DUCKDB.text + END,
                         wide_integer=START + DUCKDB.wide_integer + END)

#: What only DuckDB reads (or reads its own way): none of it may be written outside the dialect.
DUCKDB_ONLY = ("epoch", "arg_min", "arg_max", "strptime", "EXCLUDE", "GROUP BY ALL", "ORDER BY ALL",
               "hash(", "::", "SIMILAR", "mode(", "date_trunc", "date_diff", "TRY_CAST", "HUGEINT",
               "VARCHAR", '"', "TEMP", "REPLACE")


@dataclass
class Recorder:
    """A connection that records the SQL it is given."""

    con: object
    statements: list

    def execute(self, sql, *args):
        self.statements.append(sql)
        return self.con.execute(sql, *args)

    def sql(self, sql, *args):
        self.statements.append(sql)
        return self.con.sql(sql, *args)

    def __getattr__(self, name):
        return getattr(self.con, name)


def _outside_the_dialect(sql: str) -> str:
    """``sql`` without the marked fragments (which nest)."""
    out, depth, i = [], 0, 0
    while i < len(sql):
        if sql.startswith(START, i):
            depth, i = depth + 1, i + len(START)
        elif sql.startswith(END, i):
            depth, i = depth - 1, i + len(END)
            out.append(" ")
        else:
            if depth == 0:
                out.append(sql[i])
            i += 1
    return "".join(out)


def _log(tmp_path, name="log.csv"):
    frame = pd.DataFrame({
        "InvoiceNo": ["1", "1", "2", "C3", "4", "5", "5"],
        "StockCode": ["a", "b", "a", "a", "c", "a", "a"],
        "Quantity": ["2", "1", "3", "-1", "1", "4", "4"],
        "InvoiceDate": ["01/02/2011 10:00", "01/02/2011 10:00", "03/04/2011 11:00", "05/04/2011 09:00",
                        "06/06/2011 12:00", "07/07/2011 08:30", "07/07/2011 08:30"],
        "UnitPrice": ["1,50", "2,00", "1,50", "1,50", "0", "3,25", "3,25"],
        "CustomerID": ["17850.0", "17850.0", "13047.0", "17850.0", "13047.0", "12583.0", "12583.0"],
        "Country": ["United Kingdom", "United Kingdom", "France", "United Kingdom", "France", "France", "France"],
    })
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _run(path, dialect, *, parts=1, monkeypatch=None):
    loaded = pipeline.load(SourceSpec(str(path)))
    statements: list[str] = []
    table = replace(loaded.table, con=Recorder(loaded.table.con, statements))
    clean = cleaning.clean_transactions(table, loaded.column_map, dialect=dialect,
                                        policy=cleaning.Policy(date_format="%d/%m/%Y %H:%M"))
    made = features.customer_features(clean)
    counts = cohorts.retention(clean, by="country").counts
    rejects = clean.rejects().df()
    return statements, made, counts, rejects


@pytest.mark.parametrize("parts", [1, 3])
def test_the_rules_and_features_write_duckdb_constructs_only_through_the_dialect(tmp_path, monkeypatch, parts):
    monkeypatch.setattr(features, "partitions", lambda *args: parts)
    statements, *_ = _run(_log(tmp_path), marked())
    assert any("hash(" in s for s in statements) == (parts > 1)
    for sql in statements:
        rest = _outside_the_dialect(sql)
        for construct in DUCKDB_ONLY:
            assert construct not in rest, f"{construct!r} written outside the dialect in: {sql}"


def test_date_formats_and_decimal_commas_are_probed_through_the_dialect(tmp_path):
    # No --date-format: the format is found by trying each through the dialect.
    loaded = pipeline.load(SourceSpec(str(_log(tmp_path))))
    statements: list[str] = []
    table = replace(loaded.table, con=Recorder(loaded.table.con, statements))
    with pytest.raises(cleaning.DataError, match="read both as day/month and month/day"):
        cleaning.read_columns(table, loaded.column_map, cleaning.Policy(), marked())
    for sql in statements:
        rest = _outside_the_dialect(sql)
        assert not any(construct in rest for construct in DUCKDB_ONLY), sql


def test_a_marked_dialect_gives_exactly_the_same_results(tmp_path):
    _, made, counts, rejects = _run(_log(tmp_path), marked())
    _, plain, plain_counts, plain_rejects = _run(_log(tmp_path, "again.csv"), DUCKDB)
    pd.testing.assert_frame_equal(features.to_frame(made.relation), features.to_frame(plain.relation))
    assert made.report == replace(plain.report, source=made.report.source)
    pd.testing.assert_frame_equal(counts, plain_counts)
    pd.testing.assert_frame_equal(rejects, plain_rejects)
    table = features.to_frame(made.relation)
    assert list(table["customer_id"]) == ["12583", "13047", "17850"]  # 17850.0 read as an id
    assert table.set_index("customer_id").loc["17850", "monetary"] == 5.0  # decimal commas read


def test_the_plan_reads_no_data(tmp_path):
    """How columns are read is decided first (read_columns); the plan is written from that alone."""
    loaded = pipeline.load(SourceSpec(str(_log(tmp_path))))
    policy = cleaning.Policy(date_format="%d/%m/%Y %H:%M")
    readings = cleaning.read_columns(loaded.table, loaded.column_map, policy)
    statements: list[str] = []
    table = replace(loaded.table, con=Recorder(loaded.table.con, statements))
    clean = cleaning.plan(table, loaded.column_map, readings, policy)
    assert statements == []
    unparseable = f"THEN {cleaning.rule_code('unparseable_date')} "
    assert unparseable not in clean.ctes()  # bad values stop the run: no rule for them
    dropping = cleaning.plan(table, loaded.column_map, readings, replace(policy, bad_values="drop"))
    assert unparseable in dropping.ctes() and statements == []


def test_a_customer_table_is_in_the_engine_too(marketing_campaign):
    loaded = pipeline.load(SourceSpec(str(marketing_campaign)))
    made = pipeline.customer_table(loaded)
    assert made.table.columns[0] == "customer_id"
    assert made.shape == (len(made.features), len(made.table.columns))
    assert str(made.features["Education"].dtype) == "string"
