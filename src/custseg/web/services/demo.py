"""The demo: a user and a project holding the bundled sample, so a first start shows a working app.

The user is ``demo@example.com``; the password is ``CUSTSEG_DEMO_PASSWORD`` when it is set,
else the documented default ``custseg-demo`` — a demo account for a machine of one's own: on a
shared server set the variable, or do not start the demo.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from custseg.web import auth
from custseg.web.config import WebSettings
from custseg.web.services import datasets, projects
from custseg.web.store.models import Dataset, Member, Project, User

__all__ = ["DEMO_EMAIL", "DEFAULT_PASSWORD", "DEMO_PROJECT", "ensure_demo"]

DEMO_EMAIL = "demo@example.com"
DEFAULT_PASSWORD = "custseg-demo"
DEMO_PROJECT = "Demo"


def _chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with open(path, "rb") as file:
        while chunk := file.read(size):
            yield chunk


def ensure_demo(db: Session, settings: WebSettings, environ: Mapping[str, str] | None = None) -> str:
    """Make the demo user and their project "Demo" holding the bundled sample (uploaded through
    the same service as any upload), each only if missing; a one-line message saying where to
    sign in and with what."""
    from custseg.datasets import sample_path

    env = os.environ if environ is None else environ
    password = env.get("CUSTSEG_DEMO_PASSWORD") or DEFAULT_PASSWORD
    user = db.scalar(sa.select(User).where(User.email == DEMO_EMAIL))
    if user is None:
        user = auth.create_user(db, DEMO_EMAIL, password)
    project = db.scalar(sa.select(Project).join(Member).where(
        Member.user_id == user.id, Project.name == DEMO_PROJECT).order_by(Project.id))
    if project is None:
        project = projects.create_project(db, user, DEMO_PROJECT,
                                          "The bundled sample of UCI Online Retail, ready to segment.")
    sample = sample_path()
    has_sample = db.scalar(sa.select(Dataset.id).where(Dataset.project_id == project.id,
                                                       Dataset.filename == sample.name))
    if has_sample is None:
        datasets.upload(db, settings, user, project.id, sample.name, _chunks(sample))
    shown = password if password == DEFAULT_PASSWORD else "the one in CUSTSEG_DEMO_PASSWORD"
    return (f"demo: open /app and sign in as {DEMO_EMAIL} with password {shown} "
            f"(project '{DEMO_PROJECT}', the bundled sample)")
