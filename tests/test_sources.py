"""Tests for custseg.sources (every format reads) and custseg.schema (roles, --map, kind)."""

from __future__ import annotations

import gc
import re
import sqlite3
import tempfile
import uuid
from pathlib import Path

import pandas as pd
import pytest

from custseg import cleaning, cli, pipeline, sources
from custseg.errors import ConfigError, InputError, SchemaError
from custseg.schema import ColumnMap, detect_roles, duplicate_names, parse_mapping

RETAIL_COLUMNS = [
    "InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country",
]
RETAIL_ROLES = {
    "customer_id": "CustomerID", "order_id": "InvoiceNo", "ordered_at": "InvoiceDate",
    "product_id": "StockCode", "quantity": "Quantity", "unit_price": "UnitPrice", "country": "Country",
}
PEOPLE = pd.DataFrame({
    "CustomerID": [1, 2, 3, 4],
    "Name": ["José Núñez", "Jürgen Müller", "Zoë Brontë", "Ana Lopes"],
    "Amount": [1.5, 2.0, 3.25, 4.0],
})


def frame(table: sources.Table) -> pd.DataFrame:
    return table.relation().df()


# --- text files ------------------------------------------------------------------------------

def test_csv_written_from_online_retail(retail_head, tmp_path):
    path = tmp_path / "retail.csv"
    retail_head.to_csv(path, index=False)
    table = sources.read(path)
    assert (table.format, table.encoding, table.delimiter) == ("csv", "utf-8", ",")
    assert table.columns == RETAIL_COLUMNS
    assert table.count() == 5_000
    assert table.types["InvoiceDate"].startswith("TIMESTAMP")
    sums = table.con.execute(
        "SELECT sum(Quantity), count(CustomerID), count(DISTINCT InvoiceNo) FROM source"
    ).fetchall()[0]
    expected = (
        int(retail_head["Quantity"].sum()),
        int(retail_head["CustomerID"].notna().sum()),
        retail_head["InvoiceNo"].nunique(),
    )
    assert sums == expected


@pytest.mark.parametrize(
    "delimiter, suffix", [(",", ".csv"), (";", ".csv"), ("\t", ".tsv"), ("|", ".txt")],
    ids=["comma", "semicolon", "tab", "pipe"],
)
def test_delimiter_is_detected(retail_head, tmp_path, delimiter, suffix):
    path = tmp_path / f"retail{suffix}"
    retail_head.head(500).to_csv(path, index=False, sep=delimiter)
    table = sources.read(path)
    assert table.delimiter == delimiter
    assert table.columns == RETAIL_COLUMNS and table.count() == 500
    assert frame(table)["Description"].tolist() == retail_head["Description"].head(500).tolist()


def test_tab_separated_customer_personality(marketing_campaign):
    table = sources.read(marketing_campaign)
    assert (table.delimiter, table.count(), len(table.columns)) == ("\t", 2_240, 29)
    assert table.columns[:3] == ["ID", "Year_Birth", "Education"]
    nulls = table.con.execute("SELECT count(*) - count(Income) FROM source").fetchall()[0][0]
    assert nulls == 24  # README figure


