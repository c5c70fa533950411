"""Real customer files that used to be refused or misread: whitespace-aligned text tables,
compressed files, workbooks with the data on a later sheet, and files that hold no data.

Every file is made here, in a fresh folder; every test reads it with no options.
"""

from __future__ import annotations

import bz2
import gc
import gzip
import importlib.util
import lzma
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from custseg import cli, sources
from custseg.errors import InputError, SchemaError

CUSTSEG = Path(sys.executable).with_name("custseg")

# The CDNOW original log: customer id, yyyymmdd date, quantity, amount; no header.
CDNOW = (
    "00001 19970101  1  11.77\n"
    "00002 19970112  1  12.00\n"
    "00002 19970112  5  77.00\n"
    "00003 19970102  2  20.76\n"
    "00003 19970330  2  20.76\n"
)
CDNOW_ROWS = [
    ("00001", 19970101, 1, 11.77),
    ("00002", 19970112, 1, 12.0),
    ("00002", 19970112, 5, 77.0),
    ("00003", 19970102, 2, 20.76),
    ("00003", 19970330, 2, 20.76),
]
PEOPLE = pd.DataFrame({"CustomerID": [1, 2, 3], "Name": ["Ana", "José", "Zoë"], "Spend": [1.5, 2.0, 3.25]})


def rows(table: sources.Table) -> list[tuple]:
    return table.con.execute("SELECT * FROM source").fetchall()


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def gz(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data))
    return path


# --- whitespace-aligned tables -----------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".txt", ".dat", ".csv"])
def test_whitespace_table_without_header_like_the_cdnow_log(tmp_path, suffix):
    table = sources.read(write(tmp_path / f"CDNOW_master{suffix}", CDNOW))
    assert (table.format, table.delimiter) == ("csv", " ")
    assert table.columns == ["column_1", "column_2", "column_3", "column_4"]
    assert table.types == {"column_1": "VARCHAR", "column_2": "BIGINT", "column_3": "BIGINT", "column_4": "DOUBLE"}
    assert rows(table) == CDNOW_ROWS
    assert table.notes == (
        "read as a whitespace-aligned table without a header: columns are named column_1..column_4",
        "column 'column_1' is read as text to keep its leading zeros (e.g. '00001')",
    )


def test_whitespace_table_with_header_right_aligned_and_leading_spaces(tmp_path):
    text = (
        "  CustomerID      Date  Qty   Amount\n"
        "           1  19970101    1    11.77\n"
        "          12  19970112    1    12.00\n"
        "         123  19970112   15  1077.00\n"
    )
    table = sources.read(write(tmp_path / "orders.dat", text))
    assert table.columns == ["CustomerID", "Date", "Qty", "Amount"]
    assert table.types == {"CustomerID": "BIGINT", "Date": "BIGINT", "Qty": "BIGINT", "Amount": "DOUBLE"}
    assert rows(table) == [(1, 19970101, 1, 11.77), (12, 19970112, 1, 12.0), (123, 19970112, 15, 1077.0)]
    assert table.notes == ("read as a whitespace-aligned table with a header line (4 columns)",)


def test_whitespace_table_left_aligned_with_text_tabs_blank_lines_and_crlf(tmp_path):
    text = (
        "\r\n"
        "customer  country   joined      spend\r\n"
        "c1        France    2011-01-04  10\r\n"
        "   \r\n"
        "c2        Spain\t   2011-02-01  2.5\r\n"
        "c3        Portugal  2011-03-09  NA\r\n"
        "\r\n"
    )
    table = sources.read(write(tmp_path / "customers.txt", text))
    assert table.types == {"customer": "VARCHAR", "country": "VARCHAR", "joined": "DATE", "spend": "DOUBLE"}
    got = rows(table)
    assert [r[:2] for r in got] == [("c1", "France"), ("c2", "Spain"), ("c3", "Portugal")]
    assert [str(r[2]) for r in got] == ["2011-01-04", "2011-02-01", "2011-03-09"]
    assert [r[3] for r in got] == [10.0, 2.5, None]  # NA is missing in a numeric column


