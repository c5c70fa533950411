"""Read a run folder written by ``custseg segment --out RUN_DIR`` (see ``pipeline.write_run``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from custseg.errors import InputError

#: Files every run folder has; the report cannot be built without them.
REQUIRED_FILES: tuple[str, ...] = (
    "run.json",
    "assignments.csv",
    "profiles.csv",
    "segment_lifts.csv",
    "leaderboard.csv",
    "elbow.csv",
    "features.parquet",
    "cleaning.csv",
    "model.skops",
)

#: Files a run folder has only for some sources (RFM columns, transaction logs).
OPTIONAL_FILES: tuple[str, ...] = ("rfm.csv", "cohorts.csv")

_COLUMNS: dict[str, tuple[str, ...]] = {
    "assignments.csv": ("customer_id", "segment", "segment_name"),
    "profiles.csv": ("segment", "name", "customers", "share", "value_share", "mean_value", "rule",
                     "rule_precision", "rule_recall", "description", "distinguishing"),
    "segment_lifts.csv": ("segment",),
    "leaderboard.csv": ("algorithm", "n_clusters", "silhouette", "davies_bouldin", "calinski_harabasz"),
    "elbow.csv": ("k", "inertia"),
    "features.parquet": ("customer_id",),
    "cleaning.csv": ("rule", "rows", "description"),
    "rfm.csv": ("customer_id", "monetary", "rfm_segment"),
    "cohorts.csv": ("cohort", "customers", "month_0"),
}
_SUMMARY_KEYS = ("algorithm", "n_clusters", "recommendation", "feature_columns", "cleaning", "kind")


@dataclass(frozen=True)
class RunFolder:
    """The tables of one run folder, read and checked.

    ``labels`` holds the segment of each row of ``features`` (from ``assignments.csv``) and
    ``probability`` its membership probability when the algorithm gives one.
    """

    path: Path
    summary: dict[str, Any]
    assignments: pd.DataFrame
    profiles: pd.DataFrame
    lifts: pd.DataFrame
    leaderboard: pd.DataFrame
    elbow: pd.DataFrame
    features: pd.DataFrame
    labels: np.ndarray
    probability: np.ndarray | None
    cleaning: pd.DataFrame
    model: Any
    rfm: pd.DataFrame | None
    cohorts: pd.DataFrame | None


def _fix(run_dir: Path) -> str:
    return f"run `custseg segment SOURCE --out {run_dir}` first"


def _id_name(run_dir: Path) -> str:
    """What the run's files call ``customer_id`` (run.json's ``customer_id``; 'row' when the
    customers were numbered by row)."""
    try:
        name = json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("customer_id", "customer_id")
    except (OSError, ValueError, AttributeError):
        return "customer_id"  # run.json itself is checked below
    return name if isinstance(name, str) and name else "customer_id"


def read_run(run_dir: str | Path) -> RunFolder:
    """Read and check every file the report needs; one :class:`InputError` lists all problems."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise InputError(f"{run_dir}: no such run folder; {_fix(run_dir)}")
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: is a file, not a run folder; {_fix(run_dir)}")
    missing = [name for name in REQUIRED_FILES if not (run_dir / name).is_file()]
    if missing:
        raise InputError(
            f"{run_dir}: not a complete run folder, missing {', '.join(missing)}; {_fix(run_dir)}"
        )

    problems: list[str] = []
    tables: dict[str, pd.DataFrame | None] = {}
    id_name = _id_name(run_dir)  # 'row' when the customers were numbered by row
    for name in (*REQUIRED_FILES, *OPTIONAL_FILES):
        path = run_dir / name
        if name in ("run.json", "model.skops") or not path.is_file():
            continue
        try:
            if name.endswith(".parquet"):
                frame = pd.read_parquet(path)
            else:
                frame = pd.read_csv(path, dtype={id_name: "string", "cohort": "string", "rfm_code": "string"})
            if id_name != "customer_id" and "customer_id" not in frame.columns:
                frame = frame.rename(columns={id_name: "customer_id"})
        except Exception as exc:  # any parser error: name the file
            problems.append(f"{name} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
            continue
        absent = [c for c in _COLUMNS.get(name, ()) if c not in frame.columns]
        if absent:
            problems.append(f"{name} lacks column{'s' if len(absent) > 1 else ''} {', '.join(absent)}")
        tables[name] = frame
    summary: dict[str, Any] = {}
    try:
        summary = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        if not isinstance(summary, dict):
            raise ValueError("not a JSON object")
        absent = [k for k in _SUMMARY_KEYS if k not in summary]
        if absent:
            problems.append(f"run.json lacks {', '.join(absent)}")
    except (OSError, ValueError) as exc:
        problems.append(f"run.json cannot be read ({exc})")
    if problems:
        raise InputError(f"{run_dir}: {'; '.join(problems)}; {_fix(run_dir)} again")

    from custseg import model as model_io

    model = model_io.load(run_dir / "model.skops")

    features = tables["features.parquet"].copy()
    features["customer_id"] = features["customer_id"].astype("string")
    from custseg import outputs

    # The CSV files hold text as written for spreadsheets ('=1+1 for =1+1): take it back.
    for name in ("assignments.csv", "rfm.csv"):
        if tables.get(name) is not None:
            tables[name]["customer_id"] = outputs.restore_ids(tables[name]["customer_id"], features["customer_id"])
    for name, text in (("assignments.csv", ("segment_name",)),
                       ("profiles.csv", ("name", "description", "rule", "distinguishing"))):
        for column in text:
            if column in tables[name]:
                tables[name][column] = tables[name][column].map(outputs.unneutralise_text)
    tables["segment_lifts.csv"] = tables["segment_lifts.csv"].rename(columns=outputs.unneutralise_text)
    assignments = tables["assignments.csv"]
    by_id = assignments.set_index("customer_id")
    if not by_id.index.is_unique or len(assignments) != len(features) or not features["customer_id"].isin(by_id.index).all():
        raise InputError(
            f"{run_dir}: assignments.csv and features.parquet do not list the same customers; {_fix(run_dir)} again"
        )
    labels = by_id["segment"].reindex(features["customer_id"]).to_numpy().astype("int64")
    probability = None
    if "probability" in assignments:
        probability = by_id["probability"].reindex(features["customer_id"]).to_numpy().astype("float64")

    return RunFolder(
        path=run_dir,
        summary=summary,
        assignments=assignments,
        profiles=tables["profiles.csv"],
        lifts=tables["segment_lifts.csv"].set_index("segment"),
        leaderboard=tables["leaderboard.csv"],
        elbow=tables["elbow.csv"],
        features=features,
        labels=labels,
        probability=probability,
        cleaning=tables["cleaning.csv"],
        model=model,
        rfm=tables.get("rfm.csv"),
        cohorts=tables.get("cohorts.csv"),
    )
