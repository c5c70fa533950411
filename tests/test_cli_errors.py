"""Bad input on the command line: one clean line, exit code 2, no output file.

Every case builds one bad input in a fresh folder and runs ``custseg features`` on it.  The
message must name the file (or the option) and where it applies the column and row, and say
how to fix it.
"""

from __future__ import annotations

import os
import random
import re
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from custseg import sources
from custseg.cli import main
from custseg.errors import DataError

CUSTSEG = Path(sys.executable).with_name("custseg")


@pytest.fixture(scope="module")
def orders(online_retail) -> pd.DataFrame:
    """300 Online Retail rows spread over the whole year, dates as dd/mm/yyyy HH:MM text.

    Days run past 12, so the day-first format is the only one that reads every date.
    """
    import pyarrow.parquet as pq

    spread = pq.read_table(online_retail).take(list(range(0, 540_000, 1_800))).to_pandas()
    spread["InvoiceDate"] = spread["InvoiceDate"].dt.strftime("%d/%m/%Y %H:%M")
    spread["Description"] = spread["Description"].str.replace(r"[,;]", " ", regex=True)
    return spread


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


# Each builder gets (folder, orders) and returns (arguments before --out, expected message).

def empty_file(d, o):
    (d / "orders.csv").touch()
    return [str(d / "orders.csv")], r"orders\.csv: the file is empty \(0 bytes\); export the data again"


def header_only(d, o):
    (d / "orders.csv").write_text(",".join(o.columns) + "\n", encoding="utf-8")
    return [str(d / "orders.csv")], r"orders\.csv: has a header but no data rows; export the data again"


def blank_lines(d, o):
    (d / "orders.csv").write_text("\n \n\n", encoding="utf-8")
    return [str(d / "orders.csv")], r"orders\.csv: has only blank lines, no header and no data; export"


def wrong_delimiter(d, o):
    path = write_csv(o, d / "orders.csv")
    return [str(path), "--delimiter", ";"], (
        r"orders\.csv: --delimiter ';' does not occur in the header, which seems to use ','; "
        r"pass --delimiter ',' or leave the option out"
    )


def mixed_delimiter(d, o):
    path = write_csv(o, d / "orders.csv")
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[51] = lines[51].replace(",", ";")  # line 52 of the file, data row 51
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [str(path)], (
        r"orders\.csv: line 52 \(data row 51\) is separated by ';' while the header uses ','; "
        r"the delimiter is mixed — re-export the file with one delimiter"
    )


def extra_field(d, o):
    path = write_csv(o, d / "orders.csv")
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[40] += ",oops"  # an unquoted comma in the last value of line 41
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [str(path)], (
        r"orders\.csv: line 41 \(data row 40\) has 9 fields but the header has 8 \(delimiter ','\); "
        r".*fix that line \(quote such values\) or pass --delimiter"
    )


def binary_junk(d, o):
    rng = random.Random(7)
    (d / "orders.csv").write_bytes(bytes(rng.randrange(1, 256) for _ in range(4_000)))
    return [str(d / "orders.csv")], (
        r"orders\.csv: holds binary data \(.* control bytes in the first 4,000\), so it is not a "
        r"text file; export it as CSV \(UTF-8\)"
    )


def nul_bytes(d, o):
    path = write_csv(o, d / "orders.csv")
    data = path.read_bytes()
    path.write_bytes(data[:1_000] + b"\x00\x00\x00\x00" + data[1_000:])
    return [str(path)], r"orders\.csv: contains NUL bytes, so it is not a text file; export it as CSV \(UTF-8\)"


def not_utf8(d, o):
    people = pd.DataFrame({"CustomerID": [1, 2], "Name": ["Ana", "José"], "InvoiceDate": ["2011-01-01"] * 2, "Amount": [1, 2]})
    people.to_csv(d / "orders.csv", index=False, encoding="latin-1")
    return [str(d / "orders.csv"), "--encoding", "utf-8"], (
        r"orders\.csv: bytes that are not valid UTF-8 on line 3; re-save it as UTF-8 or pass --encoding latin-1"
    )


def unknown_encoding(d, o):
    path = write_csv(o, d / "orders.csv")
    return [str(path), "--encoding", "klingon"], (
        r"orders\.csv: --encoding 'klingon' is not an encoding Python knows; use utf-8, latin-1"
    )