def test_whitespace_header_of_text_columns_is_found_by_distinct_names(tmp_path):
    with_header = sources.read(write(tmp_path / "a.txt", "name city\nann paris\nbob rome\ncid oslo\n"))
    assert with_header.columns == ["name", "city"] and len(rows(with_header)) == 3
    # A value that recurs below the first line says the first line is data.
    without = sources.read(write(tmp_path / "b.txt", "ann paris\nbob rome\nann oslo\n"))
    assert without.columns == ["column_1", "column_2"]
    assert rows(without) == [("ann", "paris"), ("bob", "rome"), ("ann", "oslo")]


def test_whitespace_first_line_with_a_number_is_data(tmp_path):
    table = sources.read(write(tmp_path / "c.txt", "1 ann\n2 bob\n3 cid\n"))
    assert table.columns == ["column_1", "column_2"]
    assert rows(table) == [(1, "ann"), (2, "bob"), (3, "cid")]


def test_whitespace_header_over_a_text_column_and_a_number_column(tmp_path):
    table = sources.read(write(tmp_path / "d.txt", "who total\nann 1\nbob 2\n"))
    assert table.columns == ["who", "total"]
    assert table.types == {"who": "VARCHAR", "total": "BIGINT"}


def test_whitespace_line_with_another_number_of_values_is_named(tmp_path):
    lines = CDNOW.splitlines()
    lines[2] = "00002 19970112  5"
    with pytest.raises(InputError, match=(
        r"orders\.txt: line 3 has 3 values but the table has 4 columns \(aligned with spaces\); "
        r"a value holds a space or is missing — fix that line, or export the data as CSV$"
    )):
        sources.read(write(tmp_path / "orders.txt", "\n".join(lines) + "\n"))


def test_whitespace_header_with_spaces_in_a_name_is_explained(tmp_path):
    text = "Customer ID  Date      Amount\n1  19970101  11.77\n2  19970102  12.00\n3  19970103  1.00\n"
    with pytest.raises(InputError, match=r"orders\.txt: the header line has 4 names but the data lines have 3 values"):
        sources.read(write(tmp_path / "orders.txt", text))


def test_whitespace_duplicate_names_are_refused(tmp_path):
    with pytest.raises(SchemaError, match=r"duplicate column names \['Amount', 'amount'\]"):
        sources.read(write(tmp_path / "dup.txt", "Amount amount\n1 2\n3 4\n"))


def test_whitespace_huge_whole_numbers_stay_text(tmp_path):
    table = sources.read(write(tmp_path / "big.txt", "id n\n12345678901234567890123 1\n2 2\n"))
    assert table.types == {"id": "VARCHAR", "n": "BIGINT"}
    assert rows(table)[0] == ("12345678901234567890123", 1)


def test_delimited_files_with_spaces_in_values_are_not_whitespace_tables(tmp_path):
    text = "CustomerID,Description,Amount\n1,SET OF 3 CAKE TINS,2.5\n2,RED BAG,1\n3,\"BIG, BLUE BOX\",4\n"
    table = sources.read(write(tmp_path / "orders.csv", text))
    assert table.delimiter == ","
    assert rows(table)[2] == (3, "BIG, BLUE BOX", 4.0)
    assert table.notes == ()
    single = sources.read(write(tmp_path / "ids.csv", "CustomerID\n1\n2\n"))
    assert (single.columns, single.delimiter) == (["CustomerID"], ",")


def test_delimiter_space_option_reads_a_whitespace_table(tmp_path):
    table = sources.read(write(tmp_path / "orders.txt", CDNOW), delimiter=" ")
    assert rows(table) == CDNOW_ROWS


def test_large_whitespace_table_is_staged_as_parquet_in_file_order(tmp_path, monkeypatch):
    path = tmp_path / "log.txt"
    with path.open("w") as fh:
        fh.write("id amount\n")
        for i in range(50_000):
            fh.write(f"{i:>6}  {i * 0.5:>10.2f}\n")
    monkeypatch.setattr(sources, "memory_budget", lambda con: 1_000)
    before = set(Path(tempfile.gettempdir()).glob("custseg-*.parquet"))
    table = sources.read(path)
    assert len(set(Path(tempfile.gettempdir()).glob("custseg-*.parquet")) - before) == 1
    assert table.count() == 50_000
    mismatched = table.con.execute(
        "SELECT count(*) FROM (SELECT row_number() OVER () - 1 AS n, * FROM source) WHERE id <> n OR amount <> n * 0.5"
    ).fetchall()[0][0]
    assert mismatched == 0


