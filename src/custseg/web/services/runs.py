"""Segmentation runs of a project: start (validated before anything is queued), follow, cancel,
retry, and their files and exports.

A run's options become one :class:`custseg.request.RunRequest` (the dataset's file and role
mapping as its source) and every problem ``validate`` finds is answered at once, each naming
the API's field (``k`` for the library's ``n_clusters``, ``seed`` for ``random_state``).
The job itself is :func:`custseg.web.jobs.run_job`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from custseg.errors import ConfigError, CustsegError, ResourceError, literal
from custseg.web.config import WebSettings
from custseg.web.errors import FIELDS, Conflict, NotFound, code_of, field_of
from custseg.web.services.projects import audit, get_project, is_id
from custseg.web.store import Store
from custseg.web.store.models import Dataset, Project, Run, User, now

__all__ = ["FINAL_STATES", "start_run", "list_runs", "get_run", "cancel_run", "retry_run", "describe",
           "summarise", "error_of", "build_request", "list_files", "open_file", "RunFile", "watch", "events"]

#: the order of the run options, to answer problems in it
_OPTION_ORDER = ("dataset_id", "algorithm", "k", "k_values", "features", "as_of", "returns", "seed", "report")
FINAL_STATES = ("done", "failed", "interrupted", "cancelled")
ACTIVE_STATES = ("queued", "running")
#: export files made on demand from the run folder: name -> format of custseg.exports.export_run
EXPORTS_ON_DEMAND = {"crm_import.csv": "csv", "summary.csv": "csv", "segments.xlsx": "xlsx"}
_EXPORT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
_MEDIA = {".csv": "text/csv; charset=utf-8", ".html": "text/html; charset=utf-8", ".json": "application/json",
          ".parquet": "application/vnd.apache.parquet", ".skops": "application/octet-stream",
          ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


# --- errors ----------------------------------------------------------------------------------

def error_of(exc: CustsegError) -> dict[str, Any]:
    """The JSON error of a library error, in the API's names."""
    return {"code": code_of(exc), "message": exc.render(FIELDS), "field": field_of(exc.param)}


def _api_error(problems: Sequence[CustsegError]) -> CustsegError:
    """One error for every problem: the first's class, message and field; the others follow
    in its message."""
    problems = sorted(problems, key=lambda p: _OPTION_ORDER.index(field_of(p.param))
                      if field_of(p.param) in _OPTION_ORDER else len(_OPTION_ORDER))
    first = problems[0]
    message = first.render(FIELDS)
    if len(problems) > 1:
        message += " (also: " + "; ".join(p.render(FIELDS) for p in problems[1:]) + ")"
    return type(first)(literal(message), param=field_of(first.param), problems=problems)


# --- the request -----------------------------------------------------------------------------

def _source_of(settings: WebSettings, dataset: Dataset):
    """The dataset as a :class:`custseg.request.SourceSpec`: the table the datasets service read
    (:func:`custseg.web.services.datasets.source_spec`) with the roles its user set."""
    from custseg.request import SourceSpec

    problem = (dataset.summary or {}).get("problem")
    if problem:  # the roles need the user first (the dataset's PATCH, the CLI's --map)
        message = problem.get("message", "") if isinstance(problem, dict) else str(problem)
        raise ConfigError(literal(f"dataset {dataset.id}: {message}"), param="mapping")
    if getattr(dataset, "table_path", ""):
        from custseg.web.services.datasets import source_spec

        spec = source_spec(settings, dataset)
    elif dataset.path:  # a file the library reads as it is
        source = dataset.source or {}
        spec = SourceSpec(str((Path(settings.data_dir) / dataset.path).resolve()), sheet=source.get("sheet"),
                          encoding=source.get("encoding"), delimiter=source.get("delimiter"),
                          mapping={str(k): str(v) for k, v in (dataset.mapping or {}).items()},
                          kind=source.get("kind"))
    else:
        raise ConfigError(f"{{param}} {dataset.id}: the dataset has no table to read", param="source")
    if not Path(spec.source).is_file():
        raise ConfigError(f"{{param}} {dataset.id}: the dataset's file is missing; upload it again", param="source")
    return spec


