"""The run folder: the one definition of a run's files, written and read only here.

:func:`write_run` writes a :class:`~custseg.pipeline.SegmentationResult` (all files or none);
:func:`read_run` reads and checks one back as a :class:`RunFolder` — the report, the exports and
``assign`` read a run only through it.  ``run.json`` carries :data:`SCHEMA_VERSION` and the
:class:`~custseg.request.RunRequest` that made the run, so the run can be rebuilt from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from custseg.errors import InputError, OutputError, literal

if TYPE_CHECKING:
    from collections.abc import Callable

    from custseg.model import SegmentationModel
    from custseg.pipeline import SegmentationResult
    from custseg.request import RunRequest

#: The version of the run folder's layout, recorded in run.json.
SCHEMA_VERSION = 1

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
    ``probability`` its membership probability when the algorithm gives one.  ``customers`` is
    how many customers the run has; a run of more than :data:`READ_MAX_CUSTOMERS` (one
    segmented on Spark) is read as a seeded sample of them (``sampled``): the per-customer
    tables are the sample's rows, the per-segment tables (profiles, lifts) count everyone.
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
    result: SegmentationResult | None = None  # in the process that made the run only
    files: tuple[Path, ...] = ()  # the files the run wrote (in the process that made it)
    customers: int = 0  # every customer of the run; features holds a seeded sample of them when fewer

    @property
    def sampled(self) -> bool:
        """Whether ``features`` (and the customers' rows of ``assignments`` and ``rfm``) hold a
        seeded sample of the run's customers (see :data:`READ_MAX_CUSTOMERS`)."""
        return len(self.features) < self.customers

    @classmethod
    def of(cls, path: str | Path, *, result: SegmentationResult | None = None,
           files: tuple[Path, ...] = ()) -> RunFolder:
        """The run folder at ``path``, read and checked (:func:`read_run`); the model of
        ``result``, the run that wrote it, is not read again."""
        from dataclasses import replace

        return replace(read_run(path, model=None if result is None else result.model), result=result,
                       files=tuple(files))

    @property
    def request(self) -> RunRequest | None:
        """The request that made the run (None for a run written before requests were kept)."""
        from custseg.request import RunRequest

        recorded = self.summary.get("request")
        return None if recorded is None else RunRequest.from_json(recorded)


#: A run folder of more customers than this is read as a seeded sample of this many (the report
#: draws single customers from it; counts come from the per-segment files): a run segmented on
#: Spark can hold more customers than this machine's memory.
READ_MAX_CUSTOMERS = 1_000_000
#: The per-customer files of which only the sample's rows are kept.
_PER_CUSTOMER = ("features.parquet", "assignments.csv", "rfm.csv")
_CHUNK_ROWS = 500_000


def _fix(run_dir: Path) -> str:
    return f"run `custseg segment SOURCE --out {run_dir}` first"


def id_name(run_dir: Path) -> str:
    """What the run's files call ``customer_id`` (run.json's ``customer_id``; 'row' when the
    customers were numbered by row)."""
    try:
        name = json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("customer_id", "customer_id")
    except (OSError, ValueError, AttributeError):
        return "customer_id"  # run.json itself is checked below
    return name if isinstance(name, str) and name else "customer_id"


def read_run(run_dir: str | Path, *, max_customers: int | None = None,
             model: SegmentationModel | None = None) -> RunFolder:
    """Read and check every file the report needs; one :class:`InputError` lists all problems.

    A run of more than ``max_customers`` customers (default :data:`READ_MAX_CUSTOMERS`) is read
    as a seeded sample of that many: their rows of ``features.parquet`` (read part by part),
    ``assignments.csv`` and ``rfm.csv`` (filtered by DuckDB; see :func:`_csv_rows_of` and
    :class:`RunFolder`).  ``model``: the folder's model, held by the caller that wrote it
    (``model.skops`` is then not read).
    """
    run_dir = Path(run_dir)
    max_customers = READ_MAX_CUSTOMERS if max_customers is None else max_customers
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
    id_name_ = id_name(run_dir)  # 'row' when the customers were numbered by row
    customers, sample = _customer_sample(run_dir / "features.parquet", id_name_, max_customers)
    rows_of: dict[str, int] = {}
    for name in (*REQUIRED_FILES, *OPTIONAL_FILES):
        path = run_dir / name
        if name in ("run.json", "model.skops") or not path.is_file():
            continue
        try:
            dtype = {id_name_: "string", "cohort": "string", "rfm_code": "string"}
            if sample is not None and name in _PER_CUSTOMER:
                frame, rows_of[name] = _rows_of(path, id_name_, sample, dtype)
            elif name.endswith(".parquet"):
                frame = pd.read_parquet(path)
            else:
                frame = pd.read_csv(path, dtype=dtype)
            if id_name_ != "customer_id" and "customer_id" not in frame.columns:
                frame = frame.rename(columns={id_name_: "customer_id"})
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

    if model is None:
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
    if (not by_id.index.is_unique or len(assignments) != len(features)
            or rows_of.get("assignments.csv", customers) != customers
            or not features["customer_id"].isin(by_id.index).all()):
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
        customers=customers if sample is not None else len(features),
    )