def unparseable_dates(d, o):
    bad = o.copy()
    bad.loc[16, "InvoiceDate"] = "31/02/2011"
    bad.loc[40, "InvoiceDate"] = "not a date"
    bad.loc[100, "InvoiceDate"] = "31/02/2011"
    path = write_csv(bad, d / "orders.csv")
    return [str(path)], (
        r"orders\.csv: column 'InvoiceDate' has 3 unparseable dates, e\.g\. '31/02/2011' on data row 17; "
        r"fix them, pass --date-format, or drop them with --bad-values drop"
    )


def non_numeric_amounts(d, o):
    bad = o.copy()
    bad["UnitPrice"] = bad["UnitPrice"].astype(str)
    bad.loc[9, "UnitPrice"] = "abc"
    path = write_csv(bad, d / "orders.csv")
    return [str(path)], (
        r"orders\.csv: column 'UnitPrice' has 1 non-numeric value, e\.g\. 'abc' on data row 10; "
        r"fix them or drop them with --bad-values drop"
    )


def no_customer_id(d, o):
    path = write_csv(o.rename(columns={"CustomerID": "Who"}), d / "orders.csv")
    return [str(path)], (
        r"orders\.csv: no customer id column found among InvoiceNo, .*Who.*; "
        r"name it with --map customer_id=COLUMN"
    )


def no_order_date(d, o):
    path = write_csv(o.drop(columns=["InvoiceDate"]), d / "orders.csv")
    return [str(path)], (
        r"orders\.csv: no column plays the role 'ordered_at'; name one with --map ordered_at=COLUMN"
    )


def duplicate_columns(d, o):
    path = write_csv(o.rename(columns={"Description": "Quantity"}), d / "orders.csv")
    return [str(path)], r"orders\.csv: duplicate column names \['Quantity'\] .*rename them so each is unique"


def duplicate_columns_by_case(d, o):
    path = write_csv(o.rename(columns={"Description": "customerid"}), d / "orders.csv")
    return [str(path)], (
        r"orders\.csv: duplicate column names \['CustomerID', 'customerid'\] .*ignoring case.*rename them"
    )


def a_directory(d, o):
    (d / "exports").mkdir()
    return [str(d / "exports")], r"exports: is a directory, not a file; give the path of a data file"


def missing_path(d, o):
    return [str(d / "nope.csv")], r"nope\.csv: no such file; check the path"


def xlsx_that_is_csv(d, o):
    path = write_csv(o, d / "orders.xlsx")
    return [str(path)], (
        r"orders\.xlsx: has an Excel extension but is not an Excel workbook \(it looks like CSV text\); "
        r"rename it to \.csv"
    )


def csv_that_is_xlsx(d, o):
    o.head(20).to_excel(d / "orders.csv", index=False, engine="openpyxl")
    return [str(d / "orders.csv")], (
        r"orders\.csv: is an Excel workbook or a zip archive, not CSV text; give a workbook the extension \.xlsx"
    )


def unknown_sheet(d, o):
    o.head(20).to_excel(d / "orders.xlsx", index=False, sheet_name="Orders", engine="openpyxl")
    return [str(d / "orders.xlsx"), "--sheet", "Nope"], r"orders\.xlsx: no sheet 'Nope'; sheets are Orders"


def orders_on_a_later_sheet(d, o):
    # One data sheet after a notes sheet is read (tests/test_sources_real_files.py); two are a choice.
    with pd.ExcelWriter(d / "orders.xlsx", engine="openpyxl") as writer:
        pd.DataFrame({"note": ["read me"]}).to_excel(writer, sheet_name="Notes", index=False)
        o.head(20).to_excel(writer, sheet_name="Orders", index=False)
        o.head(20).to_excel(writer, sheet_name="Returns", index=False)
    return [str(d / "orders.xlsx")], (
        r"orders\.xlsx: sheets 'Orders', 'Returns' all have a customer id column; pass --sheet NAME to choose one$"
    )


def sql_does_not_connect(d, o):
    url = "postgresql+psycopg://postgres@127.0.0.1:1/nope"
    return [url, "--table", "orders"], (
        r"postgresql\+psycopg://postgres@127\.0\.0\.1:1/nope: cannot connect: .*; "
        r"check host, port, database and user in the URL"
    )


def _sqlite(d, o) -> str:
    with sqlite3.connect(d / "shop.db") as connection:
        o.to_sql("orders", connection, index=False)
    connection.close()
    return f"sqlite:///{d / 'shop.db'}"


