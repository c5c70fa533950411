"""Runs: the run form (the options of ``custseg segment``: algorithm, k, features, as-of,
returns, seed) and a run's page — live progress (the API's server-sent events, or polling),
cancel and retry, and once it is done: the recommendation with its reasons, the segments, the
leaderboard, the report in a sandboxed frame, the downloads, and a form that assigns a
customer by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from custseg.errors import ConfigError, CustsegError, literal
from custseg.web import auth
from custseg.web.config import WebSettings
from custseg.web.deps import get_db, get_settings, identity
from custseg.web.pages.common import check_csrf, fail, message_of, redirect, render
from custseg.web.services import assign as assign_service
from custseg.web.services import datasets as datasets_service
from custseg.web.services import projects as projects_service
from custseg.web.services import runs as service
from custseg.web.store.models import ROLES

router = APIRouter()

RETURNS = ("drop", "net")
#: the run's files offered for download on its page (the others are listed apart)
MAIN_FILES = ("assignments.csv", "profiles.csv")
#: the exports: file -> what the page calls it
EXPORTS = {"exports/crm_import.csv": "CRM import (CSV)", "exports/summary.csv": "segment summary (CSV)",
           "exports/segments.xlsx": "segment lists (XLSX)"}
#: leaderboard columns shown, in order
LEADERBOARD = ("algorithm", "n_clusters", "silhouette", "davies_bouldin", "calinski_harabasz", "stability",
               "min_share", "noise_share")


def _can_edit(role: str) -> bool:
    return ROLES.index(role) >= ROLES.index("editor")


def _algorithms() -> list[str]:
    from custseg.cluster import ALGORITHMS

    return ["auto", *ALGORITHMS]


def _feature_hint(summary: dict[str, Any]) -> list[str]:
    """The names a run's features can take on this dataset (shown beside the field)."""
    if summary.get("kind") == "transactions":
        from custseg.features import FEATURE_COLUMNS

        return [c for c in FEATURE_COLUMNS if c != "customer_id"]
    return [c["name"] for c in summary.get("columns", []) if c.get("role") not in ("customer_id", "email")]


# --- the run form ----------------------------------------------------------------------------

def run_form(request: Request, db: Session, who: auth.Identity, project_id: int, *, status: int = 200,
             form: dict[str, Any] | None = None, **context):
    project, role = projects_service.get_project(db, who.user, project_id)
    datasets = [datasets_service.summary_of(d) for d in datasets_service.list_datasets(db, who.user, project_id)]
    form = {"algorithm": "auto", "k": "auto", "features": "", "as_of": "", "returns": "drop", "seed": "0",
            **(form or {})}
    chosen = next((d for d in datasets if str(d["id"]) == str(form.get("dataset_id", ""))), None)
    chosen = chosen or (datasets[-1] if datasets else None)
    return render(request, "run_form.html", who, status=status, project=project, role=role,
                  can_edit=_can_edit(role), datasets=datasets, chosen=chosen, form=form,
                  algorithms=_algorithms(), returns_options=RETURNS,
                  features_hint=_feature_hint(chosen) if chosen else [], **context)


@router.get("/app/projects/{project_id}/runs/new")
def new_run(request: Request, project_id: int, dataset_id: str = "", who: auth.Identity = Depends(identity),
            db: Session = Depends(get_db)):
    return run_form(request, db, who, project_id, form={"dataset_id": dataset_id})


def _int(text: str, field: str) -> int:
    try:
        return int((text or "").strip())
    except ValueError:
        raise ConfigError(f"{field} must be a whole number, got '{literal(text)}'", param=field) from None


@router.post("/app/projects/{project_id}/runs")
def start_run(request: Request, project_id: int, dataset_id: str = Form(""), algorithm: str = Form("auto"),
              k: str = Form("auto"), features: str = Form("", max_length=20_000), as_of: str = Form(""),
              returns: str = Form("drop"), seed: str = Form("0"), csrf_token: str = Form(""),
              who: auth.Identity = Depends(identity), db: Session = Depends(get_db),
              settings: WebSettings = Depends(get_settings)):
    check_csrf(who, csrf_token)
    form = {"dataset_id": dataset_id, "algorithm": algorithm, "k": k, "features": features, "as_of": as_of,
            "returns": returns, "seed": seed}
    try:
        names = [f.strip() for f in features.split(",") if f.strip()] or None
        run = service.start_run(db, settings, who.user, project_id, dataset_id=_int(dataset_id, "dataset_id"),
                                algorithm=algorithm.strip() or "auto", k=k.strip() or "auto", features=names,
                                as_of=as_of.strip() or None, returns=returns, seed=_int(seed or "0", "seed"))
        db.commit()
    except CustsegError as exc:
        return run_form(request, db, who, project_id, form=form, **fail(db, exc))
    return redirect(f"/app/projects/{project_id}/runs/{run.id}")


# --- a run -----------------------------------------------------------------------------------

def _model_fields(settings: WebSettings, run) -> tuple[list[dict[str, Any]], str | None]:
    """The assign form's fields (the model's features, numbers or categories, with the first
    customer of the run as the example), or why there is none."""
    try:
        model = assign_service.model_of(settings, run.folder, run.id, run.finished_at)
    except CustsegError as exc:
        return [], message_of(exc)
    inner = getattr(model, "model", model)
    columns = list(inner.feature_columns)
    categories = dict(getattr(inner, "categories", None) or {})
    example: dict[str, Any] = {}
    path = Path(settings.data_dir) / run.folder / "features.parquet"
    try:
        import pyarrow.parquet as pq

        batch = next(pq.ParquetFile(path).iter_batches(batch_size=1, columns=columns), None)
        example = batch.to_pylist()[0] if batch is not None and batch.num_rows else {}
    except (OSError, ValueError, KeyError):
        example = {}
    fields = [{"name": c, "type": "category" if c in categories else "number",
               "options": [str(v) for v in categories.get(c, [])], "example": _shown(example.get(c))}
              for c in columns]
    return fields, None if fields else "the model has no features to enter"