def _customer_sample(path: Path, id_column: str, max_customers: int) -> tuple[int, set[str] | None]:
    """How many customers ``features.parquet`` lists (from its footer) and, when more than
    ``max_customers``, the ids of a seeded sample of that many (None: read every one)."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        total = parquet.metadata.num_rows
    except Exception:  # noqa: BLE001 - read_run names the file that cannot be read
        return 0, None
    if total <= max_customers:
        return total, None
    chosen = np.sort(np.random.default_rng(0).choice(total, size=max_customers, replace=False))
    ids: set[str] = set()
    start = 0
    name = id_column if id_column in parquet.schema_arrow.names else "customer_id"
    for batch in parquet.iter_batches(batch_size=_CHUNK_ROWS, columns=[name]):
        within = chosen[(chosen >= start) & (chosen < start + batch.num_rows)] - start
        ids.update(batch.column(0).cast("string").take(within).to_pylist())
        start += batch.num_rows
    return total, ids


def _rows_of(path: Path, id_column: str, sample: set[str], dtype: dict[str, str]) -> tuple[pd.DataFrame, int]:
    """The rows of the sample's customers in a per-customer file, read part by part, and how
    many rows the file has."""
    import pyarrow.parquet as pq

    from custseg.outputs import neutralise_text

    if path.suffix != ".parquet":  # the CSV files hold ids as written for spreadsheets ('=1+1)
        return _csv_rows_of(path, id_column, {neutralise_text(i) for i in sample}, dtype)
    kept, rows = [], 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=_CHUNK_ROWS):
        part = batch.to_pandas()
        rows += len(part)
        column = id_column if id_column in part.columns else "customer_id"
        kept.append(part[part[column].astype("string").isin(sample).to_numpy()])
    return pd.concat(kept, ignore_index=True), rows


def _csv_rows_of(path: Path, id_column: str, wanted: set[str], dtype: dict[str, str]) -> tuple[pd.DataFrame, int]:
    """:func:`_rows_of` for a CSV file, whose ids are matched as written (``wanted``).

    DuckDB reads the text (every value as text, so nothing is converted twice) and writes the
    sample's rows, in the file's order, to a temporary CSV that pandas reads as it reads a whole
    run file: the same values and types, from a parse that keeps nothing but the sample (pandas
    alone, part by part, parsed 1-2M rows a second)."""
    import tempfile

    import duckdb

    from custseg.sources import quote_name, quote_text

    con = duckdb.connect()
    try:
        # The dialect custseg writes (outputs.write_table), not a guess from the first rows: a
        # quoted value may first appear late in a large file.
        reader = (f"read_csv({quote_text(path)}, all_varchar := true, header := true, delim := ',', "
                  "quote := '\"', escape := '\"')")
        columns = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()]
        column = quote_name(id_column if id_column in columns else "customer_id")
        con.register("wanted", pd.DataFrame({"id": sorted(wanted)}, dtype=object))
        rows = int(con.execute(f"SELECT count(*) FROM {reader}").fetchall()[0][0])
        with tempfile.TemporaryDirectory(prefix="custseg-sample-") as folder:
            part = Path(folder) / "sample.csv"
            # Numbered first: the join that keeps the sample's rows does not keep their order.
            con.execute(f"COPY (SELECT * EXCLUDE (__n) FROM (SELECT row_number() OVER () AS __n, * FROM {reader}) "
                        f"WHERE {column} IN (SELECT id FROM wanted) ORDER BY __n) TO {quote_text(part)} (FORMAT csv, HEADER)")
            return pd.read_csv(part, dtype=dtype), rows
    finally:
        con.close()


# --- writing -------------------------------------------------------------------------------

#: Every file a run folder may hold (:func:`write_run`, and report.html from the report).
RUN_FILES = (
    "assignments.csv", "profiles.csv", "segment_means.csv", "segment_lifts.csv", "leaderboard.csv",
    "elbow.csv", "features.parquet", "rfm.csv", "cohorts.csv", "contacts.parquet", "cleaning.csv",
    "run.json", "model.skops", "report.html",
)


def write_run(result: SegmentationResult, folder, *, request: RunRequest | None = None,
              save_model: Callable[[SegmentationModel, Path], Callable[[], bool] | None] | None = None) -> list:
    """Write a run into ``folder`` (created if needed); return the paths written.

    Everything the report and the exports need is in the folder, so they can be rebuilt from
    it alone (``custseg report RUN_DIR``).  The run is written to a hidden folder inside
    ``folder`` first and moved into place only when every file is complete; then a folder that
    holds an earlier run loses every file of it (a failed write leaves the earlier run whole):

    ====================  ===================================================================
    assignments.csv       customer_id, segment, segment_name[, probability] (every customer;
                          a table left on Spark writes this and features.parquet from there)
    profiles.csv          one row per segment: name, customers, share, value_share, rule, …
    segment_means.csv     segment × numeric feature means (unscaled)
    segment_lifts.csv     segment × numeric feature lift (segment mean / overall mean)
    leaderboard.csv       algorithm × k metrics of the sweep
    elbow.csv             k, inertia (K-Means, k = 1..15)
    features.parquet      the customer feature table that was segmented
    rfm.csv               RFM scores and segments (when recency, frequency, monetary exist)
    cohorts.csv           retention matrix (transaction logs only)
    contacts.parquet      customer_id, email (when the source has an email column)
    cleaning.csv          rows per cleaning rule
    run.json              recommendation and reasons, knee, config, preprocessing decisions,
                          cleaning notes, best/worst segment, the run record
    model.skops           the saved model (custseg assign --model)
    ====================  ===================================================================

    ``save_model(model, path)``, when given, starts writing the model elsewhere (the process
    beside the run, which has its writer imported; see :func:`custseg.pipeline.run`) and returns
    a function that waits for it and tells whether it succeeded, or None; the model is written
    here when it did not.
    """
    import os
    import shutil
    import tempfile

    from custseg import outputs

    folder = Path(folder)
    created = not folder.exists()
    outputs.make_folder(folder, option="out")
    try:
        staging = Path(tempfile.mkdtemp(prefix=".run-", dir=folder))
    except OSError as exc:
        raise outputs.cannot_write(folder, exc, option="out") from None
    staged: list = []
    try:
        staged = _write_run_files(result, staging, request, save_model)
        if (folder / "run.json").is_file() and (folder / "model.skops").is_file():
            # An earlier run: none of its files may outlive it (its contacts.parquet would put
            # other people's e-mail addresses on these customers in the CRM export).
            for name in RUN_FILES:
                (folder / name).unlink(missing_ok=True)
        for path in staged:
            os.replace(path, folder / path.name)
    except OutputError as exc:  # what outputs raise for a file that cannot be written
        raise OutputError(f"{exc.named_template.replace(literal(staging), literal(folder))}; the folder is left "
                          "as it was", param=exc.param) from None
    except OSError as exc:
        raise outputs.cannot_write(folder, exc, option="out") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(folder.iterdir()):
            folder.rmdir()
    return [folder / path.name for path in staged]


def _write_run_files(result: SegmentationResult, folder: Path, request: RunRequest | None,
                     save_model: Callable[[SegmentationModel, Path], Callable[[], bool] | None] | None = None) -> list:
    """Every file of the run (see :func:`write_run`) in ``folder``; returns their paths."""
    model_path = folder / "model.skops"
    saved = save_model(result.model, model_path) if save_model is not None else None
    try:
        written = _write_data_files(result, folder, request)
    finally:  # nothing may write into the folder once this returns
        ok = saved is not None and saved() and model_path.is_file()
    written.append(model_path if ok else result.model.save(model_path))
    return written


def _write_data_files(result: SegmentationResult, folder: Path, request: RunRequest | None) -> list:
    """The files of the run but its model."""
    import json

    from custseg import cohorts, outputs

    profiles = result.profiles
    named = result.customers.for_output  # customer_id as outputs call it ('row' for row numbers)
    customer_files = getattr(result, "write_customer_files", None)
    if customer_files is not None:  # a table left in its engine (Spark) writes its own rows there
        written = list(customer_files(folder))
    else:
        written = [
            outputs.write_table(named(result.assignments), folder / "assignments.csv", option="out"),
            outputs.write_table(named(result.customers.features), folder / "features.parquet", option="out"),
        ]
    written += [
        outputs.write_table(profiles.table, folder / "profiles.csv", option="out"),
        outputs.write_table(profiles.means.reset_index(), folder / "segment_means.csv", option="out"),
        outputs.write_table(profiles.lifts.reset_index(), folder / "segment_lifts.csv", option="out"),
        outputs.write_table(result.selection.leaderboard, folder / "leaderboard.csv", option="out"),
        outputs.write_table(result.selection.elbow, folder / "elbow.csv", option="out"),
        outputs.write_table(result.customers.report.to_frame(), folder / "cleaning.csv", option="out"),
    ]
    if result.rfm is not None:
        written.append(outputs.write_table(named(result.rfm), folder / "rfm.csv", option="out"))
    if result.customers.contacts is not None:
        written.append(outputs.write_table(named(result.customers.contacts), folder / "contacts.parquet", option="out"))
    if result.customers.clean is not None:
        matrix = cohorts.retention(result.customers.clean).matrix
        written.append(outputs.write_table(matrix, folder / "cohorts.csv", option="out"))
    recommendation = result.selection.recommendation
    summary = {
        "schema_version": SCHEMA_VERSION,
        "algorithm": result.algorithm,
        "n_clusters": result.n_clusters,
        "recommendation": {"algorithm": recommendation.algorithm, "n_clusters": recommendation.n_clusters,
                           "text": recommendation.text, "reasons": list(recommendation.reasons)},
        "knee": result.selection.knee,
        "feature_columns": result.feature_columns,
        "preprocessing": result.preprocessing,
        "cleaning": {"source": result.customers.report.source, "rows_in": result.customers.report.rows_in,
                     "rows_out": result.customers.report.rows_out, "notes": list(result.customers.report.notes)},
        "value_column": profiles.value_column,
        "outcomes": list(result.customers.outcomes),
        "customer_id": result.customers.id_name,
        "best_segment": profiles.best,
        "worst_segment": profiles.worst,
        "kind": result.customers.kind,
        "as_of": result.customers.as_of.isoformat(),
        "run": result.model.run,
        "request": None if request is None else request.to_json(),
        "alignment": None if result.alignment is None else {
            "matched": [{"segment": old, "was_label": new, "distance": round(d, 3)}
                        for new, old, d in result.alignment.matched],
            "new": list(result.alignment.new), "gone": list(result.alignment.gone),
        },
    }
    written.append(outputs.write_text(json.dumps(summary, indent=2, default=str), folder / "run.json", option="out"))
    return written
