"""Read customer data into DuckDB without modifying it.

A source is a file (CSV/TSV/TXT/DAT, XLSX/XLS, Parquet, JSON lines) or a SQL table/query given
as a SQLAlchemy URL.  :func:`read` registers it as the view ``source`` in a fresh DuckDB
connection and returns a :class:`Table`; nothing is copied for CSV, Parquet and JSON (DuckDB
reads them out of core), XLSX and SQL results are loaded through Arrow.  A CSV in an encoding
DuckDB cannot read (cp1252, the Windows default, above all) is first copied to a temporary
UTF-8 file that lives as long as the connection.  Every value of a CSV or JSON file is
converted once at read time, so a value that does not fit the type DuckDB chose from the
first rows (``'not a date'`` on row 150,000) turns the column into text for cleaning to
report, instead of breaking a later query.

Real files come in other shapes too, each read with no options and recorded in
:attr:`Table.notes`:

* a text table aligned with runs of spaces (``00001 19970101  1  11.77``), with or without a
  header line (columns ``column_1``...); a column of digits with leading zeros stays text;
* gzip or zstd compressed CSV/TSV/text/JSON, recognised by signature and streamed by DuckDB
  (a cp1252 copy of a compressed file is itself gzip-compressed);
* a workbook whose data is not on the first sheet (the sheet with a customer id is read);
* a file that holds no data at all (an image, a PDF, an archive, an HTML page, a program) is
  named for what it is.

>>> table = read("orders.csv")                                    # doctest: +SKIP
>>> table.columns                                                   # doctest: +SKIP
['InvoiceNo', 'StockCode', 'Quantity', 'InvoiceDate', 'UnitPrice', 'CustomerID']
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gzip
import io
import os
import re
import shutil
import subprocess
import tempfile
import uuid
import weakref
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import duckdb

from custseg import settings as _settings
from custseg.engines.dialect import DUCKDB, Dialect
from custseg.errors import CustsegError, InputError, ResourceError, SchemaError, literal
from custseg.schema import detect_roles, duplicate_names

__all__ = ["Table", "read", "connect", "FORMATS", "is_sql_url"]

Format = Literal["csv", "xlsx", "parquet", "json", "sql"]

FORMATS: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".tab": "csv",
    ".dat": "csv",
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

T = TypeVar("T")


@dataclass
class Table:
    """A source registered in DuckDB as the view ``source``.

    ``label`` names the source in messages (a path, or a URL with the password hidden).
    ``notes`` are one-line statements of what reading decided on its own (a compression, a
    whitespace-aligned table and its header, the sheet of a workbook), for the user to check.
    """

    con: duckdb.DuckDBPyConnection
    label: str
    format: Format
    columns: list[str]
    types: dict[str, str]
    encoding: str | None = None
    delimiter: str | None = None
    notes: tuple[str, ...] = ()
    #: how the engine holding ``source`` spells SQL (:mod:`custseg.engines`)
    dialect: Dialect = DUCKDB
    #: for a CSV read in place (:func:`read` with ``in_place``): what stages it
    _stager: Callable[[], None] | None = field(default=None, repr=False)
    #: the Parquet file ``source`` reads as it is (a Parquet source), whose metadata counts rows
    parquet: str | None = field(default=None, repr=False)

    @property
    def in_place(self) -> bool:
        """Whether ``source`` is a CSV that each query parses again, not its parsed copy."""
        return self._stager is not None

    def stage(self) -> None:
        """Make the parsed copy of a CSV read in place, as :func:`read` does without
        ``in_place`` (every value converted, a late value that does not fit the column types
        of the first rows read as text), and point ``source`` at it.  Raises the error that
        reading raises for a file it cannot read."""
        if self._stager is None:
            return
        stager, self._stager = self._stager, None
        stager()
        self.describe()

    def describe(self) -> None:
        """Read ``columns`` and ``types`` from the view ``source`` (staging may change types)."""
        described = self.con.execute("DESCRIBE SELECT * FROM source").fetchall()
        self.columns = [row[0] for row in described]
        self.types = {row[0]: row[1] for row in described}

    def staged_on_error(self, step: Callable[[], T]) -> T:
        """``step()``, and when it fails in DuckDB on a CSV read in place (a value after the
        rows that chose the column types does not fit them; a line the parser cannot read),
        ``step()`` again on the staged table: the answer, or the error, is that of the usual
        reading."""
        try:
            return step()
        except duckdb.Error:
            if not self.in_place:
                raise
        self.stage()
        return step()

    def count(self) -> int:
        return int(self.con.execute("SELECT count(*) FROM source").fetchall()[0][0])

    def non_null_rows(self, column: str) -> int | None:
        """The rows of ``source`` whose ``column`` is not NULL, from a Parquet file's metadata
        (its row groups' row and null counts: no scan), or None where no metadata tells (another
        format, a file written without null counts)."""
        if self.parquet is None:
            return None
        groups, chunks, counted, rows, nulls = self.con.execute(
            "SELECT count(DISTINCT row_group_id), count(*) FILTER (WHERE path_in_schema = $1), "
            "count(stats_null_count) FILTER (WHERE path_in_schema = $1), "
            "sum(row_group_num_rows) FILTER (WHERE path_in_schema = $1), "
            "sum(stats_null_count) FILTER (WHERE path_in_schema = $1) FROM parquet_metadata($2)",
            [column, self.parquet]).fetchall()[0]
        if not groups or chunks != groups or counted != groups:
            return None
        return int(rows) - int(nulls)

    def has_rows(self) -> bool:
        """Whether ``source`` has a row, without counting them (a SQL table is not scanned)."""
        return bool(self.con.execute("SELECT count(*) FROM (SELECT 1 FROM source LIMIT 1)").fetchall()[0][0])

    def relation(self) -> duckdb.DuckDBPyRelation:
        return self.con.sql("SELECT * FROM source")


DEFAULT_MEMORY_LIMIT = _settings.DEFAULT_MEMORY_LIMIT


def connect(
    *, memory_limit: str | None = None, threads: int | None = None, settings: _settings.Settings | None = None,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that spills to a temporary directory instead of running out of memory.

    Limits come from ``settings`` (:class:`custseg.settings.Settings`; without it, from the
    environment, read now); ``memory_limit`` and ``threads`` override them.  Each connection
    spills into a folder of its own under the settings' temporary folder, removed with it.
    """
    settings = settings or _settings.Settings.from_env()
    # A folder name of its own, made by DuckDB only when it spills.
    spill = os.path.join(str(settings.temp_dir), f"custseg-duckdb-{uuid.uuid4().hex[:12]}")
    config: dict[str, str | int | bool] = {
        "temp_directory": spill,
        "preserve_insertion_order": True,  # row numbers in messages and rejects follow the file
        "memory_limit": memory_limit or settings.memory_limit,
    }
    threads = threads or settings.threads
    if threads:
        config["threads"] = threads
    try:
        con = duckdb.connect(config=config)
    except duckdb.Error as exc:
        shutil.rmtree(spill, ignore_errors=True)
        raise InputError(f"cannot start DuckDB with memory limit {config['memory_limit']!r}: {exc}; "
                         "set CUSTSEG_MEMORY_LIMIT to a size like 2GB") from None
    weakref.finalize(con, shutil.rmtree, spill, True)
    return con