def sql_query_fails(d, o):
    return [_sqlite(d, o), "--query", "SELEC * FROM orders"], (
        r"sqlite:///.*shop\.db: the query failed: near \"SELEC\": syntax error; fix --query/--table"
    )


def sql_missing_table(d, o):
    return [_sqlite(d, o), "--table", "nope"], r"sqlite:///.*shop\.db: no table 'nope'; check --table \(tables: orders\)"


def sql_query_without_rows(d, o):
    return [_sqlite(d, o), "--query", "SELECT * FROM orders WHERE 1 = 0"], (
        r"sqlite:///.*shop\.db: the query returned no rows; check its conditions$"
    )


def sqlite_missing_file(d, o):
    return [f"sqlite:///{d / 'nope.db'}", "--table", "orders"], (
        r"sqlite:///.*nope\.db: no SQLite database file '.*nope\.db'; check the path"
    )


def bad_map_role(d, o):
    path = write_csv(o, d / "orders.csv")
    return [str(path), "--map", "customer=CustomerID"], (
        r"--map customer=CustomerID: unknown role 'customer' \(did you mean 'customer_id'\?\); "
        r"the role must be one of customer_id, order_id"
    )


def bad_map_column(d, o):
    path = write_csv(o, d / "orders.csv")
    return [str(path), "--map", "customer_id=Client"], (
        r"--map customer_id=Client: .*orders\.csv has no column 'Client'; columns are InvoiceNo"
    )


CASES = [
    empty_file, header_only, blank_lines, wrong_delimiter, mixed_delimiter, extra_field,
    binary_junk, nul_bytes, not_utf8, unknown_encoding, unparseable_dates, non_numeric_amounts,
    no_customer_id, no_order_date, duplicate_columns, duplicate_columns_by_case, a_directory,
    missing_path, xlsx_that_is_csv, csv_that_is_xlsx, unknown_sheet, orders_on_a_later_sheet, sql_does_not_connect,
    sql_query_fails, sql_missing_table, sql_query_without_rows, sqlite_missing_file, bad_map_role, bad_map_column,
]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(err: str, pattern: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("custseg: error: ")
    assert "Traceback" not in err
    assert re.search(pattern, lines[0]), f"{pattern!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture
def folders(tmp_path):
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    out.mkdir()
    return source, out


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_is_one_clean_line(case, folders, orders, capsys):
    source, out = folders
    args, pattern = case(source, orders)
    created = sorted(p.name for p in source.iterdir())
    code, _, err = run(["features", *args, "--out", str(out / "features.csv")], capsys)
    assert code == 2, err
    assert_one_error_line(err, pattern)
    assert list(out.iterdir()) == []  # no output and no half-written temporary file
    assert sorted(p.name for p in source.iterdir()) == created  # the source folder is left alone


@pytest.mark.parametrize(
    "out_name, pattern",
    [
        ("features.txt", r"--out .*features\.txt: the extension must be one of \.csv, \.parquet, \.xlsx, got '\.txt'"),
        ("missing/features.csv", r"--out .*features\.csv: folder '.*missing' does not exist; create it first"),
    ],
    ids=["unsupported-extension", "missing-folder"],
)
def test_bad_out_is_refused_before_reading(out_name, pattern, folders, orders, capsys):
    source, out = folders
    path = write_csv(orders, source / "orders.csv")
    code, _, err = run(["features", str(path), "--out", str(out / out_name)], capsys)
    assert code == 2
    assert_one_error_line(err, pattern)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    "command, extra, pattern",
    [
        ("features", ["--out", "{source}"], r"--out .*orders\.csv: is the source itself, which custseg never modifies"),
        ("features", ["--out", "{link}"], r"--out .*link\.csv: is the source itself"),
        ("features", ["--out", "{out}/f.csv", "--rejects", "{source}"], r"--rejects .*orders\.csv: is the source itself"),
        ("features", ["--out", "{out}/f.csv", "--rejects", "{out}/f.csv"],
         r"--rejects .*f\.csv: is also --out; give the rejected rows a file of their own"),
        ("rfm", ["--out", "{source}"], r"--out .*orders\.csv: is the source itself"),
        ("cohorts", ["--out", "{source}"], r"--out .*orders\.csv: is the source itself"),
        ("segment", ["--out", "{folder}"], r"--out .*in: the run would write assignments\.csv over the source"),
    ],
    ids=["out", "out-through-a-link", "rejects", "rejects-is-out", "rfm", "cohorts", "segment-folder"],
)
def test_no_output_is_written_over_the_source(command, extra, pattern, folders, orders, capsys):
    source, out = folders
    path = write_csv(orders, source / ("assignments.csv" if command == "segment" else "orders.csv"))
    (source / "link.csv").symlink_to(path)
    before = path.read_bytes()
    names = {"source": path, "link": source / "link.csv", "out": out, "folder": source}
    code, _, err = run([command, str(path), *[a.format(**names) for a in extra]], capsys)
    assert code == 2
    assert_one_error_line(err, pattern)
    assert path.read_bytes() == before and list(out.iterdir()) == []


