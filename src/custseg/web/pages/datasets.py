"""Datasets: the upload page (file picker or drag and drop with a progress bar; a SQL source),
a dataset's page (preview, detected roles to change, data quality, cleaning, notes) and the SQL
recipe page.

The upload itself goes from the browser to the API (``POST /api/v1/projects/{id}/datasets``,
with ``X-CSRF-Token``) so the page can show the upload's progress; without script the form
posts to this module's upload route, which streams it to the same service function.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from custseg.errors import ConfigError, CustsegError, literal
from custseg.schema import ROLES as COLUMN_ROLES
from custseg.web import auth
from custseg.web.config import WebSettings
from custseg.web.deps import get_db, get_settings, identity
from custseg.web.pages.common import check_csrf, fail, message_of, redirect, render
from custseg.web.services import datasets as service
from custseg.web.services import projects as projects_service
from custseg.web.services import recipes as recipes_service
from custseg.web.store.models import ROLES

router = APIRouter()


def _can_edit(role: str) -> bool:
    return ROLES.index(role) >= ROLES.index("editor")


# --- upload and SQL source -------------------------------------------------------------------

def upload_page(request: Request, db: Session, settings: WebSettings, who: auth.Identity, project_id: int, *,
                status: int = 200, **context):
    project, role = projects_service.get_project(db, who.user, project_id)
    return render(request, "upload.html", who, status=status, project=project, role=role,
                  can_edit=_can_edit(role), upload_limit=settings.upload_limit, kinds=service.KINDS,
                  form=context.pop("form", {}), sql_form=context.pop("sql_form", {}), **context)


@router.get("/app/projects/{project_id}/datasets/new")
def new_dataset(request: Request, project_id: int, who: auth.Identity = Depends(identity),
                db: Session = Depends(get_db), settings: WebSettings = Depends(get_settings)):
    return upload_page(request, db, settings, who, project_id)


@router.post("/app/projects/{project_id}/datasets/upload")
async def upload(request: Request, project_id: int, who: auth.Identity = Depends(identity),
                 db: Session = Depends(get_db), settings: WebSettings = Depends(get_settings)):
    """The upload form without script: the multipart body streamed to the service (the CSRF
    token is checked once the body has arrived, before the file is read)."""

    def check(fields: dict[str, str]) -> None:
        check_csrf(who, fields.get("csrf_token"))

    try:
        try:
            dataset = await run_in_threadpool(
                service.upload_multipart, db, settings, who.user, project_id, request.headers.get("content-type", ""),
                service.sync_chunks(request.stream()), check_fields=check)
        except ClientDisconnect:
            raise ConfigError("the upload was interrupted; send it again", param="file") from None
        await run_in_threadpool(db.commit)
    except CustsegError as exc:
        if exc.param == "csrf_token":
            raise
        failed = fail(db, exc)
        return await run_in_threadpool(upload_page, request, db, settings, who, project_id, **failed)
    return redirect(f"/app/projects/{project_id}/datasets/{dataset.id}")


@router.post("/app/projects/{project_id}/datasets/sql")
def add_sql_source(request: Request, project_id: int, name: str = Form(""), url: str = Form("", max_length=2000),
                   table: str = Form("", max_length=500), query: str = Form("", max_length=100_000),
                   csrf_token: str = Form(""), who: auth.Identity = Depends(identity),
                   db: Session = Depends(get_db), settings: WebSettings = Depends(get_settings)):
    check_csrf(who, csrf_token)
    try:
        dataset = service.add_sql_source(db, settings, who.user, project_id, name, url.strip(),
                                         table=table.strip() or None, query=query.strip() or None)
        db.commit()
    except CustsegError as exc:
        return upload_page(request, db, settings, who, project_id, section="sql",
                           sql_form={"name": name, "url": url, "table": table, "query": query}, **fail(db, exc))
    return redirect(f"/app/projects/{project_id}/datasets/{dataset.id}")


# --- a dataset -------------------------------------------------------------------------------

def _whole(text: str | None, field: str) -> int | None:
    text = (text or "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise ConfigError(f"{field} must be a whole number between 1 and 1000, got '{literal(text)}'", param=field)
    return int(text)


def dataset_page(request: Request, db: Session, settings: WebSettings, who: auth.Identity, project_id: int,
                 dataset_id: int, *, status: int = 200, rows: str | None = None, mode: str | None = None, **context):
    """The dataset's page: what reading found, the roles to change, and a preview."""
    project, dataset = service.get_dataset(db, who.user, project_id, dataset_id)
    _, role = projects_service.get_project(db, who.user, project_id)
    summary = service.summary_of(dataset)
    preview = preview_error = None
    try:
        preview = service.preview(db, settings, who.user, project_id, dataset_id, _whole(rows, "rows"),
                                  mode or None)
    except CustsegError as exc:
        preview_error = message_of(exc)
    return render(request, "dataset.html", who, status=status, project=project, dataset=summary, role=role,
                  can_edit=_can_edit(role), column_roles=COLUMN_ROLES, kinds=service.KINDS,
                  preview=preview, preview_error=preview_error, modes=projects_service.PREVIEW_MODES,
                  rows=rows or project.preview_rows, mode=mode or project.preview_mode, **context)