def build_request(settings: WebSettings, dataset: Dataset, *, algorithm: str = "auto", k: int | str | None = "auto",
                  k_values: Sequence[int] | None = None, features: Sequence[str] | None = None,
                  as_of: str | None = None, returns: str = "drop", seed: int = 0, report: bool = True):
    """The :class:`custseg.request.RunRequest` of these options, validated: one error (its
    ``field`` the API's name) for every problem found."""
    from custseg.cleaning import Policy
    from custseg.request import RunRequest, SegmentConfig, parse_as_of, parse_k

    problems: list[CustsegError] = []
    try:
        source = _source_of(settings, dataset)
    except CustsegError as exc:
        raise _api_error([exc]) from None
    n_clusters = None
    try:
        n_clusters = parse_k(k)
    except ConfigError as exc:
        problems.append(exc)
    when = None
    if as_of is not None:
        try:
            when = parse_as_of(as_of)
        except ConfigError as exc:
            problems.append(exc)
    segment = {"algorithm": algorithm, "n_clusters": n_clusters, "random_state": seed,
               "features": None if features is None else tuple(features)}
    if k_values is not None:
        segment["k_values"] = tuple(k_values)
    request = RunRequest(source, policy=Policy(returns=returns), as_of=when, segment=SegmentConfig(**segment),
                         report=bool(report))
    problems.extend(request.problems())
    if features and not any(p.param == "features" for p in problems):
        unknown = _unknown_features(settings, dataset, source, list(features))
        if unknown is not None:
            problems.append(unknown)
    if problems:
        raise _api_error(problems)
    return request


def _unknown_features(settings: WebSettings, dataset: Dataset, source, features: list[str]) -> ConfigError | None:
    """A problem for feature names a transaction log's customer table cannot have (a customer
    table's features are its own columns, checked when the run reads it)."""
    from custseg.features import FEATURE_COLUMNS

    kind = (dataset.summary or {}).get("kind")
    if kind is None:
        from custseg.pipeline import load

        try:
            loaded = load(source, settings=settings.library)
        except CustsegError:
            return None  # the run reports what is wrong with the source
        kind = loaded.kind
        try:
            loaded.table.con.close()
        except Exception:
            pass
    if kind != "transactions":
        return None
    known = [c for c in FEATURE_COLUMNS if c != "customer_id"]
    unknown = [f for f in features if f not in known]
    if not unknown:
        return None
    return ConfigError(f"{{param}}: unknown column{'s' if len(unknown) > 1 else ''} "
                       f"{literal(', '.join(repr(f) for f in unknown))}; a transaction log's customers have "
                       f"{', '.join(known)}", param="features")


# --- runs ------------------------------------------------------------------------------------

def _active(db: Session, project_id: int) -> int:
    return db.scalar(sa.select(sa.func.count()).select_from(Run).where(
        Run.project_id == project_id, Run.status.in_(ACTIVE_STATES))) or 0


def _check_limit(db: Session, settings: WebSettings, project: Project) -> None:
    if db.get_bind().dialect.name == "postgresql":  # two requests at once count one after the other
        db.execute(sa.select(Project.id).where(Project.id == project.id).with_for_update())
    active = _active(db, project.id)
    if active >= settings.runs_per_project:
        raise Conflict(f"project {project.id} already has {active} run{'s' if active > 1 else ''} queued or running "
                       f"(at most {settings.runs_per_project} at once); wait for one to finish or cancel one")


def _enqueue(db: Session, settings: WebSettings, run: Run) -> None:
    """Commit the run (a worker may take it at once), then queue it; a queue that cannot be
    reached fails the run and says so."""
    from custseg.web import jobs

    db.commit()
    try:
        jobs.enqueue(settings, run.id, run.attempt)
    except Exception as exc:
        run.status, run.finished_at = "failed", now()
        run.error = {"code": "out_of_resources", "message": f"the job queue cannot be reached ({type(exc).__name__})",
                     "field": None}
        db.commit()
        raise ResourceError(f"the job queue cannot be reached ({type(exc).__name__}); try again") from None


def start_run(db: Session, settings: WebSettings, user: User, project_id: int, *, dataset_id: int,
              algorithm: str = "auto", k: int | str | None = "auto", k_values: Sequence[int] | None = None,
              features: Sequence[str] | None = None, as_of: str | None = None, returns: str = "drop",
              seed: int = 0, report: bool = True) -> Run:
    """Validate the options against the dataset, then queue the run (editor role)."""
    project, _ = get_project(db, user, project_id, "editor")
    dataset = db.get(Dataset, dataset_id) if is_id(dataset_id) else None
    if dataset is None or dataset.project_id != project.id:
        raise NotFound(f"no dataset {dataset_id} in project {project_id}", param="dataset_id")
    options = {"dataset_id": dataset_id, "algorithm": algorithm, "k": "auto" if k is None else k,
               "k_values": None if k_values is None else list(k_values),
               "features": None if features is None else list(features), "as_of": as_of, "returns": returns,
               "seed": seed, "report": bool(report)}
    request = build_request(settings, dataset, **{k_: v for k_, v in options.items() if k_ != "dataset_id"})
    _check_limit(db, settings, project)
    run = Run(project_id=project.id, dataset_id=dataset.id, options=options, request=request.to_json(),
              status="queued", created_by=user.id)
    db.add(run)
    db.flush()
    run.folder = f"projects/{project.id}/runs/{run.id}"
    audit(db, project, user, "started a run", run_id=run.id, dataset=dataset.name, algorithm=algorithm,
          k=options["k"])
    _enqueue(db, settings, run)
    return run