@pytest.mark.parametrize(
    "command, pattern",
    [("rfm", r"Mall_Customers\.csv: RFM needs columns customer_id, recency_days, frequency, monetary; "
             r"missing recency_days, frequency, monetary — give a transaction log"),
     ("cohorts", r"Mall_Customers\.csv: is a customer table \(one row per customer\); this step needs a "
                 r"transaction log")],
)
def test_transaction_commands_on_a_customer_table_name_it(command, pattern, mall_customers, folders, capsys):
    _, out = folders
    code, _, err = run([command, str(mall_customers), "--out", str(out / "result.csv")], capsys)
    assert code == 2
    assert_one_error_line(err, pattern)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("command", ["rfm", "cohorts"])
def test_other_commands_report_bad_input_the_same_way(command, folders, orders, capsys):
    source, out = folders
    args, pattern = unparseable_dates(source, orders)
    code, _, err = run([command, *args, "--out", str(out / "result.csv")], capsys)
    assert code == 2
    assert_one_error_line(err, pattern)
    assert list(out.iterdir()) == []


def test_bad_values_drop_keeps_going_and_lists_the_rows(folders, orders, capsys):
    source, out = folders
    args, _ = unparseable_dates(source, orders)
    features, rejects = out / "features.csv", out / "rejects.csv"
    code, printed, err = run(
        ["features", *args, "--bad-values", "drop", "--out", str(features), "--rejects", str(rejects)], capsys
    )
    assert code == 0, err
    assert "unparseable_date" in printed
    dropped = pd.read_csv(rejects)
    bad = dropped[dropped["rejected_by"] == "unparseable_date"]
    assert bad["row"].tolist() == [17, 41, 101]
    assert bad["InvoiceDate"].tolist() == ["31/02/2011", "not a date", "31/02/2011"]
    table = pd.read_csv(features)
    assert table["customer_id"].is_unique and len(table) > 0


def test_debug_shows_the_traceback_in_process(folders, orders):
    source, out = folders
    args, pattern = unparseable_dates(source, orders)
    with pytest.raises(DataError, match=pattern):
        main(["--debug", "features", *args, "--out", str(out / "features.csv")])
    assert list(out.iterdir()) == []


def custseg(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CUSTSEG), *args], capture_output=True, text=True, cwd=cwd, timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.mark.parametrize("case", [unparseable_dates, sql_query_fails], ids=lambda c: c.__name__)
def test_installed_command_exits_2_without_traceback(case, folders, orders):
    source, out = folders
    args, pattern = case(source, orders)
    done = custseg("features", *args, "--out", str(out / "features.csv"), cwd=out)
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, pattern)
    assert done.stdout == ""
    assert list(out.iterdir()) == []


def test_installed_command_with_debug_prints_the_traceback(folders, orders):
    source, out = folders
    args, _ = unparseable_dates(source, orders)
    done = custseg("--debug", "features", *args, "--out", str(out / "features.csv"), cwd=out)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "custseg.errors.DataError: " in done.stderr and "'InvoiceDate' has 3 unparseable dates" in done.stderr
    assert list(out.iterdir()) == []


# --- running out of memory or temporary disk space --------------------------------------------