# --- compressed files --------------------------------------------------------------------------

@pytest.mark.parametrize("name, text, expected", [
    ("people.csv.gz", PEOPLE.to_csv(index=False), [(1, "Ana", 1.5), (2, "José", 2.0), (3, "Zoë", 3.25)]),
    ("people.tsv.gz", PEOPLE.to_csv(index=False, sep="\t"), [(1, "Ana", 1.5), (2, "José", 2.0), (3, "Zoë", 3.25)]),
    ("people.jsonl.gz", PEOPLE.to_json(orient="records", lines=True), [(1, "Ana", 1.5), (2, "José", 2.0), (3, "Zoë", 3.25)]),
    ("people.ndjson.gz", PEOPLE.to_json(orient="records", lines=True), [(1, "Ana", 1.5), (2, "José", 2.0), (3, "Zoë", 3.25)]),
    ("people.json.gz", PEOPLE.to_json(orient="records"), [(1, "Ana", 1.5), (2, "José", 2.0), (3, "Zoë", 3.25)]),
    ("CDNOW_master.txt.gz", CDNOW, CDNOW_ROWS),
], ids=["csv", "tsv", "jsonl", "ndjson", "json", "whitespace-txt"])
def test_gzip_files_are_read_directly(tmp_path, name, text, expected):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    tempfile.tempdir, saved = str(scratch), tempfile.tempdir
    try:
        table = sources.read(gz(tmp_path / name, text.encode("utf-8")))
    finally:
        tempfile.tempdir = saved
    assert rows(table) == expected
    assert table.notes[0] == "gzip-compressed, read directly"
    assert list(scratch.glob("custseg-*")) == []  # nothing decompressed to disk


def test_gzip_file_named_csv_is_read_by_its_signature(tmp_path):
    table = sources.read(gz(tmp_path / "export.csv", PEOPLE.to_csv(index=False).encode()))
    assert rows(table)[1] == (2, "José", 2.0)
    assert table.notes == ("gzip-compressed although named .csv; read directly",)


def test_gzip_file_with_no_extension_is_guessed_from_its_content(tmp_path):
    table = sources.read(gz(tmp_path / "export", PEOPLE.to_json(orient="records", lines=True).encode()))
    assert table.format == "json" and table.count() == 3


def test_name_ending_gz_that_is_not_compressed_is_read_as_text(tmp_path):
    table = sources.read(write(tmp_path / "people.csv.gz", PEOPLE.to_csv(index=False)))
    assert rows(table)[0] == (1, "Ana", 1.5)
    assert table.notes == ("named .gz but not compressed; read as plain text",)