@router.get("/app/projects/{project_id}/datasets/{dataset_id}")
def dataset_view(request: Request, project_id: int, dataset_id: int, rows: str | None = None,
                 mode: str | None = None, who: auth.Identity = Depends(identity), db: Session = Depends(get_db),
                 settings: WebSettings = Depends(get_settings)):
    return dataset_page(request, db, settings, who, project_id, dataset_id, rows=rows, mode=mode)


def _mapping(summary: dict, chosen: list[str]) -> dict[str, str]:
    """The ``--map`` for the roles chosen in the form (one select per column, in the columns'
    order): the roles set before, with each column whose role was changed given its new role."""
    columns = summary["columns"]
    if len(chosen) != len(columns):
        raise ConfigError("the roles form does not match the dataset's columns; reload the page", param="mapping")
    mapping = dict(summary["mapping"])
    for column, role in zip(columns, chosen):
        if role == column["role"]:
            continue
        if role and role not in COLUMN_ROLES:
            raise ConfigError(f"unknown role '{literal(role)}'; the role must be one of {', '.join(COLUMN_ROLES)}",
                              param="mapping")
        mapping = {r: c for r, c in mapping.items() if c != column["name"] and r != role}
        if role:
            mapping[role] = column["name"]
    return mapping


@router.post("/app/projects/{project_id}/datasets/{dataset_id}/roles")
def set_roles(request: Request, project_id: int, dataset_id: int, role: list[str] = Form([]), kind: str = Form(""),
              reset: str = Form(""), csrf_token: str = Form(""), who: auth.Identity = Depends(identity),
              db: Session = Depends(get_db), settings: WebSettings = Depends(get_settings)):
    """Change the column roles (the CLI's ``--map``) and the kind: what the API's ``PATCH`` does."""
    check_csrf(who, csrf_token)
    try:
        _, dataset = service.get_dataset(db, who.user, project_id, dataset_id, "editor")
        mapping = {} if reset else _mapping(service.summary_of(dataset), role)
        service.set_mapping(db, settings, who.user, project_id, dataset_id, mapping, kind="" if reset else kind)
        db.commit()
    except CustsegError as exc:
        return dataset_page(request, db, settings, who, project_id, dataset_id, section="roles", **fail(db, exc))
    return redirect(f"/app/projects/{project_id}/datasets/{dataset_id}#roles")


@router.post("/app/projects/{project_id}/datasets/{dataset_id}/rename")
def rename_dataset(request: Request, project_id: int, dataset_id: int, name: str = Form(""),
                   csrf_token: str = Form(""), who: auth.Identity = Depends(identity), db: Session = Depends(get_db),
                   settings: WebSettings = Depends(get_settings)):
    check_csrf(who, csrf_token)
    try:
        service.rename(db, who.user, project_id, dataset_id, name)
        db.commit()
    except CustsegError as exc:
        return dataset_page(request, db, settings, who, project_id, dataset_id, section="rename", **fail(db, exc))
    return redirect(f"/app/projects/{project_id}/datasets/{dataset_id}")


