"""The store's tables (SQLAlchemy 2 declarative; the schema changes only through migrations)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint,
                        func)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = ["Base", "User", "LoginSession", "ApiToken", "LoginAttempt", "Project", "Member", "Dataset", "Run",
           "AuditEvent", "ROLES", "RUN_STATES", "now"]

#: project roles, each allowing what the ones before it allow
ROLES = ("viewer", "editor", "owner")
#: what a run can be; the last four are final
RUN_STATES = ("queued", "running", "done", "failed", "interrupted", "cancelled")


def now() -> datetime:
    """The current time in UTC, without a zone (every time in the store is UTC)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


class LoginSession(Base):
    """A browser session: the cookie holds a random token, the store only its SHA-256."""

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)
    expires_at: Mapped[datetime] = mapped_column(DateTime)

    user: Mapped[User] = relationship(lazy="joined")


class ApiToken(Base):
    """A personal API token (``Authorization: Bearer``), shown once and stored hashed."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    user: Mapped[User] = relationship(lazy="joined")


class LoginAttempt(Base):
    """A failed sign-in, for throttling (by e-mail address and by client address)."""

    __tablename__ = "login_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    client: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=now, index=True)


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    #: how previews pick rows: first, last or random N
    preview_mode: Mapped[str] = mapped_column(String(10), default="first")
    preview_rows: Mapped[int] = mapped_column(Integer, default=50)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)
    last_activity_at: Mapped[datetime] = mapped_column(DateTime, default=now)

    members: Mapped[list[Member]] = relationship(back_populates="project", cascade="all, delete-orphan")


class Member(Base):
    __tablename__ = "members"
    __table_args__ = (UniqueConstraint("project_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(10))

    project: Mapped[Project] = relationship(back_populates="members")
    user: Mapped[User] = relationship(lazy="joined")


class Dataset(Base):
    """An uploaded file, a SQL source or a recipe's result, kept in the project's folder."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    #: upload, sql or recipe
    origin: Mapped[str] = mapped_column(String(10), default="upload")
    filename: Mapped[str] = mapped_column(String(255), default="")
    #: the file as it came, relative to the data folder (SQL sources and recipes: their snapshot)
    path: Mapped[str] = mapped_column(String(1024), default="")
    #: the table as the library read it, in Parquet, relative to the data folder: what previews,
    #: recipes, role changes and runs read (see custseg.web.services.datasets.source_spec)
    table_path: Mapped[str] = mapped_column(String(1024), default="")
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    #: uploads: the reading options (sheet, encoding, delimiter, kind); SQL sources: the URL
    #: without its password and the table or query; recipes: the SQL and the datasets it read
    source: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: roles the user set (the CLI's --map): role -> column
    mapping: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: what reading found: rows, columns, roles, kind, quality, notes
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)


#: a project's dataset names are unique ignoring case (recipes name them so); the services pick
#: or check a name first, and this index settles two uploads naming one at the same moment
Index("ux_datasets_project_name", Dataset.project_id, func.lower(Dataset.name), unique=True)


class Run(Base):
    """A segmentation run: its request, its state as a job, and where its folder is."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"), nullable=True)
    #: the options as the API takes them (algorithm, k, features, as_of, returns, seed)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: the validated :class:`custseg.request.RunRequest` the job runs (``to_json``); a retry runs it again
    request: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    status: Mapped[str] = mapped_column(String(12), default="queued", index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    step: Mapped[str] = mapped_column(String(100), default="")
    #: the error of a failed run: {"code", "message", "field"}
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: when done: the recommendation, segments and counts shown on its page
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: the run folder, relative to the data folder
    folder: Mapped[str] = mapped_column(String(1024), default="")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=now)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class AuditEvent(Base):
    """Who did what in a project: uploaded, ran, exported, assigned in bulk, changed members."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    action: Mapped[str] = mapped_column(String(50))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime] = mapped_column(DateTime, default=now, index=True)

    user: Mapped[User | None] = relationship(lazy="joined")