def list_runs(db: Session, user: User, project_id: int) -> list[Run]:
    get_project(db, user, project_id)
    return list(db.scalars(sa.select(Run).where(Run.project_id == project_id).order_by(Run.id.desc())))


def get_run(db: Session, user: User, project_id: int, run_id: int, role: str = "viewer") -> tuple[Run, Project]:
    """The run of the project (a run of another project, or of none, is not found)."""
    project, _ = get_project(db, user, project_id, role)
    run = db.get(Run, run_id) if is_id(run_id) else None
    if run is None or run.project_id != project.id:
        raise NotFound(f"no run {run_id} in project {project_id}")
    return run, project


def cancel_run(db: Session, user: User, project_id: int, run_id: int) -> Run:
    """Cancel a queued run now, a running one at its next step (editor role)."""
    run, project = get_run(db, user, project_id, run_id, "editor")
    if run.status == "queued":
        done = db.execute(sa.update(Run).where(Run.id == run.id, Run.status == "queued").values(
            status="cancelled", finished_at=now(), step="cancelled", cancel_requested=True,
            error={"code": "cancelled", "message": "the run was cancelled before it started", "field": None})).rowcount
        db.refresh(run)
        if not done and run.status == "running":  # a worker took it meanwhile
            run.cancel_requested = True
    elif run.status == "running":
        run.cancel_requested = True
    else:
        raise Conflict(f"run {run_id} is {run.status}; only a queued or running run can be cancelled")
    audit(db, project, user, "cancelled a run", run_id=run.id)
    db.flush()
    return run


def retry_run(db: Session, settings: WebSettings, user: User, project_id: int, run_id: int) -> Run:
    """Queue a failed, interrupted or cancelled run again (attempt + 1; editor role)."""
    run, project = get_run(db, user, project_id, run_id, "editor")
    if run.status not in ("failed", "interrupted", "cancelled"):
        raise Conflict(f"run {run_id} is {run.status}; only a failed, interrupted or cancelled run can be retried")
    if run.dataset_id is None or run.request is None:
        raise Conflict(f"run {run_id}'s dataset was deleted; start a new run on another dataset")
    _check_limit(db, settings, project)
    run.attempt += 1
    run.status, run.progress, run.step, run.error, run.summary = "queued", 0.0, "", None, {}
    run.cancel_requested, run.started_at, run.finished_at, run.heartbeat_at = False, None, None, None
    audit(db, project, user, "retried a run", run_id=run.id, attempt=run.attempt)
    _enqueue(db, settings, run)
    return run


def describe(run: Run) -> dict[str, Any]:
    """What the API shows of a run (the summary once it is done)."""
    return {"id": run.id, "project_id": run.project_id, "dataset_id": run.dataset_id, "status": run.status,
            "progress": float(run.progress or 0.0), "step": run.step or "", "error": run.error,
            "options": run.options or {}, "attempt": run.attempt, "cancel_requested": bool(run.cancel_requested),
            "created_at": run.created_at, "started_at": run.started_at, "finished_at": run.finished_at,
            "heartbeat_at": run.heartbeat_at, "summary": run.summary if run.status == "done" else None}


# --- the summary of a done run ---------------------------------------------------------------

