"""Write tables to files, all or nothing.

A table is a DataFrame or a DuckDB relation (which the engine writes to CSV and Parquet by
itself, without a copy in Python).  It is written to a temporary file beside the target and
moved into place only when complete, so a failure never leaves a half-written file; files
that belong together (features and their rejected rows, a set of exports) are moved into
place only when all of them are complete (:func:`write_together`).
"""

from __future__ import annotations

import gc
import io
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Union

import duckdb

from custseg.errors import ConfigError, InputError

if TYPE_CHECKING:
    import pandas as pd

    Tabular = Union[pd.DataFrame, duckdb.DuckDBPyRelation]

__all__ = ["OUTPUT_FORMATS", "write_table", "write_tables", "write_text", "write_together"]

OUTPUT_FORMATS = (".csv", ".parquet", ".xlsx")
_EXCEL_MAX_ROWS = 1_048_575


def check_target(path: Path, *, option: str = "--out") -> None:
    """Refuse an output path before any work is done: bad extension, a folder, no parent folder."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_FORMATS:
        raise ConfigError(
            f"{option} {path}: the extension must be one of {', '.join(OUTPUT_FORMATS)}, got '{path.suffix or '(none)'}'"
        )
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a directory; give a file name such as {path / 'out.csv'}")
    if not path.parent.exists():
        raise ConfigError(f"{option} {path}: folder '{path.parent}' does not exist; create it first")
    check_folder(path.parent, option=option, target=path)


def check_folder(folder: Path, *, option: str = "--out", target: Path | None = None) -> None:
    """Refuse before any work a place that cannot be written in (a read-only disk, a folder of
    someone else's): the folder, or the nearest one of its parents that exists, must be writable."""
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{option} {target or folder}: cannot write in '{existing}' (read-only, or no "
                         "permission); choose another place")


def check_fits(path: Path, rows: int, *, option: str = "--out") -> None:
    """Refuse, before anything is written, a table too long for the format of ``path``."""
    path = Path(path)
    if path.suffix.lower() == ".xlsx" and rows > _EXCEL_MAX_ROWS:
        raise ConfigError(
            f"{option} {path}: {rows:,} rows do not fit in an Excel sheet "
            f"(max {_EXCEL_MAX_ROWS:,}); write .csv or .parquet instead"
        )


def cannot_write(path: Path, cause: OSError | str, *, option: str = "--out") -> InputError:
    """The one-line error for a file or folder that cannot be written, with the reason."""
    reason = (cause.strerror or str(cause)) if isinstance(cause, OSError) else cause
    return InputError(f"{option} {path}: cannot write ({reason})")


def make_folder(folder: str | os.PathLike[str], *, option: str = "--out") -> Path:
    """Create an output folder (and its parents), refusing a place that cannot be written in."""
    folder = Path(folder)
    check_folder(folder, option=option)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cannot_write(folder, exc, option=option) from None
    return folder


def publish_file(tmp: str, path: Path) -> None:
    """Give the finished temporary file the usual permissions (umask) and move it into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def write_table(frame: Tabular, path: str | os.PathLike[str], *, option: str = "--out") -> Path:
    """Write ``frame`` as .csv, .parquet or .xlsx (by extension), atomically; messages name
    the file as ``option`` (the command-line option that gave it)."""
    return write_tables({"data": frame}, path, option=option)


def write_tables(sheets: Mapping[str, Tabular], path: str | os.PathLike[str], *, option: str = "--out") -> Path:
    """Write one table (CSV/Parquet) or several sheets (XLSX) to ``path``, atomically."""
    return write_together([(sheets, path, option)])[0]


def write_together(files: Sequence[tuple[Mapping[str, Tabular], str | os.PathLike[str], str]]) -> list[Path]:
    """Write several files, all or none: ``(sheets, path, option)`` each.

    Each goes to a temporary file beside its target; only when every one is complete are they
    moved into place, so a failure (a full disk, a table too long for Excel) leaves no file
    written and every earlier file as it was.
    """
    targets = []
    for sheets, path, option in files:
        path = Path(path)
        check_target(path, option=option)
        if path.suffix.lower() != ".xlsx" and len(sheets) != 1:
            raise ConfigError(f"{option} {path}: several tables need an .xlsx file")
        targets.append(path)
    written: list[str] = []
    try:
        for (sheets, _, option), path in zip(files, targets):
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix.lower(), dir=path.parent)
            except OSError as exc:
                raise cannot_write(path, exc, option=option) from None
            os.close(fd)
            written.append(tmp)
            _write_file(sheets, tmp, path, option)
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
    """Write ``sheets`` to ``tmp`` in the format of ``path``; a failed write is an InputError."""
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
                    _excel_ready(frame).to_excel(writer, sheet_name=name[:31], index=False)
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
    """Write a text file atomically; an unwritable place is an :class:`InputError`."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