@pytest.fixture(scope="module")
def retail_csv(online_retail, tmp_path_factory) -> Path:
    """The whole Online Retail log as CSV (47 MB)."""
    import duckdb

    path = tmp_path_factory.mktemp("retail") / "retail.csv"
    duckdb.sql(f"COPY (SELECT * FROM read_parquet('{online_retail}')) TO '{path}'")
    return path


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_running_out_of_memory_is_one_clean_line(fmt, retail_csv, online_retail, folders, monkeypatch, capsys):
    """A memory limit too small for the work: DuckDB's own limit in the message, the fix, no output.
    A CSV fails while it is parsed, a Parquet file in the features query."""
    monkeypatch.setenv("CUSTSEG_MEMORY_LIMIT", "10MB")
    source = retail_csv if fmt == "csv" else online_retail
    _, out = folders
    code, _, err = run(["features", str(source), "--out", str(out / "features.csv")], capsys)
    assert code == 2, err
    assert_one_error_line(err, r"ran out of memory within the limit of [\d.]+ ?MiB; "
                               r"raise it with CUSTSEG_MEMORY_LIMIT \(e\.g\. 4GB\)$")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_running_out_of_temporary_disk_space_is_one_clean_line(fmt, retail_csv, online_retail, folders,
                                                              monkeypatch, capsys):
    """No room to spill beyond the memory limit (DuckDB refuses to write more than 1 KB of
    temporary files): the message names the folder and the fixes, not the source."""
    connect = sources.connect

    def cramped(**options):
        con = connect(**options)
        con.execute("SET max_temp_directory_size = '1KB'")
        return con

    monkeypatch.setattr(sources, "connect", cramped)
    monkeypatch.setenv("CUSTSEG_MEMORY_LIMIT", "50MB")
    source = retail_csv if fmt == "csv" else online_retail
    _, out = folders
    code, _, err = run(["features", str(source), "--out", str(out / "features.csv")], capsys)
    assert code == 2, err
    line = assert_one_error_line(err, r"ran out of temporary disk space in .+, where work beyond the memory "
                                      r"limit \(50MB\) goes; free space there, set TMPDIR to a disk with more room")
    assert str(source) not in line
    assert list(out.iterdir()) == []


def test_other_errors_are_not_taken_for_a_lack_of_resources():
    import duckdb

    assert sources.resource_error(duckdb.ConversionException("Could not convert string 'x' to INT64")) is None
    assert sources.resource_error(ValueError("No space in the name")) is None
    assert sources.resource_error(OSError(28, "No space left on device")) is None  # --out: custseg.outputs
    assert "temporary disk space" in str(sources.resource_error(
        duckdb.IOException('Could not write file "/tmp/custseg-1.parquet": No space left on device')))


def test_an_unexpected_error_is_one_line_too(folders, orders, monkeypatch, capsys):
    """A bug still reaches the user as one line (the first of its message) asking for a report."""
    from custseg import pipeline

    def broken(spec, **options):
        raise RuntimeError("first line of a long message\nsecond line\nthird line")

    monkeypatch.setattr(pipeline, "load", broken)
    source, out = folders
    code, _, err = run(["features", str(write_csv(orders, source / "orders.csv")), "--out", str(out / "f.csv")], capsys)
    assert code == 1
    assert err.strip() == ("custseg: internal error: RuntimeError: first line of a long message "
                           "— rerun with --debug and report it")


# --- bugs outside sources.py / schema.py ---------------------------------------------------------

@pytest.mark.parametrize(
    "extra, pattern",
    [([], r"Missing option '--out'.*see custseg --help"), (["--out", "x.csv", "--bogus"], r"No such option: --bogus")],
    ids=["missing-out", "unknown-option"],
)
def test_usage_error_is_one_clean_line(extra, pattern, folders, orders, capsys):
    source, _ = folders
    path = write_csv(orders, source / "orders.csv")
    code, _, err = run(["features", str(path), *extra], capsys)
    assert code == 2
    assert_one_error_line(err, pattern)


@pytest.mark.parametrize("case", ["rejects-in-missing-folder", "rejects-on-customer-table"])
def test_bad_rejects_leaves_no_output(case, folders, orders, mall_customers, capsys):
    source, out = folders
    if case == "rejects-in-missing-folder":
        args, _ = unparseable_dates(source, orders)
        args += ["--bad-values", "drop", "--rejects", str(out / "missing" / "rejects.csv")]
        pattern = r"--rejects .*rejects\.csv: folder '.*missing' does not exist"
    else:
        args = [str(mall_customers), "--rejects", str(out / "rejects.csv")]
        pattern = r"--rejects applies to transaction logs"
    code, _, err = run(["features", *args, "--out", str(out / "features.csv")], capsys)
    assert code == 2
    assert_one_error_line(err, pattern)
    assert list(out.iterdir()) == []