@router.post("/app/projects/{project_id}/datasets/{dataset_id}/refresh")
def refresh_dataset(request: Request, project_id: int, dataset_id: int, password: str = Form("", max_length=1000),
                    csrf_token: str = Form(""), who: auth.Identity = Depends(identity), db: Session = Depends(get_db),
                    settings: WebSettings = Depends(get_settings)):
    """Read a SQL source again: what the API's ``POST …/refresh`` does."""
    check_csrf(who, csrf_token)
    try:
        service.refresh_sql_source(db, settings, who.user, project_id, dataset_id, password=password or None)
        db.commit()
    except CustsegError as exc:
        return dataset_page(request, db, settings, who, project_id, dataset_id, section="refresh", **fail(db, exc))
    return redirect(f"/app/projects/{project_id}/datasets/{dataset_id}")


@router.post("/app/projects/{project_id}/datasets/{dataset_id}/delete")
def delete_dataset(request: Request, project_id: int, dataset_id: int, csrf_token: str = Form(""),
                   who: auth.Identity = Depends(identity), db: Session = Depends(get_db),
                   settings: WebSettings = Depends(get_settings)):
    check_csrf(who, csrf_token)
    try:
        service.delete(db, settings, who.user, project_id, dataset_id)
        db.commit()
    except CustsegError as exc:
        return dataset_page(request, db, settings, who, project_id, dataset_id, section="delete", **fail(db, exc))
    return redirect(f"/app/projects/{project_id}#datasets")


# --- recipes ---------------------------------------------------------------------------------

def recipe_page(request: Request, db: Session, who: auth.Identity, project_id: int, *, status: int = 200,
                **context):
    project, role = projects_service.get_project(db, who.user, project_id)
    return render(request, "recipe.html", who, status=status, project=project, role=role, can_edit=_can_edit(role),
                  datasets=service.list_datasets(db, who.user, project_id), form=context.pop("form", {}),
                  time_limit=recipes_service.TIME_LIMIT, memory_limit=recipes_service.MEMORY_LIMIT, **context)


@router.get("/app/projects/{project_id}/recipes/new")
def new_recipe(request: Request, project_id: int, who: auth.Identity = Depends(identity),
               db: Session = Depends(get_db)):
    return recipe_page(request, db, who, project_id)


@router.post("/app/projects/{project_id}/recipes/preview")
def preview_recipe(request: Request, project_id: int, name: str = Form(""),
                   sql: str = Form("", max_length=recipes_service.SQL_LIMIT), csrf_token: str = Form(""),
                   who: auth.Identity = Depends(identity), db: Session = Depends(get_db),
                   settings: WebSettings = Depends(get_settings)):
    """The first rows of the recipe's result (a POST for the length of the SQL; it changes nothing)."""
    check_csrf(who, csrf_token)
    form = {"name": name, "sql": sql}
    try:
        preview = recipes_service.preview_recipe(db, settings, who.user, project_id, sql)
    except CustsegError as exc:
        return recipe_page(request, db, who, project_id, form=form, **fail(db, exc))
    return recipe_page(request, db, who, project_id, form=form, preview=preview)


@router.post("/app/projects/{project_id}/recipes")
def create_recipe(request: Request, project_id: int, name: str = Form(""),
                  sql: str = Form("", max_length=recipes_service.SQL_LIMIT), csrf_token: str = Form(""),
                  who: auth.Identity = Depends(identity), db: Session = Depends(get_db),
                  settings: WebSettings = Depends(get_settings)):
    check_csrf(who, csrf_token)
    try:
        dataset = recipes_service.create_recipe(db, settings, who.user, project_id, name, sql)
        db.commit()
    except CustsegError as exc:
        return recipe_page(request, db, who, project_id, form={"name": name, "sql": sql}, **fail(db, exc))
    return redirect(f"/app/projects/{project_id}/datasets/{dataset.id}")
