"""The project list (with the form that creates one) and a project's page: its settings,
rename, deletion with the typed name, members and roles, audit log, datasets and runs."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from sqlalchemy.orm import Session

from custseg.errors import ConfigError, CustsegError, literal
from custseg.web import auth
from custseg.web.config import WebSettings
from custseg.web.deps import get_db, get_settings, identity
from custseg.web.pages.common import check_csrf, fail, redirect, render
from custseg.web.services import projects as service
from custseg.web.store.models import ROLES

router = APIRouter()


def _rows(text: str, field: str = "preview_rows") -> int:
    text = (text or "").strip()
    if not text.isdigit():
        raise ConfigError(f"{field} must be a whole number between 1 and 1000, got '{literal(text)}'", param=field)
    return int(text)


def project_list(request: Request, db: Session, who: auth.Identity, *, status: int = 200, **context):
    return render(request, "projects.html", who, status=status, projects=service.list_projects(db, who.user),
                  modes=service.PREVIEW_MODES, form=context.pop("form", {}), **context)


@router.get("/app")
def projects_page(request: Request, who: auth.Identity = Depends(identity), db: Session = Depends(get_db)):
    return project_list(request, db, who)


@router.post("/app/projects")
def create_project(request: Request, name: str = Form(""), description: str = Form("", max_length=10_000),
                   preview_mode: str = Form("first"), preview_rows: str = Form("50"), csrf_token: str = Form(""),
                   who: auth.Identity = Depends(identity), db: Session = Depends(get_db)):
    check_csrf(who, csrf_token)
    form = {"name": name, "description": description, "preview_mode": preview_mode, "preview_rows": preview_rows}
    try:
        project = service.create_project(db, who.user, name, description, preview_mode=preview_mode,
                                         preview_rows=_rows(preview_rows))
        db.commit()
    except CustsegError as exc:
        return project_list(request, db, who, form=form, **fail(db, exc))
    return redirect(f"/app/projects/{project.id}")


def project_page(request: Request, db: Session, settings: WebSettings, who: auth.Identity, project_id: int, *,
                 status: int = 200, **context):
    """The project's page (404 for a project the user may not see)."""
    from custseg.web.services import datasets as datasets_service
    from custseg.web.services import runs as runs_service

    project, role = service.get_project(db, who.user, project_id)
    datasets = datasets_service.list_datasets(db, who.user, project_id)
    names = {d.id: d.name for d in datasets}
    return render(request, "project.html", who, status=status, project=project, role=role, roles=ROLES,
                  can_edit=ROLES.index(role) >= ROLES.index("editor"), is_owner=role == "owner",
                  members=service.list_members(db, who.user, project_id),
                  audit=service.audit_log(db, who.user, project_id, limit=100),
                  datasets=[datasets_service.summary_of(d) for d in datasets],
                  runs=runs_service.list_runs(db, who.user, project_id), dataset_names=names,
                  modes=service.PREVIEW_MODES, **context)


@router.get("/app/projects/{project_id}")
def project_view(request: Request, project_id: int, who: auth.Identity = Depends(identity),
                 db: Session = Depends(get_db), settings: WebSettings = Depends(get_settings)):
    return project_page(request, db, settings, who, project_id)


@router.post("/app/projects/{project_id}/settings")
def update_project(request: Request, project_id: int, name: str | None = Form(None),
                   description: str = Form("", max_length=10_000), preview_mode: str = Form("first"),
                   preview_rows: str = Form("50"), csrf_token: str = Form(""),
                   who: auth.Identity = Depends(identity), db: Session = Depends(get_db),
                   settings: WebSettings = Depends(get_settings)):
    """Rename (owners) and change the description and preview settings (editors)."""
    check_csrf(who, csrf_token)
    try:
        service.update_project(db, who.user, project_id, name=name, description=description,
                               preview_mode=preview_mode, preview_rows=_rows(preview_rows))
        db.commit()
    except CustsegError as exc:
        return project_page(request, db, settings, who, project_id, section="settings", **fail(db, exc))
    return redirect(f"/app/projects/{project_id}")


@router.post("/app/projects/{project_id}/delete")
def delete_project(request: Request, project_id: int, confirm: str = Form(""), csrf_token: str = Form(""),
                   who: auth.Identity = Depends(identity), db: Session = Depends(get_db),
                   settings: WebSettings = Depends(get_settings)):
    check_csrf(who, csrf_token)
    try:
        service.delete_project(db, settings, who.user, project_id, confirm=confirm)
        db.commit()
    except CustsegError as exc:
        return project_page(request, db, settings, who, project_id, section="delete", **fail(db, exc))
    return redirect("/app")


@router.post("/app/projects/{project_id}/members")
def set_member(request: Request, project_id: int, email: str = Form("", max_length=320), role: str = Form("viewer"),
               csrf_token: str = Form(""), who: auth.Identity = Depends(identity), db: Session = Depends(get_db),
               settings: WebSettings = Depends(get_settings)):
    """Add a member, or change a member's role (owners)."""
    check_csrf(who, csrf_token)
    try:
        service.add_member(db, who.user, project_id, email, role)
        db.commit()
    except CustsegError as exc:
        return project_page(request, db, settings, who, project_id, section="members",
                            member_form={"email": email, "role": role}, **fail(db, exc))
    return redirect(f"/app/projects/{project_id}#members")


@router.post("/app/projects/{project_id}/members/{user_id}/remove")
def remove_member(request: Request, project_id: int, user_id: int, csrf_token: str = Form(""),
                  who: auth.Identity = Depends(identity), db: Session = Depends(get_db),
                  settings: WebSettings = Depends(get_settings)):
    check_csrf(who, csrf_token)
    try:
        service.remove_member(db, who.user, project_id, user_id)
        db.commit()
    except CustsegError as exc:
        return project_page(request, db, settings, who, project_id, section="members", **fail(db, exc))
    if user_id == who.user.id:
        return redirect("/app")
    return redirect(f"/app/projects/{project_id}#members")
