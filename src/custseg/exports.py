"""Segment lists that leave custseg: per-segment files, a workbook, a CRM import file.

Everything is read from a run folder written by ``custseg segment`` and written to
``RUN_DIR/exports/`` (or another folder):

* ``csv`` / ``parquet``: ``summary.<ext>`` and one ``segment-<id>-<name>.<ext>`` per segment
  with ``customer_id, segment, segment_name`` and the chosen columns;
* ``xlsx``: ``segments.xlsx`` with a *Summary* sheet and one sheet per segment;
* always ``crm_import.csv``: ``Email`` (when the data has e-mail addresses), ``Customer ID``,
  ``Segment``, ``Segment Name`` — the headers most CRM list imports map without help.

Like every .csv and .xlsx file custseg writes, these have an apostrophe in front of each text
cell and column name that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
(:func:`custseg.outputs.neutralise`), so a spreadsheet shows them as text and never runs them;
Parquet files keep the text as it is.  The run folder's CSV files hold the text so
neutralised; what is read from them is matched back to the customers of ``features.parquet``,
so the lists carry each customer's id as it is in the source (before neutralising again).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pandas as pd

from custseg import outputs
from custseg.runs import id_name
from custseg.errors import ConfigError, InputError, literal
from custseg.outputs import neutralise  # the one rule for text a spreadsheet opens

__all__ = ["EXPORT_FORMATS", "export_run", "neutralise"]

EXPORT_FORMATS = ("csv", "xlsx", "parquet")
_EXCEL_SHEET = re.compile(r"[\[\]:*?/\\]")


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
    named = {id_name(run_dir): "customer_id"}  # 'row' when the customers were numbered by row
    assignments = pd.read_csv(run_dir / "assignments.csv", dtype={id_name(run_dir): "string"}).rename(columns=named)
    profiles = pd.read_csv(run_dir / "profiles.csv")
    features = pd.read_parquet(run_dir / "features.parquet").rename(columns=named)
    features["customer_id"] = features["customer_id"].astype("string")
    contacts = None
    if (run_dir / "contacts.parquet").is_file():
        contacts = pd.read_parquet(run_dir / "contacts.parquet").rename(columns=named)
        contacts["customer_id"] = contacts["customer_id"].astype("string")
    # The CSV files hold text as written for spreadsheets ('=1+1 for =1+1): take it back.
    assignments["customer_id"] = outputs.restore_ids(assignments["customer_id"], features["customer_id"])
    for frame, text in ((assignments, ("segment_name",)), (profiles, ("name", "description", "rule"))):
        for column in text:
            if column in frame:
                frame[column] = frame[column].map(outputs.unneutralise_text)
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
        raise ConfigError(f"{{param}} must be one of {', '.join(EXPORT_FORMATS)}, got '{literal(format)}'",
                          param="format")
    run_dir = Path(run_dir)
    assignments, profiles, features, contacts = _read_run(run_dir)
    if columns is None:
        columns = [c for c in ("recency_days", "frequency", "monetary") if c in features]
    unknown = [c for c in columns if c not in features.columns]
    if unknown:
        raise ConfigError(
            f"{{param}} {literal(', '.join(unknown))}: not in the run's features; available: "
            + literal(", ".join(c for c in features.columns if c != "customer_id")),
            param="columns",
        )
    table = assignments.merge(features[["customer_id", *columns]], on="customer_id", how="left")
    if contacts is not None:
        table = table.merge(contacts, on="customer_id", how="left")
        table = table[["customer_id", "email"] + [c for c in table.columns if c not in ("customer_id", "email")]]
    folder = Path(out) if out is not None else run_dir / "exports"
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{{param}} {literal(folder)}: is a file; give a folder for the exports", param="out")
    outputs.make_folder(folder, option="out")

    summary = profiles[["segment", "name", "customers", "share", "value_share", "description", "rule"]].copy()
    lists: dict[str, pd.DataFrame] = {}
    for row in profiles.itertuples(index=False):
        members = table.loc[table["segment"] == row.segment].reset_index(drop=True)
        lists[f"segment-{row.segment}-{_slug(row.name)}"] = members.rename(columns={"customer_id": id_name(run_dir)})

    # Every file is neutralised as written (.csv and .xlsx; Parquet keeps the text as it is).
    files = []  # (sheets, path, parameter): written together, all or none
    if format == "xlsx":
        sheets = {"Summary": summary}
        for key, members in lists.items():
            sheets[_EXCEL_SHEET.sub("", key)[:31]] = members
        files.append((sheets, folder / "segments.xlsx", "out"))
    else:
        files.append(({"data": summary}, folder / f"summary.{format}", "out"))
        for key, members in lists.items():
            files.append(({"data": members}, folder / f"{key}.{format}", "out"))

    crm = pd.DataFrame({"Customer ID": table["customer_id"], "Segment": table["segment"],
                        "Segment Name": table["segment_name"]})
    if "email" in table:
        crm.insert(0, "Email", table["email"])
    files.append(({"data": crm}, folder / "crm_import.csv", "out"))
    return outputs.write_together(files)