def test_rejects_too_long_for_excel_leave_no_output(folders, orders, monkeypatch, capsys):
    """The rejected rows are counted before anything is written: no features without rejects."""
    from custseg import outputs

    monkeypatch.setattr(outputs, "_EXCEL_MAX_ROWS", 10)  # Excel's 1,048,575 rows, scaled down
    source, out = folders
    path = write_csv(orders, source / "orders.csv")
    code, _, err = run(["features", str(path), "--out", str(out / "features.csv"),
                        "--rejects", str(out / "rejects.xlsx")], capsys)
    assert code == 2
    assert_one_error_line(err, r"--rejects .*rejects\.xlsx: \d+ rows do not fit in an Excel sheet \(max 10\); "
                               r"write \.csv or \.parquet instead")
    assert list(out.iterdir()) == []


def test_output_file_has_the_usual_permissions(folders, orders, capsys):
    source, out = folders
    path = write_csv(orders, source / "orders.csv")
    umask = os.umask(0o022)
    try:
        assert main(["features", str(path), "--out", str(out / "features.csv")]) == 0
    finally:
        os.umask(umask)
    capsys.readouterr()
    assert stat.S_IMODE((out / "features.csv").stat().st_mode) == 0o644


def test_ambiguous_day_month_order_is_not_guessed_silently(folders, retail_head, capsys):
    source, out = folders
    first_days = retail_head.copy()  # 1 and 2 December 2010 only: '01/12/2010' fits both orders
    first_days["InvoiceDate"] = first_days["InvoiceDate"].dt.strftime("%d/%m/%Y %H:%M")
    path = write_csv(first_days, source / "orders.csv")
    code, printed, err = run(["features", str(path), "--out", str(out / "features.csv")], capsys)
    stopped = code == 2 and "--date-format" in err and "InvoiceDate" in err
    warned = code == 0 and "ambiguous" in printed.replace(str(out), "").lower()  # the path says it too
    assert stopped or warned, (code, err, printed[-400:])



# --- an output that cannot be written ------------------------------------------------------

def _file_size_limit(limit: int):
    """For the child: files may grow to ``limit`` bytes only (writes beyond fail with EFBIG,
    as on a full disk; SIGXFSZ, which would kill the process instead, is ignored)."""
    import resource
    import signal

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".xlsx"])
def test_an_output_that_cannot_be_written_is_one_line_and_no_file(online_retail, folders, suffix):
    """The engine (CSV, Parquet) and the Excel writer fail alike: one line naming --out and the
    reason, no file, no temporary file left, no 'Exception ignored' noise."""
    _, out = folders
    target = out / f"features{suffix}"
    done = subprocess.run(
        [str(CUSTSEG), "features", str(online_retail), "--out", str(target)],
        capture_output=True, text=True, timeout=300, preexec_fn=_file_size_limit(16_000),
    )
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, rf"--out .*features\{suffix}: cannot write \(File too large\)")
    assert list(out.iterdir()) == []


def test_out_and_rejects_are_written_both_or_neither(online_retail, folders):
    """The features fit, the rejected rows (149,217 of them) do not: the earlier features file
    stays as it was and no rejects file appears."""
    _, out = folders
    features, rejects = out / "features.parquet", out / "rejects.csv"
    features.write_bytes(b"the earlier run's features")
    done = subprocess.run(
        [str(CUSTSEG), "features", str(online_retail), "--out", str(features), "--rejects", str(rejects)],
        capture_output=True, text=True, timeout=300, preexec_fn=_file_size_limit(2_000_000),
    )
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, r"--rejects .*rejects\.csv: cannot write \(File too large\)")
    assert sorted(p.name for p in out.iterdir()) == ["features.parquet"]
    assert features.read_bytes() == b"the earlier run's features"


