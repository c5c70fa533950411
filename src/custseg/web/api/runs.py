"""Runs: start, follow (JSON or server-sent events), cancel, retry; their files and exports; and
real-time assignment of customers to a done run's segments."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from custseg.web import auth
from custseg.web.api.common import Timestamp
from custseg.web.config import WebSettings
from custseg.web.deps import get_db, get_settings, get_store, identity
from custseg.web.services import assign as assign_service
from custseg.web.services import runs as service
from custseg.web.store import Store

router = APIRouter(tags=["runs"])


class RunIn(BaseModel):
    """The options of ``custseg segment``, by their API names."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: int
    algorithm: str = Field("auto", max_length=50, description="auto, or one of the algorithms (kmeans, gmm, …)")
    k: Any = Field("auto", description="the number of segments (a whole number ≥ 2), or auto",
                   json_schema_extra={"anyOf": [{"type": "integer"}, {"type": "string", "enum": ["auto"]}]})
    k_values: list[int] | None = Field(None, max_length=50, description="the k compared (default 2..15)")
    features: list[str] | None = Field(None, max_length=500, description="feature columns (default: chosen)")
    as_of: str | None = Field(None, max_length=40, description="reference date YYYY-MM-DD (default: the data's)")
    returns: str = Field("drop", max_length=20, description="drop or net")
    seed: int = 0
    report: bool = True


class RunOut(BaseModel):
    id: int
    project_id: int
    dataset_id: int | None
    status: str
    progress: float
    step: str
    error: dict[str, Any] | None
    options: dict[str, Any]
    attempt: int
    cancel_requested: bool
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    heartbeat_at: Timestamp | None
    summary: dict[str, Any] | None


class FileOut(BaseModel):
    name: str
    size: int | None = Field(description="bytes; null for an export made when first downloaded")
    kind: Literal["run", "export"]


class CustomersIn(BaseModel):
    """Customers shaped like rows of the run's ``features.parquet`` (extra fields are ignored)."""

    customers: list[dict[str, Any]] = Field(min_length=1, max_length=100_000)


class Assignment(BaseModel):
    customer_id: Any
    segment: int
    segment_name: str
    reason: str | None


class AssignmentsOut(BaseModel):
    assignments: list[Assignment]


def _out(run) -> RunOut:
    return RunOut(**service.describe(run))


@router.post("/projects/{project_id}/runs", response_model=RunOut, status_code=202)
def start_run(project_id: int, body: RunIn, who: auth.Identity = Depends(identity), db: Session = Depends(get_db),
              settings: WebSettings = Depends(get_settings)):
    """Validate the options against the dataset and queue the run (editor role)."""
    return _out(service.start_run(db, settings, who.user, project_id, **body.model_dump()))


@router.get("/projects/{project_id}/runs", response_model=list[RunOut])
def list_runs(project_id: int, who: auth.Identity = Depends(identity), db: Session = Depends(get_db)):
    return [_out(run) for run in service.list_runs(db, who.user, project_id)]


@router.get("/projects/{project_id}/runs/{run_id}", response_model=RunOut)
def get_run(project_id: int, run_id: int, who: auth.Identity = Depends(identity), db: Session = Depends(get_db)):
    return _out(service.get_run(db, who.user, project_id, run_id)[0])


@router.get("/projects/{project_id}/runs/{run_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
def run_events(project_id: int, run_id: int, who: auth.Identity = Depends(identity), db: Session = Depends(get_db),
               store: Store = Depends(get_store)):
    """Server-sent events (``event: status``) of the run's state until it is final."""
    states = service.watch(db, store, who.user, project_id, run_id)
    return StreamingResponse(service.events(states), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/projects/{project_id}/runs/{run_id}/cancel", response_model=RunOut)
def cancel_run(project_id: int, run_id: int, who: auth.Identity = Depends(identity), db: Session = Depends(get_db)):
    """Cancel a queued run, or a running one at its next step (editor role)."""
    return _out(service.cancel_run(db, who.user, project_id, run_id))


@router.post("/projects/{project_id}/runs/{run_id}/retry", response_model=RunOut, status_code=202)
def retry_run(project_id: int, run_id: int, who: auth.Identity = Depends(identity), db: Session = Depends(get_db),
              settings: WebSettings = Depends(get_settings)):
    """Queue a failed, interrupted or cancelled run again (editor role)."""
    return _out(service.retry_run(db, settings, who.user, project_id, run_id))


@router.get("/projects/{project_id}/runs/{run_id}/files", response_model=list[FileOut])
def list_files(project_id: int, run_id: int, who: auth.Identity = Depends(identity), db: Session = Depends(get_db),
               settings: WebSettings = Depends(get_settings)):
    return service.list_files(db, settings, who.user, project_id, run_id)


#: What a run's files are sent as (the media types of services.runs, by suffix).
FILE_TYPES = ("text/csv", "text/html", "application/json", "application/vnd.apache.parquet",
              "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "application/octet-stream")


@router.get("/projects/{project_id}/runs/{run_id}/files/{name:path}", response_class=FileResponse,
            responses={200: {"content": {media: {} if media == "application/json" else
                                         {"schema": {"type": "string", "format": "binary"}} for media in FILE_TYPES}}})
def get_file(project_id: int, run_id: int, name: str, who: auth.Identity = Depends(identity),
             db: Session = Depends(get_db), settings: WebSettings = Depends(get_settings)):
    """A file of the run (``report.html`` shows inline, sandboxed) or ``exports/NAME`` (editor
    role: ``crm_import.csv``, ``summary.csv``, ``segments.xlsx``, the segment lists)."""
    from custseg.web.app import REPORT_CSP

    found = service.open_file(db, settings, who.user, project_id, run_id, name)
    return FileResponse(found.path, media_type=found.media_type, filename=found.name,
                        content_disposition_type="inline" if found.inline else "attachment",
                        headers={"Content-Security-Policy": REPORT_CSP} if found.inline else None)


@router.post("/projects/{project_id}/runs/{run_id}/assign", response_model=AssignmentsOut)
def assign(project_id: int, run_id: int, body: CustomersIn, request: Request, who: auth.Identity = Depends(identity),
           db: Session = Depends(get_db)):
    """The segment of each customer (viewer role); a missing or unknown value gives segment -1
    and the reason."""
    settings = request.app.state.settings  # get_settings without a dependency's trip to the thread pool
    answer = {"assignments": assign_service.assign(db, settings, who.user, project_id, run_id, body.customers)}
    try:  # sent as it is (it has AssignmentsOut's shape): validating it again costs more than the scoring
        return JSONResponse(answer)
    except ValueError:  # a customer_id that JSON cannot carry (NaN): as the model serialises it
        return AssignmentsOut.model_validate(answer)


@router.post("/echo", response_model=CustomersIn, tags=["benchmark"])
def echo(body: CustomersIn):
    """The assign body, validated and sent back (a baseline for the assign endpoint's speed)."""
    return body
