"""Write tables to files, all or nothing.

A table is a DataFrame or a DuckDB relation (which the engine writes to CSV and Parquet by
itself, without a copy in Python).  It is written to a temporary file beside the target and
moved into place only when complete, so a failure never leaves a half-written file; files
that belong together (features and their rejected rows, a set of exports) are moved into
place only when all of them are complete (:func:`write_together`).

No formula reaches a spreadsheet: in every .csv and .xlsx file, a text cell or a column name
that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is written with an
apostrophe in front (:func:`neutralise`), so a spreadsheet shows it as text and never runs it.
Numeric, date and boolean columns are written as they are, and Parquet files (which
spreadsheets do not open) keep every value exactly as it is.
"""

from __future__ import annotations

import gc
import io
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import duckdb

from custseg.errors import ConfigError, OutputError, literal

if TYPE_CHECKING:
    import pandas as pd

    Tabular = Union[pd.DataFrame, duckdb.DuckDBPyRelation]

__all__ = ["OUTPUT_FORMATS", "RISKY_STARTS", "neutralise", "neutralise_text", "restore_ids", "unneutralise_text",
           "temp_file", "publish_file", "write_table", "write_tables", "write_text", "write_together"]

OUTPUT_FORMATS = (".csv", ".parquet", ".xlsx")
_EXCEL_MAX_ROWS = 1_048_575

#: First characters that make a spreadsheet read a cell as a formula (or, tab and carriage
#: return, hide one behind white space): OWASP's list for CSV injection.
RISKY_STARTS = ("=", "+", "-", "@", "\t", "\r")
_RISKY_SQL = r"^[=+\-@\t\r]"  # the same, as a regular expression for DuckDB