def test_a_run_that_cannot_be_written_leaves_the_earlier_run_whole(tmp_path):
    """`segment` writes the run aside and moves it in only when every file is complete: a
    failed write (the model file, 250 kB, against a 100 kB limit) keeps the earlier run's files
    as they were, and a folder that did not exist is not left behind."""
    from custseg import datasets

    earlier = tmp_path / "run"
    earlier.mkdir()
    before = {name: f"earlier {name}".encode() for name in ("run.json", "model.skops", "assignments.csv", "report.html")}
    for name, content in before.items():
        (earlier / name).write_bytes(content)
    for folder in (earlier, tmp_path / "new"):
        done = subprocess.run(
            [str(CUSTSEG), "segment", str(datasets.sample_path()), "--out", str(folder),
             "--algorithm", "kmeans", "--k", "3", "--no-report"],
            capture_output=True, text=True, timeout=300, preexec_fn=_file_size_limit(100_000),
        )
        assert done.returncode == 2, done.stderr
        assert_one_error_line(done.stderr, rf"--out .*{folder.name}/model\.skops: cannot write \(File too large\); "
                                           "the folder is left as it was")
    assert {p.name: p.read_bytes() for p in earlier.iterdir()} == before
    assert not (tmp_path / "new").exists()


def test_a_report_that_cannot_be_written_says_the_run_is_there(tmp_path):
    from custseg import datasets

    folder = tmp_path / "run"
    done = subprocess.run(
        [str(CUSTSEG), "segment", str(datasets.sample_path()), "--out", str(folder), "--algorithm", "kmeans", "--k", "3"],
        capture_output=True, text=True, timeout=300, preexec_fn=_file_size_limit(1_000_000),
    )
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, r"--out .*report\.html: cannot write \(File too large\); the run itself is "
                                       r"written: build the report again with `custseg report .*run`")
    assert (folder / "model.skops").is_file() and not (folder / "report.html").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_exports_are_written_all_or_none(tmp_path):
    """The customer lists (10 kB each) fit a 12 kB limit, the CRM file (15 kB) does not: the
    exports folder keeps the earlier exports, with no new list beside them."""
    from custseg import datasets

    run = tmp_path / "run"
    assert main(["segment", str(datasets.sample_path()), "--out", str(run), "--algorithm", "kmeans",
                 "--k", "3", "--no-report"]) == 0
    exports = run / "exports"
    exports.mkdir()
    (exports / "crm_import.csv").write_text("the earlier export\n")
    done = subprocess.run([str(CUSTSEG), "export", str(run)], capture_output=True, text=True, timeout=300,
                          preexec_fn=_file_size_limit(12_000))
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, r"--out .*crm_import\.csv: cannot write \(File too large\)")
    assert [p.name for p in exports.iterdir()] == ["crm_import.csv"]
    assert (exports / "crm_import.csv").read_text() == "the earlier export\n"


# --- a place that cannot be written in -----------------------------------------------------

def _unwritable_system_folder() -> Path:
    """/sys refuses new files even to root (a real refusal, not a simulated one)."""
    try:
        Path("/sys/custseg-probe").touch()
    except OSError:
        return Path("/sys")
    Path("/sys/custseg-probe").unlink()
    pytest.skip("/sys accepts new files here; no place to test a refused write")


@pytest.mark.parametrize("command", ["features", "segment", "export", "demo"])
def test_a_folder_that_refuses_files_is_one_line(command, tmp_path):
    """The write itself fails (the folder looks writable): one line naming --out, exit 2."""
    from custseg import datasets

    place = _unwritable_system_folder()
    sample = str(datasets.sample_path())
    if command == "export":
        run = tmp_path / "run"
        assert main(["segment", sample, "--out", str(run), "--algorithm", "kmeans", "--k", "3", "--no-report"]) == 0
        args = ["export", str(run), "--out", str(place / "exports")]
    else:
        target = place / ("features.csv" if command == "features" else "custseg-out")
        args = [command, *([] if command == "demo" else [sample]), "--out", str(target)]
        args += ["--algorithm", "kmeans", "--k", "3", "--no-report"] if command == "segment" else []
    done = subprocess.run([str(CUSTSEG), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, r"--out /sys/\S+: cannot write \((Permission denied|Operation not permitted)\)")


@pytest.fixture
def read_only_folder(tmp_path):
    """A real read-only file system (a tmpfs mounted read-only), where the machine allows it."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only file system here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("command", ["features", "segment"])
def test_a_read_only_folder_is_refused_before_any_work(command, read_only_folder, capsys):
    from custseg import datasets

    target = read_only_folder / ("features.csv" if command == "features" else "run")
    code, printed, err = run([command, str(datasets.sample_path()), "--out", str(target)], capsys)
    assert code == 2
    assert_one_error_line(err, rf"--out .*read-only/{target.name}: cannot write in '.*read-only' "
                               r"\(read-only, or no permission\); choose another place")
    assert "Cleaning" not in printed  # refused before reading the source