def test_cp1252_gzip_is_transcoded_to_a_gzip_copy_removed_with_the_connection(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    text = "CustomerID,Name,Price\n1,€ café “best”,1.5\n2,plain,2\n"
    table = sources.read(gz(tmp_path / "windows.csv.gz", text.encode("cp1252")))
    assert table.encoding == "cp1252"
    assert rows(table) == [(1, "€ café “best”", 1.5), (2, "plain", 2.0)]
    assert "cp1252 text, read through a temporary UTF-8 copy" in table.notes
    copies = list(scratch.glob("custseg-*"))
    assert [c.name.endswith(".csv.gz") for c in copies] == [True]
    assert gzip.decompress(copies[0].read_bytes()).decode("utf-8") == text
    table.con.close()
    del table
    gc.collect()
    assert list(scratch.glob("custseg-*")) == []


def test_cp1252_whitespace_table_in_gzip(tmp_path):
    text = "name   spend\nJosé   1.5\nRenée  2\n"
    table = sources.read(gz(tmp_path / "people.txt.gz", text.encode("cp1252")))
    assert rows(table) == [("José", 1.5), ("Renée", 2.0)]


def test_gzip_text_size_comes_from_the_trailer(tmp_path):
    text = PEOPLE.to_csv(index=False).encode() * 1_000
    path = gz(tmp_path / "people.csv.gz", text)
    assert sources._text_size(path, "gzip") == len(text)
    assert sources._text_size(path, None) == path.stat().st_size
    assert sources._text_size(path, "zstd") == path.stat().st_size * sources._COMPRESSION_RATIO


def test_large_gzip_csv_is_staged_by_the_size_of_its_text(tmp_path, monkeypatch):
    body = "".join(f"{i},name {i},{i * 1.5}\n" for i in range(20_000))
    path = gz(tmp_path / "people.csv.gz", ("CustomerID,Name,Spend\n" + body).encode())
    text_size = len(("CustomerID,Name,Spend\n" + body).encode())
    monkeypatch.setattr(sources, "memory_budget", lambda con: 3 * text_size - 1)  # the file itself is far smaller
    before = set(Path(tempfile.gettempdir()).glob("custseg-*.parquet"))
    table = sources.read(path)
    assert len(set(Path(tempfile.gettempdir()).glob("custseg-*.parquet")) - before) == 1
    assert table.count() == 20_000
    assert table.con.execute("SELECT sum(CustomerID) FROM source").fetchall()[0][0] == sum(range(20_000))


def test_damaged_gzip_is_one_line(tmp_path):
    data = gzip.compress(("CustomerID,Spend\n" + "".join(f"{i},1\n" for i in range(50_000))).encode())
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.csv\.gz: is gzip-compressed but cannot be decompressed .*cut short"):
        sources.read(path)


def test_compressed_parquet_must_be_decompressed_first(tmp_path):
    parquet = tmp_path / "p.parquet"
    PEOPLE.to_parquet(parquet)
    path = gz(tmp_path / "people.parquet.gz", parquet.read_bytes())
    with pytest.raises(InputError, match=(
        r"people\.parquet\.gz: is gzip-compressed and holds a Parquet file, which cannot be read compressed "
        r"\(CSV and JSON lines can\); decompress it first \(gunzip people\.parquet\.gz\)$"
    )):
        sources.read(path)


needs_zstd = pytest.mark.skipif(
    shutil.which("zstd") is None and importlib.util.find_spec("zstandard") is None,
    reason="neither the zstd program nor the zstandard package",
)


def zst(path: Path, data: bytes) -> Path:
    try:
        import zstandard
    except ImportError:
        subprocess.run([shutil.which("zstd"), "-q", "-o", str(path), "-"], input=data, check=True)
        return path
    path.write_bytes(zstandard.ZstdCompressor().compress(data))
    return path


@needs_zstd
@pytest.mark.parametrize("name, text, expected", [
    ("people.csv.zst", PEOPLE.to_csv(index=False), [(1, "Ana", 1.5), (2, "José", 2.0), (3, "Zoë", 3.25)]),
    ("people.jsonl.zst", PEOPLE.to_json(orient="records", lines=True), [(1, "Ana", 1.5), (2, "José", 2.0), (3, "Zoë", 3.25)]),
    ("CDNOW_master.txt.zst", CDNOW, CDNOW_ROWS),
], ids=["csv", "jsonl", "whitespace-txt"])
def test_zstd_files_are_read_directly(tmp_path, name, text, expected):
    table = sources.read(zst(tmp_path / name, text.encode()))
    assert rows(table) == expected
    assert table.notes[0] == "zstd-compressed, read directly"


@needs_zstd
def test_zstd_cp1252_is_transcoded(tmp_path):
    table = sources.read(zst(tmp_path / "w.csv.zst", "CustomerID,Name\n1,€uro\n".encode("cp1252")))
    assert rows(table) == [(1, "€uro")]


@needs_zstd
def test_zstd_without_a_decompressor_says_how_to_decompress(tmp_path, monkeypatch):
    path = zst(tmp_path / "people.csv.zst", PEOPLE.to_csv(index=False).encode())
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import fails
    with pytest.raises(InputError, match=(
        r"people\.csv\.zst: is zstd-compressed, and reading its head .* needs the zstandard package or the "
        r"zstd program; pip install zstandard, or decompress it first \(zstd -d people\.csv\.zst\)$"
    )):
        sources.read(path)


# --- workbooks ---------------------------------------------------------------------------------

def workbook(path: Path, sheets: dict[str, pd.DataFrame | None]) -> Path:
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        for name, frame in sheets.items():
            (frame if frame is not None else pd.DataFrame()).to_excel(writer, sheet_name=name, index=False)
    return path


NOTES = pd.DataFrame({"note": ["exported by the CRM", "do not edit"]})
TEXT_NOTES = pd.DataFrame({"Topic": ["source", "date"], "Remark": ["CRM", "2024-01-01"]})


def test_data_on_the_second_sheet_is_found_by_its_customer_id(tmp_path):
    table = sources.read(workbook(tmp_path / "book.xlsx", {"Notes": NOTES, "Customers": PEOPLE}))
    assert table.columns == ["CustomerID", "Name", "Spend"]
    assert rows(table) == [(1, "Ana", 1.5), (2, "José", 2.0), (3, "Zoë", 3.25)]
    assert table.notes == ("read sheet 'Customers' (the one with a customer id; sheets: Notes, Customers)",)


def test_customer_id_sheet_wins_over_a_table_of_notes(tmp_path):
    table = sources.read(workbook(tmp_path / "book.xlsx", {"About": TEXT_NOTES, "Data": PEOPLE}))
    assert table.columns == ["CustomerID", "Name", "Spend"]


def test_two_later_sheets_with_a_customer_id_are_an_error_listing_both(tmp_path):
    path = workbook(tmp_path / "book.xlsx", {"Notes": NOTES, "Shop A": PEOPLE, "Shop B": PEOPLE})
    with pytest.raises(InputError, match=(
        r"book\.xlsx: sheets 'Shop A', 'Shop B' all have a customer id column; pass sheet NAME to choose one$"
    )) as caught:
        sources.read(path)
    assert caught.value.render(cli.FLAGS) == (
        f"{path}: sheets 'Shop A', 'Shop B' all have a customer id column; pass --sheet NAME to choose one")
    assert sources.read(path, sheet="Shop B").count() == 3


def test_first_sheet_with_a_customer_id_is_read_as_before(tmp_path):
    table = sources.read(workbook(tmp_path / "book.xlsx", {"2023": PEOPLE.head(2), "2024": PEOPLE}))
    assert table.count() == 2
    assert table.notes == ("read sheet '2023' (the first, which has a customer id; '2024' also has one; sheets: 2023, 2024)",)


def test_only_table_is_read_when_no_sheet_has_a_customer_id(tmp_path):
    data = PEOPLE.rename(columns={"CustomerID": "Kunde"})
    table = sources.read(workbook(tmp_path / "book.xlsx", {"Readme": NOTES, "Empty": None, "Data": data}))
    assert table.columns == ["Kunde", "Name", "Spend"]
    assert table.notes == ("read sheet 'Data' (the only one that looks like a table; sheets: Readme, Empty, Data)",)


def test_several_tables_without_a_customer_id_are_an_error(tmp_path):
    data = PEOPLE.rename(columns={"CustomerID": "Kunde"})
    path = workbook(tmp_path / "book.xlsx", {"About": TEXT_NOTES, "Data": data})
    with pytest.raises(InputError, match=(
        r"book\.xlsx: no sheet has a customer id column and sheets 'About', 'Data' all look like tables; "
        r"pass sheet NAME to choose one$"
    )) as caught:
        sources.read(path)
    assert caught.value.render(cli.FLAGS) == (
        f"{path}: no sheet has a customer id column and sheets 'About', 'Data' all look like tables; "
        "pass --sheet NAME to choose one")


def test_empty_first_sheet_is_skipped(tmp_path):
    table = sources.read(workbook(tmp_path / "book.xlsx", {"Sheet1": None, "Customers": PEOPLE}))
    assert table.count() == 3


def test_sheet_with_duplicate_names_is_no_candidate(tmp_path):
    clashing = pd.DataFrame([[1, 2]], columns=["CustomerID", "customerid"])
    table = sources.read(workbook(tmp_path / "book.xlsx", {"Bad": clashing, "Good": PEOPLE}))
    assert table.columns == ["CustomerID", "Name", "Spend"]


def test_sheet_option_overrides_the_choice_and_single_sheets_have_no_note(tmp_path):
    path = workbook(tmp_path / "book.xlsx", {"Notes": NOTES, "Customers": PEOPLE})
    table = sources.read(path, sheet="Notes")
    assert table.columns == ["note"] and table.notes == ()
    single = sources.read(workbook(tmp_path / "one.xlsx", {"Only": PEOPLE}))
    assert single.count() == 3 and single.notes == ()


# --- files that hold no data -------------------------------------------------------------------

EXPORT = r"not a data file; export the data as CSV, XLSX, Parquet or JSON lines"


def _zip(path: Path, members: dict[str, bytes]) -> bytes:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path.read_bytes()


def _tar_gz(tmp_path: Path) -> bytes:
    member = write(tmp_path / "inside.csv", "a,b\n1,2\n")
    with tarfile.open(tmp_path / "t.tar.gz", "w:gz") as archive:
        archive.add(member, arcname="inside.csv")
    return (tmp_path / "t.tar.gz").read_bytes()


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200)

