"""The custseg web app and REST API (``pip install 'custseg[web]'``).

Cut by layer: :mod:`~custseg.web.config` (settings from flags or ``CUSTSEG_*`` variables),
:mod:`~custseg.web.store` (SQLAlchemy models, Alembic migrations; SQLite by default,
PostgreSQL by URL), :mod:`~custseg.web.auth` (users, sessions, API tokens, roles, CSRF,
throttling), :mod:`~custseg.web.services` (what the app does: projects, datasets, recipes,
runs, assignment — the only place with logic), :mod:`~custseg.web.jobs` (runs as background
jobs in worker processes), :mod:`~custseg.web.api` (``/api/v1`` JSON routes) and
:mod:`~custseg.web.pages` (HTML routes); both call the services and hold no logic.
"""

from __future__ import annotations

__all__ = ["create_app", "WebSettings"]


def __getattr__(name: str):
    if name == "create_app":
        from custseg.web.app import create_app

        return create_app
    if name == "WebSettings":
        from custseg.web.config import WebSettings

        return WebSettings
    raise AttributeError(name)
