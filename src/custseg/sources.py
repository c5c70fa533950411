"""Read customer data into DuckDB without modifying it.

A source is a file (CSV/TSV/TXT, XLSX/XLS, Parquet, JSON lines) or a SQL table/query given as
a SQLAlchemy URL.  :func:`read` registers it as the view ``source`` in a fresh DuckDB
connection and returns a :class:`Table`; nothing is copied for CSV, Parquet and JSON (DuckDB
reads them out of core), XLSX and SQL results are loaded through Arrow.

>>> table = read("orders.csv")                                    # doctest: +SKIP
>>> table.columns                                                   # doctest: +SKIP
['InvoiceNo', 'StockCode', 'Quantity', 'InvoiceDate', 'UnitPrice', 'CustomerID']
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb

from custseg.errors import InputError, SchemaError

__all__ = ["Table", "read", "connect", "FORMATS", "is_sql_url"]

Format = Literal["csv", "xlsx", "parquet", "json", "sql"]

FORMATS: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".tab": "csv",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".xls": "xlsx",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
}

_SNIFF_BYTES = 4 << 20  # how much of a text file decides its encoding


@dataclass
class Table:
    """A source registered in DuckDB as the view ``source``.

    ``label`` names the source in messages (a path, or a URL with the password hidden).
    """

    con: duckdb.DuckDBPyConnection
    label: str
    format: Format
    columns: list[str]
    types: dict[str, str]
    encoding: str | None = None
    delimiter: str | None = None

    def count(self) -> int:
        return int(self.con.execute("SELECT count(*) FROM source").fetchall()[0][0])

    def relation(self) -> duckdb.DuckDBPyRelation:
        return self.con.sql("SELECT * FROM source")


def connect(*, memory_limit: str | None = None, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that spills to a temporary directory instead of running out of memory."""
    config: dict[str, str | int | bool] = {
        "temp_directory": os.path.join(tempfile.gettempdir(), "custseg-duckdb"),
        "preserve_insertion_order": True,
    }
    if memory_limit:
        config["memory_limit"] = memory_limit
    if threads:
        config["threads"] = threads
    return duckdb.connect(config=config)


def is_sql_url(source: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+]*://", str(source), re.IGNORECASE))