def test_utf8_bom_is_not_part_of_the_first_name(retail_head, tmp_path):
    path = tmp_path / "bom.csv"
    retail_head.head(100).to_csv(path, index=False, encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    table = sources.read(path)
    assert table.columns[0] == "InvoiceNo" and table.encoding == "utf-8"
    assert detect_roles(table.columns).get("order_id") == "InvoiceNo"


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1", "utf-16"])
def test_names_with_accents_come_out_right(tmp_path, encoding):
    path = tmp_path / "people.csv"
    PEOPLE.to_csv(path, index=False, encoding=encoding)
    table = sources.read(path)
    assert table.encoding == encoding
    assert frame(table)["Name"].tolist() == PEOPLE["Name"].tolist()


def test_windows_1252_euro_and_curly_quotes(tmp_path):
    path = tmp_path / "windows.csv"
    names = ["Café “Le Pain”", "Price € 5", "O’Brien"]
    pd.DataFrame({"CustomerID": [1, 2, 3], "Name": names}).to_csv(path, index=False, encoding="cp1252")
    table = sources.read(path)
    assert table.encoding == "cp1252"
    assert frame(table)["Name"].tolist() == names


def test_windows_1252_byte_after_the_encoding_sample(tmp_path):
    """The encoding is chosen from the first 4 MB; a '€' after that must not break the read."""
    path = tmp_path / "late.csv"
    rows = "".join(f"{i},Café {i},{i % 7}\n" for i in range(250_000))
    path.write_bytes(("CustomerID,Name,Amount\n" + rows + "999999,Total in €,1\n").encode("cp1252"))
    assert path.stat().st_size > 4 << 20
    table = sources.read(path)
    assert table.count() == 250_001
    last = table.con.execute("SELECT Name FROM source WHERE CustomerID = 999999").fetchall()
    assert last == [("Total in €",)]


@pytest.mark.parametrize("given, reported", [("latin-1", "latin-1"), ("ISO-8859-1", "latin-1"), ("windows-1252", "cp1252")])
def test_encoding_option_overrides_detection(tmp_path, given, reported):
    path = tmp_path / "people.csv"
    PEOPLE.to_csv(path, index=False, encoding="latin-1")
    table = sources.read(path, encoding=given)
    assert table.encoding == reported
    assert frame(table)["Name"].tolist() == PEOPLE["Name"].tolist()


def test_utf16_without_a_byte_order_mark_needs_the_encoding(tmp_path):
    path = tmp_path / "people.csv"
    PEOPLE.to_csv(path, index=False, encoding="utf-16-le")
    with pytest.raises(InputError, match=r"people\.csv: looks like UTF-16 text without a byte-order mark; pass encoding utf-16-le") as caught:
        sources.read(path)
    assert caught.value.param == "encoding"
    assert caught.value.render(cli.FLAGS).endswith(
        "people.csv: looks like UTF-16 text without a byte-order mark; pass --encoding utf-16-le")
    assert frame(sources.read(path, encoding="utf-16-le"))["Name"].tolist() == PEOPLE["Name"].tolist()


def test_transcoded_copy_is_removed_with_the_connection(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    path = tmp_path / "windows.csv"
    pd.DataFrame({"CustomerID": [1], "Name": ["€"]}).to_csv(path, index=False, encoding="cp1252")
    table = sources.read(path)
    assert len(list(scratch.glob("custseg-*.csv"))) == 1
    table.con.close()
    del table
    gc.collect()
    assert list(scratch.glob("custseg-*.csv")) == []


def test_quoted_fields_keep_delimiters_quotes_and_newlines(tmp_path):
    path = tmp_path / "quoted.csv"
    descriptions = ['SET, OF 3 "CAKE" TINS', "plain", "two\nlines; here", "tab\tinside"]
    pd.DataFrame({"CustomerID": [1, 2, 3, 4], "Description": descriptions, "Amount": [1, 2, 3, 4]}).to_csv(path, index=False)
    table = sources.read(path)
    assert table.delimiter == "," and table.count() == 4
    assert frame(table)["Description"].tolist() == descriptions


def late_bad_date(retail_head, path):
    """25,000 rows as CSV whose 24,001st date, past DuckDB's 20,480-row type sample, is 'not a date'."""
    rows = pd.concat([retail_head] * 5, ignore_index=True)
    rows["InvoiceDate"] = rows["InvoiceDate"].astype(str)
    rows.loc[24_000, "InvoiceDate"] = "not a date"
    rows.to_csv(path, index=False)
    return path


def test_bad_value_after_the_type_sample_does_not_break_later_queries(retail_head, tmp_path):
    """DuckDB types columns from 20,480 rows; a late 'not a date' must reach cleaning as text."""
    table = sources.read(late_bad_date(retail_head, tmp_path / "late.csv"))
    assert table.types["InvoiceDate"] == "VARCHAR"
    assert table.con.execute(
        "SELECT count(*) FROM source WHERE InvoiceDate = 'not a date'"
    ).fetchall()[0][0] == 1


# --- binary formats --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workbook(retail_head, tmp_path_factory):
    path = tmp_path_factory.mktemp("xlsx") / "book.xlsx"
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        retail_head.head(300).to_excel(writer, sheet_name="Orders", index=False)
        PEOPLE.to_excel(writer, sheet_name="People", index=False)
    return path


def test_xlsx_reads_the_first_sheet_by_default(workbook, retail_head):
    table = sources.read(workbook)
    assert (table.format, table.columns, table.count()) == ("xlsx", RETAIL_COLUMNS, 300)
    got = frame(table)
    assert got["CustomerID"].astype("Int64").tolist() == retail_head["CustomerID"].head(300).tolist()
    assert got["InvoiceDate"].tolist() == retail_head["InvoiceDate"].head(300).tolist()


def test_xlsx_sheet_picks_another_sheet(workbook):
    table = sources.read(workbook, sheet="People")
    assert table.columns == ["CustomerID", "Name", "Amount"]
    assert frame(table)["Name"].tolist() == PEOPLE["Name"].tolist()


def test_xlsx_unknown_sheet_names_the_sheets(workbook):
    with pytest.raises(InputError, match=r"book\.xlsx: no sheet 'Nope'; sheets are Orders, People"):
        sources.read(workbook, sheet="Nope")


def test_sheet_on_a_csv_is_refused(tmp_path):
    path = tmp_path / "people.csv"
    PEOPLE.to_csv(path, index=False)
    with pytest.raises(InputError, match=r"people\.csv: sheet goes with an Excel workbook.*drop sheet$") as caught:
        sources.read(path, sheet="People")
    assert caught.value.render(cli.FLAGS) == (
        f"{path}: --sheet goes with an Excel workbook, but this is a csv file; drop --sheet")


def test_parquet(online_retail):
    table = sources.read(online_retail)
    assert (table.format, table.columns, table.count()) == ("parquet", RETAIL_COLUMNS, 541_909)
    assert table.types["InvoiceDate"].startswith("TIMESTAMP")


@pytest.mark.parametrize("suffix, lines", [(".jsonl", True), (".json", False)], ids=["lines", "array"])
def test_json(retail_head, tmp_path, suffix, lines):
    path = tmp_path / f"retail{suffix}"
    retail_head.head(1_000).to_json(path, orient="records", lines=lines, date_format="iso")
    table = sources.read(path)
    assert (table.format, table.columns, table.count()) == ("json", RETAIL_COLUMNS, 1_000)
    assert frame(table)["StockCode"].tolist() == retail_head["StockCode"].head(1_000).tolist()


# --- SQL -------------------------------------------------------------------------------------

@pytest.fixture
def sqlite_db(retail_head, tmp_path):
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as connection:
        retail_head.head(1_000).assign(InvoiceDate=lambda d: d["InvoiceDate"].astype(str)).to_sql(
            "orders", connection, index=False
        )
    connection.close()
    return path


def test_sqlite_table(sqlite_db):
    table = sources.read(f"sqlite:///{sqlite_db}", table="orders")
    assert (table.format, table.columns, table.count()) == ("sql", RETAIL_COLUMNS, 1_000)
    assert table.label == f"sqlite:///{sqlite_db}"


def test_sqlite_query(sqlite_db, retail_head):
    query = "SELECT CustomerID, InvoiceNo, Quantity FROM orders WHERE Quantity >= 12"
    table = sources.read(f"sqlite:///{sqlite_db}", query=query)
    assert table.columns == ["CustomerID", "InvoiceNo", "Quantity"]
    assert table.count() == int((retail_head["Quantity"].head(1_000) >= 12).sum())


def test_sql_reading_never_writes(sqlite_db, tmp_path):
    url = f"sqlite:///{sqlite_db}"
    with pytest.raises(InputError, match="query must be a SELECT"):
        sources.read(url, query="DELETE FROM orders")
    sources.read(url, query="DELETE FROM orders WHERE Quantity > 0 RETURNING *")
    with sqlite3.connect(sqlite_db) as connection:
        assert connection.execute("SELECT count(*) FROM orders").fetchone() == (1_000,)
    connection.close()
    missing = tmp_path / "missing.db"
    with pytest.raises(InputError, match=r"no SQLite database file '.*missing\.db'; check the path"):
        sources.read(f"sqlite:///{missing}", table="orders")
    assert not missing.exists()  # SQLite would have created an empty database


def test_sql_needs_exactly_one_of_table_and_query(sqlite_db):
    for tables in ({}, {"table": "orders", "query": "SELECT 1"}):
        with pytest.raises(InputError, match="give exactly one of table NAME or query SQL$") as caught:
            sources.read(f"sqlite:///{sqlite_db}", **tables)
        assert caught.value.param == "table"
        assert caught.value.render(cli.FLAGS) == f"sqlite:///{sqlite_db}: give exactly one of --table NAME or --query SQL"


@pytest.fixture
def postgres_table(postgres_url, retail_head):
    import sqlalchemy as sa

    name = f"custseg_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(postgres_url)
    with engine.begin() as connection:
        retail_head.head(1_000).to_sql(name, connection, index=False)
    try:
        yield name
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f'DROP TABLE IF EXISTS "{name}"'))
        engine.dispose()


