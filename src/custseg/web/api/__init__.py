"""``/api/v1``: JSON routes over the services (OpenAPI at ``/docs``); they hold no logic."""

from __future__ import annotations

import importlib

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1")

for _name in ("account", "projects", "datasets", "runs"):
    try:
        _module = importlib.import_module(f"custseg.web.api.{_name}")
    except ModuleNotFoundError as exc:  # a part not built yet
        if exc.name != f"custseg.web.api.{_name}":
            raise
        continue
    router.include_router(_module.router)