def _named(option: str) -> tuple[str, str | None]:
    """How a message names the output ``option`` and the error's ``param``: a library parameter
    (``out``, ``rejects``) as the placeholder ``{param}``; text such as ``--out`` (the default,
    and what the CLI passes) as it is, with the parameter it spells (``out``)."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", option):
        return "{param}", option
    return literal(option), (option.removeprefix("--").replace("-", "_") if option.startswith("--") else None)


def check_target(path: Path, *, option: str = "--out") -> None:
    """Refuse an output path before any work is done: bad extension, a folder, no parent folder."""
    path = Path(path)
    name, param = _named(option)
    if path.suffix.lower() not in OUTPUT_FORMATS:
        raise ConfigError(
            f"{name} {literal(path)}: the extension must be one of {', '.join(OUTPUT_FORMATS)}, "
            f"got '{literal(path.suffix or '(none)')}'",
            param=param,
        )
    if path.is_dir():
        raise ConfigError(f"{name} {literal(path)}: is a directory; give a file name such as "
                          f"{literal(path / 'out.csv')}", param=param)
    if not path.parent.exists():
        raise ConfigError(f"{name} {literal(path)}: folder '{literal(path.parent)}' does not exist; create it first",
                          param=param)
    check_folder(path.parent, option=option, target=path)


def check_folder(folder: Path, *, option: str = "--out", target: Path | None = None) -> None:
    """Refuse before any work a place that cannot be written in (a read-only disk, a folder of
    someone else's): the folder, or the nearest one of its parents that exists, must be writable."""
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        name, param = _named(option)
        raise OutputError(f"{name} {literal(target or folder)}: cannot write in '{literal(existing)}' (read-only, "
                          "or no permission); choose another place", param=param)


def check_fits(path: Path, rows: int, *, option: str = "--out") -> None:
    """Refuse, before anything is written, a table too long for the format of ``path``."""
    path = Path(path)
    if path.suffix.lower() == ".xlsx" and rows > _EXCEL_MAX_ROWS:
        name, param = _named(option)
        raise ConfigError(
            f"{name} {literal(path)}: {rows:,} rows do not fit in an Excel sheet "
            f"(max {_EXCEL_MAX_ROWS:,}); write .csv or .parquet instead",
            param=param,
        )


def cannot_write(path: Path, cause: OSError | str, *, option: str = "--out") -> OutputError:
    """The one-line error for a file or folder that cannot be written, with the reason.

    ``option`` names the parameter that gave the path: its library name (``out``), which each
    edge spells its own way, or as before the CLI's text (``--out``, the default)."""
    reason = (cause.strerror or str(cause)) if isinstance(cause, OSError) else cause
    name, param = _named(option)
    return OutputError(f"{name} {literal(path)}: cannot write ({literal(reason)})", param=param)


def make_folder(folder: str | os.PathLike[str], *, option: str = "--out") -> Path:
    """Create an output folder (and its parents), refusing a place that cannot be written in."""
    folder = Path(folder)
    check_folder(folder, option=option)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cannot_write(folder, exc, option=option) from None
    return folder


def temp_file(path: str | os.PathLike[str], *, suffix: str = "") -> tuple[int, str]:
    """A new, empty temporary file beside ``path`` (``.NAME.RANDOM`` + ``suffix``): its open
    descriptor and its name.

    It is created with the permissions of any new file there (``0o666`` less the umask, or what
    the folder's default ACL says): the kernel applies them as it creates the file, so nothing
    needs the umask, which can only be read by setting it — process-wide state that another
    thread creating a file at that moment would get (``tempfile.mkstemp`` gives ``0o600``).
    """
    import secrets

    path = Path(path)
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        name = str(path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            return os.open(name, flags, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"no unused temporary name beside {path}")


def publish_file(tmp: str, path: Path) -> None:
    """Move a finished temporary file of :func:`temp_file` into place (atomically).  It already
    has the usual permissions of a new file: neither the umask nor the mode is touched here."""
    os.replace(tmp, path)


def neutralise_text(value):
    """``value`` with an apostrophe in front when it is text that begins with one of
    :data:`RISKY_STARTS`; anything else (numbers, dates, missing values) as it is.

    Every such text gets it, a plain number in a text column included: ``"-12"`` becomes
    ``"'-12"`` and ``"+44 20 7946 0000"`` ``"'+44 20 7946 0000"`` (OWASP's advice).  A text
    column is text on every row, and telling a harmless number from a formula (``-1+2``,
    ``-2*3``, ``+A1``, a locale's ``-1,5``) by its spelling is the guess spreadsheets make
    differently; the apostrophe also keeps the text as written (the ``+`` of a phone number,
    the zeros of ``-0012``) where a spreadsheet would turn it into a number.  Columns that
    hold numbers are numeric columns and are never touched.  Text that already begins with an
    apostrophe is left alone, so neutralising twice changes nothing.
    """
    return "'" + value if isinstance(value, str) and value.startswith(RISKY_STARTS) else value


def neutralise(frame: Tabular) -> Tabular:
    """``frame`` as a spreadsheet may open it: every text cell and every column name that begins
    with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a ``'`` in front
    (:func:`neutralise_text`, which says why a text ``"-12"`` gets one too).

    Columns of numbers, dates and booleans are left as they are (a ``-5`` stays the number -5),
    and so are the order and number of the columns.  What counts is the column's type: a
    quantity column the source holds as text (one of its cells is not a number) is text, so
    its ``-1`` is written ``'-1`` (in ``--rejects``, which has the rows as they were).  A DataFrame comes back as itself when
    nothing needs a change, else as a changed copy (the frame passed is never modified); a
    DuckDB relation comes back as a relation that does the same in SQL, without pandas.
    """
    if isinstance(frame, duckdb.DuckDBPyRelation):
        return _neutralised_relation(frame)
    import pandas as pd

    changed = {}
    for position in range(frame.shape[1]):
        values = frame.iloc[:, position]
        if values.dtype != object and not isinstance(values.dtype, (pd.StringDtype, pd.CategoricalDtype)):
            continue  # numbers, dates, booleans: never text
        if isinstance(values.dtype, pd.StringDtype):
            risky = values.str.startswith(RISKY_STARTS, na=False).astype(bool)
        else:
            risky = values.map(lambda v: isinstance(v, str) and v.startswith(RISKY_STARTS)).astype(bool)
        if risky.any():
            if isinstance(values.dtype, pd.CategoricalDtype):
                values = values.astype(object)
            changed[position] = values.map(neutralise_text).astype(values.dtype)
    names = [neutralise_text(c) for c in frame.columns]
    if not changed and names == list(frame.columns):
        return frame
    out = frame.copy(deep=False)
    for position, values in changed.items():
        out.isetitem(position, values)
    out.columns = names
    return out


def unneutralise_text(value):
    """Text custseg made itself (a segment name, a rule, a description), read back from a CSV
    file it wrote, without the apostrophe :func:`neutralise_text` put in front; writing it
    again puts it back.  Not for source text, which may begin with an apostrophe of its own:
    match ids with :func:`restore_ids`."""
    if isinstance(value, str) and value.startswith("'") and value[1:].startswith(RISKY_STARTS):
        return value[1:]
    return value


def restore_ids(read: pd.Series, ids: pd.Series) -> pd.Series:
    """Customer ids read back from a CSV file custseg wrote (``read``: neutralised, ``'=1+1``),
    as they are in the Parquet file of the same run (``ids``: ``=1+1``), as pandas strings.

    Both are matched on the neutralised form, which neutralising again leaves as it is (so ids
    of a CSV written before neutralising match as well): row by row when the two list the same
    customers in the same order, as a run writes them, else by id where one neutralised id
    stands for one customer; an id that matches none is left as read.
    """
    import pandas as pd

    written = ids.map(neutralise_text).astype("string").reset_index(drop=True)
    key = read.map(neutralise_text).astype("string")
    if key.reset_index(drop=True).equals(written):
        return pd.Series(ids.to_numpy(), index=read.index, dtype="string")
    lookup = pd.Series(ids.to_numpy(), index=written.to_numpy(), dtype="string")
    lookup = lookup[~lookup.index.duplicated(keep=False)]
    return key.map(lookup).fillna(read.astype("string")).astype("string")


def _neutralised_relation(relation: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    """:func:`neutralise` for a relation: text columns get a CASE, names an alias (in order)."""
    def quoted(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    columns = []
    changed = False
    for name, kind in zip(relation.columns, relation.types):
        alias = neutralise_text(name)
        if kind.id in ("varchar", "enum"):
            text = quoted(name) if kind.id == "varchar" else f"CAST({quoted(name)} AS VARCHAR)"
            columns.append(f"CASE WHEN regexp_matches({text}, '{_RISKY_SQL}') THEN '''' || {text} "
                           f"ELSE {text} END AS {quoted(alias)}")
            changed = True
        else:
            columns.append(quoted(name) if alias == name else f"{quoted(name)} AS {quoted(alias)}")
            changed |= alias != name
    return relation.select(", ".join(columns)) if changed else relation


def write_table(frame: Tabular, path: str | os.PathLike[str], *, option: str = "--out") -> Path:
    """Write ``frame`` as .csv, .parquet or .xlsx (by extension), atomically; messages name
    the file as ``option``: the parameter that gave it (``out``), or text such as ``--out``
    (see :func:`cannot_write`)."""
    return write_tables({"data": frame}, path, option=option)


def write_tables(sheets: Mapping[str, Tabular], path: str | os.PathLike[str], *, option: str = "--out") -> Path:
    """Write one table (CSV/Parquet) or several sheets (XLSX) to ``path``, atomically."""
    return write_together([(sheets, path, option)])[0]


def write_together(files: Sequence[tuple[Mapping[str, Any], str | os.PathLike[str], str]], *,
                   write: Callable[[Mapping[str, Any], str, Path, str], None] | None = None) -> list[Path]:
    """Write several files, all or none: ``(sheets, path, option)`` each.

    Each goes to a temporary file beside its target; only when every one is complete are they
    moved into place, so a failure (a full disk, a table too long for Excel) leaves no file
    written and every earlier file as it was.  ``write(sheets, tmp, path, option)`` writes one
    temporary file (default: this module's writer of tables; another engine passes its own).
    """
    write = write or _write_file
    targets = []
    for sheets, path, option in files:
        path = Path(path)
        check_target(path, option=option)
        if path.suffix.lower() != ".xlsx" and len(sheets) != 1:
            name, param = _named(option)
            raise ConfigError(f"{name} {literal(path)}: several tables need an .xlsx file", param=param)
        targets.append(path)
    written: list[str] = []
    try:
        for (sheets, _, option), path in zip(files, targets):
            try:
                fd, tmp = temp_file(path, suffix=path.suffix.lower())
            except OSError as exc:
                raise cannot_write(path, exc, option=option) from None
            os.close(fd)
            written.append(tmp)
            write(sheets, tmp, path, option)
        for tmp, path, (_, _, option) in zip(written, targets, files):
            try:
                publish_file(tmp, path)
            except OSError as exc:
                raise cannot_write(path, exc, option=option) from None
    finally:
        for tmp in written:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return targets


def _write_file(sheets: Mapping[str, Tabular], tmp: str, path: Path, option: str) -> None:
    """Write ``sheets`` to ``tmp`` in the format of ``path``; a failed write is an OutputError."""
    reason = None
    try:
        if path.suffix.lower() == ".xlsx":
            import pandas as pd

            # Built in memory, then written: a full disk fails one plain write, not the zip
            # writer half-way.
            workbook = io.BytesIO()
            with pd.ExcelWriter(workbook, engine="openpyxl") as writer:
                for name, frame in sheets.items():
                    frame = frame.df() if isinstance(frame, duckdb.DuckDBPyRelation) else frame
                    check_fits(path, len(frame), option=option)
                    _excel_ready(neutralise(frame)).to_excel(writer, sheet_name=name[:31], index=False)
            with open(tmp, "wb") as fh:
                fh.write(workbook.getbuffer())
        else:
            _write_one(next(iter(sheets.values())), tmp, path.suffix.lower())
    except OSError as exc:
        reason = exc.strerror or str(exc)
    except duckdb.IOException as exc:
        if Path(tmp).name not in str(exc):  # e.g. its temporary files: not about this file
            raise
        errno = re.search(r'"errno":"(\d+)"', str(exc))
        reason = os.strerror(int(errno.group(1))) if errno else str(exc).splitlines()[0]
    if reason is not None:
        _collect_quietly()
        raise cannot_write(path, reason, option=option)


def _collect_quietly() -> None:
    """After a failed write, finalise what the writer left half-open (openpyxl's generators
    over its temporary files) now and silently, not at exit with a traceback on stderr."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda _: None
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook


def _write_one(frame: Tabular, tmp: str, suffix: str) -> None:
    if suffix == ".csv":  # spreadsheets open it: no formulas (Parquet keeps the text as it is)
        frame = neutralise(frame)
    if isinstance(frame, duckdb.DuckDBPyRelation):
        if suffix == ".csv":
            frame.write_csv(tmp, header=True, use_tmp_file=False)  # tmp is already one
        else:
            frame.write_parquet(tmp, use_tmp_file=False)
    elif suffix == ".csv":
        frame.to_csv(tmp, index=False)
    else:
        frame.to_parquet(tmp, index=False)


def write_text(text: str, path: str | os.PathLike[str], *, option: str = "--out") -> Path:
    """Write a text file atomically; an unwritable place is an :class:`OutputError`."""
    path = Path(path)
    try:
        fd, tmp = temp_file(path, suffix=".tmp")
    except OSError as exc:
        raise cannot_write(path, exc, option=option) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        publish_file(tmp, path)
    except OSError as exc:
        raise cannot_write(path, exc, option=option) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _excel_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """Excel has no time zones; drop them so timestamps keep their wall-clock value."""
    import pandas as pd

    out = frame.copy()
    for column in out.columns:
        if isinstance(out[column].dtype, pd.DatetimeTZDtype):
            out[column] = out[column].dt.tz_localize(None)
    return out