@pytest.mark.postgres
def test_postgres_table(postgres_url, postgres_table):
    table = sources.read(postgres_url, table=postgres_table)
    assert (table.format, table.columns, table.count()) == ("sql", RETAIL_COLUMNS, 1_000)
    assert table.types["InvoiceDate"].startswith("TIMESTAMP")
    qualified = sources.read(postgres_url, table=f"public.{postgres_table}")
    assert qualified.count() == 1_000


@pytest.mark.postgres
def test_postgres_query(postgres_url, postgres_table, retail_head):
    query = f'SELECT "CustomerID", "InvoiceNo" FROM "{postgres_table}" WHERE "Country" <> \'United Kingdom\''
    table = sources.read(postgres_url, query=query)
    assert table.columns == ["CustomerID", "InvoiceNo"]
    assert table.count() == int((retail_head["Country"].head(1_000) != "United Kingdom").sum())


@pytest.mark.postgres
def test_postgres_through_the_pipeline(postgres_url, postgres_table):
    loaded = pipeline.load(pipeline.SourceSpec(postgres_url, table=postgres_table))
    assert loaded.kind == "transactions"
    assert loaded.column_map.roles == RETAIL_ROLES


@pytest.mark.postgres
def test_postgres_errors_name_the_table_and_the_query(postgres_url, postgres_table):
    with pytest.raises(InputError, match=r"postgresql\+psycopg://postgres@127\.0\.0\.1:5432/test: no table 'nope_.*'; check table") as caught:
        sources.read(postgres_url, table=f"nope_{postgres_table}")
    assert re.search(r"postgresql\+psycopg://postgres@127\.0\.0\.1:5432/test: no table 'nope_.*'; check --table",
                     caught.value.render(cli.FLAGS))
    with pytest.raises(InputError, match=r"the query failed: .*syntax error.*; fix query/table$") as caught:
        sources.read(postgres_url, query="SELEC 1")
    assert re.search(r"the query failed: .*syntax error.*; fix --query/--table$", caught.value.render(cli.FLAGS))


