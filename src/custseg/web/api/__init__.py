"""``/api/v1``: JSON routes over the services (OpenAPI at ``/docs``); they hold no logic."""

from __future__ import annotations

from fastapi import APIRouter

from custseg.web.api import account, datasets, projects, runs

router = APIRouter(prefix="/api/v1")
for _part in (account, projects, datasets, runs):
    router.include_router(_part.router)