SIGNATURES = {
    "png": (lambda d: PNG, r"is a PNG image, " + EXPORT + "$"),
    "jpeg": (lambda d: b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(100), r"is a JPEG image, " + EXPORT),
    "gif": (lambda d: b"GIF89a" + bytes(100), r"is a GIF image, " + EXPORT),
    "pdf": (lambda d: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", r"is a PDF document, " + EXPORT),
    "zip": (lambda d: _zip(d / "a.zip", {"orders.csv": b"a,b\n1,2\n", "readme.txt": b"hi"}),
            r"is a ZIP archive \(holding orders\.csv, readme\.txt\), not a data file; extract the data file"),
    "word": (lambda d: _zip(d / "w.zip", {"word/document.xml": b"<w/>"}), r"is a Word document, not a data file"),
    "html": (lambda d: b"\xef\xbb\xbf \n<!DOCTYPE html>\n<html><body><table></table></body></html>",
             r"is an HTML page, not a data file; save the data itself"),
    "html-tag": (lambda d: b"<HTML>\n<head></head>", r"is an HTML page, not a data file"),
    "xml": (lambda d: b'<?xml version="1.0"?>\n<orders><order id="1"/></orders>', r"is an XML document, " + EXPORT),
    "excel-2003-xml": (
        lambda d: b'<?xml version="1.0"?>\n<Workbook xmlns="urn:schemas-microsoft-com:office:spreadsheet">',
        r"is an Excel 2003 XML spreadsheet, not a data file; open it in Excel and save it as \.xlsx"),
    "gzip-of-png": (lambda d: gzip.compress(PNG), r"is gzip-compressed and holds a PNG image, " + EXPORT),
    "tar-gz": (_tar_gz, r"is gzip-compressed and holds a tar archive, not a data file; extract the data file"),
    "7z": (lambda d: b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(50), r"is a 7-Zip archive, not a data file; extract"),
    "rar": (lambda d: b"Rar!\x1a\x07\x01\x00" + bytes(50), r"is a RAR archive, not a data file; extract"),
    "elf": (lambda d: b"\x7fELF\x02\x01\x01" + bytes(100), r"is a program \(an ELF executable\), not a data file"),
    "exe": (lambda d: b"MZ\x90\x00\x03" + bytes(100), r"is a Windows program \(\.exe or \.dll\), not a data file"),
    "bzip2": (lambda d: bz2.compress(b"a,b\n1,2\n"), r"is bzip2-compressed, not a data file; decompress it first \(bunzip2\)"),
    "xz": (lambda d: lzma.compress(b"a,b\n1,2\n"), r"is xz-compressed, not a data file; decompress it first \(unxz\)"),
}


@pytest.mark.parametrize("kind", list(SIGNATURES))
def test_non_data_file_named_csv_says_what_it_is(tmp_path, kind):
    make, message = SIGNATURES[kind]
    path = tmp_path / "report.csv"
    path.write_bytes(make(tmp_path))
    with pytest.raises(InputError, match=r"report\.csv: " + message):
        sources.read(path)


@pytest.mark.parametrize("suffix", [".xlsx", ".json", ".parquet", ".jsonl.gz"])
def test_non_data_file_with_other_extensions_says_what_it_is(tmp_path, suffix):
    path = tmp_path / f"report{suffix}"
    path.write_bytes(gzip.compress(PNG) if suffix.endswith(".gz") else PNG)
    with pytest.raises(InputError, match=r"report" + suffix.replace(".", r"\.") + r": is (gzip-compressed and holds )?a PNG image"):
        sources.read(path)


def test_html_named_xls_says_it_is_a_web_page(tmp_path):
    path = write(tmp_path / "export.xls", "<html xmlns:o='urn:schemas-microsoft-com:office:office'><table>")
    with pytest.raises(InputError, match=r"export\.xls: is an HTML page, not a data file"):
        sources.read(path)


def test_xlsx_that_is_a_zip_of_something_else_says_zip(tmp_path):
    path = tmp_path / "book.xlsx"
    _zip(path, {"data/orders.csv": b"a,b\n1,2\n"})
    with pytest.raises(InputError, match=(
        r"book\.xlsx: is a ZIP archive \(holding data/orders\.csv\), not an Excel workbook; extract the data file"
    )):
        sources.read(path)


def test_parquet_named_json_keeps_its_message(tmp_path):
    path = tmp_path / "orders.json"
    PEOPLE.to_parquet(path)
    with pytest.raises(InputError, match=r"orders\.json: is a Parquet file, not JSON lines; give it the extension \.parquet"):
        sources.read(path)


def test_signature_comes_before_the_encoding_diagnosis(tmp_path):
    path = tmp_path / "photo.txt"
    path.write_bytes(b"\xff\xd8\xff\xe1" + bytes(range(256)) * 40)  # NUL and control bytes everywhere
    with pytest.raises(InputError, match=r"photo\.txt: is a JPEG image"):
        sources.read(path)


def test_text_starting_like_a_signature_is_still_text(tmp_path):
    table = sources.read(write(tmp_path / "names.csv", "MZ,BM\n1,2\n"))
    assert rows(table) == [(1, 2)]


# --- the command line --------------------------------------------------------------------------

def _inspect(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CUSTSEG), "inspect", str(path)], capture_output=True, text=True, timeout=120)