# --- roles -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, role",
    [
        ("CustomerID", "customer_id"), ("Customer ID", "customer_id"), ("customer_id", "customer_id"),
        ("cust_id", "customer_id"),
        ("InvoiceNo", "order_id"), ("Invoice", "order_id"), ("order id", "order_id"),
        ("InvoiceDate", "ordered_at"), ("date", "ordered_at"),
        ("UnitPrice", "unit_price"), ("Price", "unit_price"),
        ("amount", "amount"), ("total", "amount"), ("sales", "amount"),
        ("StockCode", "product_id"), ("product", "product_id"),
        ("Country", "country"), ("Quantity", "quantity"),
    ],
)
def test_role_is_detected_from_the_name(name, role):
    assert detect_roles([name, "Notes"]).roles == {role: name}


def test_online_retail_roles():
    cmap = detect_roles(RETAIL_COLUMNS, source="retail.csv")
    assert cmap.roles == RETAIL_ROLES and cmap.kind == "transactions"


def test_online_retail_ii_roles():
    columns = ["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"]
    assert detect_roles(columns).roles == {
        "customer_id": "Customer ID", "order_id": "Invoice", "ordered_at": "InvoiceDate",
        "product_id": "StockCode", "quantity": "Quantity", "unit_price": "Price", "country": "Country",
    }