def _configured_memory_limit() -> str:
    """``CUSTSEG_MEMORY_LIMIT``, else :data:`DEFAULT_MEMORY_LIMIT` (for messages only)."""
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


def resource_error(exc: BaseException, settings: _settings.Settings | None = None) -> ResourceError | None:
    """A one-line :class:`ResourceError` when ``exc`` is DuckDB running out of memory or of
    temporary disk space (where it spills beyond the memory limit and large CSVs are staged),
    else None.  (A full disk at ``--out`` is reported by :mod:`custseg.outputs`.)  The limit
    and the folder named are ``settings``' (default: the environment's)."""
    if not isinstance(exc, duckdb.Error):
        return None
    message = str(exc)
    limit = settings.memory_limit if settings is not None else _configured_memory_limit()
    folder = settings.temp_dir if settings is not None else tempfile.gettempdir()
    if any(sign in message for sign in ("No space left on device", "max_temp_directory_size", "failed to offload")):
        return ResourceError(
            f"ran out of temporary disk space in {literal(str(folder))}, where work beyond the "
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
    in_place: bool = False,
) -> Table:
    """Register ``source`` as the DuckDB view ``source`` and describe its columns.

    Files are recognised by extension (``format`` overrides), the one before ``.gz`` or
    ``.zst`` for a compressed file; gzip and zstd are recognised by their signature whatever
    the name, and read directly (streamed, never decompressed to disk).  ``sheet`` picks an
    XLSX sheet (default: the first when it has a customer id, else the one sheet with a
    customer id, else the one sheet that looks like a table); ``table`` or ``query`` go with a
    SQL URL; ``encoding`` and ``delimiter`` override the CSV sniffer.  A text table whose
    columns are separated by runs of spaces is recognised by its content.  A file that holds
    no data (an image, a PDF, an archive, an HTML page, a program) is named for what it is.
    Raises :class:`InputError` with a one-line message for anything that cannot be read.

    A CSV is parsed once, into a copy that later queries read (:func:`_stage_csv`).  With
    ``in_place`` (for a caller that reads the source in one pass) a CSV whose text fits the
    memory budget is instead read where it is, by each query (:attr:`Table.in_place`); run the
    steps with :meth:`Table.staged_on_error`.
    """
    con = con or connect()
    text = str(source)
    stager = None
    if is_sql_url(text):
        _read_sql(con, text, table=table, query=query)
        fmt: Format = "sql"
        label = _safe_url(text)
        enc = delim = None
        notes: list[str] = []
    else:
        if table or query:
            raise InputError(f"{{param:table}}/{{param:query}} go with a SQL URL, but '{literal(text)}' is a file path",
                             param="table" if table else "query")
        path = Path(text)
        label = text
        if not path.exists():
            raise InputError(f"{label}: no such file; check the path")
        if path.is_dir():
            raise InputError(f"{label}: is a directory, not a file; give the path of a data file")
        if path.stat().st_size == 0:
            raise InputError(f"{label}: the file is empty (0 bytes); export the data again")
        compression = _compression_of(path)
        fmt = format or FORMATS.get(_format_suffix(path)) or _guess_format(path, compression)
        if sheet is not None and fmt != "xlsx":
            raise InputError(
                f"{literal(label)}: {{param}} goes with an Excel workbook, but this is a {fmt} file; drop {{param}}",
                param="sheet",
            )
        _refuse_non_data(path, fmt, compression)
        notes = _compression_notes(path, fmt, compression)
        enc = delim = None
        if fmt == "csv":
            enc, delim, more, stager = _read_csv(con, path, encoding=encoding, delimiter=delimiter,
                                                 compression=compression, in_place=in_place)
            notes += more
        elif fmt == "xlsx":
            notes += _read_xlsx(con, path, sheet=sheet)
        elif fmt == "parquet":
            _read_parquet(con, path)
        elif fmt == "json":
            _read_json(con, path, compression)
        else:  # pragma: no cover - Literal exhausts the choices
            raise InputError(f"{label}: unknown format '{fmt}'")
    result = Table(con, label, fmt, [], {}, enc, delim, tuple(notes), _stager=stager,
                   parquet=str(path) if fmt == "parquet" else None)

    def described() -> bool:
        result.describe()
        return result.has_rows()

    if not result.staged_on_error(described):
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


# --- compression -----------------------------------------------------------------------------

Compression = Literal["gzip", "zstd"]
_COMPRESSION_SUFFIXES: dict[str, Compression] = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_COMPRESSION_MAGIC: dict[bytes, Compression] = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}
_DECOMPRESS = {"gzip": "gunzip", "zstd": "zstd -d"}
#: How much larger than the compressed file its text is taken to be when the file does not say
#: (zstd; gzip past 4 GB): CSV text compresses 4-10 times, so the estimate errs towards Parquet.
_COMPRESSION_RATIO = 5


def _compression_of(path: Path) -> Compression | None:
    """gzip or zstd by the file's signature (its name may say otherwise), else None."""
    return _compression_of_bytes(_head(path, 4))


def _format_suffix(path: Path) -> str:
    """The extension that names the format: ``.csv`` for ``orders.csv.gz``."""
    suffix = path.suffix.lower()
    if suffix in _COMPRESSION_SUFFIXES:
        return Path(path.stem).suffix.lower()
    return suffix


def _compression_notes(path: Path, fmt: Format, compression: Compression | None) -> list[str]:
    named = _COMPRESSION_SUFFIXES.get(path.suffix.lower())
    if compression is None:
        return [f"named {path.suffix} but not compressed; read as plain text"] if named else []
    if fmt not in ("csv", "json"):
        raise _compressed_binary(path, compression, _NOT_KIND[fmt])
    if named == compression:
        return [f"{compression}-compressed, read directly"]
    return [f"{compression}-compressed although named {path.suffix or 'without an extension'}; read directly"]


def _duck_compression(compression: Compression | None) -> str:
    """The value of DuckDB's ``compression`` option: always explicit, so a name ending in .gz
    that is not compressed is read as it is, and a compressed file named .csv is decompressed."""
    return compression or "none"


