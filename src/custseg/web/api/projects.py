"""Projects, members and the audit log."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from custseg.web import auth
from custseg.web.api.common import Timestamp
from custseg.web.config import WebSettings
from custseg.web.deps import get_db, get_settings, identity
from custseg.web.services import projects as service

router = APIRouter(tags=["projects"])


class ProjectIn(BaseModel):
    name: str = Field(max_length=200)
    description: str = Field("", max_length=10_000)
    preview_mode: Literal["first", "last", "random"] = "first"
    preview_rows: int = Field(50, ge=1, le=1000)


class ProjectPatch(BaseModel):
    name: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=10_000)
    preview_mode: Literal["first", "last", "random"] | None = None
    preview_rows: int | None = Field(None, ge=1, le=1000)


class ProjectOut(BaseModel):
    id: int
    name: str
    description: str
    preview_mode: str
    preview_rows: int
    role: str
    created_at: Timestamp
    last_activity_at: Timestamp


class MemberIn(BaseModel):
    email: str = Field(max_length=320)
    role: Literal["viewer", "editor", "owner"]


class MemberOut(BaseModel):
    user_id: int
    email: str
    role: str


class AuditOut(BaseModel):
    at: Timestamp
    email: str | None
    action: str
    detail: dict[str, Any]


def _out(project, role: str) -> ProjectOut:
    return ProjectOut(id=project.id, name=project.name, description=project.description,
                      preview_mode=project.preview_mode, preview_rows=project.preview_rows, role=role,
                      created_at=project.created_at, last_activity_at=project.last_activity_at)


@router.get("/projects", response_model=list[ProjectOut])
def list_projects(who: auth.Identity = Depends(identity), db: Session = Depends(get_db)):
    return [_out(p, role) for p, role in service.list_projects(db, who.user)]


@router.post("/projects", response_model=ProjectOut, status_code=201)
def create_project(body: ProjectIn, who: auth.Identity = Depends(identity), db: Session = Depends(get_db)):
    project = service.create_project(db, who.user, body.name, body.description,
                                     preview_mode=body.preview_mode, preview_rows=body.preview_rows)
    return _out(project, "owner")


@router.get("/projects/{project_id}", response_model=ProjectOut)
def get_project(project_id: int, who: auth.Identity = Depends(identity), db: Session = Depends(get_db)):
    return _out(*service.get_project(db, who.user, project_id))


@router.patch("/projects/{project_id}", response_model=ProjectOut)
def update_project(project_id: int, body: ProjectPatch, who: auth.Identity = Depends(identity),
                   db: Session = Depends(get_db)):
    project = service.update_project(db, who.user, project_id, **body.model_dump())
    return _out(*service.get_project(db, who.user, project.id))


@router.delete("/projects/{project_id}", status_code=204)
def delete_project(project_id: int, confirm: str = "", who: auth.Identity = Depends(identity),
                   db: Session = Depends(get_db), settings: WebSettings = Depends(get_settings)):
    """Delete the project with its datasets and runs; ``confirm`` must repeat the project's name."""
    service.delete_project(db, settings, who.user, project_id, confirm=confirm)


@router.get("/projects/{project_id}/members", response_model=list[MemberOut])
def list_members(project_id: int, who: auth.Identity = Depends(identity), db: Session = Depends(get_db)):
    return [MemberOut(user_id=m.user_id, email=m.user.email, role=m.role)
            for m in service.list_members(db, who.user, project_id)]


@router.post("/projects/{project_id}/members", response_model=MemberOut, status_code=201)
def add_member(project_id: int, body: MemberIn, who: auth.Identity = Depends(identity),
               db: Session = Depends(get_db)):
    member = service.add_member(db, who.user, project_id, body.email, body.role)
    return MemberOut(user_id=member.user_id, email=member.user.email, role=member.role)


@router.delete("/projects/{project_id}/members/{user_id}", status_code=204)
def remove_member(project_id: int, user_id: int, who: auth.Identity = Depends(identity),
                  db: Session = Depends(get_db)):
    service.remove_member(db, who.user, project_id, user_id)


@router.get("/projects/{project_id}/audit", response_model=list[AuditOut])
def audit_log(project_id: int, who: auth.Identity = Depends(identity), db: Session = Depends(get_db)):
    return [AuditOut(at=e.at, email=e.user.email if e.user else None, action=e.action, detail=e.detail)
            for e in service.audit_log(db, who.user, project_id)]