def test_specific_name_wins_over_generic():
    assert detect_roles(["date", "InvoiceDate", "customer", "CustomerID"]).roles == {
        "customer_id": "CustomerID", "ordered_at": "InvoiceDate",
    }


def test_map_overrides_detection():
    columns = ["CustomerID", "Client", "When", "Total"]
    cmap = detect_roles(columns, overrides=parse_mapping(["customer_id=Client", " ordered_at = When "]))
    assert cmap.roles == {"customer_id": "Client", "ordered_at": "When", "amount": "Total"}
    assert cmap.overridden == ("customer_id", "ordered_at")


def test_map_column_taken_is_not_detected_again():
    cmap = detect_roles(["InvoiceNo", "CustomerID"], overrides={"customer_id": "InvoiceNo"})
    assert cmap.roles == {"customer_id": "InvoiceNo"}


@pytest.mark.parametrize(
    "items, message",
    [
        (["customer=CustomerID"], r"--map customer=CustomerID: unknown role 'customer' \(did you mean 'customer_id'\?\); the role must be one of customer_id, order_id"),
        (["customer_id"], r"--map takes ROLE=COLUMN, got 'customer_id'; e\.g\. --map customer_id=Client"),
        (["customer_id="], r"--map takes ROLE=COLUMN"),
        (["customer_id=A", "customer_id=B"], r"--map customer_id is given twice \('A' and 'B'\); keep one"),
        (["customer_id=A", "order_id=A"], r"--map order_id=A: column 'A' already plays the role 'customer_id'"),
    ],
    ids=["unknown-role", "no-equals", "no-column", "role-twice", "column-twice"],
)
def test_parse_mapping_errors(items, message):
    # the library names the parameter ("mapping customer=..."), the CLI prints it as --map
    with pytest.raises(ConfigError, match="^" + message.replace("--map", "mapping")) as caught:
        parse_mapping(items)
    assert caught.value.param == "mapping"
    assert re.match(message, caught.value.render(cli.FLAGS))


def test_map_to_a_missing_column_suggests_the_closest():
    with pytest.raises(SchemaError, match=r"^mapping customer_id=customerid: orders\.csv has no column 'customerid' \(did you mean 'CustomerID'\?\); columns are InvoiceNo, CustomerID") as caught:
        detect_roles(["InvoiceNo", "CustomerID"], overrides={"customer_id": "customerid"}, source="orders.csv")
    assert caught.value.render(cli.FLAGS) == ("--map customer_id=customerid: orders.csv has no column 'customerid' "
                                              "(did you mean 'CustomerID'?); columns are InvoiceNo, CustomerID")


@pytest.mark.parametrize(
    "columns, clashing",
    [
        (["CustomerID", "Amount", "CustomerID"], ["CustomerID"]),
        (["CustomerID", "customerid", "Amount"], ["CustomerID", "customerid"]),
        (["Amount ", "CustomerID", "amount"], ["Amount ", "amount"]),
    ],
    ids=["same", "case", "case-and-space"],
)
def test_duplicate_names_are_refused(columns, clashing):
    assert duplicate_names(columns) == clashing
    with pytest.raises(SchemaError, match=r"orders\.csv: duplicate column names \[.*\] \(compared ignoring case\); rename them"):
        detect_roles(columns, source="orders.csv")


def test_missing_role_names_the_source():
    cmap = ColumnMap({"customer_id": "CustomerID"}, source="orders.csv")
    with pytest.raises(SchemaError, match=r"orders\.csv: no column plays the role 'ordered_at'; name one with mapping ordered_at=COLUMN") as caught:
        cmap.column("ordered_at")
    assert caught.value.render(cli.FLAGS) == (
        "orders.csv: no column plays the role 'ordered_at'; name one with --map ordered_at=COLUMN")
    assert cmap.with_kind("customers").source == "orders.csv"