class _Pipe(io.RawIOBase):
    """The standard output of a decompressing program as a readable stream; closing it stops
    the program."""

    def __init__(self, argv: list[str]):
        self._process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._process.stdout.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self._process.stdout.close()
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
        super().close()


def _zstd_stream(path: Path):
    """A binary stream of the decompressed file: the zstandard package, else the zstd program."""
    try:
        import zstandard
    except ImportError:
        program = shutil.which("zstd")
        if program is None:
            raise InputError(
                f"{path}: is zstd-compressed, and reading its head (for the encoding and the header) needs "
                f"the zstandard package or the zstd program; pip install zstandard, or decompress it "
                f"first (zstd -d {path.name})"
            ) from None
        return io.BufferedReader(_Pipe([program, "-dcq", "--", str(path)]))
    raw = path.open("rb")
    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=True))


@contextlib.contextmanager
def _open_bytes(path: Path, compression: Compression | None):
    """The file's bytes, decompressed as they are read (never to disk)."""
    if compression is None:
        stream = path.open("rb")
    elif compression == "gzip":
        stream = gzip.open(path, "rb")
    else:
        stream = _zstd_stream(path)
    try:
        yield stream
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(
            f"{path}: is {compression}-compressed but cannot be decompressed ({_first_line(exc)}); "
            "the file may be damaged or cut short — copy or download it again"
        ) from None
    finally:
        stream.close()


@contextlib.contextmanager
def _open_text(path: Path, codec: str, compression: Compression | None):
    with _open_bytes(path, compression) as raw:
        yield io.TextIOWrapper(raw, encoding=codec, errors="replace", newline="")


def _read_head(path: Path, compression: Compression | None, size: int) -> bytes:
    """Up to ``size`` bytes from the start of the (decompressed) file."""
    with _open_bytes(path, compression) as fh:
        chunks, got = [], 0
        while got < size:
            chunk = fh.read(size - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)


def _text_size(data: Path, compression: Compression | None) -> int:
    """The size of the text in ``data``: the file size, or for a gzip file the size its
    trailer records (modulo 4 GiB, so not below the compressed size times the usual ratio
    once that passes 4 GiB), or for zstd the compressed size times the usual ratio."""
    size = data.stat().st_size
    if compression is None:
        return size
    estimate = size * _COMPRESSION_RATIO
    if compression == "gzip" and size >= 18:
        with data.open("rb") as fh:
            fh.seek(-4, os.SEEK_END)
            recorded = int.from_bytes(fh.read(4), "little")
        if recorded >= size and estimate < (1 << 32):
            return recorded
    return estimate


# --- what a file is --------------------------------------------------------------------------