def test_cli_inspects_a_gzip_whitespace_log_without_options(tmp_path):
    done = _inspect(gz(tmp_path / "CDNOW_master.txt.gz", CDNOW.encode()))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "5 rows, 4 columns" in done.stdout and "column_4" in done.stdout


def test_cli_inspects_the_data_sheet_of_a_workbook(tmp_path):
    done = _inspect(workbook(tmp_path / "book.xlsx", {"Notes": NOTES, "Customers": PEOPLE}))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "3 rows, 3 columns" in done.stdout


def test_cli_names_a_png_in_one_line(tmp_path):
    path = tmp_path / "report.csv"
    path.write_bytes(PNG)
    done = _inspect(path)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].endswith("report.csv: is a PNG image, not a data file; export the data as CSV, XLSX, Parquet or JSON lines")


def test_one_text_column_with_spaces_in_its_values_stays_a_csv(tmp_path):
    table = sources.read(write(tmp_path / "names.csv", "Name\nAna Lopes\nJosé Núñez\nZoë Brontë\nBo Li\n"))
    assert table.columns == ["Name"]
    assert rows(table) == [("Ana Lopes",), ("José Núñez",), ("Zoë Brontë",), ("Bo Li",)]


def test_csv_with_both_crlf_and_lf_line_endings_is_read(tmp_path):
    text = "ID,x,t_x,T,zbar\r\n" + "".join(f"{i},{i % 3},1.5,38.86,0.00\r\n" for i in range(1, 100)) + "100,0,0.00,38.86,0.00\n"
    table = sources.read(write(tmp_path / "summary.csv", text))
    assert table.count() == 100
    assert table.con.execute("SELECT sum(ID), max(zbar) FROM source").fetchall() == [(5050, 0.0)]
    assert table.notes == ("lines end in both CR LF and LF; read with DuckDB's lenient parser",)


def test_compressed_workbook_must_be_decompressed_first(tmp_path):
    book = workbook(tmp_path / "b.xlsx", {"Customers": PEOPLE})
    path = gz(tmp_path / "book.xlsx.gz", book.read_bytes())
    with pytest.raises(InputError, match=(
        r"book\.xlsx\.gz: is gzip-compressed and holds an Excel workbook or a zip archive, which cannot be read "
        r"compressed \(CSV and JSON lines can\); decompress it first \(gunzip book\.xlsx\.gz\)$"
    )):
        sources.read(path)