# --- kind ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "dataset, kind",
    [("online_retail", "transactions"), ("marketing_campaign", "customers"), ("mall_customers", "customers")],
)
def test_kind_of_the_reference_datasets(dataset, kind, request):
    path = request.getfixturevalue(dataset)
    assert pipeline.load(pipeline.SourceSpec(str(path))).kind == kind


def test_kind_from_a_csv_of_online_retail(retail_head, tmp_path):
    path = tmp_path / "retail.csv"
    retail_head.to_csv(path, index=False)
    loaded = pipeline.load(pipeline.SourceSpec(str(path)))
    assert loaded.kind == "transactions" and loaded.column_map.roles == RETAIL_ROLES


def test_customer_table_roles(marketing_campaign, mall_customers):
    campaign = pipeline.load(pipeline.SourceSpec(str(marketing_campaign))).column_map.roles
    assert campaign == {"customer_id": "ID", "joined_at": "Dt_Customer", "birth_year": "Year_Birth"}
    mall = pipeline.load(pipeline.SourceSpec(str(mall_customers))).column_map.roles
    assert mall == {"customer_id": "CustomerID"}


def test_a_csv_over_a_third_of_the_memory_budget_is_staged_as_parquet(retail_head, tmp_path, monkeypatch):
    """Past a third of the budget the parsed text goes to a temporary Parquet file: same rows,
    same order (row numbers in messages and rejects), same late-value fallback, file removed after."""
    path = late_bad_date(retail_head, tmp_path / "large.csv")
    monkeypatch.setattr(sources, "memory_budget", lambda con: 3 * path.stat().st_size)
    in_memory = sources.read(path)
    monkeypatch.setattr(sources, "memory_budget", lambda con: 3 * path.stat().st_size - 1)
    before = set(Path(tempfile.gettempdir()).glob("custseg-*.parquet"))
    staged = sources.read(path)
    parquet = set(Path(tempfile.gettempdir()).glob("custseg-*.parquet")) - before
    assert len(parquet) == 1
    plan = staged.con.execute("EXPLAIN SELECT * FROM source").fetchall()[0][1]
    assert "READ_PARQUET" in plan.upper() and "READ_PARQUET" not in in_memory.con.execute(
        "EXPLAIN SELECT * FROM source").fetchall()[0][1].upper()
    assert staged.types == in_memory.types and staged.types["InvoiceDate"] == "VARCHAR"
    numbered = "SELECT row_number() OVER () AS n, * FROM source"
    pd.testing.assert_frame_equal(staged.con.execute(numbered).df(), in_memory.con.execute(numbered).df())
    assert staged.con.execute(
        f"SELECT n FROM ({numbered}) WHERE InvoiceDate = 'not a date'").fetchall() == [(24_001,)]
    del staged
    gc.collect()
    assert not any(f.exists() for f in parquet)


# --- a CSV read in place (one pass) -----------------------------------------------------------

def _features(path: Path, *, one_pass: bool, **policy) -> tuple[pipeline.CustomerTable, sources.Table]:
    loaded = pipeline.load(pipeline.SourceSpec(str(path)), one_pass=one_pass)
    table = loaded.table
    return pipeline.customer_table(loaded, policy=cleaning.Policy(**policy)), table


def _scans(table: sources.Table) -> str:
    return table.con.execute("EXPLAIN SELECT * FROM source").fetchall()[0][1].upper()


