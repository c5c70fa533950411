"""Read customer data into DuckDB without modifying it.

A source is a file (CSV/TSV/TXT, XLSX/XLS, Parquet, JSON lines) or a SQL table/query given as
a SQLAlchemy URL.  :func:`read` registers it as the view ``source`` in a fresh DuckDB
connection and returns a :class:`Table`; nothing is copied for CSV, Parquet and JSON (DuckDB
reads them out of core), XLSX and SQL results are loaded through Arrow.  A CSV in an encoding
DuckDB cannot read (cp1252, the Windows default, above all) is first copied to a temporary
UTF-8 file that lives as long as the connection.  Every value of a CSV or JSON file is
converted once at read time, so a value that does not fit the type DuckDB chose from the
first rows (``'not a date'`` on row 150,000) turns the column into text for cleaning to
report, instead of breaking a later query.

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
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb

from custseg.errors import InputError, ResourceError, SchemaError
from custseg.schema import duplicate_names

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


#: DuckDB's memory budget unless CUSTSEG_MEMORY_LIMIT says otherwise: what does not fit is
#: spilled to a temporary folder, so 50M transactions are summarised in about 1.5 GB.
DEFAULT_MEMORY_LIMIT = "1GB"


def connect(*, memory_limit: str | None = None, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that spills to a temporary directory instead of running out of memory.

    ``memory_limit`` (e.g. ``"4GB"``) defaults to the environment variable
    ``CUSTSEG_MEMORY_LIMIT``, else :data:`DEFAULT_MEMORY_LIMIT`.
    """
    config: dict[str, str | int | bool] = {
        "temp_directory": os.path.join(tempfile.gettempdir(), "custseg-duckdb"),
        "preserve_insertion_order": True,  # row numbers in messages and rejects follow the file
        "memory_limit": memory_limit or _configured_memory_limit(),
    }
    if threads:
        config["threads"] = threads
    try:
        return duckdb.connect(config=config)
    except duckdb.Error as exc:
        raise InputError(f"cannot start DuckDB with memory limit {config['memory_limit']!r}: {exc}; "
                         "set CUSTSEG_MEMORY_LIMIT to a size like 2GB") from None


def _configured_memory_limit() -> str:
    """``CUSTSEG_MEMORY_LIMIT``, else :data:`DEFAULT_MEMORY_LIMIT`."""
    return os.environ.get("CUSTSEG_MEMORY_LIMIT") or DEFAULT_MEMORY_LIMIT


_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
          "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}