def _shown(value: Any) -> str | None:
    """An example value as the form shows it (numbers without float noise: 2506.04)."""
    value = datasets_service.json_safe(value)
    if value is None:
        return None
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


def run_page(request: Request, db: Session, settings: WebSettings, who: auth.Identity, project_id: int, run_id: int,
             *, status: int = 200, **context):
    """The run's page (404 for a run of a project the user may not see)."""
    run, project = service.get_run(db, who.user, project_id, run_id)
    _, role = projects_service.get_project(db, who.user, project_id)
    state = service.describe(run)
    dataset = None
    if run.dataset_id is not None:
        try:
            dataset = datasets_service.get_dataset(db, who.user, project_id, run.dataset_id)[1]
        except CustsegError:
            dataset = None
    files, fields, no_model = [], [], None
    if run.status == "done":
        files = service.list_files(db, settings, who.user, project_id, run_id)
        fields, no_model = _model_fields(settings, run)
    summary = state["summary"] or {}
    chosen = (summary.get("algorithm"), summary.get("n_clusters"))
    return render(request, "run.html", who, status=status, project=project, role=role, can_edit=_can_edit(role),
                  run=state, dataset=dataset, summary=summary, files=files, main_files=MAIN_FILES, exports=EXPORTS,
                  leaderboard_columns=LEADERBOARD, chosen=chosen, fields=fields, no_model=no_model,
                  active=run.status in ("queued", "running"), final_states=service.FINAL_STATES,
                  assign_form=context.pop("assign_form", {}), **context)


@router.get("/app/projects/{project_id}/runs/{run_id}")
def run_view(request: Request, project_id: int, run_id: int, who: auth.Identity = Depends(identity),
             db: Session = Depends(get_db), settings: WebSettings = Depends(get_settings)):
    return run_page(request, db, settings, who, project_id, run_id)


@router.post("/app/projects/{project_id}/runs/{run_id}/cancel")
def cancel_run(request: Request, project_id: int, run_id: int, csrf_token: str = Form(""),
               who: auth.Identity = Depends(identity), db: Session = Depends(get_db),
               settings: WebSettings = Depends(get_settings)):
    check_csrf(who, csrf_token)
    try:
        service.cancel_run(db, who.user, project_id, run_id)
        db.commit()
    except CustsegError as exc:
        return run_page(request, db, settings, who, project_id, run_id, **fail(db, exc))
    return redirect(f"/app/projects/{project_id}/runs/{run_id}")


@router.post("/app/projects/{project_id}/runs/{run_id}/retry")
def retry_run(request: Request, project_id: int, run_id: int, csrf_token: str = Form(""),
              who: auth.Identity = Depends(identity), db: Session = Depends(get_db),
              settings: WebSettings = Depends(get_settings)):
    check_csrf(who, csrf_token)
    try:
        service.retry_run(db, settings, who.user, project_id, run_id)
        db.commit()
    except CustsegError as exc:
        return run_page(request, db, settings, who, project_id, run_id, **fail(db, exc))
    return redirect(f"/app/projects/{project_id}/runs/{run_id}")


def _customer(fields: list[dict[str, Any]], form: dict[str, str]) -> dict[str, Any]:
    """The customer the form describes: numbers as numbers, an empty field left out (the
    assignment then says which value is missing)."""
    customer: dict[str, Any] = {}
    if form.get("customer_id", "").strip():
        customer["customer_id"] = form["customer_id"].strip()
    for field in fields:
        text = form.get(f"feature:{field['name']}", "").strip()
        if not text:
            continue
        if field["type"] == "number":
            try:
                customer[field["name"]] = int(text) if text.lstrip("-").isdigit() else float(text)
            except ValueError:
                customer[field["name"]] = text  # the assignment names the value it cannot read
        else:
            customer[field["name"]] = text
    return customer


def _assign(request: Request, db: Session, settings: WebSettings, who: auth.Identity, project_id: int,
            run_id: int, form: dict[str, str]):
    check_csrf(who, form.get("csrf_token"))
    try:
        run, _ = service.get_run(db, who.user, project_id, run_id)
        if run.status != "done":
            raise ConfigError(f"run {run_id} is {run.status}; customers can be assigned once it is done")
        fields, problem = _model_fields(settings, run)
        if problem:
            raise ConfigError(problem)
        customer = _customer(fields, form)
        result = assign_service.assign(db, settings, who.user, project_id, run_id, [customer])[0]
        db.commit()
    except CustsegError as exc:
        return run_page(request, db, settings, who, project_id, run_id, section="assign", assign_form=form,
                        **fail(db, exc))
    return run_page(request, db, settings, who, project_id, run_id, assigned=result, assign_form=form)


@router.post("/app/projects/{project_id}/runs/{run_id}/assign")
async def assign(request: Request, project_id: int, run_id: int, who: auth.Identity = Depends(identity),
                 db: Session = Depends(get_db), settings: WebSettings = Depends(get_settings)):
    """Assign one customer by hand: the form's fields are the model's features.  (It changes
    nothing, so the answer is the run's page with the segment, not a redirect.)"""
    form = await request.form(max_fields=500)
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    return await run_in_threadpool(_assign, request, db, settings, who, project_id, run_id, values)