def test_a_csv_read_in_one_pass_is_read_in_place_with_the_same_answer(retail_head, tmp_path):
    """One pass (features, RFM) reads the text where it is — no parsed copy — and gives the same
    customers and the same account of every row as the staged reading."""
    path = tmp_path / "log.csv"
    pd.concat([retail_head] * 2, ignore_index=True).to_csv(path, index=False)  # 5,000 copies
    in_place, table = _features(path, one_pass=True)
    assert table.in_place and "READ_CSV" in _scans(table)
    staged, usual = _features(path, one_pass=False)
    assert not usual.in_place and "READ_CSV" not in _scans(usual)
    pd.testing.assert_frame_equal(in_place.features, staged.features)
    assert in_place.report == staged.report and in_place.report.rows_in == 10_000
    # Every row of the second copy that has a customer id is a duplicate (and the head's own).
    duplicates = dict((r.rule, r.rows) for r in in_place.report.dropped)["duplicate_row"]
    assert duplicates >= retail_head["CustomerID"].notna().sum()
    # The rejects (a pass of their own) are the same rows too.
    pd.testing.assert_frame_equal(in_place.clean.rejects().df(), staged.clean.rejects().df())


@pytest.mark.parametrize("bad_values", ["error", "drop"])
def test_a_late_bad_value_in_a_csv_read_in_place_is_met_as_the_staged_reading_meets_it(
        retail_head, tmp_path, bad_values):
    """'not a date' after DuckDB's 20,480-row type sample breaks the query over the text: the
    table is then staged (the date column read as text) and the step runs again, so the error,
    or the rows dropped, are those of the usual reading."""
    path = late_bad_date(retail_head, tmp_path / "late.csv")
    outcomes = []
    for one_pass in (True, False):
        try:
            made, table = _features(path, one_pass=one_pass, bad_values=bad_values)
            outcomes.append((made.report.dropped, made.features))
        except Exception as exc:  # noqa: BLE001 - the error itself is compared
            outcomes.append((type(exc), str(exc)))
    if bad_values == "error":
        assert outcomes[0] == outcomes[1]
        assert outcomes[0][0].__name__ == "DataError" and "data row 24001" in outcomes[0][1]
    else:
        assert outcomes[0][0] == outcomes[1][0]
        assert dict((r.rule, r.rows) for r in outcomes[0][0])["unparseable_date"] == 1
        pd.testing.assert_frame_equal(outcomes[0][1], outcomes[1][1])
        assert not table.in_place


def test_a_csv_larger_than_the_memory_budget_is_staged_even_in_one_pass(retail_head, tmp_path, monkeypatch):
    path = tmp_path / "log.csv"
    retail_head.to_csv(path, index=False)
    monkeypatch.setattr(sources, "memory_budget", lambda con: path.stat().st_size)
    assert sources.read(path, in_place=True).in_place
    monkeypatch.setattr(sources, "memory_budget", lambda con: path.stat().st_size - 1)
    assert not sources.read(path, in_place=True).in_place


def test_a_customer_table_read_in_one_pass_is_staged_before_it_is_cleaned(marketing_campaign):
    loaded = pipeline.load(pipeline.SourceSpec(str(marketing_campaign)), one_pass=True)
    made = pipeline.customer_table(loaded)
    assert not loaded.table.in_place
    usual = pipeline.customer_table(pipeline.load(pipeline.SourceSpec(str(marketing_campaign))))
    pd.testing.assert_frame_equal(made.features, usual.features)


def test_a_csv_whose_values_need_a_pass_of_their_own_is_staged_before_it(retail_head, tmp_path):
    """Prices written with decimal commas are text: reading them takes a pass over the column
    (which separator, which values fail), so a text read in place would be parsed once more per
    such pass: it is staged first, with the same answer."""
    path = tmp_path / "comma.csv"
    frame = retail_head.copy()
    frame["UnitPrice"] = frame["UnitPrice"].map(lambda v: f"{v:.2f}".replace(".", ","))
    frame.to_csv(path, index=False, sep=";")
    one_pass, table = _features(path, one_pass=True)
    assert not table.in_place and table.types["UnitPrice"] == "VARCHAR"
    usual, _ = _features(path, one_pass=False)
    pd.testing.assert_frame_equal(one_pass.features, usual.features)
    assert one_pass.report == usual.report
    plain = tmp_path / "plain.csv"
    retail_head.to_csv(plain, index=False)
    money = _features(plain, one_pass=False)[0].features["monetary"]
    assert money.sum() == pytest.approx(one_pass.features["monetary"].sum(), rel=1e-6)  # commas read as decimals
