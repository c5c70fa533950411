"""What a route needs from the request: the store session, the settings, who is asking.

Routes declare these as FastAPI dependencies; none of them holds logic of the app.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from custseg.web import auth
from custseg.web.config import WebSettings
from custseg.web.errors import Forbidden, Unauthorized
from custseg.web.store import Store

__all__ = ["get_db", "get_settings", "get_store", "identity", "optional_identity", "client_of", "SAFE_METHODS"]

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def get_settings(request: Request) -> WebSettings:
    return request.app.state.settings


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.store.session() as session:
        yield session


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def optional_identity(request: Request, db: Session = Depends(get_db)) -> auth.Identity | None:
    """Who asks: by ``Authorization: Bearer`` token, else by session cookie; None if neither."""
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        user = auth.user_for_token(db, token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise Unauthorized("the API token is not valid (revoked, mistyped, or its user disabled)")
        return auth.Identity(user)
    found = auth.user_for_session(db, request.cookies.get(auth.SESSION_COOKIE))
    if found is None:
        return None
    user, session = found
    return auth.Identity(user, session)


def identity(request: Request, found: auth.Identity | None = Depends(optional_identity)) -> auth.Identity:
    """Who asks, or 401.  A state change by session cookie must carry the session's CSRF token
    (header ``X-CSRF-Token``; the page routes check their forms' ``csrf_token`` field)."""
    if found is None:
        raise Unauthorized("sign in first (or send an API token as Authorization: Bearer)")
    if found.by_cookie and request.method not in SAFE_METHODS and not request.url.path.startswith("/app"):
        if not auth.csrf_matches(found.session, request.headers.get("x-csrf-token")):
            raise Forbidden("the CSRF token is missing or wrong; reload the page", param="csrf_token")
    return found