def _records(frame, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts (NaN as null)."""
    if columns is not None:
        frame = frame[[c for c in columns if c in frame.columns]]
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def summarise(folder) -> dict[str, Any]:
    """What a run's page shows, from its :class:`custseg.runs.RunFolder`: the recommendation
    with its reasons, the segments (sizes, names, rules), the leaderboard and the counts."""
    import numpy as np

    summary = folder.summary
    cleaning = summary.get("cleaning") or {}
    segments = _records(folder.profiles, ("segment", "name", "customers", "share", "value_share", "mean_value",
                                          "description", "rule", "distinguishing"))
    return {
        "algorithm": summary.get("algorithm"),
        "n_clusters": summary.get("n_clusters"),
        "recommendation": summary.get("recommendation"),
        "segments": segments,
        "leaderboard": _records(folder.leaderboard),
        "counts": {"customers": int(folder.customers), "segments": len(segments),
                   "unassigned": int(np.sum(folder.labels == -1)),
                   "rows_in": cleaning.get("rows_in"), "rows_out": cleaning.get("rows_out")},
        "kind": summary.get("kind"),
        "as_of": summary.get("as_of"),
        "feature_columns": summary.get("feature_columns"),
        "best_segment": summary.get("best_segment"),
        "worst_segment": summary.get("worst_segment"),
        "notes": list(cleaning.get("notes") or []),
    }


# --- files -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunFile:
    """A file of a run to send: where it is, its media type, and whether it shows inline."""

    path: Path
    name: str
    media_type: str
    inline: bool


def _done_folder(settings: WebSettings, run: Run) -> Path:
    if run.status != "done":
        raise Conflict(f"run {run.id} is {run.status}; its files come when it is done")
    folder = Path(settings.data_dir) / run.folder
    if not folder.is_dir():
        raise NotFound(f"run {run.id}'s folder is missing")
    return folder


def list_files(db: Session, settings: WebSettings, user: User, project_id: int, run_id: int) -> list[dict[str, Any]]:
    """The run's files, and its exports (those not made yet have no size: they are made when
    first downloaded)."""
    from custseg.runs import RUN_FILES

    run, _ = get_run(db, user, project_id, run_id)
    folder = _done_folder(settings, run)
    found = [{"name": name, "size": (folder / name).stat().st_size, "kind": "run"}
             for name in RUN_FILES if (folder / name).is_file()]
    exports = folder / "exports"
    made = ({p.name: p.stat().st_size for p in exports.iterdir() if p.is_file() and _EXPORT_NAME.fullmatch(p.name)}
            if exports.is_dir() else {})
    for name in sorted(set(EXPORTS_ON_DEMAND) | set(made)):
        found.append({"name": f"exports/{name}", "size": made.get(name), "kind": "export"})
    return found


def open_file(db: Session, settings: WebSettings, user: User, project_id: int, run_id: int, name: str) -> RunFile:
    """A file of the run by name: one of :data:`custseg.runs.RUN_FILES`, or ``exports/NAME``
    (made on demand; the editor role, and audited as an export).  No other path is served."""
    from custseg.runs import RUN_FILES

    is_export = name.startswith("exports/")
    run, project = get_run(db, user, project_id, run_id, "editor" if is_export else "viewer")
    folder = _done_folder(settings, run)
    if not is_export:
        if name not in RUN_FILES or not (folder / name).is_file():
            raise NotFound(f"run {run_id} has no file {name!r}", param="name")
        path = folder / name
    else:
        export = name.removeprefix("exports/")
        if not _EXPORT_NAME.fullmatch(export) or ".." in export:
            raise NotFound(f"run {run_id} has no export {export!r}", param="name")
        path = folder / "exports" / export
        if not path.is_file():
            fmt = EXPORTS_ON_DEMAND.get(export) or {".csv": "csv", ".xlsx": "xlsx",
                                                     ".parquet": "parquet"}.get(Path(export).suffix)
            if fmt is not None:
                from custseg.exports import export_run

                export_run(folder, format=fmt)
        if not path.is_file() or path.resolve().parent != (folder / "exports").resolve():
            raise NotFound(f"run {run_id} has no export {export!r}", param="name")
        audit(db, project, user, "exported", run_id=run.id, file=export)
    db.commit()  # the session is not held while the file is sent
    return RunFile(path, path.name, _MEDIA.get(path.suffix.lower(), "application/octet-stream"),
                   inline=(name == "report.html"))


# --- following a run -------------------------------------------------------------------------

def _state(run: Run) -> dict[str, Any]:
    state = {"id": run.id, "status": run.status, "progress": float(run.progress or 0.0), "step": run.step or "",
             "error": run.error, "attempt": run.attempt}
    if run.status == "done":
        state["summary"] = run.summary
    return state


def watch(db: Session, store: Store, user: User, project_id: int, run_id: int, *, every: float = 0.5,
          keepalive: float = 15.0) -> AsyncIterator[dict[str, Any] | None]:
    """The run's state each time it changes, until it is final (None now and then while
    nothing changes, to keep the connection open).  Access is checked before it starts; the
    store is read every ``every`` seconds in a thread, the waiting holds none."""
    import anyio

    get_run(db, user, project_id, run_id)
    db.commit()  # the request's session is not held while the stream lasts

    def read() -> dict[str, Any] | None:
        with store.session() as session:
            run = session.get(Run, run_id)
            return None if run is None else _state(run)

    async def states() -> AsyncIterator[dict[str, Any] | None]:
        last, quiet = None, time.monotonic()
        while True:
            state = await anyio.to_thread.run_sync(read)
            if state is None:
                return
            if state != last:
                last, quiet = state, time.monotonic()
                yield state
                if state["status"] in FINAL_STATES:
                    return
            elif time.monotonic() - quiet >= keepalive:
                quiet = time.monotonic()
                yield None
            await anyio.sleep(every)

    return states()


async def events(states: AsyncIterator[dict[str, Any] | None]) -> AsyncIterator[str]:
    """Server-sent events of :func:`watch`'s states (``event: status``; a comment to keep alive)."""
    async for state in states:
        if state is None:
            yield ": still working\n\n"
        else:
            yield f"event: status\nid: {state['id']}-{state['attempt']}\ndata: {json.dumps(state, default=str)}\n\n"
