"""The web app's HTML pages under ``/app`` (and ``/`` sending there).

The pages call the service functions (:mod:`custseg.web.services`) and render Jinja2
templates; the browser's own code (``static/*.js``) only uploads with a progress bar, follows a
run's progress and enables buttons — it talks to the REST API with the session cookie and the
``X-CSRF-Token`` header taken from the page's ``<meta name="csrf-token">``.

=======================================================  ======================================
page                                                     route
=======================================================  ======================================
sign in / sign out                                       ``/app/signin``, ``POST /app/signout``
projects (list, create)                                  ``/app``
a project (settings, members, audit log, datasets, runs) ``/app/projects/{id}``
upload a dataset, or add a SQL source                    ``/app/projects/{id}/datasets/new``
a dataset (preview, roles, quality, notes)               ``/app/projects/{id}/datasets/{id}``
a SQL recipe                                             ``/app/projects/{id}/recipes/new``
start a run                                              ``/app/projects/{id}/runs/new``
a run (progress, results, report, downloads, assign)     ``/app/projects/{id}/runs/{id}``
=======================================================  ======================================

Errors of the app (:class:`custseg.errors.CustsegError`) on a form re-render its page with
the one-line message; elsewhere they get :func:`error_page` (a project the user may not see is
the 404 of a missing one; not signed in goes to the sign-in page).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from custseg.web.pages import account, datasets, projects, runs
from custseg.web.pages.common import redirect, sign_in_url, templates

__all__ = ["router", "error_page"]

router = APIRouter(include_in_schema=False)


@router.get("/")
def root():
    return redirect("/app")


for _module in (account, projects, datasets, runs):
    router.include_router(_module.router)

_TITLES = {400: "Bad request", 401: "Sign in", 403: "Not allowed", 404: "Not found", 405: "Not allowed",
           409: "Conflict", 413: "Too large", 422: "Cannot do that", 429: "Too many attempts",
           500: "Something went wrong", 503: "Busy", 507: "Out of space"}


def error_page(request: Request, status: int, message: str) -> Response:
    """The page of an error on an ``/app`` path: not signed in goes to the sign-in page, the
    others show the status and the one-line message."""
    if status == 401:
        return redirect(sign_in_url(request))
    return templates.TemplateResponse(request, "error.html", {
        "who": None, "csrf": "", "status": status, "title": _TITLES.get(status, "Error"), "message": message,
    }, status_code=status, headers={"Cache-Control": "no-store"})