def memory_budget(con: duckdb.DuckDBPyConnection) -> int:
    """The connection's memory limit in bytes (DuckDB reports it as text, e.g. '953.6 MiB')."""
    text = str(con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])
    match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS:
        raise ValueError(f"unexpected DuckDB memory limit {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def resource_error(exc: BaseException) -> ResourceError | None:
    """A one-line :class:`ResourceError` when ``exc`` is DuckDB running out of memory or of
    temporary disk space (where it spills beyond the memory limit and large CSVs are staged),
    else None.  (A full disk at ``--out`` is reported by :mod:`custseg.outputs`.)"""
    if not isinstance(exc, duckdb.Error):
        return None
    message = str(exc)
    limit = _configured_memory_limit()
    if any(sign in message for sign in ("No space left on device", "max_temp_directory_size", "failed to offload")):
        return ResourceError(
            f"ran out of temporary disk space in {tempfile.gettempdir()}, where work beyond the "
            f"memory limit ({limit}) goes; free space there, set TMPDIR to a disk with more room, "
            "or raise CUSTSEG_MEMORY_LIMIT (e.g. 4GB)"
        )
    if isinstance(exc, duckdb.OutOfMemoryException):
        # DuckDB's message ends with "(used/limit used)".
        stated = re.search(r"/\s*([\d.]+ ?[KMGT]i?B) used\)", message)
        return ResourceError(
            f"ran out of memory within the limit of {stated.group(1) if stated else limit}; "
            "raise it with CUSTSEG_MEMORY_LIMIT (e.g. 4GB)"
        )
    return None


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
        if sheet is not None and fmt != "xlsx":
            raise InputError(
                f"{label}: --sheet goes with an Excel workbook, but this is a {fmt} file; drop --sheet"
            )
        enc = delim = None
        if fmt == "csv":
            _refuse_binary(path)
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
        if fmt == "sql":
            what = f"table '{table}' has no rows; check that it is the right table" if table else \
                "the query returned no rows; check its conditions"
            raise InputError(f"{label}: {what}")
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


_BINARY_MAGIC = {
    b"PAR1": ("a Parquet file", "give it the extension .parquet"),
    b"PK\x03\x04": ("an Excel workbook or a zip archive", "give a workbook the extension .xlsx, unzip an archive"),
    b"\xd0\xcf\x11\xe0": ("an old Excel (.xls) workbook", "give it the extension .xls"),
    b"\x1f\x8b": ("gzip-compressed", "decompress it first (gunzip)"),
    b"SQLite format 3": ("a SQLite database", "read it with sqlite:///PATH and --table or --query"),
}
# C0 control bytes that never occur in a text table (tab, newlines, form feed and ^Z do).
_CONTROL = bytes(b for b in range(32) if b not in b"\t\n\r\x0c\x1a") + b"\x7f"
_C1 = bytes(range(0x80, 0xA0))  # DuckDB's latin-1 reader refuses these; cp1252 uses them
_CANDIDATE_DELIMITERS = (",", ";", "\t", "|")
_SCAN_RECORDS = 100_000  # how far a field-count diagnosis looks (the sniffer samples 20,480)
# Python codec name -> the name DuckDB's CSV reader knows; other codecs are transcoded.
_DUCKDB_ENCODINGS = {"utf-8": "utf-8", "utf-8-sig": "utf-8", "utf-16": "utf-16", "iso8859-1": "latin-1"}


def _refuse_binary(path: Path) -> None:
    """A file named like text that holds a known binary format gets a message naming it."""
    with path.open("rb") as fh:
        head = fh.read(16)
    for magic, (what, fix) in _BINARY_MAGIC.items():
        if head.startswith(magic):
            raise InputError(f"{path}: is {what}, not CSV text; {fix}")


def _sniff_encoding(path: Path) -> str:
    """A Python codec: utf-8 (with or without BOM), utf-16 by BOM, cp1252 or latin-1.

    Binary files (NUL or other control bytes) are refused.
    """
    with path.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if b"\x00" in head:
        half = max(1, len(head) // 2)
        for order, zeros in (("le", head[1::2]), ("be", head[0::2])):
            if zeros.count(0) > 0.4 * half:  # ASCII text in UTF-16: every other byte is NUL
                raise InputError(
                    f"{path}: looks like UTF-16 text without a byte-order mark; "
                    f"pass --encoding utf-16-{order}"
                )
        raise InputError(
            f"{path}: contains NUL bytes, so it is not a text file; "
            "export it as CSV (UTF-8) or give the right extension"
        )
    controls = sum(head.count(b) for b in _CONTROL)
    if controls > max(8, len(head) // 1000):
        raise InputError(
            f"{path}: holds binary data ({controls:,} control bytes in the first "
            f"{len(head):,}), so it is not a text file; export it as CSV (UTF-8) "
            "or give the right extension"
        )
    try:
        # A multi-byte character may be cut at the end of the sample.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < _SNIFF_BYTES)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    if any(b in head for b in _C1):
        try:
            head.decode("cp1252")
            return "cp1252"  # what Windows programs write; € and curly quotes live in 0x80-0x9F
        except UnicodeDecodeError:
            pass
    return "iso8859-1"


def _codec(encoding: str, path: Path) -> str:
    """The Python codec for an ``--encoding`` value."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise InputError(
            f"{path}: --encoding '{encoding}' is not an encoding Python knows; "
            "use utf-8, latin-1, cp1252 or utf-16"
        ) from None


def _encoding_label(codec: str) -> str:
    return {"iso8859-1": "latin-1", "utf-8-sig": "utf-8"}.get(codec, codec)


def _transcode(path: Path, codec: str, *, strict: bool = True) -> Path | None:
    """Copy ``path`` to a temporary UTF-8 file (DuckDB reads only utf-8/utf-16/latin-1).

    Returns None when ``strict`` is false and the bytes do not decode; raises InputError
    (naming the line) when it is true.
    """
    fd, name = tempfile.mkstemp(prefix="custseg-", suffix=".csv")
    decoder = codecs.getincrementaldecoder(codec)()
    line = 0
    try:
        with path.open("rb") as src, os.fdopen(fd, "w", encoding="utf-8", newline="") as dst:
            for line, raw in enumerate(src, 1):
                dst.write(decoder.decode(raw))
            dst.write(decoder.decode(b"", final=True))
    except UnicodeDecodeError:
        os.unlink(name)
        if not strict:
            return None
        raise InputError(
            f"{path}: bytes that are not valid {_encoding_label(codec)} on line {max(line, 1)}; "
            "pass the right --encoding (utf-8, latin-1, cp1252, utf-16)"
        ) from None
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def _unlink(name: str) -> None:
    try:
        os.unlink(name)
    except OSError:
        pass


def _header_line(path: Path, codec: str) -> str | None:
    """The first line that is not blank (the header), or None if every line is blank."""
    with path.open("r", encoding=codec, errors="replace", newline="") as fh:
        for line in fh:
            if line.strip():
                return line
    return None


def _header(line: str, delimiter: str, quote: str | None) -> list[str]:
    reader = csv.reader(io.StringIO(line), delimiter=delimiter, quotechar=quote or '"')
    return [c.strip() for c in next(reader, [])]


def _read_csv(con, path: Path, *, encoding: str | None, delimiter: str | None) -> tuple[str, str]:
    """Register the CSV as the view ``source``; returns (encoding, delimiter).

    DuckDB reads UTF-8, UTF-16 and latin-1 itself; any other encoding (cp1252 above all,
    the default of Windows programs) is first copied to a temporary UTF-8 file, which lives as
    long as ``con``.
    """
    codec = _codec(encoding, path) if encoding else _sniff_encoding(path)
    data = path
    if codec not in _DUCKDB_ENCODINGS:
        data = _transcode(path, codec)
        weakref.finalize(con, _unlink, str(data))
    try:
        return _register_csv(con, path, data, codec, delimiter)
    except _Latin1Refused:
        # Bytes in 0x80-0x9F after the sample that chose latin-1: cp1252 (or latin-1 as Python
        # reads it) after all.
        fallbacks = ("cp1252", "iso8859-1") if encoding is None else (codec,)
        for fallback in fallbacks:
            copy = _transcode(path, fallback, strict=fallback == fallbacks[-1])
            if copy is not None:
                break
        weakref.finalize(con, _unlink, str(copy))
        return _register_csv(con, path, copy, fallback, delimiter)


class _Latin1Refused(Exception):
    """DuckDB's latin-1 reader met a byte in 0x80-0x9F."""


def _register_csv(con, path: Path, data: Path, codec: str, delimiter: str | None) -> tuple[str, str]:
    """Sniff and register ``data`` (``path`` itself or its UTF-8 copy); messages name ``path``."""
    duck_encoding = _DUCKDB_ENCODINGS.get(codec, "utf-8") if data == path else "utf-8"
    text_codec = codec if data == path else "utf-8"
    first = _header_line(data, "utf-8-sig" if text_codec == "utf-8" else text_codec)
    if first is None:
        raise InputError(f"{path}: has only blank lines, no header and no data; export the data again")

    def fail(exc: duckdb.Error):
        resource = resource_error(exc)
        if resource is not None:
            return resource
        message = str(exc)
        if "not latin-1 encoded" in message and duck_encoding == "latin-1":
            return _Latin1Refused()
        diagnosis = _diagnose_fields(path, data, text_codec, first, delimiter)
        return InputError(diagnosis or _csv_message(path, exc, data))

    try:
        sniff = con.execute(
            "SELECT Delimiter, Quote FROM sniff_csv(?, encoding := ?"
            + (", delim := ?" if delimiter else "")
            + ", sample_size := 20480)",
            [str(data), duck_encoding] + ([delimiter] if delimiter else []),
        ).fetchall()[0]
    except duckdb.Error as exc:
        raise fail(exc) from None
    delim, quote = sniff[0], sniff[1]
    if quote in ("(empty)", ""):
        quote = None
    header = _header(first, delim, quote)
    if len(header) == 1 and any(d in header[0] for d in _CANDIDATE_DELIMITERS if d != delim):
        diagnosis = _diagnose_fields(path, data, text_codec, first, delimiter)
        raise InputError(diagnosis or (
            f"{path}: found a single column '{header[0][:60]}'; the delimiter could not be "
            "detected — pass --delimiter"
        ))
    dupes = duplicate_names(c for c in header if c)
    if dupes:
        raise SchemaError(
            f"{path}: duplicate column names {dupes} in the header (compared ignoring case); "
            "rename them so each is unique"
        )
    options = {"encoding": duck_encoding, "delim": delim}
    opts = ", ".join(f"{k} := {v!r}" for k, v in options.items())
    reader = f"read_csv({quote_text(data)}, {opts}, header := true, normalize_names := false"
    # The text is parsed once: every later pass — checks, cleaning, features — reads the
    # result, not the text.  Loading converts every value, so a bad late value fails here,
    # not in a later query.
    stage = _stage_csv(con, data)
    try:
        stage(f"SELECT * FROM {reader}, sample_size := 20480)")
    except duckdb.ConversionException:
        # A value after the 20,480 rows that chose the column types does not fit its type
        # (e.g. 'not a date' on row 150,000): choose the types from every row and pin them,
        # so the bad value reaches cleaning as text and is reported there with its row.
        try:
            pinned = _pinned_types(con, f"{reader}, sample_size := -1)")
            stage(f"SELECT * FROM {reader}, types := {pinned})")
        except duckdb.Error as exc:
            raise fail(exc) from None
    except duckdb.Error as exc:
        raise fail(exc) from None
    return _encoding_label(codec), delim


#: A CSV is staged in memory when its text takes at most 1/this of the memory budget.
_TEXT_SHARE_IN_MEMORY = 3


def _stage_csv(con, data: Path):
    """Where a parsed CSV goes; returns a function that loads a SELECT there and points the
    view ``source`` at it.

    A text of up to a third of the memory budget becomes a DuckDB table in memory.  A larger
    one goes to a temporary Parquet file, compressed (10M rows: 0.6 GB of text, 0.06 GB of
    Parquet), so the queries that follow keep the budget: in memory the table takes about
    1.4 times the text, and a table of more than half the budget slows the features down more
    than writing the file costs (`custseg features` within 1 GB: 5M rows, 0.3 GB of text, 3.0 s
    from memory, 3.6 s from Parquet; 7M rows, 0.42 GB, 5.1 s against 4.4 s; 10M rows, 0.6 GB,
    7.1 s against 6.0 s).  Past the budget a table would spill to disk uncompressed (50M rows:
    120 s for the features instead of about 80 s).
    """
    if data.stat().st_size * _TEXT_SHARE_IN_MEMORY <= memory_budget(con):
        def to_table(select: str) -> None:
            con.execute(f"CREATE OR REPLACE TEMP TABLE source_data AS {select}")
            con.execute("CREATE OR REPLACE VIEW source AS SELECT * FROM source_data")
        return to_table

    fd, name = tempfile.mkstemp(prefix="custseg-", suffix=".parquet")
    os.close(fd)
    weakref.finalize(con, _unlink, name)

    def to_parquet(select: str) -> None:
        # Row order is kept (preserve_insertion_order), so row numbers still follow the file.
        con.execute(f"COPY ({select}) TO {quote_text(name)} (FORMAT parquet)")
        con.execute(f"CREATE OR REPLACE VIEW source AS SELECT * FROM read_parquet({quote_text(name)})")
    return to_parquet


def _scan_every_value(con) -> None:
    """Read every row and convert every typed column now, so later queries cannot fail on it.

    DuckDB decides CSV/JSON column types from a sample; ``count(*)`` alone would skip the
    conversions (projection pushdown) and leave a bad late value to break a later query.
    """
    described = con.execute("DESCRIBE SELECT * FROM source").fetchall()
    typed = [name for name, kind, *_ in described if kind != "VARCHAR"]
    counts = ", ".join(f"count({quote_name(name)})" for name in typed) or "count(*)"
    con.execute(f"SELECT {counts}, count(*) FROM source").fetchall()


def _pinned_types(con, reader: str) -> str:
    """A DuckDB struct literal ``{'column': 'TYPE', ...}`` of the types ``reader`` detects.

    A JSON column mixing numbers and text becomes VARCHAR (``abc``, not ``"abc"``).
    """
    described = con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()
    return "{" + ", ".join(
        f"{quote_text(name)}: {quote_text('VARCHAR' if kind == 'JSON' else kind)}" for name, kind, *_ in described
    ) + "}"


def _diagnose_fields(path: Path, data: Path, codec: str, first: str, delimiter: str | None) -> str | None:
    """Explain a CSV the sniffer rejects: a wrong --delimiter, or a row with another field count."""
    counts = {d: first.count(d) for d in _CANDIDATE_DELIMITERS}
    likely = max(counts, key=lambda d: counts[d])
    if delimiter and counts.get(delimiter, first.count(delimiter)) == 0 and counts[likely]:
        return (
            f"{path}: --delimiter {delimiter!r} does not occur in the header, which seems to use "
            f"{likely!r}; pass --delimiter {likely!r} or leave the option out"
        )
    delim = delimiter or (likely if counts[likely] else None)
    if delim is None:
        return None
    with data.open("r", encoding="utf-8-sig" if codec == "utf-8" else codec, errors="replace", newline="") as fh:
        reader = csv.reader(fh, delimiter=delim)
        header = next((row for row in reader if row), None)
        if header is None:
            return None
        for records, row in enumerate(reader):
            if records >= _SCAN_RECORDS:
                break
            if row and len(row) != len(header):
                where = f"{path}: line {reader.line_num} (data row {records + 1})"
                fields = f"{len(row)} field{'s' if len(row) != 1 else ''}"
                other = next(
                    (d for d in _CANDIDATE_DELIMITERS
                     if d != delim and len(row) == 1 and row[0].count(d) == len(header) - 1),
                    None,
                )
                if other:
                    return (
                        f"{where} is separated by {other!r} while the header uses {delim!r}; "
                        f"the delimiter is mixed — re-export the file with one delimiter"
                    )
                return (
                    f"{where} has {fields} but the header has {len(header)} (delimiter "
                    f"{delim!r}); the delimiter may be mixed or a value holds an unquoted "
                    f"{delim!r} — fix that line (quote such values) or pass --delimiter"
                )
    return None


def _csv_message(path: Path, exc: Exception, data: Path | None = None) -> str:
    text = str(exc)
    if data is not None and data != path:
        text = text.replace(str(data), str(path))  # never show the temporary copy
    line = re.search(r"on Line: (\d+)", text)
    where = f" on line {line.group(1)}" if line else ""
    if "Invalid unicode" in text or "byte sequence" in text:
        return (
            f"{path}: bytes that are not valid UTF-8{where}; "
            "re-save it as UTF-8 or pass --encoding latin-1 (or cp1252)"
        )
    if "Expected Number of Columns" in text or "too many columns" in text.lower():
        expected = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", text)
        detail = f" (expected {expected.group(1)} fields, found {expected.group(2)})" if expected else ""
        return (
            f"{path}: rows have different numbers of fields{where}{detail}; the delimiter may be "
            "mixed — fix that row or pass --delimiter"
        )
    if "sniffing" in text:
        return (
            f"{path}: the CSV dialect (delimiter, quotes) could not be detected; "
            "pass --delimiter, and check that it is a text table with a header line"
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
    dupes = duplicate_names(c for c in header if c)
    if dupes:
        raise SchemaError(
            f"{path}: sheet '{sheet or names[0]}' has duplicate column names {dupes} "
            "(compared ignoring case); rename them so each is unique"
        )
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
    try:
        names = _parquet_columns(con, path)
    except duckdb.Error as exc:
        reason = str(exc).splitlines()[0].removeprefix("Invalid Input Error: ")
        raise InputError(f"{path}: is not a valid Parquet file ({reason}); export it again") from None
    dupes = duplicate_names(names)
    if dupes:
        raise SchemaError(
            f"{path}: duplicate column names {dupes} (compared ignoring case); "
            "rename them so each is unique"
        )
    con.execute(f"CREATE OR REPLACE VIEW source AS SELECT * FROM read_parquet({quote_text(path)})")


def _parquet_columns(con, path: Path) -> list[str]:
    """The top-level column names in the file's schema, as written (the reader would rename
    duplicates): the schema lists every element depth first, each with its number of children."""
    elements = con.execute(f"SELECT name, num_children FROM parquet_schema({quote_text(path)})").fetchall()
    names, position = [], 1
    for _ in range(elements[0][1] or 0):
        names.append(elements[position][0])
        pending = 1  # this element and its descendants
        while pending:
            pending += (elements[position][1] or 0) - 1
            position += 1
    return names


def _read_json(con, path: Path) -> None:
    try:
        con.execute(f"CREATE OR REPLACE VIEW source AS SELECT * FROM read_json_auto({quote_text(path)})")
        try:
            _scan_every_value(con)
        except (duckdb.ConversionException, duckdb.InvalidInputException) as exc:
            if "transform error" not in str(exc) and not isinstance(exc, duckdb.ConversionException):
                raise
            # A late value does not fit the type chosen from the first rows: choose from all.
            pinned = _pinned_types(con, f"read_json_auto({quote_text(path)}, sample_size := -1)")
            con.execute(
                f"CREATE OR REPLACE VIEW source AS SELECT * FROM read_json({quote_text(path)}, columns := {pinned})"
            )
            _scan_every_value(con)
    except duckdb.Error as exc:
        resource = resource_error(exc)
        if resource is not None:
            raise resource from None
        first = str(exc).splitlines()[0]
        raise InputError(
            f"{path}: cannot be read as JSON lines ({first[:200]}); one JSON object per line is expected"
        ) from None


def _read_sql(con, url: str, *, table: str | None, query: str | None) -> None:
    """Load a table or the result of a query; the database is only read (always rolled back)."""
    import pandas as pd
    import sqlalchemy as sa

    label = _safe_url(url)
    if bool(table) == bool(query):
        raise InputError(f"{label}: give exactly one of --table NAME or --query SQL")
    try:
        parsed = sa.make_url(url)
    except Exception as exc:
        raise InputError(
            f"{label}: not a usable database URL ({_first_line(exc)}); "
            "e.g. postgresql+psycopg://user@host/db or sqlite:///file.db"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            if not Path(database).is_file():
                # SQLite would create an empty database there; reading must not write.
                raise InputError(f"{label}: no SQLite database file '{database}'; check the path")
    try:
        engine = sa.create_engine(parsed)
    except Exception as exc:
        raise InputError(
            f"{label}: not a usable database URL ({_first_line(exc)}); "
            "e.g. postgresql+psycopg://user@host/db or sqlite:///file.db"
        ) from None
    try:
        with engine.connect() as connection:
            transaction = connection.begin()  # rolled back below: reading never writes
            if table:
                inspector = sa.inspect(connection)
                schema, _, name = table.rpartition(".")
                known = inspector.get_table_names(schema=schema or None) + inspector.get_view_names(schema=schema or None)
                if name not in known:
                    raise InputError(
                        f"{label}: no table '{table}'; check --table"
                        + (f" (tables: {', '.join(sorted(known)[:20])})" if known else " (the database has no tables)")
                    )
                statement = sa.select(sa.text("*")).select_from(sa.table(name, schema=schema or None))
            else:
                statement = sa.text(query)
            try:
                frame = pd.read_sql(statement, connection)
            except sa.exc.ResourceClosedError:
                raise InputError(
                    f"{label}: the query returned no rows to read; --query must be a SELECT"
                ) from None
            except (pd.errors.DatabaseError, sa.exc.SQLAlchemyError) as exc:
                cause = exc.__cause__ if isinstance(exc, pd.errors.DatabaseError) and exc.__cause__ else exc
                reason = _first_line(getattr(cause, "orig", None) or cause)
                raise InputError(f"{label}: the query failed: {reason}; fix --query/--table") from None
            finally:
                transaction.rollback()
    except sa.exc.OperationalError as exc:
        raise InputError(
            f"{label}: cannot connect: {_first_line(exc.orig or exc)}; "
            "check host, port, database and user in the URL"
        ) from None
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ModuleNotFoundError) as exc:
        raise InputError(f"{label}: not a usable database URL ({_first_line(exc)})") from None
    except sa.exc.SQLAlchemyError as exc:
        raise InputError(f"{label}: the database refused the request: {_first_line(exc)}") from None
    finally:
        engine.dispose()
    dupes = duplicate_names(str(c) for c in frame.columns)
    if dupes:
        raise SchemaError(
            f"{label}: the result has duplicate column names {dupes} (compared ignoring case); "
            "alias them in --query"
        )
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


def quote_name(name: str) -> str:
    """A column name as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def quote_text(path: os.PathLike[str] | str) -> str:
    """A string (or path) as a quoted SQL literal."""
    return "'" + str(path).replace("'", "''") + "'"
