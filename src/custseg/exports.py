"""Segment lists that leave custseg: per-segment files, a workbook, a CRM import file.

Everything is read from a run folder written by ``custseg segment`` and written to
``RUN_DIR/exports/`` (or another folder):

* ``csv`` / ``parquet``: ``summary.<ext>`` and one ``segment-<id>-<name>.<ext>`` per segment
  with ``customer_id, segment, segment_name`` and the chosen columns;
* ``xlsx``: ``segments.xlsx`` with a *Summary* sheet and one sheet per segment;
* always ``crm_import.csv``: ``Email`` (when the data has e-mail addresses), ``Customer ID``,
  ``Segment``, ``Segment Name`` — the headers most CRM list imports map without help.

Text cells that begin with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage return) are
prefixed with an apostrophe, so a spreadsheet shows them as text and never runs them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pandas as pd

from custseg import outputs
from custseg.errors import ConfigError, InputError

__all__ = ["EXPORT_FORMATS", "export_run", "neutralise"]

EXPORT_FORMATS = ("csv", "xlsx", "parquet")
_RISKY = ("=", "+", "-", "@", "\t", "\r")
_EXCEL_SHEET = re.compile(r"[\[\]:*?/\\]")


def _defuse(value):
    return "'" + value if isinstance(value, str) and value.startswith(_RISKY) else value


def neutralise(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy where every text cell (and header) starting with = + - @ tab or CR gets a ``'``."""
    out = frame.copy()
    for column in out.columns:
        values = out[column]
        if pd.api.types.is_string_dtype(values) or values.dtype == object:
            out[column] = values.map(_defuse).astype(values.dtype)
    return out.rename(columns=_defuse)


def _slug(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "-", name.lower()).strip("-")[:40] or "segment"


def _read_run(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run folder; run `custseg segment SOURCE --out {run_dir}` first")
    needed = ["assignments.csv", "profiles.csv", "features.parquet"]
    missing = [n for n in needed if not (run_dir / n).is_file()]
    if missing:
        raise InputError(
            f"{run_dir}: lacks {', '.join(missing)}; it is not a complete run folder — "
            f"run `custseg segment SOURCE --out {run_dir}` again"
        )
    assignments = pd.read_csv(run_dir / "assignments.csv", dtype={"customer_id": "string"})
    profiles = pd.read_csv(run_dir / "profiles.csv")
    features = pd.read_parquet(run_dir / "features.parquet")
    features["customer_id"] = features["customer_id"].astype("string")
    contacts = None
    if (run_dir / "contacts.parquet").is_file():
        contacts = pd.read_parquet(run_dir / "contacts.parquet")
        contacts["customer_id"] = contacts["customer_id"].astype("string")
    return assignments, profiles, features, contacts


def export_run(
    run_dir: str | Path,
    *,
    format: Literal["csv", "xlsx", "parquet"] = "csv",
    columns: Sequence[str] | None = None,
    out: str | Path | None = None,
) -> list[Path]:
    """Write the segment lists of a run; return the files written.

    ``columns``: feature columns to add to each list (default: recency_days, frequency and
    monetary when present, else none).  Unknown columns are a :class:`ConfigError`.
    """
    if format not in EXPORT_FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got '{format}'")
    run_dir = Path(run_dir)
    assignments, profiles, features, contacts = _read_run(run_dir)
    if columns is None:
        columns = [c for c in ("recency_days", "frequency", "monetary") if c in features]
    unknown = [c for c in columns if c not in features.columns]
    if unknown:
        raise ConfigError(
            f"--columns {', '.join(unknown)}: not in the run's features; available: "
            + ", ".join(c for c in features.columns if c != "customer_id")
        )
    table = assignments.merge(features[["customer_id", *columns]], on="customer_id", how="left")
    if contacts is not None:
        table = table.merge(contacts, on="customer_id", how="left")
        table = table[["customer_id", "email"] + [c for c in table.columns if c not in ("customer_id", "email")]]
    folder = Path(out) if out is not None else run_dir / "exports"
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {folder}: is a file; give a folder for the exports")
    outputs.make_folder(folder)

    summary = profiles[["segment", "name", "customers", "share", "value_share", "description", "rule"]].copy()
    lists: dict[str, pd.DataFrame] = {}
    for row in profiles.itertuples(index=False):
        members = table.loc[table["segment"] == row.segment].reset_index(drop=True)
        lists[f"segment-{row.segment}-{_slug(row.name)}"] = members

    files = []  # (sheets, path, option): written together, all or none
    if format == "xlsx":
        sheets = {"Summary": neutralise(summary)}
        for key, members in lists.items():
            name = _EXCEL_SHEET.sub("", key)[:31]
            sheets[name] = neutralise(members)
        files.append((sheets, folder / "segments.xlsx", "--out"))
    else:
        files.append(({"data": _prepared(summary, format)}, folder / f"summary.{format}", "--out"))
        for key, members in lists.items():
            files.append(({"data": _prepared(members, format)}, folder / f"{key}.{format}", "--out"))

    crm = pd.DataFrame({"Customer ID": table["customer_id"], "Segment": table["segment"],
                        "Segment Name": table["segment_name"]})
    if "email" in table:
        crm.insert(0, "Email", table["email"])
    files.append(({"data": neutralise(crm)}, folder / "crm_import.csv", "--out"))
    return outputs.write_together(files)


def _prepared(frame: pd.DataFrame, format: str) -> pd.DataFrame:
    # Parquet is not opened by spreadsheets; keep its text exactly as it is.
    return frame if format == "parquet" else neutralise(frame)
