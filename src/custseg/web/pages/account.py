"""Signing in and out.

The sign-in form is protected against cross-site posting like every other form: before there
is a session, its token is a random value in a cookie of its own (``custseg_signin``,
HttpOnly, SameSite=Lax) that the form must repeat.  A session's cookie is HttpOnly,
SameSite=Lax, and Secure when ``settings.secure_cookies`` says so or the request came over
HTTPS.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import APIRouter, Depends, Form, Request
from sqlalchemy.orm import Session

from custseg.errors import CustsegError
from custseg.web import auth
from custseg.web.config import WebSettings
from custseg.web.deps import client_of, get_db, get_settings, identity, optional_identity
from custseg.web.errors import Forbidden
from custseg.web.pages.common import check_csrf, fail, redirect, render, safe_next

router = APIRouter()

SIGNIN_COOKIE = "custseg_signin"


def _secure(request: Request, settings: WebSettings) -> bool:
    return bool(settings.secure_cookies) or request.url.scheme == "https"


def _signin_form(request: Request, settings: WebSettings, *, status: int = 200, **context):
    token = request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(24)
    response = render(request, "signin.html", None, status=status, signin_token=token,
                      next=safe_next(request.query_params.get("next") or context.pop("next", None)), **context)
    response.set_cookie(SIGNIN_COOKIE, token, httponly=True, samesite="lax", secure=_secure(request, settings),
                        path="/app/signin", max_age=3600)
    return response


@router.get("/app/signin")
def signin_page(request: Request, who: auth.Identity | None = Depends(optional_identity),
                settings: WebSettings = Depends(get_settings)):
    if who is not None:
        return redirect(safe_next(request.query_params.get("next")))
    return _signin_form(request, settings)


@router.post("/app/signin")
def signin(request: Request, email: str = Form("", max_length=320), password: str = Form("", max_length=1024),
           csrf_token: str = Form(""), next: str = Form(""), db: Session = Depends(get_db),
           settings: WebSettings = Depends(get_settings)):
    expected = request.cookies.get(SIGNIN_COOKIE) or ""
    try:
        if not expected or not csrf_token or not hmac.compare_digest(expected, csrf_token):
            raise Forbidden("the sign-in form has expired; reload the page and sign in again", param="csrf_token")
        user = auth.sign_in(db, settings, email, password, client_of(request))
        token, _ = auth.start_session(db, settings, user)
        db.commit()
    except CustsegError as exc:
        return _signin_form(request, settings, email=email, next=next, **fail(db, exc))
    response = redirect(safe_next(next))
    response.set_cookie(auth.SESSION_COOKIE, token, httponly=True, samesite="lax", secure=_secure(request, settings),
                        path="/", max_age=settings.session_hours * 3600)
    response.delete_cookie(SIGNIN_COOKIE, path="/app/signin")
    return response


@router.post("/app/signout")
def signout(request: Request, csrf_token: str = Form(""), who: auth.Identity = Depends(identity),
            db: Session = Depends(get_db), settings: WebSettings = Depends(get_settings)):
    check_csrf(who, csrf_token)
    auth.end_session(db, request.cookies.get(auth.SESSION_COOKIE))
    db.commit()
    response = redirect("/app/signin")
    response.delete_cookie(auth.SESSION_COOKIE, path="/", httponly=True, samesite="lax",
                           secure=_secure(request, settings))
    return response