def read(
    source: str | os.PathLike[str],
    *,
    sheet: str | None = None,
    table: str | None = None,
    query: str | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    format: Format | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> Table:
    """Register ``source`` as the DuckDB view ``source`` and describe its columns.

    Files are recognised by extension (``format`` overrides); ``sheet`` picks an XLSX sheet
    (default: the first); ``table`` or ``query`` go with a SQL URL; ``encoding`` and
    ``delimiter`` override the CSV sniffer.  Raises :class:`InputError` with a one-line
    message for anything that cannot be read.
    """
    con = con or connect()
    text = str(source)
    if is_sql_url(text):
        _read_sql(con, text, table=table, query=query)
        fmt: Format = "sql"
        label = _safe_url(text)
        enc = delim = None
    else:
        if table or query:
            raise InputError(f"--table/--query go with a SQL URL, but '{text}' is a file path")
        path = Path(text)
        label = text
        if not path.exists():
            raise InputError(f"{label}: no such file; check the path")
        if path.is_dir():
            raise InputError(f"{label}: is a directory, not a file; give the path of a data file")
        if path.stat().st_size == 0:
            raise InputError(f"{label}: the file is empty (0 bytes); export the data again")
        fmt = format or FORMATS.get(path.suffix.lower()) or _guess_format(path)
        enc = delim = None
        if fmt == "csv":
            enc, delim = _read_csv(con, path, encoding=encoding, delimiter=delimiter)
        elif fmt == "xlsx":
            _read_xlsx(con, path, sheet=sheet)
        elif fmt == "parquet":
            _read_parquet(con, path)
        elif fmt == "json":
            _read_json(con, path)
        else:  # pragma: no cover - Literal exhausts the choices
            raise InputError(f"{label}: unknown format '{fmt}'")
    described = con.execute("DESCRIBE SELECT * FROM source").fetchall()
    columns = [row[0] for row in described]
    types = {row[0]: row[1] for row in described}
    result = Table(con, label, fmt, columns, types, enc, delim)
    if result.count() == 0:
        raise InputError(f"{label}: has a header but no data rows; export the data again")
    return result


# --- formats -------------------------------------------------------------------------------

def _head(path: Path, size: int) -> bytes:
    with path.open("rb") as fh:
        return fh.read(size)


def _guess_format(path: Path) -> Format:
    head = _head(path, 8)
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\xd0\xcf\x11\xe0"):
        return "xlsx"
    if head.lstrip().startswith((b"{", b"[")):
        return "json"
    return "csv"


def _sniff_encoding(path: Path) -> str:
    """utf-8 (with or without BOM), utf-16 by BOM, else latin-1; binary files are refused."""
    head = _head(path, _SNIFF_BYTES)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if b"\x00" in head:
        raise InputError(
            f"{path}: contains NUL bytes, so it is not a text file; "
            "export it as CSV (UTF-8) or give the right extension"
        )
    try:
        # A multi-byte character may be cut at the end of the sample.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < _SNIFF_BYTES)
        return "utf-8"
    except UnicodeDecodeError:
        return "latin-1"


def _header(path: Path, encoding: str, delimiter: str, quote: str | None) -> list[str]:
    py_encoding = "utf-8-sig" if encoding == "utf-8" else encoding
    with path.open("r", encoding=py_encoding, newline="") as fh:
        line = fh.readline()
    reader = csv.reader(io.StringIO(line), delimiter=delimiter, quotechar=quote or '"')
    return [c.strip() for c in next(reader, [])]


def _read_csv(con, path: Path, *, encoding: str | None, delimiter: str | None) -> tuple[str, str]:
    encoding = encoding or _sniff_encoding(path)
    options = {"encoding": encoding, "header": True}
    if delimiter:
        options["delim"] = delimiter
    try:
        sniff = con.execute(
            "SELECT Delimiter, Quote, HasHeader FROM sniff_csv(?, encoding := ?"
            + (", delim := ?" if delimiter else "")
            + ", sample_size := 20480)",
            [str(path), encoding] + ([delimiter] if delimiter else []),
        ).fetchall()[0]
    except duckdb.Error as exc:
        raise InputError(_csv_message(path, exc)) from None
    delim, quote = sniff[0], sniff[1]
    if quote in ("(empty)", ""):
        quote = None
    header = _header(path, encoding, delim, quote)
    dupes = sorted({c for c in header if header.count(c) > 1 and c})
    if dupes:
        raise SchemaError(
            f"{path}: duplicate column names {dupes} in the header; rename them so each is unique"
        )
    if len(header) == 1 and any(d in header[0] for d in (";", "\t", "|", ",")):
        raise InputError(
            f"{path}: found a single column '{header[0][:60]}'; the delimiter could not be "
            "detected — pass --delimiter"
        )
    opts = ", ".join(f"{k} := {v!r}" for k, v in {**options, "delim": delim}.items() if k != "header")
    sql = (
        f"CREATE OR REPLACE VIEW source AS SELECT * FROM read_csv({_lit(path)}, {opts}, "
        "header := true, sample_size := 20480, normalize_names := false)"
    )
    try:
        con.execute(sql)
        con.execute("SELECT count(*) FROM source").fetchall()  # surface row errors now
    except duckdb.Error as exc:
        raise InputError(_csv_message(path, exc)) from None
    return encoding, delim


def _csv_message(path: Path, exc: Exception) -> str:
    text = str(exc)
    line = re.search(r"on Line: (\d+)", text)
    where = f" on line {line.group(1)}" if line else ""
    if "Invalid unicode" in text or "byte sequence" in text:
        return (
            f"{path}: bytes that are not valid UTF-8{where}; "
            "re-save it as UTF-8 or pass --encoding latin-1"
        )
    if "Expected Number of Columns" in text or "too many columns" in text.lower():
        expected = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", text)
        detail = f" (expected {expected.group(1)} fields, found {expected.group(2)})" if expected else ""
        return (
            f"{path}: rows have different numbers of fields{where}{detail}; the delimiter may be "
            "mixed — fix that row or pass --delimiter"
        )
    first = next((ln for ln in text.splitlines() if ln.strip()), text)
    return f"{path}: cannot be read as CSV{where}: {first.strip()[:200]}"


def _read_xlsx(con, path: Path, *, sheet: str | None) -> None:
    head = _head(path, 8)
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\xd0\xcf\x11\xe0")):
        kind = "CSV text" if _looks_like_text(path) else "some other format"
        raise InputError(
            f"{path}: has an Excel extension but is not an Excel workbook (it looks like {kind}); "
            "rename it to .csv or export it again from Excel"
        )
    import pandas as pd
    from python_calamine import CalamineWorkbook

    try:
        book = CalamineWorkbook.from_path(str(path))
    except Exception as exc:  # calamine raises its own error types
        raise InputError(f"{path}: cannot be opened as a workbook: {exc}") from None
    names = book.sheet_names
    if sheet is not None and sheet not in names:
        raise InputError(f"{path}: no sheet '{sheet}'; sheets are {', '.join(names)}")
    rows = book.get_sheet_by_name(sheet or names[0]).to_python(skip_empty_area=True)
    if not rows:
        raise InputError(f"{path}: sheet '{sheet or names[0]}' is empty; pick another with --sheet")
    header = [str(c).strip() for c in rows[0]]
    dupes = sorted({c for c in header if header.count(c) > 1 and c})
    if dupes:
        raise SchemaError(f"{path}: duplicate column names {dupes}; rename them so each is unique")
    frame = pd.DataFrame(rows[1:], columns=header)
    frame = frame.replace({"": None})
    frame = frame.infer_objects()
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = _uniform(frame[column])
    con.register("source_frame", frame)
    con.execute("CREATE OR REPLACE VIEW source AS SELECT * FROM source_frame")


def _uniform(values):
    """Excel cells of one column may mix numbers and text; make such a column text."""
    import pandas as pd

    types = {type(v) for v in values.dropna()}
    if len(types) <= 1:
        return values
    return values.map(lambda v: None if pd.isna(v) else str(v))


def _looks_like_text(path: Path) -> bool:
    head = _head(path, 4096)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in head


def _read_parquet(con, path: Path) -> None:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except Exception as exc:
        raise InputError(f"{path}: is not a valid Parquet file ({exc}); export it again") from None
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        raise SchemaError(f"{path}: duplicate column names {dupes}; rename them so each is unique")
    con.execute(f"CREATE OR REPLACE VIEW source AS SELECT * FROM read_parquet({_lit(path)})")


def _read_json(con, path: Path) -> None:
    try:
        con.execute(
            f"CREATE OR REPLACE VIEW source AS SELECT * FROM read_json_auto({_lit(path)})"
        )
        con.execute("SELECT count(*) FROM source").fetchall()
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        raise InputError(
            f"{path}: cannot be read as JSON lines ({first[:200]}); one JSON object per line is expected"
        ) from None


def _read_sql(con, url: str, *, table: str | None, query: str | None) -> None:
    import pandas as pd
    import sqlalchemy as sa

    label = _safe_url(url)
    if bool(table) == bool(query):
        raise InputError(f"{label}: give exactly one of --table NAME or --query SQL")
    try:
        engine = sa.create_engine(url)
    except Exception as exc:
        raise InputError(f"{label}: not a usable database URL ({_first_line(exc)}); e.g. postgresql://user@host/db or sqlite:///file.db") from None
    try:
        with engine.connect() as connection:
            if table:
                inspector = sa.inspect(connection)
                schema, _, name = table.rpartition(".")
                if name not in inspector.get_table_names(schema=schema or None) and name not in inspector.get_view_names(schema=schema or None):
                    raise InputError(f"{label}: no table '{table}'; check --table")
                statement = sa.select(sa.text("*")).select_from(sa.table(name, schema=schema or None))
            else:
                statement = sa.text(query)
            try:
                frame = pd.read_sql(statement, connection)
            except sa.exc.DBAPIError as exc:
                raise InputError(f"{label}: the query failed: {_first_line(exc.orig or exc)}; fix --query/--table") from None
    except sa.exc.OperationalError as exc:
        raise InputError(f"{label}: cannot connect: {_first_line(exc.orig or exc)}; check host, port, database and user in the URL") from None
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ModuleNotFoundError) as exc:
        raise InputError(f"{label}: not a usable database URL ({_first_line(exc)})") from None
    finally:
        engine.dispose()
    dupes = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
    if dupes:
        raise SchemaError(f"{label}: the result has duplicate column names {dupes}; alias them in --query")
    con.register("source_frame", frame)
    con.execute("CREATE OR REPLACE VIEW source AS SELECT * FROM source_frame")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _safe_url(url: str) -> str:
    try:
        import sqlalchemy as sa

        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def _lit(path: os.PathLike[str] | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"
