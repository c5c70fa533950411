"""What every page route shares: the templates, who is signed in, the CSRF check of forms,
and turning an error into the page's one-line message.

Page routes hold no logic of the app: they read a form, call a service function, and render
a template (or redirect after a change).  Every form carries the session's CSRF token in a
hidden ``csrf_token`` field; every state change is a POST checked with :func:`check_csrf`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from custseg import __version__
from custseg.errors import CustsegError
from custseg.web import auth
from custseg.web.errors import FIELDS, Forbidden, field_of

__all__ = ["templates", "render", "check_csrf", "message_of", "redirect", "sign_in_url", "safe_next", "fail"]

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES))



def _when(value: datetime | str | None) -> str:
    """A time of the store (UTC) as ``2024-05-01 14:03 UTC``."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _number(value: Any, digits: int = 0) -> str:
    if value is None or value == "":
        return ""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if number != number:  # NaN
        return ""
    if digits == 0 and number.is_integer():
        return f"{int(number):,}"
    return f"{number:,.{digits or 2}f}"


def _percent(value: Any, digits: int = 1) -> str:
    if value is None or value == "":
        return ""
    try:
        return f"{float(value) * 100:.{digits}f} %"
    except (TypeError, ValueError):
        return str(value)


def _size(value: Any) -> str:
    try:
        size = float(value)
    except (TypeError, ValueError):
        return ""
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1000
    return ""


def _cell(value: Any) -> str:
    """A preview cell: empty for a missing value, numbers as they are."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.10g}"
    text = str(value)
    if len(text) >= 19 and text[4] == "-" and text[10] == "T" and text[:4].isdigit():  # an ISO time
        return text.replace("T", " ", 1)
    return text


_NUMERIC_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                  "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "REAL", "DECIMAL")


def _numeric(type_name: Any) -> bool:
    """Whether a column of this (DuckDB) type holds numbers: its cells are aligned right."""
    return str(type_name or "").upper().split("(")[0] in _NUMERIC_TYPES


templates.env.filters.update(when=_when, number=_number, percent=_percent, size=_size, cell=_cell)
templates.env.tests.update(numeric=_numeric)
templates.env.globals.update(version=__version__)


def render(request: Request, name: str, who: auth.Identity | None = None, *, status: int = 200,
           **context: Any) -> Response:
    """The template ``name`` with who is signed in and the session's CSRF token."""
    csrf = who.session.csrf_token if who is not None and who.session is not None else ""
    return templates.TemplateResponse(request, name, {"who": who, "csrf": csrf, **context}, status_code=status,
                                      headers={"Cache-Control": "no-store"})


def check_csrf(who: auth.Identity, sent: str | None) -> None:
    """A form sent with a session cookie must carry the session's CSRF token (a request made
    with an API token needs none: a browser never sends one on its own)."""
    if who.session is not None and not auth.csrf_matches(who.session, sent):
        raise Forbidden("the CSRF token is missing or wrong; reload the page and send the form again",
                        param="csrf_token")


def message_of(exc: CustsegError) -> str:
    """The one line a page shows for an error (parameters by the names of the forms)."""
    return exc.render(FIELDS)


def fail(db: Session, exc: CustsegError) -> dict[str, Any]:
    """Undo what the failed change did, and what the page shows of it: the message, the form
    field at fault and the status."""
    db.rollback()
    return {"error": message_of(exc), "error_field": field_of(exc.param), "status": exc.http_status}


def redirect(url: str) -> RedirectResponse:
    """After a change: see the result with a GET (303)."""
    return RedirectResponse(url, status_code=303)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of the app only (no other site)."""
    if target and target.startswith("/app") and not target.startswith("//") and "\\" not in target:
        return target
    return "/app"


def sign_in_url(request: Request) -> str:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/app/signin" + (f"?next={quote(here, safe='')}" if request.method == "GET" and here != "/app" else "")