_EXPORT = "export the data as CSV, XLSX, Parquet or JSON lines"
_EXTRACT = "extract the data file from it and read that"
# Signatures of files that hold no table custseg reads: (magic, what, how to fix).
_NOT_DATA: tuple[tuple[bytes, str, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image", _EXPORT),
    (b"\xff\xd8\xff", "a JPEG image", _EXPORT),
    (b"GIF87a", "a GIF image", _EXPORT),
    (b"GIF89a", "a GIF image", _EXPORT),
    (b"II*\x00", "a TIFF image", _EXPORT),
    (b"MM\x00*", "a TIFF image", _EXPORT),
    (b"%PDF-", "a PDF document", _EXPORT + " (a table in a PDF is not data custseg can read)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", _EXTRACT),
    (b"Rar!\x1a\x07", "a RAR archive", _EXTRACT),
    (b"\xfd7zXZ\x00", "xz-compressed", "decompress it first (unxz), or compress it with gzip or zstd, which custseg reads"),
    (b"\x7fELF", "a program (an ELF executable)", "give the path of the data file"),
    (b"{\\rtf", "an RTF document", _EXPORT),
)
# Formats custseg reads, found in a file named as another: (magic, what, how to fix).
_BINARY_MAGIC = {
    b"PAR1": ("a Parquet file", "give it the extension .parquet"),
    b"PK\x03\x04": ("an Excel workbook or a zip archive", "give a workbook the extension .xlsx, unzip an archive"),
    b"\xd0\xcf\x11\xe0": ("an old Excel (.xls) workbook", "give it the extension .xls"),
    b"SQLite format 3": ("a SQLite database", "read it with sqlite:///PATH and {param:table} or {param:query}"),
}
_NOT_KIND = {"csv": "CSV text", "json": "JSON lines", "xlsx": "an Excel workbook", "parquet": "a Parquet file"}


def _not_data(head: bytes) -> tuple[str, str] | None:
    """(what, fix) for a head that shows a file holding no table, else None."""
    for magic, what, fix in _NOT_DATA:
        if head.startswith(magic):
            return what, fix
    if head.startswith(b"BZh") and head[4:10] == b"1AY&SY":
        return "bzip2-compressed", "decompress it first (bunzip2), or compress it with gzip or zstd, which custseg reads"
    if head.startswith(b"MZ") and b"\x00" in head[:64]:
        return "a Windows program (.exe or .dll)", "give the path of the data file"
    if head[257:262] == b"ustar":
        return "a tar archive", _EXTRACT
    text = head
    for bom in (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        if text.startswith(bom):
            text = text[len(bom):]
            break
    text = text.replace(b"\x00", b"").lstrip().lower()  # UTF-16 markup reads the same
    if text.startswith((b"<!doctype html", b"<html")) or (text.startswith(b"<?xml") and b"<html" in text):
        return "an HTML page", "save the data itself (the page's download or export link) as CSV, XLSX, Parquet or JSON lines"
    if text.startswith(b"<?xml"):
        if b"urn:schemas-microsoft-com:office:spreadsheet" in text:
            return "an Excel 2003 XML spreadsheet", "open it in Excel and save it as .xlsx"
        return "an XML document", _EXPORT
    return None


def _zip_contents(path: Path) -> tuple[str, str]:
    """What a zip file is: ('workbook', '') for an XLSX, else (kind, what)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError):
        return "zip", "a damaged ZIP archive"
    if "xl/workbook.xml" in names or "xl/workbook.bin" in names:
        return "workbook", ""
    if "word/document.xml" in names:
        return "document", "a Word document"
    if "ppt/presentation.xml" in names:
        return "document", "a PowerPoint presentation"
    if "content.xml" in names and "mimetype" in names:
        return "document", "an OpenDocument file"
    files = [n for n in names if not n.endswith("/")]
    shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    return "zip", f"a ZIP archive (holding {shown})" if files else "an empty ZIP archive"


def _refuse_non_data(path: Path, fmt: Format, compression: Compression | None) -> None:
    """Name what a file is when it holds no data of its format: by its signature, before any
    encoding or "no data rows" diagnosis."""
    if compression is not None:
        try:
            inner = _read_head(path, compression, 512)
        except InputError:
            if compression == "zstd":
                return  # no way to look inside here; DuckDB reads it or says what is wrong
            raise
        found = _not_data(inner)
        if found is None:
            magic = next((m for m in _BINARY_MAGIC if inner.startswith(m)), None)
            if magic is not None:
                raise _compressed_binary(path, compression, _BINARY_MAGIC[magic][0])
            if _compression_of_bytes(inner):
                raise _compressed_binary(path, compression, f"{_compression_of_bytes(inner)}-compressed data")
        if found is not None:
            what, fix = found
            raise InputError(f"{path}: is {compression}-compressed and holds {what}, not a data file; {fix}")
        return
    head = _head(path, 512)
    found = _not_data(head)
    if found is None and head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        kind, what = _zip_contents(path)
        if kind == "workbook":
            if fmt == "xlsx":
                return
        else:
            fix = _EXTRACT if kind == "zip" else "save it as .xlsx or CSV"
            raise InputError(f"{path}: is {what}, not {_NOT_KIND[fmt] if fmt == 'xlsx' else 'a data file'}; {fix}")
    if found is not None:
        what, fix = found
        raise InputError(f"{path}: is {what}, not a data file; {fix}")
    own = {"parquet": (b"PAR1",), "xlsx": (b"PK\x03\x04", b"\xd0\xcf\x11\xe0")}.get(fmt, ())
    for magic, (what, fix) in _BINARY_MAGIC.items():
        if head.startswith(magic) and magic not in own:
            raise InputError(f"{literal(path)}: is {what}, not {_NOT_KIND[fmt]}; {fix}")


def _compressed_binary(path: Path, compression: Compression, what: str) -> InputError:
    return InputError(
        f"{path}: is {compression}-compressed and holds {what}, which cannot be read compressed "
        f"(CSV and JSON lines can); decompress it first ({_DECOMPRESS[compression]} {path.name})"
    )


def _compression_of_bytes(head: bytes) -> Compression | None:
    return next((kind for magic, kind in _COMPRESSION_MAGIC.items() if head.startswith(magic)), None)


def _guess_format(path: Path, compression: Compression | None = None) -> Format:
    head = _read_head(path, compression, 8) if compression else _head(path, 8)
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\xd0\xcf\x11\xe0"):
        return "xlsx"
    if head.lstrip().startswith((b"{", b"[")):
        return "json"
    return "csv"


# C0 control bytes that never occur in a text table (tab, newlines, form feed and ^Z do).
_CONTROL = bytes(b for b in range(32) if b not in b"\t\n\r\x0c\x1a") + b"\x7f"
_C1 = bytes(range(0x80, 0xA0))  # DuckDB's latin-1 reader refuses these; cp1252 uses them
_CANDIDATE_DELIMITERS = (",", ";", "\t", "|")
_SCAN_RECORDS = 100_000  # how far a field-count diagnosis looks (the sniffer samples 20,480)
# Python codec name -> the name DuckDB's CSV reader knows; other codecs are transcoded.
_DUCKDB_ENCODINGS = {"utf-8": "utf-8", "utf-8-sig": "utf-8", "utf-16": "utf-16", "iso8859-1": "latin-1"}


def _sniff_encoding(path: Path, compression: Compression | None = None) -> str:
    """A Python codec: utf-8 (with or without BOM), utf-16 by BOM, cp1252 or latin-1.

    Binary files (NUL or other control bytes) are refused.  A compressed file is judged by
    the head of its decompressed text.
    """
    head = _read_head(path, compression, _SNIFF_BYTES)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if b"\x00" in head:
        half = max(1, len(head) // 2)
        for order, zeros in (("le", head[1::2]), ("be", head[0::2])):
            if zeros.count(0) > 0.4 * half:  # ASCII text in UTF-16: every other byte is NUL
                raise InputError(
                    f"{literal(path)}: looks like UTF-16 text without a byte-order mark; "
                    f"pass {{param}} utf-16-{order}",
                    param="encoding",
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
    """The Python codec for an ``encoding`` value."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise InputError(
            f"{literal(path)}: {{param}} '{literal(encoding)}' is not an encoding Python knows; "
            "use utf-8, latin-1, cp1252 or utf-16",
            param="encoding",
        ) from None


def _encoding_label(codec: str) -> str:
    return {"iso8859-1": "latin-1", "utf-8-sig": "utf-8"}.get(codec, codec)


def _transcode(path: Path, codec: str, *, strict: bool = True, compression: Compression | None = None) -> Path | None:
    """Copy ``path`` to a temporary UTF-8 file (DuckDB reads only utf-8/utf-16/latin-1).

    A compressed source gets a gzip-compressed copy (which DuckDB reads as it is), so its
    text never lies on disk uncompressed.  Returns None when ``strict`` is false and the
    bytes do not decode; raises InputError (naming the line) when it is true.
    """
    fd, name = tempfile.mkstemp(prefix="custseg-", suffix=".csv.gz" if compression else ".csv")
    decoder = codecs.getincrementaldecoder(codec)()
    line = 0
    try:
        with contextlib.ExitStack() as stack:
            src = stack.enter_context(_open_bytes(path, compression))
            if compression:
                raw_dst = stack.enter_context(os.fdopen(fd, "wb"))
                dst = stack.enter_context(io.TextIOWrapper(
                    gzip.GzipFile(fileobj=raw_dst, mode="wb", compresslevel=1), encoding="utf-8", newline=""))
            else:
                dst = stack.enter_context(os.fdopen(fd, "w", encoding="utf-8", newline=""))
            for line, raw in enumerate(src, 1):
                dst.write(decoder.decode(raw))
            dst.write(decoder.decode(b"", final=True))
    except UnicodeDecodeError:
        os.unlink(name)
        if not strict:
            return None
        raise InputError(
            f"{literal(path)}: bytes that are not valid {_encoding_label(codec)} on line {max(line, 1)}; "
            "pass the right {param} (utf-8, latin-1, cp1252, utf-16)",
            param="encoding",
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


def _header_line(path: Path, codec: str, compression: Compression | None = None) -> str | None:
    """The first line that is not blank (the header), or None if every line is blank."""
    with _open_text(path, codec, compression) as fh:
        for line in fh:
            if line.strip():
                return line
    return None


def _header(line: str, delimiter: str, quote: str | None) -> list[str]:
    reader = csv.reader(io.StringIO(line), delimiter=delimiter, quotechar=quote or '"')
    return [c.strip() for c in next(reader, [])]


def _read_csv(
    con, path: Path, *, encoding: str | None, delimiter: str | None, compression: Compression | None = None,
    in_place: bool = False,
) -> tuple[str, str, list[str], Callable[[], None] | None]:
    """Register the CSV as the view ``source``; returns (encoding, delimiter, notes, stager):
    ``stager`` stages a CSV left in place (``in_place``, see :func:`read`), else it is None.

    DuckDB reads UTF-8, UTF-16 and latin-1 itself; any other encoding (cp1252 above all,
    the default of Windows programs) is first copied to a temporary UTF-8 file, which lives as
    long as ``con`` (gzip-compressed when the source is compressed).
    """
    codec = _codec(encoding, path) if encoding else _sniff_encoding(path, compression)
    data, data_compression, notes = path, compression, []
    if codec not in _DUCKDB_ENCODINGS:
        data = _transcode(path, codec, compression=compression)
        weakref.finalize(con, _unlink, str(data))
        data_compression = "gzip" if compression else None
        notes.append(f"{_encoding_label(codec)} text, read through a temporary UTF-8 copy")
    try:
        return _register_csv(con, path, data, codec, delimiter, data_compression, notes, in_place=in_place)
    except _Latin1Refused:
        # Bytes in 0x80-0x9F after the sample that chose latin-1: cp1252 (or latin-1 as Python
        # reads it) after all.
        fallbacks = ("cp1252", "iso8859-1") if encoding is None else (codec,)
        for fallback in fallbacks:
            copy = _transcode(path, fallback, strict=fallback == fallbacks[-1], compression=compression)
            if copy is not None:
                break
        weakref.finalize(con, _unlink, str(copy))
        notes.append(f"{_encoding_label(fallback)} text, read through a temporary UTF-8 copy")
        return _register_csv(con, path, copy, fallback, delimiter, "gzip" if compression else None, notes,
                             in_place=in_place)


class _Latin1Refused(Exception):
    """DuckDB's latin-1 reader met a byte in 0x80-0x9F."""


def _register_csv(
    con, path: Path, data: Path, codec: str, delimiter: str | None,
    compression: Compression | None = None, notes: list[str] | None = None, *, in_place: bool = False,
) -> tuple[str, str, list[str], Callable[[], None] | None]:
    """Sniff and register ``data`` (``path`` itself or its UTF-8 copy); messages name ``path``.
    Returns what :func:`_read_csv` returns."""
    notes = list(notes or [])
    duck_encoding = _DUCKDB_ENCODINGS.get(codec, "utf-8") if data == path else "utf-8"
    text_codec = codec if data == path else "utf-8"
    python_codec = "utf-8-sig" if text_codec == "utf-8" else text_codec
    first = _header_line(data, python_codec, compression)
    if first is None:
        raise InputError(f"{path}: has only blank lines, no header and no data; export the data again")

    def fail(exc: duckdb.Error):
        resource = resource_error(exc)
        if resource is not None:
            return resource
        message = str(exc)
        if "not latin-1 encoded" in message and duck_encoding == "latin-1":
            return _Latin1Refused()
        diagnosis = _diagnose_fields(path, data, text_codec, first, delimiter, compression)
        return InputError(diagnosis, param="delimiter") if diagnosis else _csv_error(path, exc, data)

    if delimiter is None or delimiter in _WHITESPACE_DELIMITERS:
        sample = _sample_lines(data, python_codec, compression)
        fields = _whitespace_fields(sample, forced=delimiter is not None)
        if fields:
            try:
                notes += _register_whitespace(con, path, data, python_codec, duck_encoding, compression, sample, fields)
            except duckdb.Error as exc:
                resource = resource_error(exc)
                if resource is not None:
                    raise resource from None
                if "not latin-1 encoded" in str(exc) and duck_encoding == "latin-1":
                    raise _Latin1Refused() from None
                raise _csv_error(path, exc, data) from None
            return _encoding_label(codec), " ", notes, None

    compressed = f", compression := {_duck_compression(compression)!r}"

    def sniff_dialect(lenient: str = ""):
        return con.execute(
            "SELECT Delimiter, Quote, Prompt FROM sniff_csv(?, encoding := ?"
            + (", delim := ?" if delimiter else "")
            + f"{compressed}{lenient}, sample_size := 20480)",
            [str(data), duck_encoding] + ([delimiter] if delimiter else []),
        ).fetchall()[0]

    try:
        sniff = sniff_dialect()
    except duckdb.Error as exc:
        # Lines ending in both CR LF and LF (an export appended to by another program) defeat
        # DuckDB's strict parser; the lenient one reads them, so such a file gets it, no other.
        if "sniffing" not in str(exc) or not _mixed_line_endings(data, compression):
            raise fail(exc) from None
        try:
            sniff = sniff_dialect(", strict_mode := false")
        except duckdb.Error:
            raise fail(exc) from None
        compressed += ", strict_mode := false"
        notes.append("lines end in both CR LF and LF; read with DuckDB's lenient parser")
    delim, quote = sniff[0], sniff[1]
    if quote in ("(empty)", ""):
        quote = None
    header = _header(first, delim, quote)
    if len(header) == 1 and any(d in header[0] for d in _CANDIDATE_DELIMITERS if d != delim):
        diagnosis = _diagnose_fields(path, data, text_codec, first, delimiter, compression)
        raise InputError(diagnosis or (
            f"{literal(path)}: found a single column '{literal(header[0][:60])}'; the delimiter could not be "
            "detected — pass {param}"
        ), param="delimiter")
    dupes = duplicate_names(c for c in header if c)
    if dupes:
        raise SchemaError(
            f"{path}: duplicate column names {dupes} in the header (compared ignoring case); "
            "rename them so each is unique"
        )
    options = {"encoding": duck_encoding, "delim": delim}
    opts = ", ".join(f"{k} := {v!r}" for k, v in options.items())
    reader = f"read_csv({quote_text(data)}, {opts}, header := true, normalize_names := false{compressed}"

    def load() -> None:
        # The text is parsed once: every later pass — checks, cleaning, features — reads the
        # result, not the text.  Loading converts every value, so a bad late value fails here,
        # not in a later query.
        stage = _stage_csv(con, data, compression)
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

    # (Not latin-1: DuckDB's reader refuses some of its bytes, which only a full read finds.)
    if in_place and duck_encoding != "latin-1" \
            and _text_size(data, compression) <= memory_budget(con) * _TEXT_SHARE_IN_PLACE:
        try:
            con.execute(f"CREATE OR REPLACE VIEW source AS SELECT * FROM {_pinned_reader(con, reader, sniff[2])}")
            return _encoding_label(codec), delim, notes, load
        except duckdb.Error:
            pass  # read the usual way, with its diagnosis
    load()
    return _encoding_label(codec), delim, notes, None


def _pinned_reader(con, reader: str, sniffed: str) -> str:
    """``reader`` (an unfinished ``read_csv(...`` call) with what DuckDB detects from its first
    20,480 rows written out (columns, types, quoting, date formats), so that a query over it
    does not detect them again: each detection reads those rows (30 ms; a CSV read in place is
    bound by every query).  ``sniffed``: the call the dialect's sniffing wrote, taken when it
    found the header the reader is told of; else the reader's own options are sniffed.  The
    reader as it is, detecting, if DuckDB writes the call otherwise."""
    detecting = f"{reader}, sample_size := 20480)"
    prompt = str(sniffed).strip()
    if "header=true" not in prompt:
        args = reader.removeprefix("read_csv(")
        prompt = str(con.execute(f"SELECT Prompt FROM sniff_csv({args}, sample_size := 20480)").fetchall()[0][0]).strip()
    pinned = prompt.removeprefix("FROM ").removesuffix(";")
    if not (pinned.startswith("read_csv(") and pinned.endswith(")") and "auto_detect=false" in pinned):
        return detecting
    return pinned


def _mixed_line_endings(data: Path, compression: Compression | None) -> bool:
    """Whether the head (and, uncompressed, the tail) of the text has both CR LF and bare LF."""
    parts = [_read_head(data, compression, 1 << 20)]
    size = data.stat().st_size
    if compression is None and size > len(parts[0]):
        with data.open("rb") as fh:
            fh.seek(max(len(parts[0]), size - (1 << 16)))
            parts.append(fh.read())
    crlf = sum(part.count(b"\r\n") for part in parts)
    bare = sum(part.count(b"\n") for part in parts) - crlf
    return crlf > 0 and bare > 0


# --- whitespace-aligned tables ---------------------------------------------------------------
#
# Older systems and papers publish tables whose columns are separated by runs of spaces
# (``00001 19970101  1  11.77``).  Such a file is recognised by its content: no usual
# delimiter splits its lines consistently, but splitting on whitespace gives the same number
# (>= 2) of fields on nearly every line.  DuckDB reads each line as one text column and
# splits it; each field gets the type all its values fit.

_WHITESPACE_DELIMITERS = (" ", "whitespace", r"\s+")
_SAMPLE_LINES = 1_000  # how many non-blank lines decide delimiter and header
_CONSISTENT = 0.9  # share of sampled lines that must agree on the number of fields
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_INTEGER = r"[+-]?[0-9]+"
_ISO_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
#: Values that mean "missing" in a numeric or date column of a whitespace table (a text
#: column keeps them as they are).
_MISSING = ("NA", "N/A", "NaN", "nan", "NULL", "null", "-", ".", "?")


def _sample_lines(data: Path, codec: str, compression: Compression | None) -> list[str]:
    """The first non-blank lines of the text (at most :data:`_SAMPLE_LINES`, or 4 MB)."""
    lines, size = [], 0
    with _open_text(data, codec, compression) as fh:
        for line in fh:
            size += len(line)
            if line.strip():
                lines.append(line)
            if len(lines) >= _SAMPLE_LINES or size >= _SNIFF_BYTES:
                break
    return lines


def _usual_delimiter_fits(sample: list[str]) -> bool:
    """Whether a usual delimiter in the first line splits the sampled lines consistently."""
    for delim in _CANDIDATE_DELIMITERS:
        if delim not in sample[0]:
            continue
        counts = Counter(len(row) for row in csv.reader(sample, delimiter=delim) if row)
        if not counts:
            continue
        fields, lines = counts.most_common(1)[0]
        if fields >= 2 and lines >= _CONSISTENT * sum(counts.values()):
            return True
    return False


def _whitespace_fields(sample: list[str], *, forced: bool = False) -> int | None:
    """The number of fields when the sampled lines make a whitespace-aligned table, else None."""
    if not sample or (not forced and _usual_delimiter_fits(sample)):
        return None
    counts = Counter(len(line.split()) for line in sample)
    fields, lines = counts.most_common(1)[0]
    # Nearly all: nine in ten, or all but one of four or more (a bad line is then reported).
    nearly_all = lines >= _CONSISTENT * len(sample) or (len(sample) >= 4 and lines >= len(sample) - 1)
    if fields < 2 or not (forced or nearly_all):
        return None
    first = sample[0].split()
    if len(first) < fields and not any(_numeric(v) for v in first):
        return None  # a header with fewer names than values: one text column whose values hold spaces
    return fields


def _numeric(value: str) -> bool:
    return re.fullmatch(_NUMBER, value) is not None


def _has_header(rows: list[list[str]], fields: int) -> bool:
    """Whether the first sampled line names the columns.

    It does when one of its fields is text while the other lines hold numbers in that column
    (``id date qty amount`` over numbers); it does not when one of its fields is a number (a
    header names no column ``12``); when every column is text, it does when its fields are
    distinct and none of them recurs in its column further down (a value usually does).
    """
    first, rest = rows[0], [row for row in rows[1:] if len(row) == fields]
    if len(first) != fields:
        return not any(_numeric(v) for v in first)
    if not rest:
        return not any(_numeric(v) for v in first)
    for j, name in enumerate(first):
        column = [row[j] for row in rest if row[j] not in _MISSING]
        numeric = sum(_numeric(v) for v in column)
        if column and numeric >= _CONSISTENT * len(column) and not _numeric(name) and name not in _MISSING:
            return True
    if any(_numeric(v) for v in first):
        return False
    if len({v.casefold() for v in first}) < len(first):
        return False
    return not any(name in {row[j] for row in rest} for j, name in enumerate(first))


def _register_whitespace(
    con, path: Path, data: Path, codec: str, duck_encoding: str, compression: Compression | None,
    sample: list[str], fields: int,
) -> list[str]:
    """Register a whitespace-aligned table as the view ``source``; returns the notes."""
    rows = [line.split() for line in sample]
    header = _has_header(rows, fields)
    if header and len(rows[0]) != fields:
        raise InputError(
            f"{path}: the header line has {len(rows[0])} names but the data lines have {fields} values "
            "(a table aligned with spaces); a column name holds a space — join its words (e.g. "
            "Customer_ID) or export the data as CSV"
        )
    names = rows[0] if header else [f"column_{i}" for i in range(1, fields + 1)]
    dupes = duplicate_names(names)
    if dupes:
        raise SchemaError(
            f"{path}: duplicate column names {dupes} in the header (compared ignoring case); "
            "rename them so each is unique"
        )
    lines = (
        f"read_csv({quote_text(data)}, columns := {{'line': 'VARCHAR'}}, delim := '', quote := '', "
        f"escape := '', header := false, auto_detect := false, strict_mode := false, "
        f"encoding := {duck_encoding!r}, compression := {_duck_compression(compression)!r})"
    )
    split = f"SELECT regexp_extract_all(line, '\\S+') AS f FROM {lines}"
    table = f"(SELECT f FROM ({split}) WHERE len(f) > 0{' OFFSET 1' if header else ''})"
    missing = ", ".join(quote_text(m) for m in _MISSING)
    checks = ["count(*) FILTER (WHERE len(f) <> %d)" % fields]
    for i in range(1, fields + 1):
        v = f"f[{i}]"
        checks += [
            f"count(*) FILTER (WHERE {v} NOT IN ({missing}))",
            f"count(*) FILTER (WHERE regexp_full_match({v}, '{_INTEGER}'))",
            f"count(*) FILTER (WHERE regexp_full_match({v}, '{_INTEGER}') AND TRY_CAST({v} AS BIGINT) IS NULL)",
            f"count(*) FILTER (WHERE regexp_full_match({v}, '{_NUMBER}'))",
            f"min({v}) FILTER (WHERE regexp_full_match({v}, '0[0-9]+'))",
            f"count(*) FILTER (WHERE regexp_full_match({v}, '{_ISO_DATE}') AND TRY_CAST({v} AS DATE) IS NOT NULL)",
        ]
    found = con.execute(f"SELECT {', '.join(checks)} FROM {table}").fetchall()[0]
    if found[0]:
        line, count = _first_uneven_line(data, codec, compression, fields, header)
        raise InputError(
            f"{path}: line {line} has {count} value{'s' if count != 1 else ''} but the table has {fields} "
            "columns (aligned with spaces); a value holds a space or is missing — fix that line, "
            "or export the data as CSV"
        )
    notes = [
        f"read as a whitespace-aligned table with a header line ({fields} columns)" if header else
        f"read as a whitespace-aligned table without a header: columns are named column_1..column_{fields}"
    ]
    select = []
    for i, name in enumerate(names, 1):
        present, integers, too_big, numbers, zero_led, dates = found[1 + 6 * (i - 1): 1 + 6 * i]
        kind = "VARCHAR"
        if present and integers == present:
            if zero_led is not None:
                notes.append(f"column '{name}' is read as text to keep its leading zeros (e.g. '{zero_led}')")
            elif too_big:
                notes.append(f"column '{name}' is read as text: its whole numbers are too large for 64 bits")
            else:
                kind = "BIGINT"
        elif present and numbers == present:
            kind = "DOUBLE"
        elif present and dates == present:
            kind = "DATE"
        value = f"f[{i}]"
        if kind != "VARCHAR":
            value = f"CAST(CASE WHEN {value} IN ({missing}) THEN NULL ELSE {value} END AS {kind})"
        select.append(f"{value} AS {quote_name(name)}")
    stage = _stage_csv(con, data, compression)
    stage(f"SELECT {', '.join(select)} FROM {table}")
    return notes


def _first_uneven_line(data: Path, codec: str, compression: Compression | None, fields: int, header: bool):
    """(line number, number of values) of the first non-blank data line without ``fields`` values."""
    seen = False
    with _open_text(data, codec, compression) as fh:
        for number, line in enumerate(fh, 1):
            values = line.split()
            if not values:
                continue
            if not seen:
                seen = True
                if header:
                    continue
            if len(values) != fields:
                return number, len(values)
    return 0, 0  # pragma: no cover - DuckDB found one


#: A CSV is staged in memory when its text takes at most 1/this of the memory budget.
_TEXT_SHARE_IN_MEMORY = 3
#: A CSV read in one pass (:func:`read` with ``in_place``) is read where it is when its text
#: takes at most this share of the memory budget: its rows are deduplicated in one hash table,
#: which then fits the budget (the partitions of :func:`custseg.features.partitions` need a
#: count of the rows, a pass of its own).  `custseg features` within 1 GB: 10M rows, 0.6 GB of
#: text, 3.8-4.0 s read in place against 4.7-5.1 s staged as Parquet; 15M rows, 0.9 GB, 6.3-6.7 s
#: in place (one pass) against 6.8-7.0 s staged (two partitions), the hand-written query 5.9-6.4 s.
_TEXT_SHARE_IN_PLACE = 1


def _stage_csv(con, data: Path, compression: Compression | None = None):
    """Where a parsed CSV goes; returns a function that loads a SELECT there and points the
    view ``source`` at it.

    A text of up to a third of the memory budget becomes a DuckDB table in memory.  A larger
    one goes to a temporary Parquet file, compressed (10M rows: 0.6 GB of text, 0.06 GB of
    Parquet), so the queries that follow keep the budget: in memory the table takes about
    1.4 times the text, and a table of more than half the budget slows the features down more
    than writing the file costs (`custseg features` within 1 GB: 5M rows, 0.3 GB of text, 3.0 s
    from memory, 3.6 s from Parquet; 7M rows, 0.42 GB, 5.1 s against 4.4 s; 10M rows, 0.6 GB,
    7.1 s against 6.0 s).  Past the budget a table would spill to disk uncompressed (50M rows:
    120 s for the features instead of about 80 s).  A compressed file counts by the size of
    its text (:func:`_text_size`).
    """
    if _text_size(data, compression) * _TEXT_SHARE_IN_MEMORY <= memory_budget(con):
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


def _diagnose_fields(
    path: Path, data: Path, codec: str, first: str, delimiter: str | None, compression: Compression | None = None,
) -> str | None:
    """Explain a CSV the sniffer rejects: a wrong ``delimiter``, or a row with another field count
    (a message template, about the delimiter)."""
    counts = {d: first.count(d) for d in _CANDIDATE_DELIMITERS}
    likely = max(counts, key=lambda d: counts[d])
    if delimiter and counts.get(delimiter, first.count(delimiter)) == 0 and counts[likely]:
        return (
            f"{literal(path)}: {{param:delimiter}} {literal(repr(delimiter))} does not occur in the header, "
            f"which seems to use {likely!r}; pass {{param:delimiter}} {likely!r} or leave the option out"
        )
    delim = delimiter or (likely if counts[likely] else None)
    if delim is None:
        return None
    with _open_text(data, "utf-8-sig" if codec == "utf-8" else codec, compression) as fh:
        reader = csv.reader(fh, delimiter=delim)
        header = next((row for row in reader if row), None)
        if header is None:
            return None
        for records, row in enumerate(reader):
            if records >= _SCAN_RECORDS:
                break
            if row and len(row) != len(header):
                where = f"{literal(path)}: line {reader.line_num} (data row {records + 1})"
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
                    f"{delim!r} — fix that line (quote such values) or pass {{param:delimiter}}"
                )
    return None


def _csv_error(path: Path, exc: Exception, data: Path | None = None) -> InputError:
    """The InputError for DuckDB's CSV reader failing on ``path`` (read from ``data``)."""
    text = str(exc)
    if data is not None and data != path:
        text = text.replace(str(data), str(path))  # never show the temporary copy
    line = re.search(r"on Line: (\d+)", text)
    where = f" on line {line.group(1)}" if line else ""
    if "Invalid unicode" in text or "byte sequence" in text:
        return InputError(
            f"{literal(path)}: bytes that are not valid UTF-8{where}; "
            "re-save it as UTF-8 or pass {param} latin-1 (or cp1252)",
            param="encoding",
        )
    if "Expected Number of Columns" in text or "too many columns" in text.lower():
        expected = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", text)
        detail = f" (expected {expected.group(1)} fields, found {expected.group(2)})" if expected else ""
        return InputError(
            f"{literal(path)}: rows have different numbers of fields{where}{detail}; the delimiter may be "
            "mixed — fix that row or pass {param}",
            param="delimiter",
        )
    if "sniffing" in text:
        return InputError(
            f"{literal(path)}: the CSV dialect (delimiter, quotes) could not be detected; "
            "pass {param}, and check that it is a text table with a header line",
            param="delimiter",
        )
    first = next((ln for ln in text.splitlines() if ln.strip()), text)
    return InputError(f"{literal(path)}: cannot be read as CSV{where}: {literal(first.strip()[:200])}")


def _read_xlsx(con, path: Path, *, sheet: str | None) -> list[str]:
    """Load a sheet as the view ``source``; returns the notes (which sheet was chosen, and why)."""
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
        raise InputError(f"{literal(path)}: no sheet '{literal(sheet)}'; sheets are {literal(', '.join(names))}",
                         param="sheet")
    notes: list[str] = []
    if sheet is None and len(names) > 1:
        sheet, note = _choose_sheet(path, book, names)
        notes.append(note)
    rows = book.get_sheet_by_name(sheet or names[0]).to_python(skip_empty_area=True)
    if not rows:
        raise InputError(f"{literal(path)}: sheet '{literal(sheet or names[0])}' is empty; pick another with {{param}}",
                         param="sheet")
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
    return notes


def _choose_sheet(path: Path, book, names: list[str]) -> tuple[str, str]:
    """The sheet to read when ``sheet`` is not given, and a note that says why.

    The first sheet when its header has a customer id (as always); else the one sheet whose
    header has one; else the one sheet that looks like a table (two columns or more and a
    row of data); else the first.  Several candidates are an error that lists them.  A sheet
    counts only with a row of data under its header.
    """
    with_id, tables = [], []
    for name in names:
        try:
            rows = book.get_sheet_by_name(name).to_python(skip_empty_area=True, nrows=2)
        except Exception:  # calamine raises its own error types; such a sheet is no candidate
            continue
        if len(rows) < 2 or not any(str(c).strip() for c in rows[1]):
            continue
        header = [str(c).strip() for c in rows[0] if str(c).strip()]
        try:
            if detect_roles(header).get("customer_id") is not None:
                with_id.append(name)
        except SchemaError:  # duplicate names: reported if this sheet is read
            pass
        if len(header) >= 2:
            tables.append(name)
    listed = ", ".join(names)
    quoted = lambda chosen: ", ".join(f"'{n}'" for n in chosen)  # noqa: E731
    if with_id and with_id[0] == names[0]:
        also = f"; {quoted(with_id[1:])} also {'has' if len(with_id) == 2 else 'have'} one" if len(with_id) > 1 else ""
        return names[0], f"read sheet '{names[0]}' (the first, which has a customer id{also}; sheets: {listed})"
    if len(with_id) == 1:
        return with_id[0], f"read sheet '{with_id[0]}' (the one with a customer id; sheets: {listed})"
    if with_id:
        raise InputError(
            f"{literal(path)}: sheets {literal(quoted(with_id))} all have a customer id column; "
            "pass {param} NAME to choose one",
            param="sheet",
        )
    if len(tables) == 1:
        return tables[0], f"read sheet '{tables[0]}' (the only one that looks like a table; sheets: {listed})"
    if tables:
        raise InputError(
            f"{literal(path)}: no sheet has a customer id column and sheets {literal(quoted(tables))} all look like "
            "tables; pass {param} NAME to choose one",
            param="sheet",
        )
    return names[0], f"read sheet '{names[0]}', the first (no sheet looks like a table; sheets: {listed})"


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


def _read_json(con, path: Path, compression: Compression | None = None) -> None:
    source = f"{quote_text(path)}, compression := {_duck_compression(compression)!r}"
    try:
        con.execute(f"CREATE OR REPLACE VIEW source AS SELECT * FROM read_json_auto({source})")
        try:
            _scan_every_value(con)
        except (duckdb.ConversionException, duckdb.InvalidInputException) as exc:
            if "transform error" not in str(exc) and not isinstance(exc, duckdb.ConversionException):
                raise
            # A late value does not fit the type chosen from the first rows: choose from all.
            pinned = _pinned_types(con, f"read_json_auto({source}, sample_size := -1)")
            con.execute(
                f"CREATE OR REPLACE VIEW source AS SELECT * FROM read_json({source}, columns := {pinned})"
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
        raise InputError(f"{literal(label)}: give exactly one of {{param}} NAME or {{param:query}} SQL", param="table")
    try:
        parsed = sa.make_url(url)
    except Exception as exc:
        raise InputError(
            f"{label}: not a usable database URL ({_first_line(exc)}); "
            "e.g. postgresql+psycopg://user@host/db or sqlite:///file.db"
        ) from None
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg":
        from custseg._optional import require

        try:
            require("psycopg", feature="reading PostgreSQL")
        except CustsegError as exc:
            raise InputError(f"{literal(label)}: {exc.named_template}", param=exc.param) from None
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
                        f"{literal(label)}: no table '{literal(table)}'; check {{param}}"
                        + (f" (tables: {literal(', '.join(sorted(known)[:20]))})" if known
                           else " (the database has no tables)"),
                        param="table",
                    )
                statement = sa.select(sa.text("*")).select_from(sa.table(name, schema=schema or None))
            else:
                statement = sa.text(query)
            try:
                frame = pd.read_sql(statement, connection)
            except sa.exc.ResourceClosedError:
                raise InputError(
                    f"{literal(label)}: the query returned no rows to read; {{param}} must be a SELECT", param="query",
                ) from None
            except (pd.errors.DatabaseError, sa.exc.SQLAlchemyError) as exc:
                cause = exc.__cause__ if isinstance(exc, pd.errors.DatabaseError) and exc.__cause__ else exc
                reason = _first_line(getattr(cause, "orig", None) or cause)
                raise InputError(
                    f"{literal(label)}: the query failed: {literal(reason)}; fix {{param:query}}/{{param:table}}",
                    param="table" if table else "query",
                ) from None
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
            f"{literal(label)}: the result has duplicate column names {literal(dupes)} (compared ignoring case); "
            "alias them in {param}",
            param="query",
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
