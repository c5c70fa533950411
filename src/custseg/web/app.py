"""The app factory: settings, the store, one error shape, security headers, the routes."""

from __future__ import annotations

import contextlib

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from custseg import __version__
from custseg.errors import CustsegError
from custseg.web.config import WebSettings
from custseg.web.errors import FIELDS, TooLarge, code_of, field_of
from custseg.web.store import Store

__all__ = ["create_app", "error_body", "CSP"]

log = logging.getLogger("custseg.web")

#: The app's pages: nothing from elsewhere, no inline script.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'")
#: A run's report carries text from uploaded files: it is served sandboxed (an origin of its
#: own, so its scripts can never act as the app), with only its own inline code and styles.
REPORT_CSP = ("sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline'; "
              "style-src 'unsafe-inline'; img-src data:; font-src data:; frame-ancestors 'self'")
#: The API's documentation page loads Swagger UI from its CDN.
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'self'")
STATIC = Path(__file__).with_name("static")


def error_body(code: str, message: str, field: str | None = None) -> dict:
    """The one error shape of every 4xx (and 5xx) answer."""
    return {"error": {"code": code, "message": message, "field": field}}


def create_app(settings: WebSettings | None = None, *, store: Store | None = None, migrate: bool = True) -> FastAPI:
    """The web app: the store migrated to the newest schema, the API under ``/api/v1`` (OpenAPI
    at ``/docs``) and the pages under ``/app``."""
    settings = settings or WebSettings.from_env()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = store or Store(settings.store_url)
    if migrate:
        store.migrate()
    from custseg.web.services.projects import flush_counted, forget_counted

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        with store.session() as db:  # a store emptied or restored since: its old windows mean nothing
            forget_counted(str(db.get_bind().url))
        yield
        with store.session() as db:  # the audit's sums of the last minute
            flush_counted(db)
            db.commit()

    app = FastAPI(title="custseg", lifespan=lifespan, version=__version__, docs_url="/docs", redoc_url=None,
                  openapi_url="/api/v1/openapi.json",
                  description="Customer segmentation as a service: projects, datasets, runs and assignment.")
    app.state.settings = settings
    app.state.store = store

    @app.exception_handler(CustsegError)
    async def _custseg_error(request: Request, exc: CustsegError):
        return _error(request, exc.http_status, code_of(exc), exc.render(FIELDS), field_of(exc.param))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header", "form")]
        field = ".".join(where) or None
        message = first.get("msg", "invalid request")
        return _error(request, 422, "invalid", f"{field}: {message}" if field else message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 413: "too_large"}
        return _error(request, exc.status_code, codes.get(exc.status_code, "error"), str(exc.detail), None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(request, 500, "internal", f"internal error: {type(exc).__name__}", None)

    from custseg.web.fastlane import FastLane

    app.add_middleware(FastLane, settings=settings, store=store)
    app.add_middleware(HeadersAndLimits, settings=settings)

    from custseg.web import api

    app.include_router(api.router)
    _document_errors(app)
    from fastapi.staticfiles import StaticFiles

    from custseg.web import pages

    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


#: The one error shape (:func:`error_body`) as the OpenAPI document describes it.
ERROR_SCHEMA = {
    "type": "object", "required": ["error"], "title": "Error",
    "properties": {"error": {
        "type": "object", "required": ["code", "message", "field"],
        "properties": {
            "code": {"type": "string", "description": "e.g. not_found, invalid, bad_request, conflict"},
            "message": {"type": "string", "description": "one line for a person"},
            "field": {"anyOf": [{"type": "string"}, {"type": "null"}],
                      "description": "the parameter or body field at fault, if one is"},
        },
    }},
}


def _document_errors(app: FastAPI) -> None:
    """The OpenAPI document with the answers the API really gives when it refuses a request:
    every operation's 4XX (and 422, in place of FastAPI's ``detail`` list) in the error shape."""
    made = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            spec = made()
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
            schemas["Error"] = ERROR_SCHEMA
            error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            for operations in spec.get("paths", {}).values():
                for operation in operations.values():
                    responses = operation.setdefault("responses", {})
                    if "422" in responses:
                        responses["422"] = {"description": "a parameter or field is not valid", "content": error}
                    responses["4XX"] = {"description": "refused: see the error's code, message and field",
                                        "content": error}
        return app.openapi_schema

    app.openapi = openapi


class HeadersAndLimits:
    """Plain ASGI middleware: a body declared over its limit is refused with 413 before it is
    read (uploads: ``upload_limit``; the rest: ``json_limit``), and every answer carries the
    security headers (a page's own Content-Security-Policy, such as the report's, is kept)."""

    def __init__(self, app, settings: WebSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"")
        is_upload = headers.get(b"content-type", b"").startswith(b"multipart/form-data")
        limit = self.settings.upload_limit if is_upload else self.settings.json_limit
        extra = _SECURITY_HEADERS[scope["path"] == "/docs"]

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", ())}
                message["headers"] = list(message.get("headers", ())) + [
                    (name, value) for name, value in extra if name not in present]
            await send(message)

        if length.isdigit() and int(length) > limit:
            message = f"the request body is {int(length):,} bytes, over the limit of {limit:,}"
            response = _error(Request(scope), 413, "too_large", str(TooLarge(message)), None)
            return await response(scope, receive, send_with_headers)
        await self.app(scope, receive, send_with_headers)


def _security_headers(csp: str) -> tuple[tuple[bytes, bytes], ...]:
    return ((b"content-security-policy", csp.encode()), (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"), (b"x-frame-options", b"SAMEORIGIN"))


#: the headers of every answer: of the pages and the API (False), of the documentation page (True)
_SECURITY_HEADERS = {False: _security_headers(CSP), True: _security_headers(DOCS_CSP)}


def _error(request: Request, status: int, code: str, message: str, field: str | None):
    if request.url.path.startswith("/app"):
        from custseg.web import pages

        return pages.error_page(request, status, message)
    return JSONResponse(error_body(code, message, field), status_code=status)
